//! TIME_WAIT: inferred at close, confirmed or refuted by dumps, and ended
//! by expiry, reuse of the 4-tuple, or a reset; orphaned FIN_WAIT2.
use super::*;
use crate::tcp::TcpState::*;

/// Cookie 1 opened at 0 and actively closed at 1 s: TIME_WAIT from 1.02 s.
fn closed_at_1s() -> H {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.run(active_close(1, secs(1)));
    h.take();
    h
}

const CLOSE: u64 = 1_020_000_000;

#[test]
fn confirmed_then_expires_by_its_timer_exactly_60s_later() {
    let mut h = closed_at_1s();
    assert_eq!(h.n(TimeWait), 1, "inferred TIME_WAIT is counted");
    let rep = h.reconcile(&[tw(1, TimeWait, 59_020)], secs(2));
    assert_eq!(rep.time_wait_confirmed, 1);
    assert!(h.view(1).time_wait_confirmed());
    assert!(h.take().is_empty(), "confirming reports nothing");
    for t in 3..=61 {
        let rep = h.reconcile(
            &[tw(1, TimeWait, (62_020 - t as u32 * 1000).min(60_000))],
            secs(t),
        );
        assert_eq!(rep, ReconcileReport::default(), "at {t} s");
    }
    let rep = h.reconcile(&[], secs(62));
    assert_eq!(rep.time_wait_expired, 1);
    assert_eq!(rep.time_wait_killed, 0);
    assert_eq!(
        h.take(),
        vec![
            Obs::Stay(1, TimeWait, secs(60), false),
            Obs::TwEnded(1, TimeWaitEnd::Expired)
        ]
    );
    let v = h.view(1);
    assert!(!v.is_live() && !v.in_time_wait());
    assert_eq!(v.state(), Close);
    assert_eq!(v.time_wait_end(), Some(TimeWaitEnd::Expired));
    assert_eq!(
        v.state_since_ns(),
        CLOSE + secs(60),
        "finished at the deadline"
    );
    assert_eq!(
        h.path(1).last(),
        Some(&TimeWait),
        "the path keeps the TIME_WAIT stay"
    );
    assert_eq!(h.n(TimeWait), 0);
}

#[test]
fn never_appears_counted_and_finished_without_a_stay() {
    let mut h = closed_at_1s();
    let rep = h.reconcile_absent(&[], secs(2));
    assert_eq!(rep.time_wait_never_appeared, 1);
    assert_eq!(h.take(), vec![Obs::TwNever(1)]);
    let v = h.view(1);
    assert!(v.time_wait_never_appeared() && !v.is_live());
    assert_eq!(v.time_wait_end(), None);
    assert_eq!(
        h.path(1),
        [Close, SynSent, Established, FinWait1, FinWait2, Close]
    );
    assert_eq!(h.n(TimeWait), 0);
}

#[test]
fn grace_a_close_just_before_the_dump_is_not_judged() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.run(active_close(1, ms(1880))); // close at 1.9 s
    let rep = h.reconcile(&[], secs(2));
    assert_eq!(
        rep,
        ReconcileReport::default(),
        "closed 100 ms before the dump: within the 200 ms slack"
    );
    assert!(h.view(1).in_time_wait());
    let rep = h.reconcile_absent(&[], secs(3));
    assert_eq!(rep.time_wait_never_appeared, 1, "the next dumps judge it");
}

#[test]
fn reused_4_tuple_ends_it_early() {
    // How the new connection on the same tuple starts.
    let openers = [
        ev(2).from(Close).to(SynSent),
        ev(2).from(Listen).to(SynRecv),
    ];
    for opener in openers {
        let mut h = H::new();
        h.run([ev(1).from(Established).to(FinWait1).ports(40000, 80).at(0)]);
        h.run([ev(1).from(FinWait1).to(FinWait2).ports(40000, 80).at(ms(1))]);
        h.run([ev(1).from(FinWait2).to(Close).ports(40000, 80).at(ms(2))]);
        h.take();
        h.run([opener.ports(40000, 80).at(secs(5))]);
        let obs = h.take();
        assert_eq!(
            obs[..2],
            [
                Obs::Stay(1, TimeWait, secs(5) - ms(2), false),
                Obs::TwEnded(1, TimeWaitEnd::Reused)
            ]
        );
        assert_eq!(h.view(1).time_wait_end(), Some(TimeWaitEnd::Reused));
        assert!(!h.view(1).is_live());
        assert_eq!(h.n(TimeWait), 0);
    }
}

