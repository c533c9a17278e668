//! What a person asked about: the pid, comm, state, port and family
//! filters that `tracer events`, `tracer leaks` and the HTTP API share.
//!
//! Every list is an "any of"; an empty list keeps everything; different
//! filters must all hold. The kernel names a socket's owner only on the
//! transitions its own syscalls make (connect, listen, close), so for
//! events the owner filters follow the socket: see [`Owners`].
use std::collections::{HashMap, HashSet};

use clap::Args;

use crate::{
    config,
    event::{Kind, SockEvent},
    leaks::{Flag, Report},
    snapshot::{OwnerScan, SocketSnapshot},
    tcp::{Family, TcpState},
};

/// The filters, as flags (`tracer events`, `tracer leaks`) and as the
/// API's query parameters.
#[derive(Debug, Default, Clone, Args)]
pub struct Match {
    /// Only sockets of this process (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = config::parse_pid)]
    pub pids: Vec<u32>,
    /// Only sockets of processes with this name, as `ps -o comm` shows it
    /// (at most 15 characters; repeatable).
    #[arg(short = 'c', long = "comm", value_name = "COMM", value_parser = config::parse_comm)]
    pub comms: Vec<String>,
    /// Only sockets in this state, the kernel's name or ss's (close_wait,
    /// close-wait, estab, fin-wait-1, ...; repeatable).
    #[arg(short = 's', long = "state", value_name = "STATE", value_parser = TcpState::parse_or_say)]
    pub states: Vec<TcpState>,
    /// Only sockets with this port at either end (repeatable).
    #[arg(long = "port", value_name = "P", value_parser = config::parse_filter_port, allow_hyphen_values = true)]
    pub ports: Vec<u16>,
    /// Only sockets with this local port, as bcc's -L (repeatable).
    #[arg(short = 'L', long = "local-port", value_name = "P", value_parser = config::parse_filter_port, allow_hyphen_values = true)]
    pub local_ports: Vec<u16>,
    /// Only sockets with this remote port, as bcc's -D (repeatable).
    #[arg(short = 'D', long = "remote-port", value_name = "P", value_parser = config::parse_filter_port, allow_hyphen_values = true)]
    pub remote_ports: Vec<u16>,
    /// Only IPv4 connections: IPv4 sockets, and a dual-stack IPv6
    /// socket's IPv4 clients (v4-mapped, ::ffff:a.b.c.d), which ss -4
    /// leaves out.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6 connections: IPv6 sockets, but not their v4-mapped IPv4
    /// ones.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Only sockets of these network namespaces, by inode: the API's
    /// `netns=` (the commands choose namespaces with their own `--netns`).
    #[arg(skip)]
    pub netns: Vec<u32>,
}

/// The family `-4` and `-6` take a socket for: its own, but IPv4 for an
/// IPv6 socket whose local address is v4-mapped (`::ffff:a.b.c.d`), as a
/// dual-stack server's socket for an IPv4 client is. A person asking for
/// IPv4 means that client too. A family the kernel did not give stays
/// unknown, whatever the (then empty) address.
pub fn asked_family(family: Option<Family>, local: std::net::IpAddr) -> Option<Family> {
    match (family, local) {
        (None, _) => None,
        (Some(_), std::net::IpAddr::V4(_)) => Some(Family::Ipv4),
        (Some(_), std::net::IpAddr::V6(a)) if a.to_ipv4_mapped().is_some() => Some(Family::Ipv4),
        (f, std::net::IpAddr::V6(_)) => f,
    }
}

fn any_or_all<T: PartialEq>(list: &[T], v: &T) -> bool {
    list.is_empty() || list.contains(v)
}

