//! `Ahead` and `Engine::prefetch`: events held back come out in order, and
//! prefetching changes nothing the engine reports.
use super::*;
use crate::engine::Ahead;
use crate::tcp::TcpState::*;

#[test]
fn ahead_hands_events_back_in_order_four_late_and_all_at_the_end() {
    let evs: Vec<SockEvent> = (1..=6u64)
        .map(|c| ev(c).from(Close).to(SynSent).at(ms(c)).0)
        .collect();
    let mut ahead = Ahead::default();
    let mut out = Vec::new();
    for e in &evs {
        out.extend(ahead.push(e));
    }
    assert_eq!(
        out,
        evs[..2],
        "the fifth and sixth push give back the first two"
    );
    while let Some(e) = ahead.pop() {
        out.push(e);
    }
    assert_eq!(out, evs);
    assert_eq!(ahead.pop(), None);
    // Fewer than four held: `pop` alone gives them back, in order.
    out.clear();
    for e in &evs[..2] {
        assert_eq!(ahead.push(e), None);
    }
    while let Some(e) = ahead.pop() {
        out.push(e);
    }
    assert_eq!(out, evs[..2]);
}

#[test]
fn applying_through_ahead_with_prefetch_ends_where_applying_directly_does() {
    // Whole client lives that reach TIME_WAIT and end there (the timers and
    // the drop of finished records prefetch too), some on a reused tuple.
    let mut evs = Vec::new();
    for c in 1..=300u64 {
        let t = secs(c / 3);
        let port = 40_000 + (c % 50) as u16;
        let steps = [
            (Close, SynSent),
            (SynSent, Established),
            (Established, FinWait1),
            (FinWait1, FinWait2),
            (FinWait2, Close),
        ];
        for (i, (from, to)) in steps.into_iter().enumerate() {
            evs.push(
                ev(c)
                    .from(from)
                    .to(to)
                    .at(t + ms(i as u64))
                    .ports(port, 80)
                    .0,
            );
        }
    }
    let mut direct = Engine::new(Config::default());
    for e in &evs {
        direct.apply(e, &mut ());
    }
    let mut ahead_engine = Engine::new(Config::default());
    let mut ahead = Ahead::default();
    for e in &evs {
        ahead_engine.prefetch(e);
        if let Some(due) = ahead.push(e) {
            ahead_engine.apply(&due, &mut ());
        }
    }
    while let Some(due) = ahead.pop() {
        ahead_engine.apply(&due, &mut ());
    }
    assert_eq!(ahead_engine.counts_by_state(), direct.counts_by_state());
    assert_eq!(ahead_engine.stats(), direct.stats());
    assert!(
        direct.stats().time_wait_reused > 0,
        "some tuples were reused"
    );
    assert!(
        direct.stats().expired > 0,
        "some finished records were dropped"
    );
}
