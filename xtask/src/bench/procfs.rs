//! What /proc says about a process and the machine: CPU ticks of one process
//! (all its threads, user + system), whole-machine busy time, resident memory.
use anyhow::Context as _;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (utime + stime) a process has used, all threads included.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The comm field may contain spaces and parentheses; fields resume after the last ')'.
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("parsing /proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let tick = |i: usize| -> anyhow::Result<f64> {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .with_context(|| format!("field {} of {path}", i + 3))
    };
    Ok((tick(11)? + tick(12)?) / clk_tck())
}

/// CPU seconds this process has used.
pub fn self_cpu_secs() -> anyhow::Result<f64> {
    cpu_secs(std::process::id())
}

/// A `VmHWM`/`VmRSS`-style line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Context switches (voluntary + involuntary) over all threads of `pid`:
/// roughly how often the agent was woken.
pub fn ctx_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut n = 0;
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some(n)
}

/// Whole-machine CPU time from the first line of /proc/stat, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// Time spent doing anything but idle and iowait, summed over CPUs.
    pub busy: f64,
    /// All time, summed over CPUs.
    pub total: f64,
}

impl MachineCpu {
    /// Read /proc/stat now.
    pub fn now() -> anyhow::Result<MachineCpu> {
        let s = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = s.lines().next().context("/proc/stat is empty")?;
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .take(8) // user nice system idle iowait irq softirq steal (guest is inside user)
            .filter_map(|x| x.parse::<u64>().ok().map(|n| n as f64))
            .collect();
        anyhow::ensure!(v.len() == 8, "unexpected /proc/stat line: {line}");
        let total: f64 = v.iter().sum();
        let idle = v[3] + v[4];
        Ok(MachineCpu {
            busy: (total - idle) / clk_tck(),
            total: total / clk_tck(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        assert!(self_cpu_secs().expect("own stat") >= 0.0);
        assert!(status_kib(std::process::id(), "VmHWM").expect("own VmHWM") > 0);
        assert!(ctx_switches(std::process::id()).is_some());
        let m = MachineCpu::now().expect("proc stat");
        assert!(m.total >= m.busy && m.busy > 0.0);
    }
}