/// An IPv6 socket's connect to an IPv4-mapped address takes the 4-tuple
/// an IPv4 socket's TIME_WAIT held, and the other way round.
#[test]
fn reuse_by_the_other_family_ends_it_early() {
    let closed_v4 = [
        ev(1).from(Established).to(FinWait1).ports(40000, 80).at(0),
        ev(1).from(FinWait1).to(FinWait2).ports(40000, 80).at(ms(1)),
        ev(1).from(FinWait2).to(Close).ports(40000, 80).at(ms(2)),
    ];
    let opener = ev(2)
        .from(SynSent)
        .to(Established)
        .ports(40000, 80)
        .at(secs(5));
    for (closed, opener) in [
        (closed_v4, opener.mapped()),
        (closed_v4.map(Ev::mapped), opener),
    ] {
        let mut h = H::new();
        h.run(closed);
        h.take();
        h.run([opener]);
        assert!(h.take().contains(&Obs::TwEnded(1, TimeWaitEnd::Reused)));
        assert_eq!(h.n(TimeWait), 0);
    }
}

#[test]
fn another_tuple_or_an_older_event_does_not_reuse() {
    let mut h = H::new();
    h.run([ev(1).from(FinWait2).to(Close).ports(40000, 80).at(ms(1))]);
    h.run([ev(2).from(Close).to(SynSent).ports(40001, 80).at(ms(1))]);
    h.run([ev(3).from(Close).to(SynSent).ports(40000, 81).at(ms(1))]);
    // A socket first seen on the tuple, but before the TIME_WAIT began.
    h.run([ev(4)
        .from(Established)
        .to(FinWait1)
        .ports(40000, 80)
        .at(ms(1) - 1)]);
    h.run([ev(5).from(Close).to(SynSent).ports(40000, 80).at(0)]);
    assert!(h.view(1).in_time_wait());
    assert_eq!(h.count(|o| matches!(o, Obs::TwEnded(..))), 0);
}

#[test]
fn reset_kills_it_early() {
    for reset in [rst_rx(1), rst_tx(1)] {
        let mut h = closed_at_1s();
        h.run([reset.at(CLOSE + secs(5))]);
        let obs = h.take();
        assert!(
            obs.contains(&Obs::Stay(1, TimeWait, secs(5), false)),
            "{obs:?}"
        );
        assert!(obs.contains(&Obs::TwEnded(1, TimeWaitEnd::Reset)));
        assert_eq!(h.view(1).time_wait_end(), Some(TimeWaitEnd::Reset));
        assert!(!h.view(1).is_live());
    }
}

/// The peer's socket here (loopback, a sidecar) closed with a reset while
/// 1's orphan waited for its FIN (a listener closed with connections it
/// never accepted, unread data, `SO_LINGER` 0): the orphan died of it,
/// which no event of its own reports.
#[test]
fn a_reset_from_its_peer_here_ends_an_orphan() {
    // Inferred at the close, not yet confirmed: most likely the orphan,
    // and it ends as one: a FIN_WAIT2 stay, no TIME_WAIT one.
    let mut h = closed_at_1s();
    h.run([rst_tx(7).peer_of(1).at(CLOSE + ms(3))]);
    assert_eq!(
        h.take(),
        vec![
            Obs::Reset(7, Direction::Sent),
            Obs::Stay(1, FinWait2, ms(3), false)
        ]
    );
    assert!(!h.view(1).is_live());
    assert_eq!(h.path(1)[5..], [Close, FinWait2]);
    assert_eq!((h.n(TimeWait), h.e.stats().time_wait_reset_by_peer), (0, 1));
    // A dump showed the orphan.
    let mut h = closed_at_1s();
    h.reconcile(&[tw(1, FinWait2, 59_000)], secs(2));
    h.run([rst_tx(7).peer_of(1).at(secs(3))]);
    assert!(!h.view(1).is_live());
    assert_eq!(h.n(FinWait2), 0);
}

