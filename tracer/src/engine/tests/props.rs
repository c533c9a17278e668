//! Property tests: random event streams (a few cookies, any states, time
//! jitter including backwards) with random reconciles (full or frequent)
//! never wrap a duration, never exceed the cap, and keep the counts exact;
//! duplicating every state event changes nothing the observer hears; no
//! TIME_WAIT stay exceeds 60 s.
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    /// (cookie, kind, from, to, time step in ms (may be negative), local port)
    Event(u64, Kind, TcpState, TcpState, i64, u16),
    /// (cookies in the dump with (state, timewait, expires_ms), time step in
    /// ms, covers TIME_WAIT)
    Reconcile(Vec<(u64, TcpState, bool, u32)>, i64, bool),
    Expire(i64),
}

fn state() -> impl Strategy<Value = TcpState> {
    prop::sample::select(TcpState::ALL.to_vec())
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![8 => Just(Kind::State), 1 => prop::sample::select(Kind::ALL.to_vec())]
}

/// Mostly forward, sometimes back a little.
fn step() -> impl Strategy<Value = i64> {
    prop_oneof![6 => 0i64..2000, 1 => -50i64..0, 1 => 0i64..120_000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (1u64..7, kind(), state(), state(), step(), 1u16..3).prop_map(|(c, k, f, t, dt, p)| Op::Event(c, k, f, t, dt, p)),
        2 => (prop::collection::vec((1u64..9, state(), any::<bool>(), 0u32..70_000), 0..6), step(), any::<bool>()).prop_map(|(d, dt, full)| Op::Reconcile(d, dt, full)),
        1 => step().prop_map(Op::Expire),
    ]
}

fn at(t: &mut u64, dt_ms: i64) -> u64 {
    *t = t.saturating_add_signed(dt_ms * 1_000_000);
    *t
}

fn event(c: u64, k: Kind, from: TcpState, to: TcpState, ts: u64, port: u16) -> Ev {
    let e = ev(c).kind(k).at(ts).ports(port, 80);
    match k {
        Kind::State => e.from(from).to(to),
        _ => e.to(to),
    }
}

/// The dump; a frequent one (`!full`) lists no timewait socket in TIME_WAIT.
fn dump(d: &[(u64, TcpState, bool, u32)], full: bool) -> Vec<SocketSnapshot> {
    d.iter()
        .filter(|&&(_, s, timewait, _)| full || !timewait || s == TcpState::FinWait2)
        .map(|&(c, s, timewait, exp)| {
            if timewait {
                tw(
                    c,
                    if s == TcpState::FinWait2 {
                        s
                    } else {
                        TcpState::TimeWait
                    },
                    exp,
                )
            } else {
                diag(c, s)
            }
        })
        .collect()
}

/// Run `ops` on `h`; when `dup`, every state event is applied twice.
fn drive(h: &mut H, ops: &[Op], dup: bool) {
    let mut t = secs(1000);
    for op in ops {
        match op {
            Op::Event(c, k, f, to, dt, p) => {
                let e = event(*c, *k, *f, *to, at(&mut t, *dt), *p);
                h.run([e]);
                if dup && *k == Kind::State {
                    h.run([e]);
                }
            }
            Op::Reconcile(d, dt, full) => {
                h.reconcile_with(&dump(d, *full), at(&mut t, *dt), *full);
            }
            Op::Expire(dt) => {
                h.expire(at(&mut t, *dt));
            }
        }
        assert!(h.e.tracked() <= h.e.config().max_sockets);
        let live = h.e.sockets().filter(|s| s.is_live()).count() as u64;
        assert_eq!(h.e.counts_by_state().iter().sum::<u64>(), live);
        for s in h.e.sockets() {
            assert!(s.path().count() <= crate::engine::PATH_LEN);
        }
        let unconfirmed =
            h.e.sockets()
                .filter(|s| {
                    s.in_time_wait() && s.state() == TcpState::TimeWait && !s.time_wait_confirmed()
                })
                .count() as u64;
        assert_eq!(h.e.unconfirmed_time_wait(), unconfirmed);
        for o in &h.o.0 {
            // (A lower bound comes from a dump's full socket claiming
            // TIME_WAIT, which the kernel never reports.)
            if let Obs::Stay(_, TcpState::TimeWait, d, false) = *o {
                assert!(
                    d <= crate::engine::TCP_TIMEWAIT_LEN_NS,
                    "TIME_WAIT stay {d}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Keep regression seeds next to this file (tests/props.regressions).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_on_random_streams(ops in prop::collection::vec(op(), 1..120), cap in 1usize..8) {
        let mut h = H::with(Config { max_sockets: cap, retention_ns: secs(2), ..Config::default() });
        // The recorder fails on any duration >= 1e15 ns; H checks the store
        // and a naive recount of counts_by_state after every step.
        drive(&mut h, &ops, false);
        let s = h.e.stats();
        prop_assert_eq!(s.evictions, h.count(|o| matches!(o, Obs::Evicted(..))) as u64);
        prop_assert_eq!(s.tracked, h.e.tracked());
    }

    #[test]
    fn duplicating_every_state_event_changes_nothing(ops in prop::collection::vec(op(), 1..80)) {
        duplicates_change_nothing(&ops);
    }
}

/// Run `ops` once plainly and once with every state event doubled: the
/// observer hears the same, and the records end the same. Returns the
/// plain run.
fn duplicates_change_nothing(ops: &[Op]) -> H {
    let mut once = H::new();
    drive(&mut once, ops, false);
    let mut twice = H::new();
    drive(&mut twice, ops, true);
    assert_eq!(once.o.0, twice.o.0);
    assert_eq!(once.e.counts_by_state(), twice.e.counts_by_state());
    let records = |h: &H| {
        let mut v: Vec<_> =
            h.e.sockets()
                .map(|s| {
                    (
                        s.cookie(),
                        s.state(),
                        s.state_since_ns(),
                        s.path().collect::<Vec<_>>(),
                    )
                })
                .collect();
        v.sort_by_key(|x| x.0);
        v
    };
    assert_eq!(records(&once), records(&twice));
    once
}

/// Found by the property above: an inferred TIME_WAIT ends at its deadline
/// when its timer fires seconds later, so it joins the finished queue
/// behind records that finished after that deadline. A reconnect on the
/// record ahead of it then bares it, already due: the event must drop it
/// at once, or its duplicate would, and the next dump would judge the
/// socket differently.
#[test]
fn a_reconnect_that_bares_a_due_record_drops_it_at_once() {
    use TcpState::*;
    let ops = [
        Op::Event(1, Kind::State, Closing, TimeWait, 0, 1),
        Op::Reconcile(vec![], 1775, false),
        Op::Event(3, Kind::State, Established, Close, 58419, 2),
        Op::Event(4, Kind::State, Established, Established, 1111, 1),
        Op::Event(1, Kind::State, NewSynRecv, NewSynRecv, 1548, 1),
        Op::Event(2, Kind::State, Established, Established, 256, 1),
        Op::Event(4, Kind::State, Established, Established, 435, 1),
        Op::Event(1, Kind::Retransmit, Established, Established, 526, 1),
        Op::Event(3, Kind::State, Established, SynSent, 930, 1),
        Op::Reconcile(vec![(1, Established, false, 0)], 0, false),
    ];
    let h = duplicates_change_nothing(&ops);
    // Cookie 1's record (finished at 1060 s) was dropped by the reconnect
    // at 1065 s, so the dump finds its socket new.
    assert!(
        h.o.0.contains(&Obs::Corr(1, Correction::Missed)),
        "{:?}",
        h.o.0
    );
}
