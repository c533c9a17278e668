//! The outcome table: rows are checks, columns kernels, then each kernel's
//! details and every failure's reason. Printed, and written to
//! `target/vmtest/report.md`.
use std::{fmt::Write as _, path::PathBuf, time::Duration};

use super::{checks::Check, judge::Judged, judge::Outcome, matrix::Expect};

/// Everything known about one kernel's run.
#[derive(Debug)]
pub struct KernelRun {
    /// The matrix key (`6.12`).
    pub key: &'static str,
    /// What tracer was expected to do.
    pub expect: Expect,
    /// Why, in a few words.
    pub why: &'static str,
    /// How the suite ran: `VM (TCG)` or `host, directly`.
    pub how: &'static str,
    /// `uname -r` where the suite ran, when known.
    pub release: Option<String>,
    /// The kernel package, for VM runs.
    pub package: Option<String>,
    /// Wall-clock time, boot included (zero when it never started).
    pub elapsed: Duration,
    /// Seconds from starting the runner to the script's start (the boot).
    pub boot_secs: Option<u64>,
    /// Seconds `tracer events --duration 2` took, load included.
    pub probe_secs: Option<u64>,
    /// Seconds each check took, in check order (None: did not run).
    pub check_secs: Vec<Option<u64>>,
    /// The outcomes and notes.
    pub judged: Judged,
    /// Where its script, logs and console output are.
    pub run_dir: Option<PathBuf>,
}

impl KernelRun {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        !self
            .judged
            .outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Fail(_)))
    }
}

/// The report as Markdown.
pub fn render(checks: &[Check], runs: &[KernelRun]) -> String {
    let mut s = String::new();
    let _ = write!(s, "| check |");
    for r in runs {
        let _ = write!(s, " {} |", r.key);
    }
    let _ = write!(s, "\n|---|");
    for _ in runs {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    for (i, c) in checks.iter().enumerate() {
        let _ = write!(s, "| {} |", c.name);
        for r in runs {
            let cell = match r.judged.outcomes.get(i) {
                Some(Outcome::Pass(_)) => "pass",
                Some(Outcome::Fail(_)) => "FAIL",
                Some(Outcome::Skipped(_)) | None => "skipped",
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }

    s.push_str("\nKernels:\n");
    for r in runs {
        let what = match (&r.package, &r.release) {
            (Some(p), Some(rel)) => format!("{p} ({rel})"),
            (Some(p), None) => p.clone(),
            (None, Some(rel)) => rel.clone(),
            (None, None) => "unknown".to_string(),
        };
        let times: Vec<String> = [("boot", r.boot_secs), ("load", r.probe_secs)]
            .into_iter()
            .chain(
                checks
                    .iter()
                    .map(|c| c.name)
                    .zip(r.check_secs.iter().copied()),
            )
            .filter_map(|(name, t)| t.map(|t| format!("{name} {t}s")))
            .collect();
        let _ = write!(
            s,
            "- {}: {what}, {}, expect: {} ({}); {} in all",
            r.key,
            r.how,
            r.expect.word(),
            r.why,
            minutes(r.elapsed)
        );
        if !times.is_empty() {
            let _ = write!(s, " ({})", times.join(", "));
        }
        if let Some(d) = &r.run_dir {
            let _ = write!(s, "; logs in {}", d.display());
        }
        s.push('\n');
    }

    s.push_str("\nChecks:\n");
    for c in checks {
        let _ = writeln!(
            s,
            "- {}: {} ({}: {})",
            c.name,
            c.what,
            c.binary,
            c.tests.join(", ")
        );
    }

    let mut failures = String::new();
    let mut skipped = String::new();
    let mut notes = String::new();
    for r in runs {
        for n in &r.judged.notes {
            let _ = writeln!(notes, "- {}: {n}", r.key);
        }
        for (c, o) in checks.iter().zip(&r.judged.outcomes) {
            match o {
                Outcome::Fail(why) => {
                    let _ = writeln!(failures, "- {} / {}: {why}", r.key, c.name);
                }
                Outcome::Skipped(why) => {
                    let _ = writeln!(skipped, "- {} / {}: {why}", r.key, c.name);
                }
                Outcome::Pass(Some(how)) => {
                    let _ = writeln!(notes, "- {} / {}: {how}", r.key, c.name);
                }
                Outcome::Pass(None) => {}
            }
        }
    }
    for (title, body) in [
        ("Failures", failures),
        ("Skipped", skipped),
        ("Notes", notes),
    ] {
        if !body.is_empty() {
            let _ = write!(s, "\n{title}:\n{body}");
        }
    }
    s
}

/// `1m05s`, or `42s`.
pub fn minutes(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmtest::checks::CHECKS;

    fn run(key: &'static str, outcomes: Vec<Outcome>) -> KernelRun {
        KernelRun {
            key,
            expect: Expect::Works,
            why: "test",
            how: "VM (TCG)",
            release: Some("6.12.1".into()),
            package: None,
            elapsed: Duration::from_secs(125),
            boot_secs: Some(20),
            probe_secs: None,
            check_secs: vec![Some(3), None],
            judged: Judged {
                outcomes,
                notes: vec![],
            },
            run_dir: None,
        }
    }

    #[test]
    fn table_cells_and_reasons() {
        let checks = &CHECKS[..2];
        let runs = [
            run(
                "5.10",
                vec![
                    Outcome::Pass(Some("refused as documented".into())),
                    Outcome::Skipped("kernel refused (documented)".into()),
                ],
            ),
            run(
                "6.1",
                vec![Outcome::Fail("boom".into()), Outcome::Pass(None)],
            ),
        ];
        let s = render(checks, &runs);
        assert!(
            s.starts_with("| check | 5.10 | 6.1 |\n|---|---|---|\n"),
            "{s}"
        );
        assert!(s.contains("| startup | pass | FAIL |"), "{s}");
        assert!(s.contains("| events | skipped | pass |"), "{s}");
        assert!(s.contains("Failures:\n- 6.1 / startup: boom\n"), "{s}");
        assert!(
            s.contains("- 5.10 / events: kernel refused (documented)"),
            "{s}"
        );
        assert!(s.contains("2m05s in all (boot 20s, startup 3s)"), "{s}");
        assert!(!runs[1].ok() && runs[0].ok());
    }
}