/// A dual-stack server (an IPv6 socket, IPv4-mapped addresses) resets
/// an IPv4 client's orphan, and an IPv6 client's orphan is reset by an
/// IPv4 server: the kernel keeps both families' tuples in one table.
#[test]
fn a_reset_from_its_peer_of_the_other_family_ends_an_orphan() {
    let mut h = closed_at_1s();
    h.run([rst_tx(7).peer_of(1).mapped().at(CLOSE + ms(3))]);
    assert!(!h.view(1).is_live());
    assert_eq!((h.n(TimeWait), h.e.stats().time_wait_reset_by_peer), (0, 1));

    let mut h = H::new();
    h.run(active_open(1, 0).map(Ev::mapped));
    h.run(active_close(1, secs(1)).map(Ev::mapped));
    assert!(h.view(1).in_time_wait());
    h.run([rst_tx(7).peer_of(1).at(CLOSE + ms(3))]);
    assert!(!h.view(1).is_live());
    // Another address: an IPv6 one that is not mapped.
    let mut h = closed_at_1s();
    let mut other = rst_tx(7).peer_of(1).mapped();
    other.0.daddr = "::1".parse().unwrap();
    h.run([other.at(CLOSE + ms(3))]);
    assert!(h.view(1).in_time_wait());
}

/// Pods on one node: the orphan's peer is a socket of another namespace,
/// over a veth.
#[test]
fn a_reset_from_its_peer_in_another_namespace_ends_an_orphan() {
    let mut h = closed_at_1s();
    h.run(peer_closing_in(5, 7));
    h.run([rst_tx(7).peer_of(1).netns(5).at(CLOSE + ms(3))]);
    assert!(!h.view(1).is_live());
    assert_eq!((h.n(TimeWait), h.e.stats().time_wait_reset_by_peer), (0, 1));
}

/// Socket `cookie` in namespace `netns`: the server end of socket 1's
/// connection (`closed_at_1s`), accepted with it, left in CLOSE_WAIT by
/// its FIN, and closed at `CLOSE + 2 ms` (a listener's child it never
/// accepted, a `close()` with unread data), which sends the reset.
fn peer_closing_in(netns: u32, cookie: u64) -> [Ev; 4] {
    let peer = |e: Ev| e.peer_of(1).netns(netns);
    [
        peer(ev(cookie).from(Listen).to(SynRecv).at(100)),
        peer(ev(cookie).from(SynRecv).to(Established).at(ms(1))),
        peer(ev(cookie).from(Established).to(CloseWait).at(secs(1))),
        peer(ev(cookie).from(CloseWait).to(Close).at(CLOSE + ms(2))),
    ]
}

