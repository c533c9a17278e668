//! Which network namespaces the pipeline follows: one [`NetnsScope`] value
//! decides both which kernel events reach the engine and which namespaces
//! the [`super::DumpSource`] dumps, so the two always agree.
//!
//! `--netns` chooses it ([`NetnsChoice`]): every namespace of the host (the
//! default), `host` (the namespace tracer runs in), a name under
//! `/run/netns`, an inode number, or `pid:N` (that process's namespace).
use std::{os::unix::fs::MetadataExt as _, path::Path, str::FromStr};

use anyhow::Context as _;

use crate::{diag::own_netns, event::SockEvent};

/// What `--netns` asked for, before it is resolved to an inode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetnsChoice {
    /// Every network namespace of the host.
    #[default]
    All,
    /// The namespace tracer itself runs in.
    Host,
    /// `/run/netns/<name>`, as `ip netns add` makes.
    Name(String),
    /// A namespace inode, as events report it in `netns`.
    Inode(u32),
    /// The namespace of process `N`.
    Pid(u32),
}

impl FromStr for NetnsChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<NetnsChoice, String> {
        let s = s.trim();
        Ok(match s {
            "" => {
                return Err(
                    "an empty --netns; expected all, host, a /run/netns name, an inode or pid:N"
                        .into(),
                );
            }
            "all" => NetnsChoice::All,
            "host" => NetnsChoice::Host,
            _ if s.starts_with("pid:") => NetnsChoice::Pid(
                s["pid:".len()..]
                    .parse()
                    .map_err(|_| format!("{s:?}: pid:N needs a process id"))?,
            ),
            _ if s.bytes().all(|b| b.is_ascii_digit()) => NetnsChoice::Inode(
                s.parse()
                    .map_err(|_| format!("{s:?} is not a namespace inode (too large)"))?,
            ),
            _ if s.contains('/') || s.starts_with('.') => {
                return Err(format!(
                    "{s:?} is not a /run/netns name; expected all, host, a name, an inode or pid:N"
                ));
            }
            _ => NetnsChoice::Name(s.to_owned()),
        })
    }
}

impl std::fmt::Display for NetnsChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetnsChoice::All => f.write_str("all"),
            NetnsChoice::Host => f.write_str("host"),
            NetnsChoice::Name(n) => f.write_str(n),
            NetnsChoice::Inode(i) => write!(f, "{i}"),
            NetnsChoice::Pid(p) => write!(f, "pid:{p}"),
        }
    }
}

/// The network namespaces the pipeline follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsScope {
    /// Every namespace; `own` is the one tracer runs in (0: unreadable).
    All {
        /// This process's namespace inode.
        own: u32,
    },
    /// One namespace.
    One {
        /// Its inode (0: unreadable, then every event passes).
        inode: u32,
        /// True when it is the namespace tracer runs in (no setns needed).
        own: bool,
    },
}

impl NetnsScope {
    /// The namespace this process runs in (`--netns host`).
    pub fn own() -> NetnsScope {
        NetnsScope::One {
            inode: own_netns(),
            own: true,
        }
    }

    /// Every namespace of the host (`--netns all`, the default).
    pub fn all() -> NetnsScope {
        NetnsScope::All { own: own_netns() }
    }

    /// Resolve a `--netns` choice: find the inode of a name or a process.
    pub fn resolve(choice: &NetnsChoice) -> anyhow::Result<NetnsScope> {
        NetnsScope::resolve_as(choice, &format!("--netns {choice}"))
    }

    /// [`NetnsScope::resolve`], its errors naming the choice as `said`
    /// (`netns = "web" in /etc/tracer/tracer.toml`).
    pub fn resolve_as(choice: &NetnsChoice, said: &str) -> anyhow::Result<NetnsScope> {
        let one = |inode: u32| NetnsScope::One {
            inode,
            own: inode == own_netns(),
        };
        Ok(match choice {
            NetnsChoice::All => NetnsScope::all(),
            NetnsChoice::Host => NetnsScope::own(),
            NetnsChoice::Inode(i) => one(existing(*i, said)?),
            NetnsChoice::Name(n) => {
                one(plainly(inode_of(&Path::new("/run/netns").join(n)), || {
                    format!("{said}: no network namespace /run/netns/{n} (see `ip netns list`)")
                })?)
            }
            NetnsChoice::Pid(p) => one(plainly(
                inode_of(&Path::new("/proc").join(p.to_string()).join("ns/net")),
                || {
                    format!(
                        "{said}: cannot read the network namespace of process {p} (is it running? reading another user's needs CAP_SYS_PTRACE)"
                    )
                },
            )?),
        })
    }

    /// The inode of the namespace tracer runs in (0 if unreadable).
    pub fn own_inode(&self) -> u32 {
        match *self {
            NetnsScope::All { own } => own,
            NetnsScope::One { inode, own: true } => inode,
            NetnsScope::One { .. } => own_netns(),
        }
    }

