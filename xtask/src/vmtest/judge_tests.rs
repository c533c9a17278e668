//! Judging tables: files a suite script could leave, and what they mean.
use std::path::PathBuf;

use super::*;
use crate::vmtest::checks::CHECKS;

/// A scratch run directory holding `files`.
fn run_dir(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmtest-judge-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn check(name: &str) -> Check {
    *CHECKS.iter().find(|c| c.name == name).unwrap()
}

const REFUSAL: &str = "tracer: Linux 5.10.0-32-amd64 is too old: tracer needs Linux 5.12 or later, \
                       where BTF tracepoints may call bpf_get_socket_cookie\n";

#[test]
fn documented_refusal_passes_startup_and_skips_the_rest() {
    let dir = run_dir(
        "refused",
        &[
            ("probe.status", "2\n"),
            ("probe.err", REFUSAL),
            ("events.status", "skipped\n"),
            ("suite.done", "refused\n"),
        ],
    );
    let j = judge(
        &dir,
        &[check("startup"), check("events")],
        Expect::Refuses,
        false,
    );
    assert!(matches!(&j.outcomes[0], Outcome::Pass(Some(n)) if n.contains("Linux 5.12")));
    assert_eq!(
        j.outcomes[1],
        Outcome::Skipped("kernel refused (documented)".into())
    );
}

#[test]
fn an_undocumented_refusal_fails_every_check() {
    let dir = run_dir(
        "verifier",
        &[
            ("probe.status", "1\n"),
            (
                "probe.err",
                "Error: loading program\nunknown func bpf_get_socket_cookie#46\n",
            ),
            ("suite.done", "refused\n"),
        ],
    );
    let j = judge(
        &dir,
        &[check("startup"), check("leak")],
        Expect::Refuses,
        false,
    );
    for o in &j.outcomes {
        assert!(
            matches!(o, Outcome::Fail(r) if r.contains("exited 1") && r.contains("#46")),
            "{o:?}"
        );
    }
}

#[test]
fn passes_need_every_test_to_have_run() {
    let ok = "running 3 tests\ntest a ... ok\n\ntest result: ok. 3 passed; 0 failed; 0 ignored\n";
    let none = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored\n";
    let events = check("events");
    assert_eq!(check_outcome(&events, 0, ok), Outcome::Pass(None));
    assert!(matches!(check_outcome(&events, 0, none), Outcome::Fail(r) if r.contains("0 of 3")));
}

#[test]
fn a_failure_is_told_by_its_panic_message() {
    let log = "running 1 test\n\
               thread 'half_open::half_open_peer_vanished' (200) panicked at tracer/tests/leaks_net/half_open.rs:99:5:\n\
               assertion `left == right` failed: no half-open flag\n  left: 0\n right: 1\n\
               note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\
               test half_open::half_open_peer_vanished ... FAILED\n\n\
               test result: FAILED. 0 passed; 1 failed; 0 ignored\n";
    match check_outcome(&check("half_open"), 101, log) {
        Outcome::Fail(r) => {
            assert!(r.starts_with("half_open_peer_vanished: assertion"), "{r}");
            assert!(r.contains("left: 0 / right: 1"), "{r}");
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn several_failures_are_listed_one_a_line_without_libtest_bookkeeping() {
    let log = "running 2 tests\n\
               test a::one ... \n\
               thread 'a::one' (9) panicked at t.rs:1:1:\n\
               first broke\n\
               FAILED\n\
               test a::two ... \n\
               thread 'a::two' (10) panicked at t.rs:2:1:\n\
               second broke\n\
               FAILED\n\n\
               failures:\n\n\
               failures:\n    a::one\n    a::two\n\n\
               test result: FAILED. 0 passed; 2 failed; 0 ignored\n";
    assert_eq!(
        check_outcome(&check("events"), 101, log),
        Outcome::Fail("2 of 3 tests failed:\n  - one: first broke\n  - two: second broke".into())
    );
}

#[test]
fn timeouts_and_missing_results_say_so() {
    let t = check_outcome(&check("gauges"), 124, "running 1 test\nwaiting for ss\n");
    assert!(
        matches!(&t, Outcome::Fail(r) if r.starts_with("timed out after 240 s") && r.contains("waiting for ss")),
        "{t:?}"
    );

    let dir = run_dir(
        "crashed",
        &[
            ("probe.status", "0\n"),
            ("console.log", "[ 9.1] Kernel panic - not syncing\n"),
        ],
    );
    let j = judge(&dir, &[check("gauges")], Expect::Works, false);
    assert!(
        matches!(&j.outcomes[0], Outcome::Fail(r) if r.contains("VM stopped") && r.contains("Kernel panic")),
        "{:?}",
        j.outcomes
    );
}

#[test]
fn a_kernel_that_loads_against_expectation_runs_everything_and_says_so() {
    let dir = run_dir(
        "loaded",
        &[
            ("probe.status", "0\n"),
            ("leak.status", "0\n"),
            ("leak.log", "test result: ok. 1 passed; 0 failed\n"),
            ("suite.done", "done\n"),
        ],
    );
    let j = judge(&dir, &[check("leak")], Expect::Refuses, false);
    assert_eq!(j.outcomes, [Outcome::Pass(None)]);
    assert!(j.notes[0].contains("expected to refuse"), "{:?}", j.notes);
}

#[test]
fn a_load_failure_on_a_working_kernel_is_noted() {
    let dir = run_dir(
        "6.1",
        &[
            ("probe.status", "1\n"),
            (
                "probe.err",
                "tracer: error: combined stack size of 2 calls is 544. Too large\n",
            ),
            ("suite.done", "done\n"),
        ],
    );
    let j = judge(&dir, &[], Expect::Works, false);
    assert!(j.notes[0].contains("544. Too large"), "{:?}", j.notes);
}

#[test]
fn the_first_oops_names_a_boot_that_died() {
    let console = "[    3.21] sched_clock: Marking stable\n\
                   [    3.22] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n\
                   [    3.23] Kernel panic - not syncing: Fatal exception in interrupt\n";
    assert_eq!(
        panic_line(console),
        Some("Oops: int3: 0000 [#1] PREEMPT SMP NOPTI")
    );
    assert_eq!(panic_line("[ 1.0] all fine\n"), None);
}

#[test]
fn a_guest_lockup_is_found_on_its_console() {
    let soft = "[    2.9] virtme initramfs: done\n\
                [  108.8] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [half_open::half:315]\n\
                [  143.2] rcu: INFO: rcu_sched self-detected stall on CPU\n";
    assert_eq!(
        lockup_line(soft),
        Some("watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [half_open::half:315]")
    );
    let stall = "[   86.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n";
    assert_eq!(
        lockup_line(stall),
        Some("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:")
    );
    // RCU's boot messages and a plain panic are not lockups.
    let boot = "[    0.5] rcu: Hierarchical RCU implementation.\n\
                [    0.6] Kernel panic - not syncing: Attempted to kill init!\n";
    assert_eq!(lockup_line(boot), None);
}