#[test]
fn a_reset_from_another_namespace_that_need_not_be_its_peers_ends_nothing() {
    // Loopback never leaves its namespace.
    let mut h = H::new();
    h.run(active_open(1, 0).map(Ev::loopback));
    h.run(active_close(1, secs(1)).map(Ev::loopback));
    h.run(peer_closing_in(5, 7).map(Ev::loopback));
    h.run([rst_tx(7).peer_of(1).loopback().netns(5).at(CLOSE + ms(3))]);
    assert!(h.view(1).in_time_wait());
    // Two other namespaces hold the tuple (addresses reused in isolated
    // namespaces): which one the reset reached is unknown.
    let mut h = closed_at_1s();
    let twin = |e: Ev| e.netns(9).ports(crate::testkit::local_port(1), 80);
    h.run(active_open(2, 0).map(twin));
    h.run(active_close(2, secs(1)).map(twin));
    h.run(peer_closing_in(5, 7));
    h.run([rst_tx(7).peer_of(1).netns(5).at(CLOSE + ms(3))]);
    assert!(h.view(1).in_time_wait() && h.view(2).in_time_wait());
    // A reset no socket sent answered a segment nothing here wanted; one
    // from a socket not followed, or not closed from CLOSE_WAIT (SO_LINGER
    // 0 on an open connection), or born long after the orphan (a
    // stranger on reused addresses): none is the orphan's peer.
    let mut h = closed_at_1s();
    h.run([rst_tx(0).peer_of(1).netns(5).at(CLOSE + ms(3))]);
    h.run([rst_tx(7).peer_of(1).netns(5).at(CLOSE + ms(3))]);
    let open = peer_closing_in(5, 8);
    h.run([open[0], open[1]]);
    h.run([rst_tx(8).peer_of(1).netns(5).at(CLOSE + ms(3))]);
    let late = peer_closing_in(5, 9).map(|e| e.at(e.0.ts_ns + secs(20)));
    h.run(late);
    h.run([rst_tx(9).peer_of(1).netns(5).at(secs(22))]);
    assert!(h.view(1).in_time_wait());
    assert_eq!(h.e.stats().time_wait_reset_by_peer, 0);
}

#[test]
fn a_reset_that_cannot_have_reached_it_ends_nothing() {
    // Received, not sent: the reset arrived at another socket here.
    let mut h = closed_at_1s();
    h.run([rst_rx(7).peer_of(1).at(CLOSE + ms(3))]);
    // Sent on another tuple, or before the close.
    h.run([rst_tx(7).at(CLOSE + ms(3))]);
    h.run([rst_tx(7).peer_of(1).at(CLOSE - 1)]);
    assert!(h.view(1).in_time_wait());
    // A confirmed TIME_WAIT outlives a reset under `tcp_rfc1337=1`: the
    // dumps judge it.
    h.reconcile(&[tw(1, TimeWait, 59_000)], secs(2));
    h.run([rst_tx(7).peer_of(1).at(secs(3))]);
    assert!(h.view(1).in_time_wait());
    assert_eq!((h.n(TimeWait), h.e.stats().time_wait_reset_by_peer), (1, 0));
}

#[test]
fn a_reset_delivered_after_its_close_retracts_the_inference() {
    let mut h = closed_at_1s();
    h.run([rst_rx(1).at(CLOSE - 1)]);
    assert_eq!(h.take(), vec![Obs::Reset(1, Direction::Received)]);
    let v = h.view(1);
    assert!(!v.is_live() && !v.in_time_wait());
    assert_eq!(v.time_wait_end(), None);
    assert_eq!(h.path(1).last(), Some(&Close));
    assert_eq!(h.n(TimeWait), 0);
}

#[test]
fn a_confirmed_one_ignores_an_older_reset() {
    let mut h = closed_at_1s();
    h.reconcile(&[tw(1, TimeWait, 59_000)], secs(2));
    h.run([rst_rx(1).at(CLOSE - 1)]);
    assert!(h.view(1).in_time_wait());
}

#[test]
fn orphaned_fin_wait2_counts_as_fin_wait2() {
    let mut h = closed_at_1s();
    let rep = h.reconcile(&[tw(1, FinWait2, 59_000)], secs(2));
    assert_eq!((rep.time_wait_confirmed, rep.orphan_fin_wait2), (1, 1));
    let v = h.view(1);
    assert_eq!(v.state(), FinWait2);
    assert!(v.in_time_wait() && v.time_wait_confirmed());
    assert_eq!((h.n(FinWait2), h.n(TimeWait)), (1, 0));
    assert_eq!(h.path(1)[5..], [Close, FinWait2]);
    let rep = h.reconcile_absent(&[], secs(30));
    assert_eq!((rep.orphan_fin_wait2_ended, rep.time_wait_expired), (1, 0));
    assert_eq!(
        h.take(),
        vec![Obs::Stay(1, FinWait2, secs(30) - CLOSE, false)],
        "no TIME_WAIT stay, no time_wait_ended"
    );
    // Its timer was half a minute off: something killed it.
    assert_eq!(h.view(1).time_wait_end(), Some(TimeWaitEnd::Reset));
    assert!(h.view(1).half_closed());
}