impl Match {
    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        !self.by_owner()
            && self.states.is_empty()
            && self.ports.is_empty()
            && self.local_ports.is_empty()
            && self.remote_ports.is_empty()
            && !self.ipv4
            && !self.ipv6
            && self.netns.is_empty()
    }

    /// True when a pid or comm filter is set.
    pub fn by_owner(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty()
    }

    /// The family, ports and state filters, on one socket (`family` None:
    /// unknown, kept only when no family is asked for).
    pub fn socket(&self, family: Option<Family>, local: u16, remote: u16, state: TcpState) -> bool {
        let fam = match (self.ipv4, self.ipv6) {
            (true, _) => family == Some(Family::Ipv4),
            (_, true) => family == Some(Family::Ipv6),
            _ => true,
        };
        fam && (self.ports.is_empty()
            || self.ports.contains(&local)
            || self.ports.contains(&remote))
            && any_or_all(&self.local_ports, &local)
            && any_or_all(&self.remote_ports, &remote)
            && any_or_all(&self.states, &state)
    }

    /// The `--pid`s no process of this host has now
    /// ([`crate::diag::no_process`]; pids are the host's, as the agent and
    /// `ps` on the host name them).
    pub fn absent_pids(&self) -> Vec<u32> {
        self.pids
            .iter()
            .copied()
            .filter(|&p| crate::diag::no_process(p))
            .collect()
    }

    /// "no process 1, 2 runs on this host now", for the `--pid`s that
    /// name no process ([`Match::absent_pids`]); `None` when each does.
    pub fn absent_pids_said(&self) -> Option<String> {
        let absent = self.absent_pids();
        (!absent.is_empty()).then(|| {
            let list: Vec<String> = absent.iter().map(u32::to_string).collect();
            format!("no process {} runs on this host now", list.join(", "))
        })
    }

    /// The pid and comm filters, on one owner.
    pub fn owner(&self, pid: u32, comm: &str) -> bool {
        any_or_all(&self.pids, &pid)
            && (self.comms.is_empty() || self.comms.iter().any(|c| c == comm))
    }

    /// Every filter, on a remote endpoint that connects go to (a port
    /// forecast): the family, and the port at either end or the remote
    /// one. It has no process, no state and no one local port, so a pid,
    /// comm, state or local port filter leaves it out.
    pub fn endpoint(&self, remote: std::net::SocketAddr) -> bool {
        let family = asked_family(Some(Family::Ipv6), remote.ip());
        !self.by_owner()
            && self.states.is_empty()
            && self.local_ports.is_empty()
            && (!self.ipv4 || family == Some(Family::Ipv4))
            && (!self.ipv6 || family == Some(Family::Ipv6))
            && any_or_all(&self.ports, &remote.port())
            && any_or_all(&self.remote_ports, &remote.port())
    }

    /// The filters as flags, for a header: `--pid 4242 --port 8080`;
    /// empty when nothing is filtered.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut list = |flag: &str, values: Vec<String>| {
            if !values.is_empty() {
                parts.push(format!("{flag} {}", values.join(",")));
            }
        };
        let each = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>();
        list("--pid", self.pids.iter().map(u32::to_string).collect());
        list("--comm", self.comms.clone());
        list(
            "--state",
            self.states.iter().map(|s| s.name().to_owned()).collect(),
        );
        list("--port", each(&self.ports));
        list("--local-port", each(&self.local_ports));
        list("--remote-port", each(&self.remote_ports));
        if self.ipv4 {
            parts.push("-4".to_owned());
        }
        if self.ipv6 {
            parts.push("-6".to_owned());
        }
        parts.join(" ")
    }

    /// A leak report narrowed to what the filters keep: its flags
    /// ([`Match::flag`]), the descriptor forecasts of the processes left,
    /// and the port forecasts of the endpoints kept ([`Match::endpoint`]).
    pub fn report(&self, r: Report) -> Report {
        if self.is_empty() {
            return r;
        }
        self.report_where(r, |_| true)
    }

    /// [`Match::report`] keeping only the flags `keep` keeps too, in one
    /// narrowing.
    pub fn report_where(&self, r: Report, keep: impl Fn(&Flag) -> bool) -> Report {
        let mut r = r.narrowed(|f| keep(f) && self.flag(f));
        r.forecasts.ports.retain(|p| {
            self.endpoint(p.endpoint.remote) && any_or_all(&self.netns, &p.endpoint.netns)
        });
        r
    }

    /// Every filter, on a leak flag: some owner must match the pid and
    /// comm filters (a flag without a known owner fails them).
    pub fn flag(&self, f: &Flag) -> bool {
        let family = asked_family(Some(Family::Ipv6), f.local.ip());
        let remote = f.remote.map_or(0, |r| r.port());
        self.socket(family, f.local.port(), remote, f.state)
            && any_or_all(&self.netns, &f.netns)
            && (!self.by_owner() || f.owners.iter().any(|o| self.owner(o.pid, &o.comm)))
    }
}

