//! Which processes hold a socket: the `ss -p` scan of `/proc/<pid>/fd`.
//!
//! sock_diag gives a full socket's inode; every open descriptor of it is a
//! `/proc/<pid>/fd/<n>` link reading `socket:[<inode>]`. One socket can have
//! several owners (inherited across fork, passed over a unix socket) and
//! several descriptors in one process (dup): each (pid, fd) is listed.
//! Timewait and request sockets have inode 0 and no owner.
//!
//! The scan sees the processes of this mount's `/proc` (the agent's pid
//! namespace). Processes that exit mid-scan, or whose files we may not read,
//! are skipped without error: ownership is best-effort by nature.
use std::collections::{HashMap, HashSet};
use std::io::Read;

use procfs::process::{FDTarget, Process};

use super::cgroup::parse_proc_cgroup;

/// One descriptor of a socket in one process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// Process id (thread group id).
    pub pid: u32,
    /// `/proc/<pid>/comm`: the thread group leader's name.
    pub comm: String,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces; empty for kernel
    /// threads and zombies.
    pub cmdline: String,
    /// The descriptor number in that process.
    pub fd: u32,
    /// The cgroup v2 path (the `0::` line of `/proc/<pid>/cgroup`), or empty
    /// when there is no unified hierarchy.
    pub cgroup: String,
    /// The 64-hex container id found in the cgroup path, if any (see
    /// [`container_id`](super::container_id)).
    pub container_id: Option<String>,
}

/// Map each socket inode in `inodes` to every (process, fd) holding it,
/// sorted by pid then fd. Inodes nobody holds are absent from the map.
pub fn owners_of(inodes: &HashSet<u64>) -> HashMap<u64, Vec<Owner>> {
    let mut found: HashMap<u64, Vec<Owner>> = HashMap::new();
    if inodes.is_empty() {
        return found;
    }
    let Ok(processes) = procfs::process::all_processes() else {
        return found;
    };
    let mut hits = Vec::new();
    // Errors are a process that vanished or that we may not read: skip it.
    for process in processes.flatten() {
        hits.clear();
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target
                && inodes.contains(&inode)
                && let Ok(fd) = u32::try_from(fd.fd)
            {
                hits.push((inode, fd));
            }
        }
        if hits.is_empty() {
            continue;
        }
        let Some(id) = Identity::read(&process) else {
            continue;
        };
        for &(inode, fd) in &hits {
            found.entry(inode).or_default().push(id.owner(fd));
        }
    }
    for owners in found.values_mut() {
        owners.sort_by_key(|o| (o.pid, o.fd));
    }
    found
}

/// The per-process part of an [`Owner`], read once per process with hits.
struct Identity {
    pid: u32,
    comm: String,
    cmdline: String,
    cgroup: String,
    container_id: Option<String>,
}

impl Identity {
    /// `None` when the process is gone (or unreadable) by now.
    fn read(process: &Process) -> Option<Identity> {
        let pid = u32::try_from(process.pid()).ok()?;
        let comm = read_relative(process, "comm")?
            .trim_end_matches('\n')
            .to_owned();
        let cmdline = process
            .cmdline()
            .map(|args| args.join(" "))
            .unwrap_or_default();
        let cgroups = read_relative(process, "cgroup").unwrap_or_default();
        let info = parse_proc_cgroup(&cgroups);
        Some(Identity {
            pid,
            comm,
            cmdline,
            cgroup: info.unified.unwrap_or_default().to_owned(),
            container_id: info.container_id.map(str::to_owned),
        })
    }

    fn owner(&self, fd: u32) -> Owner {
        Owner {
            pid: self.pid,
            comm: self.comm.clone(),
            cmdline: self.cmdline.clone(),
            fd,
            cgroup: self.cgroup.clone(),
            container_id: self.container_id.clone(),
        }
    }
}

/// Read a small file under `/proc/<pid>/`, relative to the process's
/// directory handle (so a recycled pid cannot answer for the old one).
fn read_relative(process: &Process, name: &str) -> Option<String> {
    let mut text = String::new();
    process
        .open_relative(name)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}
