//! The suite script: one `sh` script per kernel, written into the run
//! directory, that runs every selected check in one boot and leaves its
//! results beside itself.
//!
//! Files it writes in the run directory:
//! - `env.log`: kernel release, loopback, module loading, the tools found;
//! - `suite.start`: when the script started (seconds since the epoch), which
//!   tells how long the VM took to boot;
//! - `probe.status`, `probe.err`, `probe.seconds`: `tracer events --duration 2`
//!   as root, the first load of the kernel programs;
//! - `<check>.status` (an exit code, or `skipped`), `<check>.log` (the test
//!   binary's output with `--nocapture`), `<check>.seconds`;
//! - `suite.done` last, so a missing file means the VM died on the way.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use super::{binaries::Binaries, checks::Check, checks::STARTUP, matrix::Expect};

/// Seconds `tracer events --duration 2` may take, load included.
pub const PROBE_TIMEOUT_SECS: u32 = 120;

/// Exit status of `timeout` when the limit was hit (and after `-k`).
pub const TIMED_OUT: [i32; 2] = [124, 137];

/// The script for one kernel.
pub struct Script<'a> {
    /// Where it runs and leaves its results (shared with the guest).
    pub run_dir: &'a Path,
    /// The checks to run, in order.
    pub checks: &'a [Check],
    /// What tracer is expected to do on this kernel.
    pub expect: Expect,
    /// The executables.
    pub binaries: &'a Binaries,
}

impl Script<'_> {
    /// The script text.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut s = String::new();
        let dir = quote(self.run_dir);
        let tracer = quote(&self.binaries.tracer);
        let _ = writeln!(
            s,
            "#!/bin/sh\n# Written by `cargo xtask vmtest`; see docs/vmtest.md."
        );
        let _ = writeln!(s, "cd {dir} || exit 1");
        let _ = writeln!(
            s,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
        );
        let _ = writeln!(s, "export PATH");
        s.push_str(ENV_CHECKS);
        let _ = writeln!(
            s,
            "start=$(date +%s)\n\
             timeout -k 10 {PROBE_TIMEOUT_SECS} {tracer} events --duration 2 >/dev/null 2>probe.err </dev/null\n\
             echo $? >probe.status\n\
             echo $(( $(date +%s) - start )) >probe.seconds"
        );
        if self.expect == Expect::Refuses {
            // A refusal is the expected outcome: the host judges its sentence
            // (startup); nothing else can run on this kernel.
            let rest: Vec<&str> = self
                .checks
                .iter()
                .map(|c| c.name)
                .filter(|n| *n != STARTUP)
                .collect();
            let _ = writeln!(
                s,
                "if [ \"$(cat probe.status)\" != 0 ]; then\n  \
                 for c in {}; do echo skipped >$c.status; done\n  \
                 echo refused >suite.done\n  exit 0\nfi",
                if rest.is_empty() {
                    ":".to_string()
                } else {
                    rest.join(" ")
                }
            );
        }
        for c in self.checks {
            let bin = quote(self.binaries.test(c.binary)?);
            let tests: Vec<String> = c.tests.iter().map(|t| sh_word(t)).collect();
            let _ = writeln!(
                s,
                "echo \"== {name} ($(date +%T))\"\n\
                 start=$(date +%s)\n\
                 timeout -k 10 {t} {bin} --exact {tests} --include-ignored --test-threads=1 --nocapture \
                 >{name}.log 2>&1 </dev/null\n\
                 echo $? >{name}.status\n\
                 echo $(( $(date +%s) - start )) >{name}.seconds",
                name = c.name,
                t = c.timeout_secs,
                tests = tests.join(" "),
            );
        }
        let _ = writeln!(s, "echo done >suite.done");
        Ok(s)
    }

    /// Write it as `suite.sh` in the run directory; return its path.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        use anyhow::Context as _;
        let path = self.run_dir.join("suite.sh");
        std::fs::write(&path, self.render()?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// The file the script writes first, holding the time it started: a run
/// without it never reached the suite (the VM's boot died or hung).
pub const START_FILE: &str = "suite.start";

/// What the guest offers the tests, logged so a failure can be explained:
/// loopback must be up; veth and nf_tables are modules in the
/// distributions' kernels (built in, or not found in /lib/modules, on the
/// host: both fine). Its first line writes [`START_FILE`].
const ENV_CHECKS: &str = r#"date +%s >suite.start
{
  echo "kernel: $(uname -r)"
  ip link set lo up
  echo "loopback: $(ip -o link show lo | grep -q ',UP' && echo up || echo DOWN)"
  for m in veth nf_tables; do
    if modprobe "$m" 2>/dev/null; then echo "module $m: loaded"; else echo "module $m: not loaded (built in?)"; fi
  done
  for t in ip ss nft python3 setpriv timeout; do echo "$t: $(command -v $t || echo MISSING)"; done
  echo "btf: $(ls /sys/kernel/btf/vmlinux 2>&1)"
  echo "netns: $(ip netns add vmtest-probe 2>&1 && ip netns del vmtest-probe && echo ok)"
} >env.log 2>&1
"#;

/// A path as one shell word.
fn quote(p: &Path) -> String {
    sh_word(&p.to_string_lossy())
}

/// A string as one shell word (single-quoted unless plainly safe).
fn sh_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+=,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::vmtest::checks::CHECKS;

    fn binaries() -> Binaries {
        let tests: BTreeMap<String, PathBuf> = CHECKS
            .iter()
            .map(|c| {
                (
                    c.binary.to_string(),
                    PathBuf::from(format!("/t/{}-abc", c.binary)),
                )
            })
            .collect();
        Binaries {
            tests,
            tracer: PathBuf::from("/t/tracer"),
        }
    }

    #[test]
    fn every_check_runs_once_with_its_timeout_and_done_comes_last() {
        let b = binaries();
        let s = Script {
            run_dir: Path::new("/r/6.12"),
            checks: &CHECKS,
            expect: Expect::Works,
            binaries: &b,
        }
        .render()
        .unwrap();
        for c in CHECKS {
            assert_eq!(s.matches(&format!(">{}.status", c.name)).count(), 1, "{s}");
            assert!(s.contains(&format!("timeout -k 10 {} /t/", c.timeout_secs)));
        }
        assert!(s.contains("--exact ipv4_loopback_lifecycle ipv6_loopback_lifecycle"));
        assert!(s.trim_end().ends_with("echo done >suite.done"));
        assert!(!s.contains("skipped"));
    }

    #[test]
    fn a_refusing_kernel_skips_the_rest_after_a_failed_probe() {
        let b = binaries();
        let s = Script {
            run_dir: Path::new("/r/5.10"),
            checks: &CHECKS,
            expect: Expect::Refuses,
            binaries: &b,
        }
        .render()
        .unwrap();
        assert!(s.contains("for c in events shape gauges leak half_open netns; do echo skipped"));
    }

    #[test]
    fn the_script_first_writes_the_start_file() {
        assert!(ENV_CHECKS.starts_with(&format!("date +%s >{START_FILE}\n")));
    }

    #[test]
    fn words_are_quoted_for_sh() {
        assert_eq!(sh_word("a::b_c"), "a::b_c");
        assert_eq!(sh_word("it's"), r"'it'\''s'");
        assert_eq!(sh_word(""), "''");
    }
}
