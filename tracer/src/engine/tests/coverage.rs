//! Two kinds of dumps (frequent without TIME_WAIT, full with it) and
//! TIME_WAIT ending by its 60 s timer rather than by a dump's absence.
use super::*;
use crate::engine::{TCP_TIMEWAIT_LEN_NS, TIME_WAIT_SLACK_NS};
use crate::tcp::TcpState::*;

/// Cookie 1 opened at 0 and actively closed at 1 s: TIME_WAIT from CLOSE.
const CLOSE: u64 = 1_020_000_000;

/// When cookie 1's timer fires.
const DEADLINE: u64 = CLOSE + TCP_TIMEWAIT_LEN_NS;

/// Cookie 1 in TIME_WAIT since `CLOSE`, confirmed by a full dump at 2 s.
fn confirmed() -> H {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.run(active_close(1, secs(1)));
    let rep = h.reconcile(&[tw(1, TimeWait, 59_020)], secs(2));
    assert_eq!(rep.time_wait_confirmed, 1);
    h.take();
    h
}

fn tw_ends(h: &H) -> Vec<TimeWaitEnd> {
    h.o.0
        .iter()
        .filter_map(|o| match *o {
            Obs::TwEnded(_, how) => Some(how),
            _ => None,
        })
        .collect()
}

/// Cookie 1 ended as `how` at `at` after a stay of `stay`, reported once.
fn assert_ended(h: &H, how: TimeWaitEnd, at: u64, stay: u64, name: &str) {
    assert_eq!(tw_ends(h), [how], "{name}: ended once");
    assert_eq!(
        h.stays(),
        [(TimeWait, stay, false)],
        "{name}: one TIME_WAIT stay"
    );
    let v = h.view(1);
    assert!(!v.is_live() && !v.in_time_wait(), "{name}");
    assert_eq!(v.time_wait_end(), Some(how), "{name}");
    assert_eq!(v.state_since_ns(), at, "{name}: end time");
    assert_eq!(h.n(TimeWait), 0, "{name}");
}

#[test]
fn the_timer_ends_a_confirmed_time_wait_at_exactly_60s() {
    // Whatever brings the clock past the deadline ends it there.
    type Step = fn(&mut H, u64);
    let cases: [(&str, Step); 5] = [
        ("frequent reconcile", |h, t| {
            h.frequent(&[], t);
        }),
        ("full reconcile, socket already gone", |h, t| {
            h.reconcile(&[], t);
        }),
        ("full reconcile, timer firing late", |h, t| {
            h.reconcile(&[tw(1, TimeWait, 0)], t);
        }),
        ("expire", |h, t| {
            h.expire(t);
        }),
        ("an unrelated event", |h, t| {
            h.run([ev(9).from(Close).to(Listen).at(t)]);
        }),
    ];
    for (name, step) in cases {
        let mut h = confirmed();
        // Frequent dumps every second up to just before the deadline.
        for t in 3..=61 {
            let rep = h.frequent(&[], secs(t));
            assert_eq!(rep, ReconcileReport::default(), "{name}: at {t} s");
        }
        assert!(h.view(1).in_time_wait(), "{name}");
        step(&mut h, DEADLINE + ms(400));
        h.o.0.retain(|o| !matches!(o, Obs::Trans(9, ..)));
        assert_ended(&h, TimeWaitEnd::Expired, DEADLINE, secs(60), name);
        // Later inputs of every kind report nothing more.
        h.reconcile(&[tw(1, TimeWait, 0)], secs(63));
        h.frequent(&[], secs(64));
        h.expire(secs(65));
        assert_eq!(tw_ends(&h), [TimeWaitEnd::Expired], "{name}: not twice");
    }
}

#[test]
fn a_reconcile_reports_the_timer_ends_it_runs() {
    let mut h = confirmed();
    let rep = h.frequent(&[], DEADLINE);
    assert_eq!(
        rep,
        ReconcileReport {
            time_wait_expired: 1,
            ..ReconcileReport::default()
        },
        "due at the deadline itself"
    );
}

