//! Finding the network namespaces of the host: the mounts under
//! `/run/netns` (what `ip netns add` makes) and every process's
//! `/proc/<pid>/ns/net`. A namespace that neither names, but whose sockets
//! send events, is still seen in the events' `netns` (see
//! [`super::dumps::Census`]).
//!
//! Reading another user's `/proc/<pid>/ns/net` needs `CAP_SYS_PTRACE`;
//! processes whose link cannot be read are counted, not fatal.
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Where each namespace found can be opened.
#[derive(Debug, Default)]
pub struct Found {
    /// Namespace inode -> a path that opens it (a `/run/netns` mount first).
    pub paths: BTreeMap<u32, PathBuf>,
    /// Namespace inode -> its first few processes ([`PIDS_PER_NETNS`],
    /// lowest first): what names its container.
    pub pids: BTreeMap<u32, Vec<u32>>,
    /// Processes whose `ns/net` could not be read (permission, or gone).
    pub unreadable: u32,
}

impl Found {
    /// Of the processes whose `ns/net` could not be read, those that
    /// `CAP_SYS_PTRACE` would have let tracer read ([`unread`]).
    pub fn unread(&self) -> u32 {
        unread(self.unreadable)
    }

    /// The `/run/netns` names of the namespaces found, by inode.
    pub fn names(&self) -> BTreeMap<u32, String> {
        self.paths
            .iter()
            .filter_map(|(&inode, p)| {
                let name = p.strip_prefix("/run/netns").ok()?;
                Some((inode, name.to_string_lossy().into_owned()))
            })
            .collect()
    }
}

/// The names of the host's named namespaces (`ip netns add`), by inode:
/// a scan of `/run/netns` alone.
pub fn names() -> BTreeMap<u32, String> {
    let mut found = Found::default();
    scan(Path::new("/run/netns"), None, &mut found);
    found.names()
}

/// Of `unreadable` processes, how many went unread for want of
/// `CAP_SYS_PTRACE`: all of them without it, none with it (then a process
/// was read as it exited, and its namespace went with it).
pub fn unread(unreadable: u32) -> u32 {
    use crate::bpf::preflight::{CAP_SYS_PTRACE, has_effective};
    if has_effective(CAP_SYS_PTRACE) {
        0
    } else {
        unreadable
    }
}

/// What the agent says once at start when it follows every namespace
/// without `CAP_SYS_PTRACE`: discovery cannot read other users'
/// `/proc/<pid>/ns/net`, so a namespace only they hold (a container's,
/// unless its runtime names it under `/run/netns`) is not found.
pub const UNREAD_WARNING: &str = "without CAP_SYS_PTRACE, a network namespace that only other \
     users' (or more privileged) processes hold cannot be found: its sockets are known from kernel \
     events alone once they change state, and are not adopted, reconciled or checked for leaks \
     (tracer_netns_unreachable{reason=\"unnamed\"} counts such namespaces)";

/// Processes remembered per namespace: a pod's sandbox and its first
/// application processes.
pub const PIDS_PER_NETNS: usize = 8;

/// Scan `/run/netns` and `/proc` for network namespaces.
pub fn discover() -> Found {
    let mut found = Found::default();
    scan(Path::new("/run/netns"), None, &mut found);
    scan(Path::new("/proc"), Some("ns/net"), &mut found);
    found
}

/// Add every entry of `dir` (with `suffix` joined, for `/proc/<pid>`).
fn scan(dir: &Path, suffix: Option<&str>, found: &mut Found) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if suffix.is_some() && !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let path = match suffix {
            Some(s) => entry.path().join(s),
            None => entry.path(),
        };
        match std::fs::metadata(&path) {
            // A file under /run/netns that is not a mounted namespace is
            // on the tmpfs (an `ip netns add` that failed half-way).
            Ok(_) if suffix.is_none() && !is_nsfs(&path) => {}
            Ok(m) => {
                let inode = m.ino() as u32;
                found.paths.entry(inode).or_insert(path);
                if suffix.is_some() {
                    let pids = found.pids.entry(inode).or_default();
                    let pid = name.to_str().and_then(|n| n.parse().ok());
                    if let Some(pid) = pid.filter(|_| pids.len() < PIDS_PER_NETNS) {
                        pids.push(pid);
                    }
                }
            }
            Err(_) if suffix.is_some() => found.unreadable += 1,
            Err(_) => {}
        }
    }
}

/// True when `path` is a namespace file (on nsfs), not a plain file.
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid
    // NUL-terminated path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_is_found() {
        let own = crate::diag::own_netns();
        let found = discover();
        assert!(found.paths.contains_key(&own), "{found:?}");
        let pids = found.pids.get(&own).expect("our namespace has processes");
        assert!(!pids.is_empty() && pids.len() <= PIDS_PER_NETNS, "{pids:?}");
    }
}
