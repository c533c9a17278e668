//! Which processes hold a socket: the `ss -p` scan of `/proc/<pid>/fd`.
//!
//! sock_diag gives a full socket's inode; every open descriptor of it is a
//! `/proc/<pid>/fd/<n>` link reading `socket:[<inode>]`. One socket can have
//! several owners (inherited across fork, passed over a unix socket) and
//! several descriptors in one process (dup): each (pid, fd) is listed.
//! Timewait and request sockets have inode 0 and no owner.
//!
//! The scan sees the processes of this mount's `/proc` (the agent's pid
//! namespace). Processes that exit mid-scan are skipped without error.
//! Processes whose descriptors we may not read (another user's, without
//! `CAP_DAC_READ_SEARCH` and `CAP_SYS_PTRACE`) are skipped too, but
//! counted: a socket with an inode and no owner found then has an owner we
//! could not see ([`OwnerScan::unknown`]), which is not the same as having
//! none (orphaned, timewait and request sockets, inode 0).
use std::collections::HashSet;
use std::io::Read;

use procfs::{
    ProcError,
    process::{FDTarget, Process},
};

use super::cgroup::parse_proc_cgroup;
use crate::snapshot::{FdOwner, OwnerScan};

/// One sentence on what cannot be named when this process lacks either of
/// the capabilities that read other processes' descriptors; `None` with
/// both. Said once at start by the commands that name leaks' owners.
pub fn naming_warning() -> Option<String> {
    use crate::bpf::preflight::{CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, effective_caps, holds};
    let caps = effective_caps();
    let missing: Vec<&str> = [
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
    ]
    .into_iter()
    .filter(|&(cap, _)| !holds(caps, cap))
    .map(|(_, name)| name)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "without {}, the processes and descriptors behind other users' (or more privileged \
             processes') sockets cannot be named: their leaks are flagged with owner unknown",
            missing.join(" and ")
        )
    })
}

/// Whether process `pid`'s descriptor `fd` is the socket `inode` now
/// (`/proc/<pid>/fd/<fd>` links to `socket:[inode]`).
pub fn holds_socket(pid: u32, fd: u32, inode: u64) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .is_ok_and(|l| l.as_os_str().as_encoded_bytes() == format!("socket:[{inode}]").as_bytes())
}

/// Whether no process of this host has `pid`: kill(2) with no signal says
/// ESRCH only then. (A `/proc` mounted with `hidepid` hides other users'
/// processes, which EPERM shows exist.)
pub fn no_process(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The socket inodes this process holds (its own connections: to an
/// agent it asks, say).
pub fn own_sockets() -> HashSet<u64> {
    let Ok(fds) = Process::myself().and_then(|me| me.fd()) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect()
}

/// Who listens on TCP `port` in this thread's network namespace, as
/// `pid 123 python3` (each process once, at most three), for a sentence
/// about a port taken; `None` when nothing is found (a dump refused, or
/// the owner's descriptors unreadable).
pub fn who_listens(port: u16) -> Option<String> {
    let mut dump = Vec::new();
    super::Dumper::new(super::DumpOptions {
        with_info: false,
        without_time_wait: true,
    })
    .ok()?
    .dump_into(&mut dump)
    .ok()?;
    let inodes: HashSet<u64> = dump
        .iter()
        .filter(|s| s.state == crate::tcp::TcpState::Listen && s.sport == port && s.inode != 0)
        .map(|s| s.inode)
        .collect();
    let scan = owners_of(&inodes);
    let mut who: Vec<(u32, String)> = inodes
        .iter()
        .filter_map(|i| scan.get(i))
        .flatten()
        .map(|o| (o.pid, o.comm.clone()))
        .collect();
    who.sort_unstable();
    who.dedup();
    (!who.is_empty()).then(|| {
        who.iter()
            .take(3)
            .map(|(pid, comm)| format!("pid {pid} {comm}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Find every (process, fd) holding each socket inode in `inodes`, and
/// count the processes whose descriptors could not be read.
pub fn owners_of(inodes: &HashSet<u64>) -> OwnerScan {
    let mut scan = OwnerScan::default();
    if inodes.is_empty() {
        return scan;
    }
    let Ok(processes) = procfs::process::all_processes() else {
        // No /proc at all: nothing could be read.
        scan.unreadable = 1;
        return scan;
    };
    let mut hits = Vec::new();
    // A process that vanished is skipped; one we may not read is counted.
    for process in processes.flatten() {
        hits.clear();
        let fds = match process.fd() {
            Ok(fds) => fds,
            Err(ProcError::PermissionDenied(_)) => {
                scan.unreadable += 1;
                continue;
            }
            Err(_) => continue,
        };
        let mut denied = false;
        let mut read = 0usize;
        for fd in fds {
            match fd {
                Ok(fd) => {
                    read += 1;
                    if let FDTarget::Socket(inode) = fd.target
                        && inodes.contains(&inode)
                        && let Ok(fd) = u32::try_from(fd.fd)
                    {
                        hits.push((inode, fd));
                    }
                }
                Err(ProcError::PermissionDenied(_)) => denied = true,
                Err(_) => {}
            }
        }
        // The fd directory may be listed (CAP_DAC_READ_SEARCH) while its
        // links may not be read (no CAP_SYS_PTRACE): procfs then skips
        // every entry silently. The exe link has the same ptrace check.
        if read == 0 && matches!(process.exe(), Err(ProcError::PermissionDenied(_))) {
            denied = true;
        }
        scan.unreadable += usize::from(denied);
        if hits.is_empty() {
            continue;
        }
        let Some(id) = Identity::read(&process) else {
            continue;
        };
        for &(inode, fd) in &hits {
            scan.owners.entry(inode).or_default().push(id.owner(fd));
        }
    }
    for owners in scan.owners.values_mut() {
        owners.sort_by_key(|o| (o.pid, o.fd));
    }
    scan
}

/// The per-process part of an [`FdOwner`], read once per process with hits.
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

    fn owner(&self, fd: u32) -> FdOwner {
        FdOwner {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_gone_only_when_no_process_has_its_pid() {
        assert!(!no_process(std::process::id()));
        // pid 1 is there whoever asks (EPERM for a user is no exit).
        assert!(!no_process(1));
        // Above the kernel's PID_MAX_LIMIT: no process has it.
        assert!(no_process(4_194_305));
    }

    #[test]
    fn this_process_finds_its_own_socket() {
        use std::os::fd::AsRawFd as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).expect("link");
        let inode: u64 = link
            .to_str()
            .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
            .expect("socket inode");
        let scan = owners_of(&HashSet::from([inode]));
        let mine = scan.get(&inode).expect("found");
        assert!(
            mine.iter()
                .any(|o| o.pid == std::process::id() && o.fd == l.as_raw_fd() as u32),
            "{mine:?}"
        );
        assert_eq!(scan.unknown(inode), None);
        assert!(own_sockets().contains(&inode));
        let port = l.local_addr().expect("addr").port();
        assert!(
            who_listens(port).is_some_and(|w| w.contains(&format!("pid {} ", std::process::id()))),
            "{:?}",
            who_listens(port)
        );
    }
}