/// Most sockets [`Owners`] remembers; past it, it starts over (and says
/// so once on stderr), so memory stays bounded on any host.
pub const MAX_FOLLOWED: usize = 1 << 20;

/// The sockets whose owner matched a pid or comm filter: learnt from the
/// events that name an owner, from the listeners of matching processes
/// (a socket accepted there is theirs from its first event, which runs in
/// softirq and names no one), and from what matching processes held when
/// the command started ([`Owners::seed`]); forgotten at `close`.
#[derive(Debug, Default)]
pub struct Owners {
    cookies: HashSet<u64>,
    /// The listeners of matching processes, by (namespace, port): the
    /// cookies of those listening there (several with `SO_REUSEPORT`).
    listeners: HashMap<(u32, u16), HashSet<u64>>,
    /// Times the set was full and started over.
    pub restarts: u64,
}

impl Owners {
    /// Whether `ev` passes `m`: the family, port and state filters on the
    /// event itself (its new state), and the owner filters on its socket.
    pub fn keep(&mut self, m: &Match, ev: &SockEvent) -> bool {
        let state = ev.new_state.unwrap_or(TcpState::Close);
        let own = if !m.by_owner() {
            true
        } else if ev.cookie == 0 {
            ev.pid != 0 && m.owner(ev.pid, ev.comm_str())
        } else {
            if ev.pid != 0 {
                if m.owner(ev.pid, ev.comm_str()) {
                    self.follow(ev.cookie);
                } else {
                    self.cookies.remove(&ev.cookie);
                }
            } else if self.accepted_by_one(ev) {
                self.follow(ev.cookie);
            }
            let own = self.cookies.contains(&ev.cookie);
            let moved = |from, to| {
                ev.kind == Kind::State && ev.old_state == from && ev.new_state == Some(to)
            };
            if own && moved(Some(TcpState::Close), TcpState::Listen) {
                self.listen(ev.netns, ev.sport, ev.cookie);
            }
            if own && ev.new_state == Some(TcpState::Close) {
                self.cookies.remove(&ev.cookie);
            }
            // A listener's close ends its port's accepts whoever closes it.
            if moved(Some(TcpState::Listen), TcpState::Close)
                && let Some(on_port) = self.listeners.get_mut(&(ev.netns, ev.sport))
            {
                on_port.remove(&ev.cookie);
                if on_port.is_empty() {
                    self.listeners.remove(&(ev.netns, ev.sport));
                }
            }
            own
        };
        own && m.socket(asked_family(ev.family, ev.saddr), ev.sport, ev.dport, state)
    }

    /// Follow the sockets `sockets` lists that a process matching `m`
    /// holds (`scan`: their holders), and the ports of the listeners among
    /// them. Returns how many sockets it follows.
    pub fn seed(&mut self, m: &Match, sockets: &[SocketSnapshot], scan: &OwnerScan) -> usize {
        let before = self.cookies.len();
        for s in sockets {
            let held = scan
                .owners
                .get(&s.inode)
                .is_some_and(|o| o.iter().any(|o| m.owner(o.pid, &o.comm)));
            if s.inode != 0 && held {
                self.follow(s.cookie);
                if s.state == TcpState::Listen {
                    self.listen(s.netns, s.sport, s.cookie);
                }
            }
        }
        self.cookies.len().saturating_sub(before)
    }

    /// The listener `cookie` of a matching process listens on `port`.
    fn listen(&mut self, netns: u32, port: u16, cookie: u64) {
        self.listeners
            .entry((netns, port))
            .or_default()
            .insert(cookie);
    }

