//! A stall whose evidence changes kind, and sockets whose kernel timers
//! already watch the peer. Both were seen on real sockets
//! (`tests/leaks_net.rs`): an application writing into a connection whose
//! keepalive probes went unanswered.
use super::*;

/// An idle socket with SO_KEEPALIVE whose probes go unanswered.
fn probing(cookie: u64, no_ack_ms: u32) -> SocketSnapshot {
    let mut d = sock(cookie, TcpState::Established).timer(TimerKind::Keepalive, 3);
    let i = info(&mut d);
    i.probes = 3;
    i.last_ack_recv_ms = no_ack_ms;
    i.last_data_recv_ms = no_ack_ms;
    i.last_data_sent_ms = no_ack_ms;
    d
}

#[test]
fn a_keepalive_stall_that_turns_into_retransmits_stays_one_flag() {
    let mut det = Detector::new(thresholds());
    assert!(
        det.update(&[probing(8, 20_000)], 0, none, app_owners)
            .is_empty()
    );
    let c = det.update(&[probing(8, 30_000)], 10 * S, none, app_owners);
    assert_eq!(raised(&c)[0].reason, Some(Reason::KeepaliveUnanswered));

    // The application writes: the data is in flight, the first RTO has not
    // fired yet, the probes are still unanswered. Nothing was ACKed.
    let mut written = probing(8, 30_500);
    written.timer = TimerKind::Retransmit;
    written.timer_retrans = 0;
    info(&mut written).unacked = 1;
    info(&mut written).last_data_sent_ms = 100;
    let c = det.update(&[written], 10 * S + S / 2, none, app_owners);
    assert!(c.is_empty(), "no ACK arrived, the stall goes on: {c:?}");

    // The RTO fires: the same flag, now for retransmits.
    let mut rto = written;
    rto.timer_retrans = 1;
    info(&mut rto).retransmits = 1;
    info(&mut rto).backoff = 1;
    info(&mut rto).last_ack_recv_ms = 31_000;
    let c = det.update(&[rto], 11 * S, none, app_owners);
    assert!(c.is_empty(), "{c:?}");
    let f = det.active().next().expect("flag");
    assert_eq!(
        (f.reason, f.raised_at_ns),
        (Some(Reason::Retransmitting), 10 * S)
    );
    assert!(f.evidence.starts_with("no ACK for 31.0s"), "{}", f.evidence);
    assert_eq!(
        det.gauges().half_open,
        [
            (Reason::Retransmitting, 1),
            (Reason::KeepaliveUnanswered, 0)
        ]
    );

    // An ACK: retransmits reset, the flag clears.
    let mut acked = rto;
    info(&mut acked).retransmits = 0;
    info(&mut acked).backoff = 0;
    info(&mut acked).last_ack_recv_ms = 20;
    let c = det.update(&[acked], 12 * S, none, app_owners);
    assert_eq!(
        cleared(&c)[0].cleared_how.as_deref(),
        Some("ACK progress resumed")
    );
}

/// Our packets stop reaching the peer (a firewall drops them) while its
/// own still arrive: its FIN, retransmitted because our ACKs never reach
/// it, refreshes `tcpi_last_ack_recv` but acknowledges none of our data.
/// The stall goes on, one flag from when it was first seen, through the
/// move to CLOSE_WAIT that FIN makes; data acknowledged at last ends it.
#[test]
fn segments_that_acknowledge_nothing_new_do_not_end_a_retransmit_stall() {
    let mut det = Detector::new(thresholds());
    let mut d = sock(12, TcpState::Established).timer(TimerKind::Retransmit, 3);
    let i = info(&mut d);
    (i.unacked, i.retransmits, i.backoff, i.bytes_acked) = (1, 3, 3, 4096);
    i.last_ack_recv_ms = 2_000;
    assert!(det.update(&[d], 0, none, app_owners).is_empty());
    info(&mut d).last_ack_recv_ms = 12_000;
    let c = det.update(&[d], 10 * S, none, app_owners);
    assert_eq!(raised(&c)[0].reason, Some(Reason::Retransmitting));
    // The peer's FIN arrives (and again, retransmitted): CLOSE_WAIT, a
    // fresh last ACK, the same bytes acknowledged.
    d.state = TcpState::CloseWait;
    for t in [40, 100] {
        info(&mut d).last_ack_recv_ms = 3_000;
        let c = det.update(&[d], t * S, none, app_owners);
        assert!(c.is_empty(), "at {t}s: {c:?}");
    }
    let f = det
        .active()
        .find(|f| f.kind == LeakKind::HalfOpen)
        .expect("still flagged");
    assert_eq!(f.raised_at_ns, 10 * S);
    assert_eq!(f.age_seconds, Some(100.0), "timed from first seen");
    assert!(
        f.evidence.starts_with(
            "no ACK of our data for 100.0s (the peer's segments acknowledge nothing new, the last 3.0s ago) \
             (threshold 10s) with 1 segment unacked"
        ),
        "{}",
        f.evidence
    );
    // Our data acknowledged: progress, the flag clears.
    let i = info(&mut d);
    (i.unacked, i.retransmits, i.backoff, i.bytes_acked) = (0, 0, 0, 4097);
    let c = det.update(&[d], 101 * S, none, app_owners);
    assert_eq!(
        cleared(&c)[0].cleared_how.as_deref(),
        Some("ACK progress resumed")
    );
    // The table says how long ago, on the report's clock.
    let text = table(&det.report(103 * S));
    assert!(
        text.contains("\nRecently cleared:\n  half_open ")
            && text.contains(": ACK progress resumed, 2.0s ago\n"),
        "{text}"
    );
}