#[test]
fn a_frequent_dump_does_not_judge_what_may_hide_in_time_wait() {
    // (name, events of cookie 1, confirming full dump at 2 s (if any), what
    // a full dump at 20 s without it concludes). An orphan gone well before
    // its timer is judged: `an_orphan_that_gets_its_fin_between_full_dumps`.
    struct Case {
        name: &'static str,
        events: Vec<Ev>,
        confirm: Option<SocketSnapshot>,
        full: fn(&ReconcileReport) -> bool,
    }
    let cases = [
        Case {
            name: "inferred TIME_WAIT",
            events: active_close(1, secs(1)).into(),
            confirm: None,
            full: |r| r.time_wait_never_appeared == 1,
        },
        Case {
            name: "confirmed TIME_WAIT",
            events: active_close(1, secs(1)).into(),
            confirm: Some(tw(1, TimeWait, 59_000)),
            full: |r| r.time_wait_killed == 1,
        },
        Case {
            // Its timer ends at 3 s (see below for one well before it).
            name: "confirmed orphaned FIN_WAIT2 past its timer (got its FIN, or expired)",
            events: active_close(1, secs(1)).into(),
            confirm: Some(tw(1, FinWait2, 1_000)),
            full: |r| r.orphan_fin_wait2_ended == 1,
        },
        Case {
            name: "full socket in FIN_WAIT2 (its close may be lost)",
            events: active_close(1, secs(1))[..2].into(),
            confirm: Some(diag(1, FinWait2)),
            full: |r| r.vanished == 1,
        },
        Case {
            name: "full socket in CLOSING",
            events: vec![ev(1).from(FinWait1).to(Closing).at(secs(1))],
            confirm: Some(diag(1, Closing)),
            full: |r| r.vanished == 1,
        },
    ];
    for c in cases {
        let mut h = H::new();
        h.run(c.events.iter().copied());
        if let Some(d) = c.confirm {
            h.reconcile(&[d], secs(2));
        }
        let state = h.state(1);
        h.take();
        for t in 3..20 {
            let rep = h.frequent(&[], secs(t));
            assert_eq!(rep, ReconcileReport::default(), "{}: at {t} s", c.name);
        }
        assert!(h.o.0.is_empty(), "{}: {:?}", c.name, h.o.0);
        assert!(h.view(1).is_live(), "{}", c.name);
        assert_eq!(h.state(1), state, "{}", c.name);
        let rep = h.reconcile_absent(&[], secs(20));
        assert!((c.full)(&rep), "{}: {rep:?}", c.name);
        if c.name.starts_with("confirmed orphaned") {
            // Ended at its timer, 17 s ago: retention may have dropped it.
            assert!(h.e.get(1).is_none_or(|v| !v.is_live()), "{}", c.name);
        } else {
            assert!(!h.view(1).is_live(), "{}", c.name);
        }
    }
}

