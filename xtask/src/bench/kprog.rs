//! What each kernel program of a variant costs, from the kernel's own
//! accounting (`kernel.bpf_stats_enabled`): the sysctl guard that turns the
//! accounting on for the measurement and back off afterwards (also on
//! Ctrl-C), which programs belong to a process (`prog_id:` in
//! `/proc/<pid>/fdinfo/*`), and their `run_time_ns`/`run_cnt` before and
//! after the churn window (`bpftool prog show -j`).
use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU8, Ordering},
};

use anyhow::Context as _;

use crate::cmd;

/// The sysctl that makes the kernel count each program's runs and run time.
const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The same path for the signal handler, which may not allocate.
const SYSCTL_C: &std::ffi::CStr = c"/proc/sys/kernel/bpf_stats_enabled";
/// `RESTORE` when nothing is to be restored.
const NOTHING: u8 = 0;
/// The sysctl's value to write back on drop or on a fatal signal, as an
/// ASCII digit; `NOTHING` when no guard is active.
static RESTORE: AtomicU8 = AtomicU8::new(NOTHING);
/// The signals after which the previous value is written back.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Keeps `kernel.bpf_stats_enabled` at 1 while alive; writes the previous
/// value back when dropped, or when the process is stopped by SIGINT,
/// SIGTERM or SIGHUP (the handler restores it and re-raises the signal).
pub struct StatsGuard {
    old_actions: Vec<(libc::c_int, libc::sigaction)>,
}

impl StatsGuard {
    /// Turn the accounting on; fails if the sysctl cannot be read or written.
    pub fn enable() -> anyhow::Result<StatsGuard> {
        let prev = std::fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?;
        let prev = match prev.trim() {
            "0" => b'0',
            "1" => b'1',
            other => anyhow::bail!("unexpected {SYSCTL} value {other:?}"),
        };
        anyhow::ensure!(
            RESTORE
                .compare_exchange(NOTHING, prev, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok(),
            "a bpf_stats guard is already active"
        );
        let mut guard = StatsGuard {
            old_actions: Vec::new(),
        };
        for sig in SIGNALS {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
            // value; the handler only calls async-signal-safe functions.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) == 0 {
                    guard.old_actions.push((sig, old));
                }
            }
        }
        // From here on, dropping the guard restores `prev`.
        std::fs::write(SYSCTL, "1").with_context(|| format!("writing 1 to {SYSCTL}"))?;
        eprintln!(
            "xtask: kernel.bpf_stats_enabled = 1 for the measurement (was {})",
            prev as char
        );
        Ok(guard)
    }
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        if let Some(prev) = restore() {
            eprintln!("xtask: kernel.bpf_stats_enabled = {} again", prev as char);
        }
        for (sig, old) in &self.old_actions {
            // SAFETY: reinstalling the action saved in `enable`.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}

/// Write the saved value back, once; async-signal-safe (no allocation, only
/// open/write/close). Returns the value written.
fn restore() -> Option<u8> {
    let prev = RESTORE.swap(NOTHING, Ordering::SeqCst);
    if prev == NOTHING {
        return None;
    }
    // SAFETY: a valid NUL-terminated path and a one-byte buffer.
    unsafe {
        let fd = libc::open(SYSCTL_C.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, (&raw const prev).cast(), 1);
            libc::close(fd);
        }
    }
    Some(prev)
}

extern "C" fn on_signal(sig: libc::c_int) {
    restore();
    // SAFETY: back to the default action, then die of the same signal as
    // without the guard.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Whether `bpftool` can be run.
pub fn bpftool_available() -> bool {
    cmd::output("bpftool", &["version"]).is_some()
}

/// The ids of the kernel programs a process holds open (the `prog_id:` lines
/// of `/proc/<pid>/fdinfo/*`), sorted and without duplicates.
pub fn prog_ids(pid: u32) -> anyhow::Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // An fd closed since the listing is not an error.
        let text = std::fs::read_to_string(e?.path()).unwrap_or_default();
        ids.extend(parse_prog_id(&text));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The `prog_id:` of one fdinfo file, if the fd is a program.
fn parse_prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
}

/// One program's cumulative counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Prog {
    /// Kernel program id.
    pub id: u32,
    /// Name as bpftool shows it (the full name from BTF when there is one,
    /// else the kernel's 15 characters).
    pub name: String,
    /// Program type (`tracing`, `tracepoint`, ...).
    pub kind: String,
    /// Nanoseconds spent in the program since load, while stats were on.
    pub run_time_ns: u64,
    /// Runs since load, while stats were on.
    pub run_cnt: u64,
}