/// Socket 1 opened, and in FIN_WAIT2 since the returned time (1.01 s).
fn in_fin_wait2() -> (H, u64) {
    let mut h = H::new();
    h.run(active_open(1, 0));
    let entered = secs(1) + ms(10);
    h.run([
        ev(1).from(Established).to(FinWait1).at(secs(1)),
        ev(1).from(FinWait1).to(FinWait2).at(entered),
    ]);
    (h, entered)
}

/// With `tcp_fin_timeout` above 60 s the kernel keeps an orphan's full
/// socket in FIN_WAIT2 for the part above 60 s, then hands it over to a
/// timewait socket: its `fin_wait2 -> close` comes mid-stay. A dump that
/// finds the orphan gives it back its first entry (its age is the whole
/// stay), and its two reported stays add up to that one stay.
#[test]
fn an_orphan_handed_over_mid_stay_keeps_its_fin_wait2_entry() {
    let (mut h, entered) = in_fin_wait2();
    h.take();
    let handover = entered + secs(60);
    h.run([ev(1).from(FinWait2).to(Close).at(handover)]);
    assert_eq!(h.stays(), vec![(FinWait2, secs(60), false)]);
    h.take();
    h.reconcile(&[tw(1, FinWait2, 59_000)], secs(62));
    let v = h.view(1);
    assert_eq!(v.state(), FinWait2);
    assert_eq!(v.state_since_ns(), entered);
    assert!(!v.since_is_lower_bound());
    // Its timer (59 s after the dump) ends it at the next full dump.
    h.reconcile_absent(&[], secs(122));
    assert_eq!(h.stays(), vec![(FinWait2, secs(121) - handover, false)]);
}

/// An ordinary close from FIN_WAIT2 into TIME_WAIT keeps its TIME_WAIT
/// entry and its full 60 s stay.
#[test]
fn a_time_wait_from_fin_wait2_ends_60s_after_its_own_entry() {
    let mut h = closed_at_1s();
    assert_eq!(h.view(1).state_since_ns(), CLOSE);
    h.reconcile(&[tw(1, TimeWait, 59_000)], secs(2));
    assert_eq!(h.view(1).state_since_ns(), CLOSE);
    h.reconcile(&[], secs(70));
    assert_eq!(h.stays(), vec![(TimeWait, secs(60), false)]);
}

#[test]
fn orphan_that_gets_its_fin_enters_time_wait() {
    let mut h = closed_at_1s();
    h.reconcile(&[tw(1, FinWait2, 59_000)], secs(2));
    // At 10 s the timewait socket is in TIME_WAIT with 59.5 s left: entered at 9.5 s.
    h.reconcile(&[tw(1, TimeWait, 59_500)], secs(10));
    assert_eq!(
        h.take(),
        vec![Obs::Stay(1, FinWait2, ms(9500) - CLOSE, false)]
    );
    assert_eq!(h.view(1).state(), TimeWait);
    assert_eq!(h.view(1).state_since_ns(), ms(9500));
    assert_eq!((h.n(FinWait2), h.n(TimeWait)), (0, 1));
    h.reconcile(&[], secs(70));
    assert_eq!(
        h.take(),
        vec![
            Obs::Stay(1, TimeWait, secs(60), false),
            Obs::TwEnded(1, TimeWaitEnd::Expired)
        ]
    );
}

