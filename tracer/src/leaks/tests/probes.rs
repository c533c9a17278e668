//! Half-open peers, keepalive probes and idle connections: judged from
//! tcp_info, not from states.
use super::*;

/// Data unacknowledged through four timeouts (0.2 + 0.4 + 0.8 + 1.6 s)
/// and 2 s into the fifth (3.2 s), the last ACK `no_ack_ms` ago.
fn stalled(cookie: u64, no_ack_ms: u32) -> SocketSnapshot {
    let mut d = sock(cookie, TcpState::Established).timer(TimerKind::Retransmit, 0);
    let i = info(&mut d);
    i.unacked = 3;
    i.retransmits = 4;
    i.backoff = 4;
    i.rto_us = 3_200_000;
    i.last_data_sent_ms = 2_000;
    i.total_retrans = 9;
    i.last_ack_recv_ms = no_ack_ms;
    d
}

/// A monotonic clock well past its start, as a host's is: a stall's start
/// is `now` less what tcp_info says it has waited.
const T0: u64 = 10_000 * S;

/// The flag raised now on `cookie`.
fn active_flag(det: &Detector, cookie: u64) -> Flag {
    det.active()
        .find(|f| f.cookie == Some(cookie))
        .cloned()
        .unwrap_or_else(|| panic!("no flag on {cookie}"))
}

#[test]
fn half_open_is_judged_by_how_long_its_data_has_waited() {
    let mut det = Detector::new(thresholds());
    // Long without ACK already (an idle spell), its data unacknowledged
    // for 5 s at first sight: not yet.
    assert!(
        det.update(&[stalled(7, 30_000)], T0, none, app_owners)
            .is_empty()
    );
    assert!(
        det.update(&[stalled(7, 34_999)], T0 + 5 * S - 1, none, app_owners)
            .is_empty()
    );
    let c = det.update(&[stalled(7, 35_000)], T0 + 5 * S, none, app_owners);
    let f = raised(&c)[0];
    assert_eq!(
        (f.kind, f.reason),
        (LeakKind::HalfOpen, Some(Reason::Retransmitting))
    );
    // Its age is the data's wait, not the idle spell before it.
    assert_eq!((f.age_seconds, f.age_is_lower_bound), (Some(10.0), false));
    assert!(
        f.evidence.starts_with(
            "no ACK for 35.0s, for the data sent 10.0s ago (threshold 10s) with 3 segments unacked"
        ),
        "{}",
        f.evidence
    );
    // Of its retransmissions, it counts those it watched, and says so.
    assert!(
        f.evidence
            .contains(" in the 5.0s this agent has watched it;"),
        "{}",
        f.evidence
    );
    // An ACK arrives: retransmits reset, the flag clears.
    let mut ok = stalled(7, 5);
    info(&mut ok).retransmits = 0;
    info(&mut ok).backoff = 0;
    let c = det.update(&[ok], T0 + 6 * S, none, app_owners);
    assert_eq!(
        cleared(&c)[0].cleared_how.as_deref(),
        Some("ACK progress resumed")
    );
}

/// A connection idle for an hour that writes to a vanished peer: the stall
/// is as old as the data waiting for its ACK, not the hour of quiet before
/// it, and never younger than the agent has seen it stalled.
#[test]
fn an_idle_spell_before_a_stall_is_not_its_age() {
    let mut det = Detector::new(thresholds());
    let mut d = stalled(7, 3_600_000);
    (info(&mut d).rto_us, info(&mut d).backoff) = (12_800_000, 6);
    (info(&mut d).last_data_sent_ms, info(&mut d).retransmits) = (2_000, 6);
    // Its data waited 14.6 s already: an agent that starts beside it flags
    // it at its first dump.
    let c = det.update(&[d], T0, none, app_owners);
    assert_eq!(raised(&c)[0].age_seconds, Some(14.6));
    // 10 s later, 12 s into the seventh timeout (12.8 s).
    info(&mut d).last_data_sent_ms = 12_000;
    info(&mut d).last_ack_recv_ms = 3_610_000;
    det.update(&[d], T0 + 10 * S, none, app_owners);
    let f = active_flag(&det, 7);
    // Six timeouts, 12.6 s, and 2 s into the seventh at first sight; 10 s
    // on, 12 s into it: 24.6 s, whichever is read.
    assert_eq!((f.age_seconds, f.age_is_lower_bound), (Some(24.6), false));
    assert!(
        f.evidence
            .starts_with("no ACK for 1h00m, for the data sent 24.6s ago (threshold 10s)"),
        "{}",
        f.evidence
    );
}