    /// The one namespace followed, when `--netns` chose one and its inode
    /// is known; `None` for every namespace.
    pub fn only(&self) -> Option<u32> {
        match *self {
            NetnsScope::One { inode, .. } => Some(inode).filter(|&i| i != 0),
            NetnsScope::All { .. } => None,
        }
    }

    /// True when every namespace is followed.
    pub fn is_all(&self) -> bool {
        matches!(self, NetnsScope::All { .. })
    }

    /// True when the namespace `inode` is followed.
    pub fn covers(&self, inode: u32) -> bool {
        match *self {
            NetnsScope::All { .. } => true,
            NetnsScope::One { inode: 0, .. } => true,
            NetnsScope::One { inode: mine, .. } => inode == mine,
        }
    }

    /// True for events in scope. An event whose namespace the kernel
    /// program could not tell (netns 0: a reset of no socket, without a
    /// device) cannot be placed in any one namespace, so only a scope of
    /// every namespace keeps it.
    pub fn contains(&self, ev: &SockEvent) -> bool {
        self.covers(ev.netns)
    }
}

/// `inode` when some namespace of the host has it (this process's, a
/// `/run/netns` mount, or a process's): a mistyped inode would otherwise
/// follow nothing and report nothing wrong.
fn existing(inode: u32, said: &str) -> anyhow::Result<u32> {
    if inode == own_netns() {
        return Ok(inode);
    }
    let found = super::discover::discover();
    if found.paths.contains_key(&inode) {
        return Ok(inode);
    }
    let unseen = if found.unread() > 0 {
        format!(
            "; {} processes' namespaces could not be read (reading another user's needs CAP_SYS_PTRACE)",
            found.unread()
        )
    } else {
        String::new()
    };
    anyhow::bail!(
        "{said}: no network namespace has inode {inode} (`lsns -t net` lists them){unseen}"
    )
}

/// `r`, or the sentence `say` makes: alone when the file is not there
/// (the sentence says all), with the system's reason otherwise.
fn plainly<T>(r: std::io::Result<T>, say: impl FnOnce() -> String) -> anyhow::Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(anyhow::anyhow!(say())),
        Err(e) => Err(e).with_context(say),
    }
}

/// The inode of a namespace file.
fn inode_of(path: &Path) -> std::io::Result<u32> {
    Ok(std::fs::metadata(path)?.ino() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(netns: u32) -> SockEvent {
        SockEvent {
            netns,
            ..crate::testkit::event(1)
        }
    }

    #[test]
    fn the_scope_keeps_its_namespace_and_every_namespace_keeps_unknown_ones() {
        let scope = NetnsScope::One {
            inode: 7,
            own: false,
        };
        assert!(scope.contains(&event(7)));
        assert!(!scope.contains(&event(0)), "a reset of no socket");
        assert!(!scope.contains(&event(8)));
        let unknown = NetnsScope::One {
            inode: 0,
            own: true,
        };
        assert!(unknown.contains(&event(8)));
        assert!(NetnsScope::All { own: 7 }.contains(&event(8)));
        assert!(NetnsScope::All { own: 7 }.contains(&event(0)));
    }

    #[test]
    fn choices_parse_and_print() {
        for (s, want) in [
            ("all", NetnsChoice::All),
            ("host", NetnsChoice::Host),
            ("blue", NetnsChoice::Name("blue".into())),
            ("4026531840", NetnsChoice::Inode(4026531840)),
            ("pid:1", NetnsChoice::Pid(1)),
        ] {
            let got: NetnsChoice = s.parse().expect(s);
            assert_eq!(got, want);
            assert_eq!(got.to_string(), s);
        }
        for bad in ["", "pid:x", "a/b", "..", "99999999999"] {
            assert!(bad.parse::<NetnsChoice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_names_say_where_they_looked() {
        let e = NetnsScope::resolve(&NetnsChoice::Name("tracer-no-such-ns".into()))
            .expect_err("no such namespace");
        assert!(
            format!("{e:#}").contains("/run/netns/tracer-no-such-ns"),
            "{e:#}"
        );
        assert_eq!(
            NetnsScope::resolve(&NetnsChoice::Host).expect("host"),
            NetnsScope::own()
        );
    }

    #[test]
    fn an_inode_no_namespace_has_is_refused_and_a_real_one_kept() {
        let own = own_netns();
        assert_eq!(
            NetnsScope::resolve(&NetnsChoice::Inode(own)).expect("our own"),
            NetnsScope::own()
        );
        // The kernel numbers namespaces from 0xF0000000 up: no namespace
        // has 12345.
        let e = NetnsScope::resolve(&NetnsChoice::Inode(12345)).expect_err("no such inode");
        let e = format!("{e:#}");
        assert!(
            e.starts_with("--netns 12345: no network namespace has inode 12345"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
