//! Network namespaces: the same 4-tuple in two namespaces is two
//! connections, a dump of some namespaces judges only theirs, and a
//! namespace that vanishes ends every socket in it.
use super::*;
use crate::tcp::TcpState::*;

const A: u32 = 4026532001;
const B: u32 = 4026532002;

fn in_ns(d: SocketSnapshot, netns: u32) -> SocketSnapshot {
    d.netns(netns)
}

#[test]
fn a_new_connection_reuses_time_wait_only_in_its_own_namespace() {
    let mut h = H::new();
    // Cookie 1 closes into TIME_WAIT in A; cookie 2, same 4-tuple, is born
    // in B: A's TIME_WAIT goes on.
    h.run([
        ev(1)
            .netns(A)
            .ports(80, 5000)
            .from(Established)
            .to(FinWait1)
            .at(secs(1)),
        ev(1)
            .netns(A)
            .ports(80, 5000)
            .from(FinWait1)
            .to(FinWait2)
            .at(secs(1) + 1),
        ev(1)
            .netns(A)
            .ports(80, 5000)
            .from(FinWait2)
            .to(Close)
            .at(secs(2)),
        ev(2)
            .netns(B)
            .ports(80, 5000)
            .from(Close)
            .to(SynSent)
            .at(secs(3)),
    ]);
    assert_eq!(h.view(1).state(), TimeWait);
    assert_eq!(h.view(1).netns(), A);
    assert_eq!(h.view(2).netns(), B);
    // The same tuple again in A does reuse it.
    h.run([ev(3)
        .netns(A)
        .ports(80, 5000)
        .from(Close)
        .to(SynSent)
        .at(secs(4))]);
    assert!(h.o.0.contains(&Obs::TwEnded(1, TimeWaitEnd::Reused)));
}

#[test]
fn a_dump_of_one_namespace_does_not_judge_another() {
    let mut h = H::new();
    h.run([
        ev(1).netns(A).from(Close).to(SynSent).at(secs(1)),
        ev(1).netns(A).from(SynSent).to(Established).at(secs(1) + 1),
        ev(2).netns(B).from(Close).to(SynSent).at(secs(1)),
        ev(2).netns(B).from(SynSent).to(Established).at(secs(1) + 1),
    ]);
    let dump = [in_ns(diag(1, Established), A)];
    let rep =
        h.e.reconcile_within(&dump, secs(5), Listing::Full, |n| n == A, &mut h.o, || {});
    h.check();
    assert_eq!(rep.vanished, 0, "B was not dumped: cookie 2 stays");
    assert!(h.view(2).is_live());
    for (at, vanished) in [(secs(6), 0), (secs(7), 1)] {
        let rep =
            h.e.reconcile_within(&[], at, Listing::Full, |n| n == B, &mut h.o, || {});
        h.check();
        assert_eq!(
            rep.vanished, vanished,
            "B dumped without cookie 2, at {at} ns"
        );
    }
    assert!(h.view(1).is_live());
}

#[test]
fn a_vanished_namespace_ends_its_sockets() {
    let mut h = H::new();
    h.run([
        ev(1).netns(A).from(Close).to(Listen).at(secs(1)),
        ev(2).netns(A).from(Established).to(FinWait1).at(secs(1)),
        ev(2).netns(A).from(FinWait1).to(FinWait2).at(secs(1) + 1),
        ev(2).netns(A).from(FinWait2).to(Close).at(secs(2)),
        ev(3).netns(B).from(Close).to(Listen).at(secs(1)),
    ]);
    let before = h.e.counts_by_state();
    assert_eq!(before[TimeWait.index()], 1);
    assert_eq!(h.e.end_netns(&[A], secs(10), &mut h.o), 2);
    h.check();
    assert!(!h.view(1).is_live() && !h.view(2).is_live());
    assert!(h.view(3).is_live(), "B is untouched");
    assert!(h.o.0.contains(&Obs::Corr(1, Correction::NetnsGone)));
    assert!(h.o.0.contains(&Obs::TwEnded(2, TimeWaitEnd::Reset)));
    let after = h.e.counts_by_state();
    assert_eq!(after[TimeWait.index()], 0);
    assert_eq!(after[Listen.index()], 1);
    assert_eq!(h.e.end_netns(&[A], secs(11), &mut h.o), 0, "nothing left");
    assert_eq!(
        h.e.end_netns(&[0], secs(11), &mut h.o),
        0,
        "unknown is never ended"
    );
    // Several at once, in one pass.
    assert_eq!(h.e.end_netns(&[B, B + 1], secs(12), &mut h.o), 1);
    h.check();
    assert!(!h.view(3).is_live());
    assert_eq!(h.e.counts_by_state().iter().sum::<u64>(), 0);
}