/// With no route to the peer the timer fires and sends nothing: the last
/// send is older than the current timeout, and the wait is the time since
/// it, not that plus the timeouts it already holds.
#[test]
fn a_stall_that_sends_nothing_is_as_old_as_its_last_send() {
    let mut det = Detector::new(thresholds());
    let mut d = stalled(7, 3_600_000);
    (info(&mut d).rto_us, info(&mut d).backoff) = (12_800_000, 6);
    (info(&mut d).last_data_sent_ms, info(&mut d).retransmits) = (20_000, 6);
    det.update(&[d], T0, none, app_owners);
    info(&mut d).last_data_sent_ms = 30_000;
    det.update(&[d], T0 + 10 * S, none, app_owners);
    assert_eq!(active_flag(&det, 7).age_seconds, Some(30.0));
}

/// Once the timeout reaches its cap (120 s) it no longer doubles: tcp_info
/// tells less and less of the stall, the time since the last send starts
/// again at each firing. The earliest start told is kept, so the age only
/// grows, and it is a lower bound.
#[test]
fn a_stall_at_the_timeout_cap_only_grows_and_is_a_lower_bound() {
    let mut det = Detector::new(thresholds());
    let mut d = stalled(7, 3_600_000);
    (info(&mut d).rto_us, info(&mut d).backoff) = (120_000_000, 12);
    (info(&mut d).last_data_sent_ms, info(&mut d).retransmits) = (100_000, 12);
    det.update(&[d], T0, none, app_owners);
    let first = 120.0 * (1.0 - 1.0 / 4096.0) + 100.0;
    // Two firings later, 40 s after the last: tcp_info says less.
    (info(&mut d).backoff, info(&mut d).last_data_sent_ms) = (14, 40_000);
    det.update(&[d], T0 + 260 * S, none, app_owners);
    let f = &active_flag(&det, 7);
    let age = f.age_seconds.expect("age");
    assert!((age - (first + 260.0)).abs() < 0.01, "{f:?}");
    assert!(f.age_is_lower_bound, "{f:?}");
    // Seen stalled for longer than tcp_info ever told: the agent's own time.
    let mut det = Detector::new(thresholds());
    let mut short = stalled(8, 3_600_000);
    (info(&mut short).rto_us, info(&mut short).backoff) = (400_000, 1);
    info(&mut short).last_data_sent_ms = 100;
    assert!(det.update(&[short], T0, none, app_owners).is_empty());
    let c = det.update(&[short], T0 + 30 * S, none, app_owners);
    assert!(
        raised(&c)[0]
            .age_seconds
            .is_some_and(|a| (a - 30.3).abs() < 0.01),
        "{c:?}"
    );
}