    /// A socket's first moves out of a followed listener's queue: the
    /// kernel announces them from softirq, with no task, on the listener's
    /// port (`listen -> syn_recv` from Linux 6.15 on, `syn_recv ->
    /// established` on every kernel). Whoever accepts from the listener
    /// holds the socket next; it is taken for the listener's process.
    fn accepted_by_one(&self, ev: &SockEvent) -> bool {
        ev.kind == Kind::State
            && matches!(
                (ev.old_state, ev.new_state),
                (Some(TcpState::Listen), Some(TcpState::SynRecv))
                    | (Some(TcpState::SynRecv), Some(TcpState::Established))
            )
            && self.listeners.contains_key(&(ev.netns, ev.sport))
    }

    fn follow(&mut self, cookie: u64) {
        if self.cookies.len() >= MAX_FOLLOWED {
            self.cookies.clear();
            self.listeners.clear();
            self.restarts += 1;
        }
        self.cookies.insert(cookie);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        m: Match,
    }

    fn flags(args: &[&str]) -> Match {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .expect("flags")
            .m
    }

    fn ev(cookie: u64, pid: u32, comm: &str, from: TcpState, to: TcpState) -> SockEvent {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        SockEvent {
            ts_ns: 1,
            kind: Kind::State,
            cookie,
            family: Some(Family::Ipv4),
            saddr: "127.0.0.1".parse().unwrap(),
            sport: 40000,
            daddr: "127.0.0.1".parse().unwrap(),
            dport: 8080,
            old_state: Some(from),
            new_state: Some(to),
            pid,
            tid: pid,
            comm: c,
            netns: 1,
            err: 0,
        }
    }

