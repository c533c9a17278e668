//! The few `/proc` reads the forecasts need, off the event path: a
//! process's open descriptors and soft `RLIMIT_NOFILE`.
use super::fd::{FdUsage, parse_limits};

/// `/proc/PID/fd` counted and `/proc/PID/limits` read; `None` when the
/// process is gone or unreadable (needs `CAP_DAC_READ_SEARCH` for other
/// users' processes).
pub fn fd_usage(pid: u32) -> Option<FdUsage> {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    Some(FdUsage {
        open,
        limit: parse_limits(&limits)?,
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
}
