//! Dumps: adopting sockets older than the agent, and reconcile corrections
//! (missed, vanished, state mismatch) with the grace rule; retention.
use super::*;
use crate::tcp::TcpState::*;

#[test]
fn adopt_a_start_dump() {
    let mut h = H::new();
    let dump = [
        tw(1, TimeWait, 45_000),
        diag(2, Established),
        diag(3, CloseWait),
        diag(4, Listen),
        tw(5, FinWait2, 30_000),
        diag(6, NewSynRecv),
        diag(7, BoundInactive),
        diag(8, Close),
    ];
    assert_eq!(h.adopt(&dump, secs(100)), 5);
    // (cookie, state, since, lower bound, closed_by, in_time_wait)
    let want = [
        (1, TimeWait, secs(85), false, Some(ClosedBy::Local), true),
        (2, Established, secs(100), true, None, false),
        (3, CloseWait, secs(100), true, Some(ClosedBy::Remote), false),
        (4, Listen, secs(100), true, None, false),
        (5, FinWait2, secs(100), true, Some(ClosedBy::Local), true),
    ];
    for (c, state, since, lb, by, in_tw) in want {
        let v = h.view(c);
        assert_eq!(
            (
                v.state(),
                v.state_since_ns(),
                v.since_is_lower_bound(),
                v.closed_by(),
                v.in_time_wait()
            ),
            (state, since, lb, by, in_tw),
            "cookie {c}"
        );
        assert!(!v.birth_seen());
        assert_eq!(v.time_wait_confirmed(), in_tw);
    }
    for c in [6, 7, 8] {
        assert!(h.e.get(c).is_none(), "state of {c} is not tracked");
    }
    assert_eq!((h.n(TimeWait), h.n(FinWait2), h.n(Established)), (1, 1, 1));
    assert_eq!(h.e.stats().live, 5);
    // The adopted TIME_WAIT's stay is exact: 60 s from its computed entry.
    // The orphan's ends at its timer (130 s), not at the dump without it.
    h.reconcile_absent(&dump[1..4], secs(145));
    assert!(h.o.0.contains(&Obs::Stay(1, TimeWait, secs(60), false)));
    assert!(h.o.0.contains(&Obs::Stay(5, FinWait2, secs(30), true)));
}

/// A CLOSE_WAIT socket older than the agent: the peer's FIN came with its
/// last ACK or before it, so its stay is at least `tcpi_last_ack_recv` old
/// (the API's age agrees with the leak report's).
#[test]
fn an_adopted_close_wait_is_at_least_as_old_as_the_peers_last_ack() {
    use crate::snapshot::TcpInfo;
    let mut h = H::new();
    let info = TcpInfo {
        last_ack_recv_ms: 50_000,
        ..TcpInfo::default()
    };
    let dump = [
        diag(1, CloseWait).info(info),
        diag(2, Established).info(info),
    ];
    assert_eq!(h.adopt(&dump, secs(100)), 2);
    assert_eq!(h.e.state_since(1, CloseWait), Some((secs(50), true)));
    assert_eq!(h.e.state_since(2, Established), Some((secs(100), true)));
    // A record the dump finds moved on to CLOSE_WAIT unseen: no earlier
    // than its last known state began.
    h.run(active_open(3, secs(80)));
    let moved = [diag(3, CloseWait).info(info)];
    h.e.reconcile_within(&moved, secs(100), Listing::Live, |_| true, &mut h.o, || {});
    assert_eq!(
        h.e.state_since(3, CloseWait),
        Some((secs(80) + ms(1), true))
    );
}

