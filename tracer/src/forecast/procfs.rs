//! The few `/proc` reads the forecasts need, off the event path: a
//! process's open descriptors and soft `RLIMIT_NOFILE`.
use super::fd::{FdUsage, parse_limits};

/// `/proc/PID/fd` counted and `/proc/PID/limits` read; `None` when the
/// process is gone or unreadable (needs `CAP_DAC_READ_SEARCH` for other
/// users' processes).
pub fn fd_usage(pid: u32) -> Option<FdUsage> {
    let open = open_fds(pid)?;
    Some(FdUsage {
        open,
        limit: soft_limit(pid)?,
    })
}

/// Entries of `/proc/PID/fd`.
fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The soft "Max open files" of `/proc/PID/limits`: `Some(None)` when
/// unlimited.
fn soft_limit(pid: u32) -> Option<Option<u64>> {
    parse_limits(&std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

/// A process's usage when it is at its soft `RLIMIT_NOFILE` now, else
/// `None` (also when gone, unreadable or unlimited). Cheap for a process
/// far from its limit: its descriptor table's size (`FDSize` in
/// `/proc/PID/status`, at least its highest descriptor plus one) below the
/// limit means fewer open, and `/proc/PID/fd` is counted only past that.
pub fn at_limit(pid: u32) -> Option<FdUsage> {
    let limit = soft_limit(pid)??;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let table: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))?
        .trim()
        .parse()
        .ok()?;
    if table < limit {
        return None;
    }
    let open = open_fds(pid)?;
    (open >= limit).then_some(FdUsage {
        open,
        limit: Some(limit),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let u = super::fd_usage(std::process::id()).expect("own /proc");
        assert!(u.open >= 3, "stdin, stdout, stderr at least: {u:?}");
        assert!(u.limit.is_none_or(|l| l >= u.open));
    }

    /// A child whose limit is below what it holds open is at its limit;
    /// this process, with room, is not.
    #[test]
    fn a_process_at_its_limit_is_found_and_one_with_room_is_not() {
        assert_eq!(super::at_limit(std::process::id()), None);
        // sh holds 0, 1, 2 and 3 (a copy of 1) open under a limit of 4.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "ulimit -n 4; exec 3>&1; read x"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let pid = child.id();
        let mut found = None;
        for _ in 0..100 {
            found = super::at_limit(pid);
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(child.stdin.take());
        let _ = child.wait();
        let u = found.expect("at its limit");
        assert_eq!(u.limit, Some(4));
        assert!(u.open >= 4, "{u:?}");
    }
}
