//! Duplicates, events out of order, and gaps in the path: the engine stays
//! sane and says what it saw.
use super::*;
use crate::tcp::TcpState::*;

fn life() -> Vec<Ev> {
    let mut v: Vec<Ev> = active_open(1, 0).into();
    v.push(ev(1).kind(Kind::Retransmit).at(ms(3)));
    v.extend(active_close(1, ms(10)));
    v
}

#[test]
fn exact_duplicates_are_ignored() {
    let mut once = H::new();
    once.run(life());
    let mut twice = H::new();
    for e in life() {
        twice.run([e, e]);
    }
    let state_events = life().iter().filter(|e| e.0.kind == Kind::State).count() as u64;
    // A duplicated retransmit is indistinguishable from a second one.
    let calls: Vec<_> = twice
        .o
        .0
        .iter()
        .filter(|o| !matches!(o, Obs::Retrans(_)))
        .copied()
        .collect();
    let want: Vec<_> = once
        .o
        .0
        .iter()
        .filter(|o| !matches!(o, Obs::Retrans(_)))
        .copied()
        .collect();
    assert_eq!(calls, want);
    assert_eq!(twice.e.stats().duplicates, state_events);
    assert_eq!(twice.e.stats().out_of_order, 0);
    assert_eq!(twice.path(1), once.path(1));
    assert_eq!(twice.e.counts_by_state(), once.e.counts_by_state());
}

#[test]
fn a_replayed_stream_changes_nothing() {
    let mut h = H::new();
    h.run(life().into_iter().filter(|e| e.0.kind == Kind::State));
    let before = h.take();
    assert!(!before.is_empty());
    let path = h.path(1);
    h.run(life().into_iter().filter(|e| e.0.kind == Kind::State));
    assert!(h.take().is_empty(), "old events report nothing");
    assert_eq!(h.path(1), path);
    assert_eq!(h.state(1), TimeWait);
}

#[test]
fn a_duplicate_of_the_closing_event_keeps_time_wait_after_confirmation() {
    let mut h = H::new();
    h.run(active_close(1, ms(10)));
    h.reconcile(&[tw(1, TimeWait, 59_000)], secs(2));
    h.take();
    h.run([active_close(1, ms(10))[2]]);
    assert!(h.take().is_empty());
    assert!(h.view(1).time_wait_confirmed());
    assert_eq!(h.e.stats().duplicates, 1);
}

#[test]
fn swapped_neighbours_never_move_the_state_back() {
    let mut h = H::new();
    h.run([ev(1).from(SynSent).to(Established).at(ms(1))]);
    h.run([
        ev(1).from(FinWait1).to(FinWait2).at(ms(11)),
        ev(1)
            .from(Established)
            .to(FinWait1)
            .at(ms(10))
            .by(50, "app"),
    ]);
    assert_eq!(h.state(1), FinWait2);
    let s = h.e.stats();
    assert_eq!((s.path_gap, s.out_of_order), (1, 1));
    let v = h.view(1);
    assert_eq!(
        v.closed_by(),
        Some(ClosedBy::Local),
        "the late event's facts are kept"
    );
    assert_eq!(v.owner().map(|o| o.pid), Some(50));
    h.run([ev(1).from(FinWait2).to(Close).at(ms(12))]);
    assert_eq!(h.state(1), TimeWait);
    assert_eq!(
        h.stays(),
        [(FinWait2, ms(1), false)],
        "no stay for the unseen part"
    );
}

#[test]
fn an_early_timestamp_that_follows_the_state_is_clamped() {
    let mut h = H::new();
    h.run([ev(1).from(Close).to(SynSent).at(ms(10))]);
    h.run([ev(1).from(SynSent).to(Established).at(ms(9))]);
    assert_eq!(h.state(1), Established);
    assert_eq!(h.view(1).state_since_ns(), ms(10), "since never moves back");
    assert_eq!(h.stays(), [(SynSent, 0, false)]);
    assert_eq!(h.e.stats().out_of_order, 1);
    h.run([ev(1).from(Established).to(CloseWait).at(ms(25))]);
    assert_eq!(h.stays()[1], (Established, ms(15), false));
}

#[test]
fn a_path_gap_follows_the_kernel() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.run([ev(1).from(CloseWait).to(LastAck).at(ms(50))]);
    assert_eq!(h.state(1), LastAck);
    assert_eq!(h.e.stats().path_gap, 1);
    assert_eq!(
        h.stays(),
        [(SynSent, ms(1), false)],
        "the established stay's end was not seen"
    );
    assert_eq!((h.n(Established), h.n(LastAck)), (0, 1));
}

#[test]
fn late_events_refine_an_adopted_socket() {
    let mut h = H::new();
    h.adopt(&[diag(1, Established)], secs(10));
    assert!(h.view(1).since_is_lower_bound());
    h.run([ev(1).from(SynSent).to(Established).at(secs(9))]);
    let v = h.view(1);
    assert!(!v.since_is_lower_bound());
    assert_eq!(v.state_since_ns(), secs(9));
    h.run([ev(1).from(Close).to(SynSent).at(ms(8900)).by(5, "curl")]);
    let v = h.view(1);
    assert!(v.birth_seen());
    assert_eq!(v.created_ns(), ms(8900));
    assert_eq!(v.owner().map(|o| o.pid), Some(5));
    assert_eq!(v.state(), Established);
    assert_eq!(h.e.stats().out_of_order, 2);
    assert!(
        h.take().is_empty(),
        "late events report no stays or transitions"
    );
    h.run([ev(1).from(Established).to(FinWait1).at(secs(12))]);
    assert_eq!(h.stays(), [(Established, secs(3), false)]);
}

#[test]
fn an_adopted_socket_reports_its_first_stay_as_a_lower_bound() {
    let mut h = H::new();
    h.adopt(&[diag(1, CloseWait)], secs(10));
    h.run([ev(1).from(CloseWait).to(LastAck).at(secs(25))]);
    assert_eq!(h.stays(), [(CloseWait, secs(15), true)]);
    h.run([ev(1).from(LastAck).to(Close).at(secs(26))]);
    assert_eq!(h.stays()[1], (LastAck, secs(1), false));
}

#[test]
fn zero_and_huge_timestamps_do_not_wrap() {
    let mut h = H::new();
    h.run([
        ev(1).from(Close).to(SynSent).at(u64::MAX - 5),
        ev(1).from(SynSent).to(Established).at(0),
        ev(1).from(Established).to(FinWait1).at(u64::MAX),
    ]);
    for (_, d, _) in h.stays() {
        assert!(d < 1_000_000_000_000_000);
    }
    assert_eq!(h.state(1), FinWait1);
}