/// Parse `bpftool prog show -j` (an array) or `bpftool prog show id N -j`
/// (one object). bpftool leaves out `run_time_ns`/`run_cnt` while they are 0.
pub fn parse_bpftool(json: &str) -> anyhow::Result<Vec<Prog>> {
    let v: serde_json::Value = serde_json::from_str(json).context("parsing bpftool JSON")?;
    let items = match v {
        serde_json::Value::Array(a) => a,
        obj => vec![obj],
    };
    items
        .iter()
        .map(|p| {
            let num = |k: &str| p.get(k).and_then(serde_json::Value::as_u64);
            let text = |k: &str| p.get(k).and_then(|s| s.as_str()).unwrap_or("?").to_string();
            Ok(Prog {
                id: num("id")
                    .and_then(|i| u32::try_from(i).ok())
                    .context("bpftool program without an id")?,
                name: text("name"),
                kind: text("type"),
                run_time_ns: num("run_time_ns").unwrap_or(0),
                run_cnt: num("run_cnt").unwrap_or(0),
            })
        })
        .collect()
}

/// The counters of a process's programs at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    progs: BTreeMap<u32, Prog>,
}

impl Snapshot {
    /// Read the counters of every program `pid` holds.
    pub fn take(pid: u32) -> anyhow::Result<Snapshot> {
        let ids = prog_ids(pid)?;
        if ids.is_empty() {
            return Ok(Snapshot::default());
        }
        let json = cmd::output("bpftool", &["prog", "show", "-j"])
            .context("`bpftool prog show -j` failed (apt-get install -y bpftool)")?;
        let progs = parse_bpftool(&json)?
            .into_iter()
            .filter(|p| ids.binary_search(&p.id).is_ok())
            .map(|p| (p.id, p))
            .collect();
        Ok(Snapshot { progs })
    }

    /// What each program did between `before` and `self`, by program id.
    pub fn since(&self, before: &Snapshot) -> Vec<ProgCost> {
        self.progs
            .values()
            .filter_map(|p| {
                let b = before.progs.get(&p.id)?;
                Some(ProgCost {
                    name: p.name.clone(),
                    kind: p.kind.clone(),
                    run_time_ns: p.run_time_ns.saturating_sub(b.run_time_ns),
                    run_cnt: p.run_cnt.saturating_sub(b.run_cnt),
                })
            })
            .collect()
    }
}

/// What one program did during one churn window.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgCost {
    /// Name as bpftool shows it.
    pub name: String,
    /// Program type.
    pub kind: String,
    /// Δ`run_time_ns` over the window.
    pub run_time_ns: u64,
    /// Δ`run_cnt` over the window: the events it handled.
    pub run_cnt: u64,
}

/// Fewer runs than this in a window give no per-event figure.
pub const MIN_RUNS: u64 = 1000;

impl ProgCost {
    /// Nanoseconds per run, when it ran at least [`MIN_RUNS`] times.
    pub fn ns_per_event(&self) -> Option<f64> {
        (self.run_cnt >= MIN_RUNS).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// The program of a variant that ran most often in a window: for the
/// bpftrace variants, the one on the tracepoint (not BEGIN/END).
pub fn busiest(progs: &[ProgCost]) -> Option<&ProgCost> {
    progs.iter().max_by_key(|p| p.run_cnt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_prog_ids_in_fdinfo() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nprog_type:\t5\n\
                    prog_jited:\t1\nprog_tag:\tb11459a0e11ca14c\nmemlock:\t4096\nprog_id:\t442\n\
                    run_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(parse_prog_id(prog), Some(442));
        assert_eq!(parse_prog_id("pos:\t0\nflags:\t02\nmap_id:\t7\n"), None);
        assert!(prog_ids(std::process::id()).expect("own fdinfo").is_empty());
    }

    #[test]
    fn parses_bpftool_json_with_and_without_counters() {
        let json = r#"[{"id":442,"type":"tracepoint","name":"inet_sock_set_s","tag":"b1",
            "gpl_compatible":true,"run_time_ns":9100,"run_cnt":100},
            {"id":447,"type":"tracing","name":"inet_sock_set_state","map_ids":[323]}]"#;
        let p = parse_bpftool(json).expect("parses");
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].id, p[0].run_time_ns, p[0].run_cnt), (442, 9100, 100));
        assert_eq!(p[1].name, "inet_sock_set_state");
        assert_eq!((p[1].kind.as_str(), p[1].run_cnt), ("tracing", 0));
        let one = parse_bpftool(r#"{"id":5,"type":"kprobe","name":"x"}"#).expect("one");
        assert_eq!(one[0].id, 5);
        assert!(parse_bpftool("[{\"name\":\"no id\"}]").is_err());
    }

    #[test]
    fn per_event_cost_is_the_delta_ratio() {
        let at = |rt, rc| Snapshot {
            progs: [(
                7,
                Prog {
                    id: 7,
                    name: "p".into(),
                    kind: "tracing".into(),
                    run_time_ns: rt,
                    run_cnt: rc,
                },
            )]
            .into(),
        };
        let d = at(1_500_000, 12_000).since(&at(500_000, 2_000));
        assert_eq!((d[0].run_time_ns, d[0].run_cnt), (1_000_000, 10_000));
        assert_eq!(d[0].ns_per_event(), Some(100.0));
        let few = at(600_000, 2_500).since(&at(500_000, 2_000));
        assert_eq!(few[0].ns_per_event(), None);
        // A program that was not there before has no delta.
        assert!(at(1, 1).since(&Snapshot::default()).is_empty());
    }
}
