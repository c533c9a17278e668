//! Running the suite script: in a VM booted by virtme-ng under TCG, or
//! directly on the host, always under a watchdog.
//!
//! The runner (vng and the qemu it starts, or `sh` on the host) gets a
//! process group of its own; on timeout, on Ctrl-C or SIGTERM, the whole
//! group is killed, so no qemu outlives `cargo xtask vmtest`. Network
//! namespaces are made by the tests inside the guest and vanish with it.
use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicI32, Ordering::SeqCst},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::script::START_FILE;

/// Guest size: 2 vCPUs (the host has 2 cores) and room for the tests.
const CPUS: &str = "2";
const MEMORY: &str = "2G";

/// How the runner ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status; `None` when the watchdog killed it.
    pub status: Option<ExitStatus>,
    /// Wall-clock time, boot included.
    pub elapsed: Duration,
}

/// Where the suite runs.
pub enum Target<'a> {
    /// A VM booting `image` with virtme-ng (`vng`), the host's root
    /// filesystem read-only and the run directory writable.
    Vm {
        /// The `vng` executable.
        vng: &'a Path,
        /// The kernel image to boot.
        image: &'a Path,
    },
    /// This machine, as it is.
    Host,
}

/// Run `script` on `target` with its output in `console` and a limit of
/// `limit`; the script's results are files in `run_dir`. With `boot`, the
/// run is also killed when the script has not written `suite.start` that
/// long after the start: a guest whose boot hung (seen under TCG) is then
/// booted again at once instead of after the whole limit.
pub fn run(
    target: &Target<'_>,
    run_dir: &Path,
    script: &Path,
    console: &Path,
    limit: Duration,
    boot: Option<Duration>,
) -> anyhow::Result<Finished> {
    let mut cmd = command(target, run_dir, script);
    let log = File::create(console).with_context(|| format!("creating {}", console.display()))?;
    let log2 = log
        .try_clone()
        .with_context(|| format!("opening {}", console.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .current_dir(run_dir)
        .process_group(0);
    eprintln!(
        "xtask: $ {} (output in {})",
        describe(&cmd),
        console.display()
    );
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", describe(&cmd)))?;
    let pgid = i32::try_from(child.id()).context("pid out of range")?;
    GROUP.store(pgid, SeqCst);
    install_signal_handlers();
    let mut progress = Progress::new(run_dir);
    let status = loop {
        if let Some(s) = child.try_wait().context("waiting for the runner")? {
            break Some(s);
        }
        let elapsed = start.elapsed();
        let why = if elapsed > limit {
            Some(format!("no result after {}s", limit.as_secs()))
        } else if let Some(why) = progress.stuck(console, Instant::now()) {
            Some(why)
        } else {
            boot.filter(|&b| elapsed > b && !run_dir.join(START_FILE).exists())
                .map(|b| {
                    format!(
                        "the suite has not started {}s after boot began",
                        b.as_secs()
                    )
                })
        };
        if let Some(why) = why {
            eprintln!("xtask: {why}: killing the run (process group {pgid})");
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Whatever ended, nothing of the group may stay behind (qemu included).
    // SAFETY: kill(2) on the process group we created for this run.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    GROUP.store(0, SeqCst);
    Ok(Finished {
        status,
        elapsed: start.elapsed(),
    })
}

/// How long a guest whose kernel reported a lockup may go without
/// finishing a check before the run is given up: the slowest check takes
/// ~100 s under TCG, most a few seconds.
const LOCKED_UP_FOR: Duration = Duration::from_secs(120);

/// When a check last finished (a `*.status` file appeared), to tell a guest
/// that recovered from a lockup from one that stays locked.
struct Progress<'a> {
    run_dir: &'a Path,
    finished: usize,
    since: Instant,
    looked: Instant,
}

impl<'a> Progress<'a> {
    fn new(run_dir: &'a Path) -> Self {
        let now = Instant::now();
        Progress {
            run_dir,
            finished: 0,
            since: now,
            looked: now,
        }
    }

    /// Why to give the run up: the guest's kernel reported a lockup on
    /// `console` and no check has finished for [`LOCKED_UP_FOR`]. Looks
    /// every few seconds.
    fn stuck(&mut self, console: &Path, now: Instant) -> Option<String> {
        if now.saturating_duration_since(self.looked) < Duration::from_secs(5) {
            return None;
        }
        self.looked = now;
        let finished = std::fs::read_dir(self.run_dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".status"))
                    .count()
            })
            .unwrap_or(0);
        if finished != self.finished {
            (self.finished, self.since) = (finished, now);
            return None;
        }
        let quiet = now.saturating_duration_since(self.since);
        if quiet < LOCKED_UP_FOR {
            return None;
        }
        let text = std::fs::read_to_string(console).ok()?;
        let line = super::judge::lockup_line(&text)?;
        Some(format!(
            "the guest's kernel locked up ({line}) and no check has finished for {}s",
            quiet.as_secs()
        ))
    }
}