#[test]
fn a_frequent_dump_judges_everything_else() {
    let mut h = H::new();
    h.run(active_open(1, 0)); // vanishes
    h.run(active_open(2, 0)); // shows up in CLOSE_WAIT
    h.run(active_close(3, 0)); // inferred TIME_WAIT, shows up as an orphan
    let dump = [
        diag(2, CloseWait),
        tw(3, FinWait2, 50_000),
        diag(4, Established),
    ];
    let first = h.frequent(&dump, secs(5));
    assert_eq!(first.vanished, 0, "1 is absent once");
    let second = h.frequent(&dump, secs(6));
    assert_eq!(
        (second.vanished, second.state_mismatch, second.missed),
        (1, 0, 0),
        "the second dump without 1 judges it; the others agree now"
    );
    let rep = ReconcileReport {
        vanished: second.vanished,
        ..first
    };
    assert_eq!(
        (
            rep.vanished,
            rep.state_mismatch,
            rep.missed,
            rep.time_wait_confirmed,
            rep.orphan_fin_wait2
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(h.state(3), FinWait2);
    assert!(h.view(3).time_wait_confirmed());
    assert_eq!(h.e.unconfirmed_time_wait(), 0);
}

#[test]
fn a_full_dump_without_a_confirmed_time_wait() {
    // (dump time, end, end time, stay, (killed, expired))
    let cases = [
        (
            CLOSE + secs(10),
            TimeWaitEnd::Reset,
            CLOSE + secs(10),
            secs(10),
            (1, 0),
        ),
        (
            DEADLINE - TIME_WAIT_SLACK_NS - 1,
            TimeWaitEnd::Reset,
            DEADLINE - TIME_WAIT_SLACK_NS - 1,
            secs(59) - 1,
            (1, 0),
        ),
        (
            DEADLINE - TIME_WAIT_SLACK_NS,
            TimeWaitEnd::Expired,
            DEADLINE,
            secs(60),
            (0, 1),
        ),
        (
            DEADLINE - ms(300),
            TimeWaitEnd::Expired,
            DEADLINE,
            secs(60),
            (0, 1),
        ),
        (
            DEADLINE + secs(4),
            TimeWaitEnd::Expired,
            DEADLINE,
            secs(60),
            (0, 1),
        ),
    ];
    for (now, how, at, stay, (killed, expired)) in cases {
        let name = format!("dump at {now} ns");
        let mut h = confirmed();
        let rep = h.reconcile_absent(&[], now);
        assert_eq!(
            (rep.time_wait_killed, rep.time_wait_expired),
            (killed, expired),
            "{name}"
        );
        assert_ended(&h, how, at, stay, &name);
        h.reconcile(&[], now + secs(1));
        h.frequent(&[], now + secs(2));
        h.expire(DEADLINE + secs(3));
        assert_eq!(tw_ends(&h), [how], "{name}: not twice");
    }
}

#[test]
fn dumped_timewait_sockets_of_ended_or_dropped_records_are_ignored() {
    let mut h = confirmed();
    // The kernel's timer runs late: the socket is still listed with 0 ms.
    let rep = h.reconcile(&[tw(1, TimeWait, 0)], DEADLINE + ms(500));
    assert_eq!((rep.missed, rep.ignored, rep.time_wait_expired), (0, 1, 1));
    assert!(!h.view(1).is_live(), "not revived");
    assert_eq!(h.count(|o| matches!(o, Obs::Corr(..))), 0);
    // Retention (5 s) drops the record; the socket is still listed.
    h.reconcile(&[tw(1, TimeWait, 0)], DEADLINE + secs(6));
    assert!(h.e.get(1).is_none(), "dropped");
    let rep = h.reconcile(&[tw(1, TimeWait, 0)], DEADLINE + secs(7));
    assert!(h.e.get(1).is_none(), "not re-adopted");
    assert_eq!((rep.missed, rep.ignored), (0, 1));
    assert_eq!(h.count(|o| matches!(o, Obs::Corr(..))), 0);
    assert_eq!(tw_ends(&h), [TimeWaitEnd::Expired]);
}

#[test]
fn untracked_timewait_sockets_near_their_end() {
    // (dump socket, adopted as missed)
    let cases = [
        (tw(5, TimeWait, 0), false),
        (tw(5, TimeWait, 1000), false),
        (tw(5, TimeWait, 1001), true),
        (tw(5, TimeWait, 30_000), true),
        (tw(5, FinWait2, 0), true),
    ];
    for (d, adopted) in cases {
        let mut h = H::new();
        let rep = h.reconcile(&[d], secs(100));
        assert_eq!(
            (rep.missed, rep.ignored),
            (u64::from(adopted), u64::from(!adopted)),
            "{d:?}"
        );
        assert_eq!(h.e.get(5).is_some(), adopted, "{d:?}");
    }
}

#[test]
fn adopted_time_wait_ends_at_its_own_expiry() {
    // Adopted at start (since 85 s), or found missed by a full dump (since
    // 100 - 60 + 30 = 70 s).
    for (start, since) in [(true, secs(85)), (false, secs(70))] {
        let mut h = H::new();
        if start {
            h.adopt(&[tw(1, TimeWait, 45_000)], secs(100));
        } else {
            h.reconcile(&[tw(1, TimeWait, 30_000)], secs(100));
        }
        assert_eq!(h.view(1).state_since_ns(), since);
        h.take();
        let deadline = since + secs(60);
        h.frequent(&[], deadline - 1);
        assert!(h.view(1).in_time_wait(), "start {start}");
        let rep = h.frequent(&[], deadline + ms(700));
        assert_eq!(rep.time_wait_expired, 1);
        assert_ended(&h, TimeWaitEnd::Expired, deadline, secs(60), "adopted");
    }
}

#[test]
fn an_orphan_that_gets_its_fin_between_full_dumps() {
    let mut h = confirmed_orphan();
    for t in 3..10 {
        h.frequent(&[tw(1, FinWait2, 61_000 - t * 1000)], secs(u64::from(t)));
    }
    // At 9.5 s the FIN arrives: TIME_WAIT, timer re-armed at 60 s. The
    // frequent dumps no longer list it; once is not enough (a dump can
    // skip a socket).
    let rep = h.frequent(&[], secs(10));
    assert_eq!(rep, ReconcileReport::default());
    assert_eq!(h.state(1), FinWait2);
    // Twice, well before its timer: in TIME_WAIT by 11 s at the latest.
    let rep = h.frequent(&[], secs(11));
    assert_eq!(
        rep,
        ReconcileReport {
            orphan_moved_on: 1,
            ..Default::default()
        }
    );
    assert_eq!(h.take(), [Obs::Stay(1, FinWait2, secs(11) - CLOSE, false)]);
    let v = h.view(1);
    assert!(v.in_time_wait() && !v.time_wait_confirmed());
    assert_eq!(
        (v.state(), v.state_since_ns(), v.since_is_lower_bound()),
        (TimeWait, secs(11), true)
    );
    assert_eq!(h.path(1)[5..], [Close, FinWait2, TimeWait]);
    assert_eq!((h.n(FinWait2), h.n(TimeWait)), (0, 1));
    assert_eq!(h.e.unconfirmed_time_wait(), 1);
    // Later frequent dumps do not list it and conclude nothing.
    assert_eq!(h.frequent(&[], ms(11_500)), ReconcileReport::default());
    // The full dump at 12 s shows it in TIME_WAIT with 57.5 s left: the
    // entry was at 9.5 s.
    let rep = h.reconcile(&[tw(1, TimeWait, 57_500)], secs(12));
    assert_eq!(rep.time_wait_confirmed, 1);
    assert!(h.take().is_empty());
    let v = h.view(1);
    assert_eq!(
        (v.state_since_ns(), v.since_is_lower_bound()),
        (ms(9500), false)
    );
    assert_eq!(h.e.unconfirmed_time_wait(), 0);
    h.frequent(&[], ms(69_499));
    assert!(h.view(1).in_time_wait());
    h.frequent(&[], secs(70));
    assert_ended(&h, TimeWaitEnd::Expired, ms(69_500), secs(60), "orphan");
}

#[test]
fn an_orphan_a_frequent_dump_skipped_once_stays_in_fin_wait2() {
    let mut h = confirmed_orphan();
    for (t, listed) in [(3, false), (4, true), (5, false), (6, true)] {
        let dump = if listed {
            vec![tw(1, FinWait2, 61_000 - t * 1000)]
        } else {
            vec![]
        };
        assert_eq!(
            h.frequent(&dump, secs(u64::from(t))),
            ReconcileReport::default(),
            "at {t} s"
        );
        assert_eq!(h.state(1), FinWait2, "at {t} s");
    }
    assert!(h.take().is_empty());
}

#[test]
fn an_orphan_gone_near_its_timer_is_left_to_the_full_dump() {
    // Its timer ends at 61 s; the frequent dumps within the slack of that
    // cannot tell its FIN from its expiry. The full dump can, and the stay
    // ends at the timer, when the kernel destroyed the socket.
    let mut h = confirmed_orphan();
    for t in [60_100, 60_500, 61_200] {
        assert_eq!(
            h.frequent(&[], ms(t)),
            ReconcileReport::default(),
            "at {t} ms"
        );
        assert_eq!(h.state(1), FinWait2);
    }
    let rep = h.reconcile(&[], secs(62));
    assert_eq!(rep.orphan_fin_wait2_ended, 1, "one full dump is enough");
    assert_eq!(h.take(), [Obs::Stay(1, FinWait2, secs(61) - CLOSE, false)]);
    assert_eq!(h.n(FinWait2), 0);
}

#[test]
fn an_adopted_orphan_moves_on_too() {
    let mut h = H::new();
    assert_eq!(h.adopt(&[tw(1, FinWait2, 30_000)], secs(1)), 1);
    h.frequent(&[tw(1, FinWait2, 29_000)], secs(2));
    h.frequent(&[], secs(3));
    let rep = h.frequent(&[], secs(4));
    assert_eq!(rep.orphan_moved_on, 1);
    assert_eq!(h.state(1), TimeWait);
    // Adopted at 1 s, so its FIN_WAIT2 stay is a lower bound... of at
    // most 3 s: the engine reports what it saw.
    assert_eq!(h.stays(), [(FinWait2, secs(3), false)]);
}

#[test]
fn a_moved_on_orphan_no_full_dump_shows_never_appeared() {
    // A reset killed it instead: the full dumps lack it.
    let mut h = confirmed_orphan();
    h.frequent(&[], secs(3));
    h.frequent(&[], secs(4));
    assert_eq!(h.state(1), TimeWait);
    let rep = h.reconcile_absent(&[], secs(6));
    assert_eq!(rep.time_wait_never_appeared, 1);
    assert!(!h.view(1).is_live());
    assert_eq!(h.n(TimeWait), 0);
}

/// Cookie 1 closed at `CLOSE`, shown as an orphaned FIN_WAIT2 at 2 s.
fn confirmed_orphan() -> H {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.run(active_close(1, secs(1)));
    h.reconcile(&[tw(1, FinWait2, 59_000)], secs(2));
    h.take();
    h
}

#[test]
fn unconfirmed_time_wait_is_counted_until_a_full_dump_judges_it() {
    let mut h = H::new();
    for c in 1..=4 {
        h.run(active_close(c, secs(1)));
    }
    assert_eq!(h.e.unconfirmed_time_wait(), 4);
    h.frequent(&[tw(3, FinWait2, 50_000)], secs(3));
    assert_eq!(h.e.unconfirmed_time_wait(), 3, "an orphan is confirmed");
    h.run(active_close(5, ms(3900)));
    // 1 confirmed, 2 never appeared, 3 orphan, 4 killed by a reset, 5 within
    // the grace.
    h.run([rst_rx(4).at(ms(3950))]);
    assert_eq!(h.e.unconfirmed_time_wait(), 3);
    h.reconcile_absent(&[tw(1, TimeWait, 58_000), tw(3, FinWait2, 49_000)], secs(4));
    assert_eq!(h.e.unconfirmed_time_wait(), 1);
    assert_eq!(h.n(TimeWait), 2);
    h.reconcile(&[tw(1, TimeWait, 57_000), tw(5, TimeWait, 59_900)], secs(5));
    assert_eq!(h.e.unconfirmed_time_wait(), 0);
}

#[test]
fn an_inferred_time_wait_no_full_dump_judged_ends_by_its_timer() {
    // Full dumps fail; frequent ones go on.
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.run(active_close(1, secs(1)));
    h.take();
    let rep = h.frequent(&[], DEADLINE + TIME_WAIT_SLACK_NS - 1);
    assert_eq!(rep, ReconcileReport::default());
    assert_eq!(h.e.unconfirmed_time_wait(), 1);
    let rep = h.frequent(&[], DEADLINE + TIME_WAIT_SLACK_NS);
    assert_eq!(
        (rep.time_wait_unconfirmed_expired, rep.time_wait_expired),
        (1, 0)
    );
    assert_ended(&h, TimeWaitEnd::Expired, DEADLINE, secs(60), "inferred");
    assert!(!h.view(1).time_wait_confirmed());
    assert_eq!(h.e.unconfirmed_time_wait(), 0);
}

#[test]
fn a_reset_after_the_timer_does_not_end_it_again() {
    let mut h = confirmed();
    h.run([rst_rx(1).at(DEADLINE + ms(100))]);
    assert_ended(&h, TimeWaitEnd::Expired, DEADLINE, secs(60), "reset");
}
