//! Judging a run: the files the suite script left, read against the
//! kernel's expectation, become one [`Outcome`] per check plus notes.
use std::path::Path;

use super::{
    checks::{Check, STARTUP},
    matrix::{Expect, REFUSAL_MARKERS, is_documented_refusal},
    script::TIMED_OUT,
};

/// The result of one check on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed; the note says how when that is not obvious.
    Pass(Option<String>),
    /// It failed, and why.
    Fail(String),
    /// It did not run, and why.
    Skipped(String),
}

/// Outcomes in check order, and notes about the kernel as a whole.
#[derive(Debug)]
pub struct Judged {
    /// One per selected check, in order.
    pub outcomes: Vec<Outcome>,
    /// Things worth knowing that are not a check's result.
    pub notes: Vec<String>,
}

/// Judge the run in `dir`. `killed` is true when the watchdog ended it.
pub fn judge(dir: &Path, checks: &[Check], expect: Expect, killed: bool) -> Judged {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let probe_status = read("probe.status").and_then(|s| s.trim().parse::<i32>().ok());
    let probe_err = read("probe.err").unwrap_or_default();
    let done = read("suite.done").is_some();
    let mut notes = Vec::new();
    let lost = || -> String {
        let why = if killed {
            "the run hit its time limit".to_string()
        } else if done {
            "the suite finished without it".to_string()
        } else {
            "the VM stopped before this check".to_string()
        };
        let console = read("console.log").unwrap_or_default();
        format!("no result: {why}; console ends: {}", tail(&console, 3))
    };

    let refused = expect == Expect::Refuses && probe_status.is_some_and(|s| s != 0);
    if refused {
        let documented = probe_status == Some(2) && is_documented_refusal(&probe_err);
        let outcomes = checks
            .iter()
            .map(|c| match (c.name == STARTUP, documented) {
                (true, true) => {
                    Outcome::Pass(Some(format!("refused as documented: {}", probe_err.trim())))
                }
                (true, false) | (false, false) => Outcome::Fail(format!(
                    "expected the documented refusal (exit status 2, one line with {}); \
                     `tracer events` exited {}: {}",
                    REFUSAL_MARKERS.join(" and "),
                    probe_status.unwrap_or(-1),
                    excerpt(&probe_err, 6)
                )),
                (false, true) => Outcome::Skipped("kernel refused (documented)".to_string()),
            })
            .collect();
        return Judged { outcomes, notes };
    }

    match (expect, probe_status) {
        (_, None) => notes.push(lost()),
        (Expect::Refuses, Some(0)) => notes.push(
            "expected to refuse, but tracer loaded, so every check ran; if that is right, \
             mark this kernel `Expect::Works` in xtask/src/vmtest/matrix.rs"
                .to_string(),
        ),
        (Expect::Works, Some(s)) if s != 0 => notes.push(format!(
            "`tracer events` as root exited {s}: {}",
            excerpt(&probe_err, 4)
        )),
        _ => {}
    }
    let outcomes = checks
        .iter()
        .map(|c| {
            let status = read(&format!("{}.status", c.name));
            let log = read(&format!("{}.log", c.name)).unwrap_or_default();
            match status.as_deref().map(str::trim) {
                None => Outcome::Fail(lost()),
                Some("skipped") => Outcome::Skipped("skipped by the suite".to_string()),
                Some(s) => check_outcome(c, s.parse().unwrap_or(-1), &log),
            }
        })
        .collect();
    Judged { outcomes, notes }
}

/// A check's outcome from its exit status and log.
fn check_outcome(c: &Check, code: i32, log: &str) -> Outcome {
    if TIMED_OUT.contains(&code) {
        return Outcome::Fail(format!(
            "timed out after {} s; log ends: {}",
            c.timeout_secs,
            tail(log, 4)
        ));
    }
    let want = c.tests.len();
    let passed = passed_count(log);
    if code == 0 {
        return if passed == Some(want) {
            Outcome::Pass(None)
        } else {
            Outcome::Fail(format!(
                "exit status 0 but {} of {want} tests passed: was a test renamed? \
                 (xtask/src/vmtest/checks.rs)",
                passed.unwrap_or(0)
            ))
        };
    }
    match panics(log).as_slice() {
        [] => Outcome::Fail(format!("exit status {code}; log ends: {}", tail(log, 5))),
        [one] => Outcome::Fail(one.clone()),
        many => Outcome::Fail(format!(
            "{} of {want} tests failed:\n  - {}",
            many.len(),
            many.join("\n  - ")
        )),
    }
}

/// N from libtest's `test result: ok. N passed; ...` (summed over lines).
fn passed_count(log: &str) -> Option<usize> {
    let counts: Vec<usize> = log
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// Each panic: `test: message` (the first lines of the message), from a
/// libtest log run with `--nocapture`.
fn panics(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        // `thread 'NAME' panicked at`, or `thread 'NAME' (TID) panicked at`.
        let Some(rest) = l.strip_prefix("thread '") else {
            continue;
        };
        let Some((test, after)) = rest.split_once('\'') else {
            continue;
        };
        let Some((_, at)) = after.split_once("panicked at ") else {
            continue;
        };
        // Newer Rust: the location ends the line and the message follows;
        // older: `at 'message', location`.
        let mut msg: Vec<&str> = Vec::new();
        if !at.trim_end().ends_with(':') {
            msg.push(at);
        }
        for m in &lines[i + 1..] {
            let end = [
                "note: ",
                "stack backtrace:",
                "test ",
                "thread '",
                "failures:",
            ]
            .iter()
            .any(|p| m.starts_with(p))
                || matches!(m.trim(), "FAILED" | "ok");
            if end {
                break;
            }
            msg.push(m);
        }
        let test = test.rsplit("::").next().unwrap_or(test);
        out.push(format!("{test}: {}", excerpt(&msg.join("\n"), 4)));
    }
    out
}

/// The kernel's first `Oops` or `Kernel panic` line on a console, without
/// its timestamp.
pub fn panic_line(console: &str) -> Option<&str> {
    messages(console)
        .find(|l| l.starts_with("Oops") || l.starts_with("Kernel panic") || l.starts_with("BUG:"))
}

/// The first line of `console` where the guest's kernel says it locked
/// up: a soft lockup, or an RCU stall.
pub fn lockup_line(console: &str) -> Option<&str> {
    messages(console)
        .find(|l| l.contains("soft lockup") || (l.starts_with("rcu:") && l.contains("stall")))
}

/// The console's lines without the kernel's `[ seconds]` stamps.
fn messages(console: &str) -> impl Iterator<Item = &str> {
    console
        .lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, rest)| rest).trim())
}

/// The first `n` non-blank lines of `text`, each cut short, joined by ` / `.
pub fn excerpt(text: &str, n: usize) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(n)
        .map(cut)
        .collect();
    if lines.is_empty() {
        "(nothing)".to_string()
    } else {
        lines.join(" / ")
    }
}

/// The last `n` meaningful lines of a log (libtest's bookkeeping left out).
fn tail(text: &str, n: usize) -> String {
    let boring = |l: &str| {
        l.is_empty()
            || l == "failures:"
            || l.starts_with("running ")
            || l.starts_with("test result:")
            || l.starts_with("note: run with")
    };
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !boring(l))
        .map(cut)
        .collect();
    if lines.is_empty() {
        return "(nothing)".to_string();
    }
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// One line, at most 240 characters.
fn cut(l: &str) -> String {
    const MAX: usize = 240;
    if l.chars().count() <= MAX {
        l.to_string()
    } else {
        format!("{}...", l.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