#[test]
fn no_false_positive_on_busy_sockets_with_recent_acks() {
    let mut det = Detector::new(thresholds());
    for t in 0..60 {
        // Unacked data in flight, an occasional lost segment, ACKs flowing.
        let mut busy = sock(1, TcpState::Established);
        let i = info(&mut busy);
        i.unacked = 40;
        i.last_ack_recv_ms = 2;
        i.retransmits = u8::from(t % 7 == 0);
        i.total_retrans = t as u32 / 7;
        // A long-idle socket that just sent: unacked, no ACK yet, no RTO.
        let mut woke = sock(2, TcpState::Established);
        info(&mut woke).unacked = 1;
        info(&mut woke).last_ack_recv_ms = 900_000;
        // Keepalive armed, no probes outstanding.
        let mut ka = sock(3, TcpState::Established);
        ka.timer = TimerKind::Keepalive;
        info(&mut ka).last_data_recv_ms = 3_600_000;
        info(&mut ka).last_data_sent_ms = 3_600_000;
        let c = det.update(&[busy, woke, ka], t * S, none, app_owners);
        assert!(c.is_empty(), "t={t}: {c:?}");
    }
    assert_eq!(
        det.gauges().half_open,
        [
            (Reason::Retransmitting, 0),
            (Reason::KeepaliveUnanswered, 0)
        ]
    );
}

#[test]
fn keepalive_probes_unanswered() {
    let mut det = Detector::new(thresholds());
    let mut d = sock(4, TcpState::Established);
    d.timer = TimerKind::Keepalive;
    d.timer_retrans = 2;
    info(&mut d).last_ack_recv_ms = 7_300_000;
    assert!(det.update(&[d], 0, none, app_owners).is_empty());
    let f = det.update(&[d], 10 * S, none, app_owners);
    let f = raised(&f)[0];
    assert_eq!(f.reason, Some(Reason::KeepaliveUnanswered));
    assert!(
        f.evidence.starts_with("2 keepalive probes unanswered"),
        "{}",
        f.evidence
    );
    assert_eq!(det.gauges().half_open[1], (Reason::KeepaliveUnanswered, 1));
}

#[test]
fn idle_without_keepalive_is_a_risk_not_a_leak() {
    let mut det = Detector::new(thresholds());
    let mut d = sock(5, TcpState::Established);
    info(&mut d).last_data_recv_ms = 700_000;
    info(&mut d).last_data_sent_ms = 599_999;
    assert!(det.update(&[d], S, none, app_owners).is_empty());
    info(&mut d).last_data_sent_ms = 600_000;
    let c = det.update(&[d], 2 * S, none, app_owners);
    assert_eq!(raised(&c)[0].kind, LeakKind::IdleNoKeepalive);
    assert_eq!(raised(&c)[0].age_seconds, Some(600.0));
    let r = det.report(2 * S);
    assert_eq!((r.leak_count, r.risks.len(), r.exit_code()), (0, 1, 0));
    assert_eq!(det.gauges().idle_without_keepalive, 1);
    // SO_KEEPALIVE turned on: the risk clears.
    d.timer = TimerKind::Keepalive;
    let c = det.update(&[d], 3 * S, none, app_owners);
    assert_eq!(
        cleared(&c)[0].cleared_how.as_deref(),
        Some("traffic resumed or keepalive armed")
    );
}