/// Sockets bound to an interface (`idiag_if`: SO_BINDTODEVICE, a VRF, an
/// IPv6 link-local address) are found by a lookup only when it names the
/// interface, which the events do not carry: they are left to walks.
#[test]
fn bound_and_link_local_sockets_are_not_looked_up() {
    use std::net::{IpAddr, Ipv6Addr};
    let mut h = H::new();
    let mut bound = diag(1, Established);
    bound.ifindex = 3;
    let ll: IpAddr = "fe80::1".parse::<Ipv6Addr>().unwrap().into();
    let mut link_local = diag(2, Established)
        .local(ll, 7103)
        .peer("fe80::2".parse::<Ipv6Addr>().unwrap().into(), 40000);
    link_local.family = crate::tcp::Family::Ipv6;
    let plain = diag(3, Established);
    h.adopt(&[bound, link_local, plain], secs(1));
    let mut lookups = Vec::new();
    assert!(h.e.lookups(secs(2), &mut lookups));
    let named: Vec<u64> = lookups.iter().map(|(_, p)| p.cookie).collect();
    assert_eq!(named, [3]);
    // A looked-up reconcile that found only 3 judges neither of the others.
    for at in [secs(3), secs(4)] {
        h.e.reconcile_within(&[plain], at, Listing::LookedUp, |_| true, &mut h.o, || {});
    }
    assert!(h.e.get(1).is_some_and(|v| v.is_live()));
    assert!(h.e.get(2).is_some_and(|v| v.is_live()));
}

#[test]
fn adopt_leaves_tracked_sockets_alone() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    assert_eq!(h.adopt(&[diag(1, CloseWait)], secs(1)), 0);
    assert_eq!(h.state(1), Established);
}

#[test]
fn adopt_does_not_bring_back_a_socket_the_events_ended_during_the_dump() {
    // A reconcile's first dump of a namespace read 9 in CLOSE_WAIT; before
    // adopting that namespace the loop applied the events up to the dump's
    // end, 9's close among them.
    let mut h = H::new();
    h.run([
        ev(9).from(CloseWait).to(LastAck).at(secs(100) + ms(5)),
        ev(9).from(LastAck).to(Close).at(secs(100) + ms(6)),
    ]);
    assert_eq!(
        h.adopt(&[diag(9, CloseWait), diag(10, CloseWait)], secs(100)),
        1
    );
    assert!(!h.view(9).is_live());
    assert_eq!(h.state(10), CloseWait);
    assert_eq!((h.n(CloseWait), h.n(LastAck), h.e.stats().live), (1, 0, 1));
}

#[test]
fn adopt_within_pauses_between_slices_and_adopts_what_adopt_does() {
    use crate::engine::reconcile::PAUSE_EVERY;
    let dump: Vec<_> = (1..=3 * PAUSE_EVERY as u64 + 5)
        .map(|c| diag(c, Established))
        .collect();
    let mut h = H::new();
    let mut pauses = 0;
    let n = h.e.adopt_within(&dump, secs(1), || pauses += 1);
    h.check();
    assert_eq!((n, pauses), (dump.len(), 3));
    let mut whole = H::new();
    assert_eq!(whole.adopt(&dump, secs(1)), n);
    assert_eq!(whole.e.counts_by_state(), h.e.counts_by_state());
}