fn command(target: &Target<'_>, run_dir: &Path, script: &Path) -> Command {
    match target {
        Target::Vm { vng, image } => {
            let mut c = Command::new(vng);
            c.arg("--run")
                .arg(image)
                // Nested KVM here rejects `-cpu host`: emulate (TCG).
                .arg("--disable-kvm")
                .args(["--cpus", CPUS, "--memory", MEMORY])
                // No tty: --verbose shows the console, stdin is /dev/null.
                .arg("--verbose")
                // The guest's own /tmp is fresh; results go here.
                .arg(format!("--rwdir={}", run_dir.display()))
                .arg(format!("--cwd={}", run_dir.display()))
                .arg("--exec")
                .arg(format!("sh {}", script.display()));
            c
        }
        Target::Host => {
            let mut c = Command::new("sh");
            c.arg(script);
            c
        }
    }
}

fn describe(cmd: &Command) -> String {
    let mut v = vec![cmd.get_program().to_string_lossy().into_owned()];
    v.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    v.join(" ")
}

/// The process group of the run in progress (0: none).
static GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    const MSG: &[u8] = b"\nxtask: interrupted: the run and its VM are killed\n";
    let pgid = GROUP.load(SeqCst);
    if pgid > 0 {
        // SAFETY: kill(2) and write(2) are async-signal-safe; the group is ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
        }
    }
    // SAFETY: _exit(2) is async-signal-safe.
    unsafe { libc::_exit(128 + sig) };
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls async-signal-safe functions.
        unsafe { libc::signal(sig, handler) };
    }
}

/// The run directory of a kernel: `target/vmtest/runs/<key>`, emptied.
pub fn fresh_run_dir(cache: &Path, key: &str) -> anyhow::Result<PathBuf> {
    let dir = cache.join("runs").join(key);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty scratch directory for one test, and its script's path.
    fn scratch(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("vmtest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("suite.sh");
        (dir, script)
    }

    #[test]
    fn a_guest_that_locked_up_is_given_up_only_while_no_check_finishes() {
        let (dir, _) = scratch("lockup");
        let console = dir.join("console.log");
        std::fs::write(&console, "[ 1.0] rcu: Hierarchical RCU implementation.\n").unwrap();
        let t0 = Instant::now();
        let mut p = Progress::new(&dir);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Quiet for long, but no lockup on the console: a slow check.
        assert_eq!(p.stuck(&console, at(200)), None);
        std::fs::write(
            &console,
            "[ 108.8] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [t:315]\n",
        )
        .unwrap();
        // A lockup, and nothing finished for over LOCKED_UP_FOR: give up.
        let why = p.stuck(&console, at(210)).expect("given up");
        assert!(
            why.contains("soft lockup") && why.contains("for 20"),
            "{why}"
        );
        // A check that finishes since shows the guest recovered.
        std::fs::write(dir.join("half_open.status"), "0").unwrap();
        assert_eq!(p.stuck(&console, at(220)), None);
        assert_eq!(p.stuck(&console, at(300)), None);
        assert!(p.stuck(&console, at(345)).is_some());
        // Looks at most every 5 s.
        assert_eq!(p.stuck(&console, at(347)), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_suite_that_never_starts_is_killed_at_the_boot_limit() {
        let (dir, script) = scratch("boot");
        let console = dir.join("console.log");
        let limit = Duration::from_secs(30);
        let boot = Some(Duration::from_secs(1));
        std::fs::write(&script, "sleep 20\n").unwrap();
        let hung = run(&Target::Host, &dir, &script, &console, limit, boot).unwrap();
        assert!(hung.status.is_none(), "{hung:?}");
        assert!(hung.elapsed < Duration::from_secs(10), "{hung:?}");
        // One that starts keeps running past the boot limit.
        std::fs::write(&script, format!("date +%s >{START_FILE}\nsleep 3\n")).unwrap();
        let started = run(&Target::Host, &dir, &script, &console, limit, boot).unwrap();
        assert!(started.status.is_some_and(|s| s.success()), "{started:?}");
        assert!(started.elapsed >= Duration::from_secs(3), "{started:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_watchdog_kills_the_whole_group() {
        let (dir, script) = scratch("vm");
        // A grandchild that would outlive a plain kill of `sh`.
        std::fs::write(&script, "sleep 60 &\necho $! >grandchild.pid\nwait\n").unwrap();
        let f = run(
            &Target::Host,
            &dir,
            &script,
            &dir.join("console.log"),
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        assert!(f.status.is_none(), "{f:?}");
        assert!(f.elapsed < Duration::from_secs(10), "{f:?}");
        let pid = std::fs::read_to_string(dir.join("grandchild.pid")).unwrap();
        // Reaped by init or still a zombie at worst: never running. A
        // killed process takes a moment to die on a loaded machine.
        let dead = || {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
            (stat.is_empty() || stat.contains(") Z "))
                .then_some(())
                .ok_or(stat)
        };
        let mut state = dead();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while state.is_err() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
            state = dead();
        }
        assert!(state.is_ok(), "{state:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