/// A socket held in FIN_WAIT2 after `shutdown(SHUT_WR)` has no timer: a
/// peer that never closes its side, or vanished, leaves it to the process.
/// Quiet and without keepalive it is at risk; probing a silent peer it is
/// half-open. An orphan is another rule's.
#[test]
fn a_held_fin_wait2_is_watched_like_an_established_socket() {
    let mut det = Detector::new(thresholds());
    let mut held = sock(5, TcpState::FinWait2);
    info(&mut held).last_data_recv_ms = 700_000;
    info(&mut held).last_data_sent_ms = 600_000;
    let mut orphan = sock(6, TcpState::FinWait2);
    orphan.inode = 0;
    *info(&mut orphan) = *info(&mut held);
    let c = det.update(&[held, orphan], S, none, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!(
        (f[0].kind, f[0].cookie),
        (LeakKind::IdleNoKeepalive, Some(5))
    );
    assert!(
        f[0].evidence
            .starts_with("in FIN_WAIT2 and held: the process shut its side down"),
        "{}",
        f[0].evidence
    );
    assert!(
        f[0].evidence.ends_with(
            "no timer ends FIN_WAIT2 while a process holds the socket (SO_KEEPALIVE with \
             TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT notices one in minutes, the defaults in \
             2h11m; or an application heartbeat with a read timeout)"
        ),
        "{}",
        f[0].evidence
    );
    let r = det.report(S);
    assert_eq!((r.leak_count, r.risks.len()), (0, 1));
    // Keepalive on, its probes unanswered: a half-open peer instead.
    held.timer = TimerKind::Keepalive;
    held.timer_retrans = 3;
    info(&mut held).last_ack_recv_ms = 30_000;
    det.update(&[held], 2 * S, none, app_owners);
    let c = det.update(&[held], 20 * S, none, app_owners);
    assert_eq!(
        raised(&c)
            .iter()
            .map(|f| (f.kind, f.reason))
            .collect::<Vec<_>>(),
        vec![(LeakKind::HalfOpen, Some(Reason::KeepaliveUnanswered))]
    );
    assert_eq!(det.report(20 * S).risks.len(), 0);
}

/// A connection idle because nobody accepted it: it names the listener's
/// process, which should, and says where it waits.
#[test]
fn an_idle_connection_never_accepted_names_its_listener() {
    let mut det = Detector::new(thresholds());
    let mut listener = sock(1, TcpState::Listen);
    listener.inode = 1044;
    let mut d = sock(5, TcpState::Established);
    d.inode = 0;
    info(&mut d).last_data_recv_ms = 700_000;
    info(&mut d).last_data_sent_ms = 700_000;
    let c = det.update(&[listener, d], S, none, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!(
        (f[0].kind, f[0].reason),
        (LeakKind::IdleNoKeepalive, Some(Reason::NotAccepted))
    );
    assert_eq!(f[0].owners, vec![owner(100, "app", 44)]);
    assert!(
        f[0].evidence
            .ends_with("; never accepted: it waits in the listener's accept queue"),
        "{}",
        f[0].evidence
    );
    let text = table(&det.report(S));
    assert!(
        text.contains("10.0.0.2:40005  not accepted yet by pid 100 app fd 44  "),
        "{text}"
    );
    // In another namespace than the agent's, the line names it.
    let mut r = det.report(S);
    (r.risks[0].netns, r.agent_netns) = (4026532001, Some(4026531840));
    r.netns_names.insert(4026532001, "web".into());
    let text = table(&r);
    assert!(
        text.contains("\n  netns 4026532001 (web)  10.0.0.1:8080 -> 10.0.0.2:40005  "),
        "{text}"
    );
}

/// The retransmit timer fires whether or not a segment can leave: with no
/// route to the peer it keeps firing and nothing is sent. The evidence says
/// so instead of counting the firings as retransmitted segments.
#[test]
fn timer_firings_that_sent_nothing_are_told_apart() {
    let mut det = Detector::new(thresholds());
    det.update(&[stalled(7, 30_000)], 0, none, app_owners);
    let mut later = stalled(7, 40_000);
    info(&mut later).retransmits = 7;
    let c = det.update(&[later], 10 * S, none, app_owners);
    let f = raised(&c)[0];
    assert!(
        f.evidence.contains("retransmit timer fired 7 times")
            && f.evidence
                .contains("9 segments retransmitted in total, 0 while stalled")
            && f.evidence.contains(
                " (fewer than the timer fired: the host may have no route to the peer); the \
                 kernel gives up after net.ipv4.tcp_retries2 timeouts"
            ),
        "{}",
        f.evidence
    );
    // Segments that do leave: no such words.
    let mut det = Detector::new(thresholds());
    det.update(&[stalled(8, 30_000)], 0, none, app_owners);
    let mut sent = stalled(8, 40_000);
    info(&mut sent).retransmits = 7;
    info(&mut sent).total_retrans = 12;
    let c = det.update(&[sent], 10 * S, none, app_owners);
    assert!(!raised(&c)[0].evidence.contains("no route"), "{c:?}");
}