#[test]
fn corrections_table() {
    // (what the engine has, the dump, the correction, state after)
    struct Case {
        name: &'static str,
        events: Vec<Ev>,
        dump: Vec<SocketSnapshot>,
        cookie: u64,
        correction: Option<Correction>,
        state: TcpState,
        live: bool,
    }
    let t = secs(5);
    let cases = vec![
        Case {
            name: "missed: a socket nobody told us about",
            events: vec![],
            dump: vec![diag(2, Established)],
            cookie: 2,
            correction: Some(Correction::Missed),
            state: Established,
            live: true,
        },
        Case {
            name: "vanished: open record absent from the dump",
            events: active_open(1, 0).into(),
            dump: vec![],
            cookie: 1,
            correction: Some(Correction::Vanished),
            state: Close,
            live: false,
        },
        Case {
            name: "state mismatch: the dump wins",
            events: active_open(1, 0).into(),
            dump: vec![diag(1, CloseWait)],
            cookie: 1,
            correction: Some(Correction::StateMismatch),
            state: CloseWait,
            live: true,
        },
        Case {
            name: "state mismatch: a lost close shows up as a timewait socket",
            events: active_open(1, 0).into(),
            dump: vec![tw(1, TimeWait, 58_000)],
            cookie: 1,
            correction: Some(Correction::StateMismatch),
            state: TimeWait,
            live: true,
        },
        Case {
            name: "agreement: nothing to fix",
            events: active_open(1, 0).into(),
            dump: vec![diag(1, Established)],
            cookie: 1,
            correction: None,
            state: Established,
            live: true,
        },
        Case {
            name: "grace: created 50 ms before the dump, absent from it",
            events: vec![ev(1).from(Close).to(SynSent).at(t - ms(50))],
            dump: vec![],
            cookie: 1,
            correction: None,
            state: SynSent,
            live: true,
        },
        Case {
            name: "grace: changed 50 ms before the dump, which shows the next state",
            events: vec![ev(1).from(Close).to(SynSent).at(t - ms(50))],
            dump: vec![diag(1, Established)],
            cookie: 1,
            correction: None,
            state: SynSent,
            live: true,
        },
        Case {
            name: "grace: changed after the dump started",
            events: vec![
                ev(1).from(Close).to(SynSent).at(0),
                ev(1).from(SynSent).to(Established).at(t + ms(1)),
            ],
            dump: vec![diag(1, SynSent)],
            cookie: 1,
            correction: None,
            state: Established,
            live: true,
        },
        Case {
            name: "closed before the dump: not vanished, already closed",
            events: vec![
                ev(1).from(Close).to(SynSent).at(0),
                ev(1).from(SynSent).to(Close).at(ms(1)),
            ],
            dump: vec![],
            cookie: 1,
            correction: None,
            state: Close,
            live: false,
        },
        Case {
            name: "request and bound-only sockets are not missed",
            events: vec![ev(1).from(Close).to(Listen).at(0)],
            dump: vec![diag(1, Listen), diag(2, NewSynRecv), diag(3, BoundInactive)],
            cookie: 1,
            correction: None,
            state: Listen,
            live: true,
        },
    ];
    for c in cases {
        let mut h = H::new();
        h.run(c.events.iter().copied());
        h.take();
        let rep = h.reconcile_absent(&c.dump, t);
        let corrections: Vec<_> =
            h.o.0
                .iter()
                .filter_map(|o| {
                    if let Obs::Corr(_, r) = o {
                        Some(*r)
                    } else {
                        None
                    }
                })
                .collect();
        assert_eq!(
            corrections,
            c.correction.into_iter().collect::<Vec<_>>(),
            "{}",
            c.name
        );
        let n = |r| u64::from(c.correction == Some(r));
        assert_eq!(
            (rep.missed, rep.vanished, rep.state_mismatch),
            (
                n(Correction::Missed),
                n(Correction::Vanished),
                n(Correction::StateMismatch)
            ),
            "{}",
            c.name
        );
        assert_eq!(h.state(c.cookie), c.state, "{}", c.name);
        assert_eq!(h.view(c.cookie).is_live(), c.live, "{}", c.name);
        assert!(
            !h.o.0
                .iter()
                .any(|o| matches!(o, Obs::Stay(..) | Obs::Closed(..))),
            "{}: corrections invent no stays",
            c.name
        );
        if c.correction.is_some() && c.live {
            assert!(
                h.view(c.cookie).since_is_lower_bound() || c.state == TimeWait,
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn a_mismatch_stay_is_reported_as_a_lower_bound() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.reconcile(&[diag(1, CloseWait)], secs(5));
    assert_eq!(h.view(1).closed_by(), Some(ClosedBy::Remote));
    h.run([ev(1).from(CloseWait).to(LastAck).at(secs(7))]);
    assert_eq!(h.stays().last(), Some(&(CloseWait, secs(2), true)));
    assert_eq!(h.e.stats().path_gap, 0);
}

#[test]
fn a_lost_close_found_as_time_wait_gets_its_entry_from_expires() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.reconcile(&[tw(1, TimeWait, 58_000)], secs(5));
    let v = h.view(1);
    assert_eq!(
        (
            v.state_since_ns(),
            v.since_is_lower_bound(),
            v.time_wait_confirmed()
        ),
        (secs(3), false, true)
    );
    assert_eq!(v.closed_by(), Some(ClosedBy::Local));
}

#[test]
fn a_long_close_wait_is_marked_half_closed_while_still_in_it() {
    let mut h = H::new();
    h.run([ev(1).from(Established).to(CloseWait).at(secs(1))]);
    h.reconcile(&[diag(1, CloseWait)], ms(1500));
    assert!(!h.view(1).half_closed());
    h.reconcile(&[diag(1, CloseWait)], secs(5));
    assert!(h.view(1).half_closed());
}

#[test]
fn finished_records_are_kept_for_the_retention_then_dropped() {
    let mut h = H::new();
    h.run([
        ev(1).from(Close).to(SynSent).at(0),
        ev(1).from(SynSent).to(Close).at(secs(1)),
    ]);
    h.run([ev(2).from(Close).to(Listen).at(ms(5999))]);
    assert!(h.e.get(1).is_some(), "kept for 5 s");
    h.run([ev(2).from(Listen).to(Close).at(secs(6))]);
    assert!(h.e.get(1).is_none(), "dropped by the first event 5 s after");
    assert_eq!(h.e.stats().expired, 1);
    let rep = h.reconcile(&[], secs(11));
    assert_eq!(rep.expired, 1, "and by a reconcile");
    assert_eq!(h.e.tracked(), 0);
    let mut h = H::new();
    h.run([
        ev(3).from(Close).to(SynSent).at(0),
        ev(3).from(SynSent).to(Close).at(secs(1)),
    ]);
    assert_eq!(h.expire(secs(6)), 1, "expire() for idle periods");
}

#[test]
fn time_wait_records_are_kept_until_they_end_then_retained() {
    let mut h = H::new();
    h.run(active_close(1, 0));
    h.run([ev(2).from(Close).to(Listen).at(secs(30))]);
    assert!(
        h.view(1).in_time_wait(),
        "retention does not apply to TIME_WAIT"
    );
    h.reconcile(&[tw(1, TimeWait, 30_000), diag(2, Listen)], secs(30));
    h.reconcile(&[diag(2, Listen)], secs(61));
    assert!(!h.view(1).is_live());
    h.reconcile(&[diag(2, Listen)], secs(66));
    assert!(h.e.get(1).is_none());
}

#[test]
fn a_long_reconcile_pauses_for_the_caller_and_ends_the_same() {
    use crate::engine::reconcile::PAUSE_EVERY;
    let dump: Vec<_> = (1..=2 * PAUSE_EVERY as u64 + 1)
        .map(|c| diag(c, Established))
        .collect();
    let (mut paused, mut quiet) = (H::new(), H::new());
    let mut pauses = 0;
    let a = paused.e.reconcile_within(
        &dump,
        secs(1),
        Listing::Live,
        |_| true,
        &mut paused.o,
        || pauses += 1,
    );
    let b = quiet.e.reconcile(&dump, secs(1), false, &mut quiet.o);
    paused.check();
    assert_eq!(pauses, 2, "once per {PAUSE_EVERY} sockets of the dump");
    assert_eq!((a, a.missed), (b, dump.len() as u64));
    assert_eq!(paused.o.0, quiet.o.0, "the same calls to the observer");
}

#[test]
fn a_looked_up_reconcile_judges_only_what_it_looked_up_and_the_listeners() {
    let mut h = H::new();
    // 1 and 2: connected, both ports known. 3: a connect whose local port
    // the engine never learnt (only its `syn_sent` event). 4 and 5:
    // listeners.
    h.run(active_open(1, 0));
    h.run(active_open(2, 0));
    h.run([ev(3)
        .from(Close)
        .to(SynSent)
        .ports(0, REMOTE_PORT)
        .at(secs(1))]);
    for c in [4, 5] {
        h.run([ev(c).from(Close).to(Listen).ports(8000 + c as u16, 0)]);
    }
    let mut lookups = Vec::new();
    assert!(
        h.e.lookups(secs(1) + ms(50), &mut lookups),
        "3 is too young to judge"
    );
    let mut named: Vec<u64> = lookups.iter().map(|(_, p)| p.cookie).collect();
    named.sort_unstable();
    assert_eq!(
        named,
        [1, 2],
        "listeners and unknown ports are not looked up"
    );
    let (_, p) = lookups.iter().find(|(_, p)| p.cookie == 1).unwrap();
    assert_eq!((p.lport, p.rport), (local_port(1), REMOTE_PORT));
    // Later, the connect without a port may be stuck: only a walk lists it.
    assert!(!h.e.lookups(secs(10), &mut Vec::new()));
    // The lookups found 1; the listening table listed 4. Twice in a row:
    // a record is judged by the second dump without it.
    let found = [diag(1, Established), diag(4, Listen)];
    let mut looked_up = |at| {
        let rep =
            h.e.reconcile_within(&found, at, Listing::LookedUp, |_| true, &mut h.o, || {});
        h.check();
        rep
    };
    assert_eq!(looked_up(secs(9)).vanished, 0, "absent once");
    let rep = looked_up(secs(10));
    assert_eq!((rep.vanished, rep.missed), (2, 0));
    assert!(
        h.e.get(2).is_none_or(|v| v.state() == Close),
        "2 was looked up"
    );
    assert!(
        h.e.get(5).is_none_or(|v| v.state() == Close),
        "5 was not listed"
    );
    assert_eq!(h.state(3), SynSent, "3 could not be looked up: not judged");
    assert_eq!(h.state(1), Established);
    // A walk judges 3 too.
    assert_eq!(h.frequent(&found, secs(19)).vanished, 0, "absent once");
    let rep = h.frequent(&found, secs(20));
    assert_eq!(rep.vanished, 1);
}

/// A connect refused by ICMP closes in the kernel's softirq just before a
/// walk passes its socket: the walk does not list it, and its close may
/// still be on its way to the lanes when the dump is judged. Absent once,
/// the record waits; the close comes, and counts the failure it names.
#[test]
fn a_close_that_comes_after_the_dump_that_missed_it_counts_its_failure() {
    let mut h = H::new();
    h.run([ev(1).from(Close).to(SynSent).at(0)]);
    let rep = h.frequent(&[], secs(5));
    let once = ReconcileReport {
        absent_once: 1,
        ..ReconcileReport::default()
    };
    assert_eq!(rep, once, "absent once: not judged");
    assert_eq!(h.state(1), SynSent);
    let mut close = ev(1).from(SynSent).to(Close).at(secs(5) + ms(1));
    close.0.err = libc::EHOSTUNREACH as u8;
    h.run([close]);
    let rep = h.frequent(&[], secs(6));
    h.check();
    assert_eq!(rep.vanished, 0, "closed by its event, not judged gone");
    assert!(
        !h.o.0.iter().any(|o| matches!(o, Obs::Corr(..))),
        "{:?}",
        h.o.0
    );
    assert_eq!(
        h.o.1,
        [(
            1,
            Role::Client,
            Handshake::Failed(crate::engine::HandshakeFailure::Unreachable)
        )]
    );
}

/// The count of dumps without a record starts again when it changes
/// state: a dump's absence says nothing about a state it did not see.
#[test]
fn a_state_change_between_dumps_starts_their_count_again() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    let rep = h.frequent(&[], secs(5));
    assert_eq!((rep.vanished, rep.absent_once), (0, 1), "absent once");
    h.run([ev(1).from(Established).to(CloseWait).at(secs(6))]);
    let rep = h.frequent(&[], secs(10));
    assert_eq!(
        (rep.vanished, rep.absent_once),
        (0, 1),
        "absent once in CLOSE_WAIT"
    );
    let rep = h.frequent(&[], secs(11));
    h.check();
    assert_eq!(rep.vanished, 1, "twice in a row in CLOSE_WAIT");
    assert_eq!(h.state(1), Close);
}

/// A connect whose handshake never finishes: its only event, close ->
/// syn_sent, comes before the kernel picks the local port, and the dump
/// gives it.
#[test]
fn a_stuck_connect_gets_its_local_port_from_the_dump() {
    let mut h = H::new();
    h.run([ev(1).from(Close).to(SynSent).ports(0, 443).at(secs(1))]);
    assert_eq!(h.view(1).local().port(), 0);
    let d = diag(1, SynSent)
        .local(crate::testkit::LOCAL, 50120)
        .peer(crate::testkit::REMOTE, 443);
    h.reconcile(&[d], secs(2));
    let v = h.view(1);
    assert_eq!((v.local().port(), v.remote().port()), (50120, 443));
    assert_eq!((v.state(), v.state_since_ns()), (SynSent, secs(1)));
}