#[test]
fn time_wait_by_local_port_counts_only_time_wait() {
    let mut h = H::new();
    for (c, port) in [(1, 80), (2, 80), (3, 80), (4, 443), (5, 80), (6, 8080)] {
        h.run([ev(c)
            .from(FinWait2)
            .to(Close)
            .ports(port, 50000 + c as u16)
            .at(ms(c))]);
    }
    // 5 becomes an orphaned FIN_WAIT2; 6 never appears.
    let dump: Vec<_> = [(1, 80), (2, 80), (3, 80), (4, 443)]
        .into_iter()
        .map(|(c, p)| {
            let mut d = tw(c, TimeWait, 59_000);
            d.sport = p;
            d.dport = 50000 + c as u16;
            d
        })
        .chain([{
            let mut d = tw(5, FinWait2, 59_000);
            d.sport = 80;
            d
        }])
        .collect();
    h.reconcile_absent(&dump, secs(1));
    let mut got = vec![];
    h.e.time_wait_by_local_port(|p, n| got.push((p, n)));
    assert_eq!(got, [(80, 3), (443, 1)]);
    assert_eq!(h.n(TimeWait), 4);
}

/// A close whose `fin_wait1 -> fin_wait2` was skipped has no FIN_WAIT2
/// entry to give its orphan: its age runs from the handover, not from its
/// FIN_WAIT1 entry.
#[test]
fn an_orphan_after_a_path_gap_ages_from_the_handover() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.run([ev(1).from(Established).to(FinWait1).at(secs(1))]);
    let handover = secs(61);
    h.run([ev(1).from(FinWait2).to(Close).at(handover)]);
    h.reconcile(&[tw(1, FinWait2, 59_000)], secs(62));
    assert_eq!(h.view(1).state(), FinWait2);
    assert_eq!(h.view(1).state_since_ns(), handover);
    assert!(
        h.view(1).since_is_lower_bound(),
        "its FIN_WAIT2 began earlier"
    );
}

/// Half-closed is judged over an orphan's whole FIN_WAIT2: 0.6 s before
/// the handover and 0.6 s after make 1.2 s, past the 1 s threshold.
#[test]
fn an_orphan_is_half_closed_over_its_whole_fin_wait2() {
    let (mut h, entered) = in_fin_wait2();
    let handover = entered + ms(600);
    h.run([ev(1).from(FinWait2).to(Close).at(handover)]);
    h.reconcile(&[tw(1, FinWait2, 400)], handover + ms(200));
    h.reconcile_absent(&[], handover + ms(1000));
    assert!(!h.view(1).is_live(), "ended at its timer");
    assert!(h.view(1).half_closed());
}

/// A record finished and started again keeps its finished-queue number
/// in the word an orphan's FIN_WAIT2 time uses; a dump that then finds it
/// an orphan must not read that number as a time.
#[test]
fn a_revived_record_found_an_orphan_has_no_stale_fin_wait2_time() {
    let mut h = H::new();
    // Finished records before it raise the queue's sequence numbers.
    for c in 100..3100 {
        h.run(active_open(c, 0));
        h.run([ev(c).from(Established).to(Close).at(ms(5))]);
    }
    h.run(active_open(1, 0));
    h.run([ev(1).from(Established).to(Close).at(ms(5))]);
    // The same cookie starts again.
    h.run(active_open(1, secs(1)));
    h.reconcile(&[tw(1, FinWait2, 30_000)], secs(2));
    let v = h.view(1);
    assert_eq!(v.state(), FinWait2);
    assert!(
        v.state_since_ns() >= secs(1),
        "entry {} ns: a queue number read as a time",
        v.state_since_ns()
    );
}

/// An exact duplicate of the close that handed an orphan over is ignored,
/// as every exact duplicate is.
#[test]
fn a_duplicate_handover_of_an_orphan_is_ignored() {
    let (mut h, entered) = in_fin_wait2();
    let close = ev(1).from(FinWait2).to(Close).at(entered + secs(60));
    h.run([close]);
    h.reconcile(&[tw(1, FinWait2, 59_000)], secs(62));
    h.take();
    h.run([close]);
    assert!(h.take().is_empty(), "the duplicate was applied");
    assert_eq!(h.view(1).state(), FinWait2);
    assert_eq!(h.view(1).state_since_ns(), entered);
}