    #[test]
    fn short_flags_as_ss_and_bcc_spell_them() {
        let m = flags(&[
            "-p",
            "42",
            "-c",
            "nginx",
            "-s",
            "close-wait",
            "-L",
            "80",
            "-D",
            "5432",
            "-4",
        ]);
        assert_eq!(m.pids, [42]);
        assert_eq!(m.comms, ["nginx"]);
        assert_eq!(m.states, [TcpState::CloseWait]);
        assert_eq!(
            (m.local_ports.as_slice(), m.remote_ports.as_slice()),
            (&[80][..], &[5432][..])
        );
        assert!(m.ipv4 && !m.ipv6);
        assert!(Cli::try_parse_from(["t", "-4", "-6"]).is_err());
        let e = Cli::try_parse_from(["t", "-s", "waiting"])
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("unknown state \"waiting\""), "{e}");
        assert!(flags(&[]).is_empty());
    }

    #[test]
    fn sockets_match_on_every_filter_at_once() {
        let m = flags(&["--port", "8080", "-s", "estab"]);
        assert!(m.socket(Some(Family::Ipv4), 40000, 8080, TcpState::Established));
        assert!(m.socket(Some(Family::Ipv6), 8080, 1, TcpState::Established));
        assert!(!m.socket(Some(Family::Ipv4), 40000, 8080, TcpState::CloseWait));
        assert!(!m.socket(Some(Family::Ipv4), 40000, 8081, TcpState::Established));
        let m = flags(&["-6", "-L", "8080"]);
        assert!(!m.socket(Some(Family::Ipv4), 8080, 1, TcpState::Listen));
        assert!(!m.socket(None, 8080, 1, TcpState::Listen));
        assert!(m.socket(Some(Family::Ipv6), 8080, 1, TcpState::Listen));
        assert!(!m.socket(Some(Family::Ipv6), 1, 8080, TcpState::Listen));
    }

    #[test]
    fn a_dual_stack_servers_ipv4_clients_are_ipv4() {
        let mut mapped = ev(7, 99, "java", TcpState::SynRecv, TcpState::Established);
        mapped.family = Some(Family::Ipv6);
        mapped.saddr = "::ffff:10.0.0.5".parse().unwrap();
        let mut v6 = mapped;
        v6.saddr = "fd00::5".parse().unwrap();
        let mut listener = v6;
        listener.saddr = "::".parse().unwrap();
        let v4 = ev(7, 99, "java", TcpState::SynRecv, TcpState::Established);
        let mut o = Owners::default();
        let four = flags(&["-4"]);
        let six = flags(&["-6"]);
        let kept = |m: &Match, e: &SockEvent, o: &mut Owners| o.keep(m, e);
        assert!(kept(&four, &mapped, &mut o) && kept(&four, &v4, &mut o));
        assert!(!kept(&four, &v6, &mut o) && !kept(&four, &listener, &mut o));
        assert!(!kept(&six, &mapped, &mut o) && !kept(&six, &v4, &mut o));
        assert!(kept(&six, &v6, &mut o) && kept(&six, &listener, &mut o));
        // A family the kernel did not give stays unknown.
        assert_eq!(asked_family(None, "fd00::5".parse().unwrap()), None);
        assert_eq!(asked_family(None, "0.0.0.0".parse().unwrap()), None);
        assert_eq!(
            asked_family(Some(Family::Ipv6), "::ffff:127.0.0.1".parse().unwrap()),
            Some(Family::Ipv4)
        );
    }

    #[test]
    fn owner_filters_follow_the_socket_from_its_syscall_to_its_close() {
        let m = flags(&["-c", "curl"]);
        let mut o = Owners::default();
        // connect() names curl; the softirq transitions after it do not.
        assert!(o.keep(&m, &ev(7, 99, "curl", TcpState::Close, TcpState::SynSent)));
        assert!(o.keep(&m, &ev(7, 0, "", TcpState::SynSent, TcpState::Established)));
        // Another process's socket, and an unnamed one, are not shown.
        assert!(!o.keep(&m, &ev(8, 5, "nginx", TcpState::Close, TcpState::Listen)));
        assert!(!o.keep(&m, &ev(9, 0, "", TcpState::Listen, TcpState::SynRecv)));
        // The close ends it: a reused cookie is not curl's.
        assert!(o.keep(&m, &ev(7, 0, "", TcpState::FinWait2, TcpState::Close)));
        assert!(!o.keep(&m, &ev(7, 0, "", TcpState::Close, TcpState::SynSent)));
        assert!(o.cookies.is_empty());
        // A pid filter and a state filter together.
        let m = flags(&["-p", "99", "-s", "established"]);
        assert!(!o.keep(&m, &ev(10, 99, "curl", TcpState::Close, TcpState::SynSent)));
        assert!(o.keep(&m, &ev(10, 0, "", TcpState::SynSent, TcpState::Established)));
    }

    /// An event of `ev`'s on local port `port`.
    fn on(port: u16, mut e: SockEvent) -> SockEvent {
        e.sport = port;
        e
    }

    #[test]
    fn sockets_accepted_on_a_matching_listener_are_followed_from_their_first_event() {
        use TcpState::*;
        let m = flags(&["-c", "nginx", "-s", "close-wait"]);
        let mut o = Owners::default();
        // listen() names nginx; the state filter hides the move itself.
        assert!(!o.keep(&m, &on(80, ev(1, 5, "nginx", Close, Listen))));
        // From Linux 6.15 the accept's first move carries the new cookie.
        assert!(!o.keep(&m, &on(80, ev(2, 0, "", Listen, SynRecv))));
        assert!(o.keep(&m, &on(80, ev(2, 0, "", Established, CloseWait))));
        // Before, it is unnamed, and the next move names it.
        assert!(!o.keep(&m, &on(80, ev(0, 0, "", Listen, SynRecv))));
        assert!(!o.keep(&m, &on(80, ev(3, 0, "", SynRecv, Established))));
        assert!(o.keep(&m, &on(80, ev(3, 0, "", Established, CloseWait))));
        // Another port, or the same port in another namespace: not nginx's.
        assert!(!o.keep(&m, &on(81, ev(4, 0, "", SynRecv, Established))));
        assert!(!o.keep(&m, &on(81, ev(4, 0, "", Established, CloseWait))));
        let mut elsewhere = on(80, ev(5, 0, "", SynRecv, Established));
        elsewhere.netns = 2;
        assert!(!o.keep(&m, &elsewhere));
        // Once the listener closes, its port is no longer nginx's.
        assert!(!o.keep(&m, &on(80, ev(1, 5, "nginx", Listen, Close))));
        assert!(!o.keep(&m, &on(80, ev(6, 0, "", SynRecv, Established))));
        assert!(!o.keep(&m, &on(80, ev(6, 0, "", Established, CloseWait))));
    }

    #[test]
    fn a_port_is_followed_while_any_of_its_listeners_is() {
        use TcpState::*;
        let m = flags(&["-c", "nginx", "-s", "close-wait"]);
        let mut o = Owners::default();
        // Two SO_REUSEPORT listeners of nginx on one port.
        assert!(!o.keep(&m, &on(80, ev(1, 5, "nginx", Close, Listen))));
        assert!(!o.keep(&m, &on(80, ev(10, 6, "nginx", Close, Listen))));
        assert!(!o.keep(&m, &on(80, ev(1, 5, "nginx", Listen, Close))));
        assert!(!o.keep(&m, &on(80, ev(2, 0, "", SynRecv, Established))));
        assert!(o.keep(&m, &on(80, ev(2, 0, "", Established, CloseWait))));
        // The last one closed by another process (it inherited it): the
        // port's accepts are no longer nginx's.
        assert!(!o.keep(&m, &on(80, ev(10, 7, "bash", Listen, Close))));
        assert!(!o.keep(&m, &on(80, ev(3, 0, "", SynRecv, Established))));
        assert!(!o.keep(&m, &on(80, ev(3, 0, "", Established, CloseWait))));
    }

    #[test]
    fn what_matching_processes_held_at_start_is_followed() {
        use crate::testkit::{SnapshotBuilder, snapshot};
        let held = |pid: u32, comm: &str| crate::snapshot::FdOwner {
            pid,
            comm: comm.to_owned(),
            cmdline: String::new(),
            fd: 3,
            cgroup: String::new(),
            container_id: None,
        };
        let sockets = [
            snapshot(1, TcpState::Listen).netns(1),
            snapshot(2, TcpState::Established).netns(1),
            snapshot(3, TcpState::Established).netns(1),
            // A timewait socket has no inode, and no owner.
            snapshot(4, TcpState::TimeWait).timewait(1000).netns(1),
        ];
        let mut scan = OwnerScan::default();
        scan.owners.insert(1001, vec![held(5, "nginx")]);
        scan.owners
            .insert(1002, vec![held(6, "curl"), held(5, "nginx")]);
        scan.owners.insert(1003, vec![held(6, "curl")]);
        let m = flags(&["-c", "nginx"]);
        let mut o = Owners::default();
        assert_eq!(o.seed(&m, &sockets, &scan), 2);
        let port = |c| crate::testkit::local_port(c);
        // A socket held by nginx (with curl too) moves in softirq: kept.
        assert!(o.keep(
            &m,
            &on(
                port(2),
                ev(2, 0, "", TcpState::Established, TcpState::CloseWait)
            )
        ));
        assert!(!o.keep(
            &m,
            &on(
                port(3),
                ev(3, 0, "", TcpState::Established, TcpState::CloseWait)
            )
        ));
        // The listener's accepted sockets are nginx's.
        assert!(o.keep(
            &m,
            &on(
                port(1),
                ev(9, 0, "", TcpState::SynRecv, TcpState::Established)
            )
        ));
    }

    #[test]
    fn flags_match_by_any_owner() {
        let report = crate::leaks::table::tests::sample();
        let flags_of = |m: &Match| -> usize {
            report
                .leaks
                .iter()
                .flat_map(|g| &g.sockets)
                .filter(|f| m.flag(f))
                .count()
        };
        assert_eq!(flags_of(&flags(&[])), 4);
        assert_eq!(flags_of(&flags(&["-p", "4242"])), 2);
        assert_eq!(flags_of(&flags(&["-c", "worker"])), 1);
        assert_eq!(flags_of(&flags(&["-c", "nobody"])), 0);
        assert_eq!(flags_of(&flags(&["-s", "close-wait", "-L", "8080"])), 4);
        assert_eq!(flags_of(&flags(&["-6"])), 0);
    }
}