#[test]
fn an_ack_between_dumps_starts_a_new_stall() {
    let mut det = Detector::new(thresholds());
    let mut d = probing(9, 20_000);
    assert!(det.update(&[d], 0, none, app_owners).is_empty());
    // Answered at 5 s, then probes went unanswered again by 9 s.
    let mut at = |t: u64| {
        info(&mut d).last_ack_recv_ms = (t - 5) as u32 * 1000;
        det.update(&[d], t * S, none, app_owners)
    };
    assert!(at(9).is_empty());
    assert!(at(18).is_empty());
    let c = at(19);
    assert_eq!(raised(&c).len(), 1, "stalled from 9 s: flagged at 19 s");
}

#[test]
fn a_socket_with_a_retransmit_or_probe_timer_is_not_idle_at_risk() {
    // sock_diag reports one timer: a pending retransmit or zero-window probe
    // hides the keepalive timer, and either one notices a dead peer anyway.
    let mut det = Detector::new(thresholds());
    let mut rtx = probing(10, 900_000);
    rtx.timer = TimerKind::Retransmit;
    info(&mut rtx).unacked = 1;
    info(&mut rtx).retransmits = 9;
    info(&mut rtx).last_data_sent_ms = 700_000;
    let mut zero_window = sock(11, TcpState::Established);
    zero_window.timer = TimerKind::Probe;
    info(&mut zero_window).last_data_recv_ms = 700_000;
    info(&mut zero_window).last_data_sent_ms = 700_000;
    for t in [0, 20 * S] {
        let c = det.update(&[rtx, zero_window], t, none, app_owners);
        assert!(
            c.iter().all(|c| c.flag().kind != LeakKind::IdleNoKeepalive),
            "{c:?}"
        );
    }
    assert_eq!(det.gauges().idle_without_keepalive, 0);
}

/// Without an agent, one snapshot still names a connection whose data
/// goes unacknowledged while its retransmit timer fires, once the peer has
/// been silent for the default threshold: a suspect, its age a lower
/// bound. A short silence, or one with nothing in flight, is not.
#[test]
fn a_snapshot_suspects_a_retransmitting_connection_with_no_ack() {
    let stalled = |cookie: u64, no_ack_ms: u32, unacked: u32| {
        let mut d = sock(cookie, TcpState::Established).timer(TimerKind::Retransmit, 6);
        let i = info(&mut d);
        (i.unacked, i.retransmits, i.backoff, i.rto_us) = (unacked, 6, 6, 12_800_000);
        (i.last_ack_recv_ms, i.last_data_sent_ms) = (no_ack_ms, 5_000);
        d
    };
    // Idle for five minutes, then one segment lost: one timeout spent and
    // 5 s of the next, 5.2 s of stall, whatever the time since the peer's
    // last segment.
    let mut lost_one = stalled(4, 300_000, 1);
    let i = info(&mut lost_one);
    (i.retransmits, i.backoff, i.rto_us) = (1, 1, 400_000);
    // A server whose answer goes unacknowledged to a vanished peer, in
    // CLOSE_WAIT: half-open, not also a CLOSE_WAIT leak (it did write).
    let mut answering = stalled(5, 95_000, 3);
    answering.state = TcpState::CloseWait;
    let dump = [
        stalled(1, 95_000, 2),
        stalled(2, 4_000, 2),
        stalled(3, 95_000, 0),
        lost_one,
        answering,
    ];
    let scan = app_owners(&[1001, 1002, 1003, 1004, 1005].into());
    let r = crate::leaks::snapshot_report(&dump, &scan.into(), "snapshot".into());
    let mut flags: Vec<&Flag> = r.leaks.iter().flat_map(|g| &g.sockets).collect();
    flags.sort_by_key(|f| f.cookie);
    let kinds: Vec<_> = flags.iter().map(|f| (f.cookie, f.kind)).collect();
    assert_eq!(
        kinds,
        [(Some(1), LeakKind::HalfOpen), (Some(5), LeakKind::HalfOpen)],
        "{flags:?}"
    );
    assert_eq!(r.leak_count, 2);
    let f = flags[0];
    assert_eq!(f.reason, Some(Reason::Retransmitting));
    // The six timeouts before the current one, 12.8 s × (1 − 1/64), and
    // the 5 s since the last retransmission.
    assert_eq!((f.age_seconds, f.age_is_lower_bound), (Some(17.6), true));
    assert_eq!(
        f.evidence,
        "no ACK for at least 17.6s (threshold 10s) with 2 segments unacked; retransmit timer \
         fired 6 times, RTO backoff 6 (rto 12.8s) (snapshot)"
    );
    assert_eq!(f.owners, vec![owner(100, "app", 1)]);
    assert_eq!(r.exit_code(), 1);
}
