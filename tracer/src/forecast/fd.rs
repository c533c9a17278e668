//! File descriptor exhaustion: every CLOSE_WAIT socket a process leaks
//! holds one descriptor, so a leak growing at `g` sockets a minute brings
//! the process to its soft `RLIMIT_NOFILE` in `(limit - open) / g`
//! minutes; after that `accept()`, `open()` and `socket()` fail with
//! EMFILE. Pure: the numbers come from `/proc` ([`super::procfs`]) and the
//! leak roll-up.
use serde::{Deserialize, Serialize};

/// A process's descriptors, as `/proc/PID/fd` and `/proc/PID/limits` show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdUsage {
    /// Open descriptors (entries of `/proc/PID/fd`).
    pub open: u64,
    /// Soft `RLIMIT_NOFILE` ("Max open files"); `None`: unlimited.
    pub limit: Option<u64>,
}

/// Seconds until `usage` reaches its limit at `growth_per_minute`
/// descriptors a minute; 0 when it already has. `None` when the leak is not
/// growing (no rate, zero or negative) or there is no limit.
pub fn seconds_left(usage: FdUsage, growth_per_minute: Option<f64>) -> Option<f64> {
    let limit = usage.limit?;
    let left = limit.saturating_sub(usage.open);
    if left == 0 {
        return Some(0.0);
    }
    let per_second = growth_per_minute.filter(|g| g.is_finite() && *g > 0.0)? / 60.0;
    Some(left as f64 / per_second)
}

/// One process's forecast, as the leaks report and the metrics show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FdForecast {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// CLOSE_WAIT leaks it holds.
    pub close_wait: u32,
    /// Open descriptors now.
    pub open_fds: u64,
    /// Soft `RLIMIT_NOFILE`; `None`: unlimited.
    pub fd_limit: Option<u64>,
    /// CLOSE_WAIT growth, sockets per minute (`None`: no rate yet, or a snapshot).
    pub growth_per_minute: Option<f64>,
    /// Seconds until `open_fds` reaches `fd_limit` at that growth; `None`
    /// when not growing or unlimited.
    pub seconds_left: Option<f64>,
}

impl FdForecast {
    /// The forecast for a process with `usage`, `close_wait` leaks and `growth`.
    pub fn new(
        pid: u32,
        comm: &str,
        close_wait: u32,
        usage: FdUsage,
        growth_per_minute: Option<f64>,
    ) -> FdForecast {
        FdForecast {
            pid,
            comm: comm.to_owned(),
            close_wait,
            open_fds: usage.open,
            fd_limit: usage.limit,
            growth_per_minute,
            seconds_left: seconds_left(usage, growth_per_minute),
        }
    }
}

/// The soft "Max open files" limit of a `/proc/PID/limits` text:
/// `Some(None)` for "unlimited", `None` when the line is missing or garbled.
pub fn parse_limits(text: &str) -> Option<Option<u64>> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(open: u64, limit: u64) -> FdUsage {
        FdUsage {
            open,
            limit: Some(limit),
        }
    }

    #[test]
    fn no_growth_no_forecast() {
        assert_eq!(seconds_left(usage(120, 1024), None), None);
        assert_eq!(seconds_left(usage(120, 1024), Some(0.0)), None);
        assert_eq!(seconds_left(usage(120, 1024), Some(-3.0)), None);
        assert_eq!(seconds_left(usage(120, 1024), Some(f64::NAN)), None);
    }

    #[test]
    fn growth_gives_exact_seconds() {
        // 904 descriptors left at 10 a minute: 90.4 minutes.
        assert_eq!(seconds_left(usage(120, 1024), Some(10.0)), Some(5424.0));
        // 2 a second.
        assert_eq!(seconds_left(usage(64, 128), Some(120.0)), Some(32.0));
    }

    #[test]
    fn at_or_over_the_limit_is_now_and_unlimited_is_never() {
        assert_eq!(seconds_left(usage(1024, 1024), None), Some(0.0));
        assert_eq!(seconds_left(usage(2000, 1024), Some(5.0)), Some(0.0));
        let unlimited = FdUsage {
            open: 10,
            limit: None,
        };
        assert_eq!(seconds_left(unlimited, Some(60.0)), None);
    }

    #[test]
    fn reads_the_soft_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            64                   4096                 files     \n";
        assert_eq!(parse_limits(text), Some(Some(64)));
        let unl = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_limits(unl), Some(None));
        assert_eq!(parse_limits("Max processes 10 10 processes\n"), None);
    }

    #[test]
    fn a_forecast_carries_its_inputs() {
        let f = FdForecast::new(4242, "api", 100, usage(120, 1024), Some(10.0));
        assert_eq!(f.seconds_left, Some(5424.0));
        assert_eq!(
            (f.open_fds, f.fd_limit, f.close_wait),
            (120, Some(1024), 100)
        );
    }
}
