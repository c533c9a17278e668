//! Tests of the whole exposition: a golden copy of it, and its agreement
//! with docs/metrics.md.
mod docs;
mod golden;

use super::*;
use crate::{engine::Observer as _, tcp::TcpState};

/// The exposition with what varies between runs and builds made fixed:
/// series within a family sorted by their labels
/// (`tracer_testkit::exposition::by_series`), and the version in
/// `tracer_build_info` spelled `VERSION`.
pub(super) fn canonical(text: &str) -> String {
    let text = text.replace(
        &format!(
            "version=\"{}\",abi=\"{}\"",
            env!("CARGO_PKG_VERSION"),
            tracer_common::ABI_VERSION
        ),
        "version=\"VERSION\",abi=\"ABI\"",
    );
    tracer_testkit::exposition::by_series(&text, |_| true)
}

/// A fixed sequence of engine outcomes and published gauges, touching
/// every family.
pub(super) fn drive(m: &Metrics) {
    use std::time::Duration;

    use crate::{
        container::ResolverStats,
        engine::{
            ClosedBy, Correction, Direction, Handshake, HandshakeFailure, Observer, Role,
            TimeWaitEnd,
        },
        event::Kind,
        export::workload::{Counts, Workload},
        leaks::{Gauges, LeakKind, Reason},
        pipeline::{Dumped, NetnsTally, Tallies},
    };
    let o = &mut m.recorders();
    o.stay(1, TcpState::TimeWait, 60_200_000_000, false);
    o.stay(2, TcpState::Established, 1_500_000, true);
    o.stay(3, TcpState::SynSent, 400_000, false);
    o.transition(1, TcpState::FinWait2, TcpState::Close);
    o.transition(1, TcpState::Established, TcpState::FinWait1);
    // A pair the kernel does not report: it appears when flushed.
    o.transition(1, TcpState::TimeWait, TcpState::Established);
    o.closed(1, Some(ClosedBy::Local));
    o.closed(3, Some(ClosedBy::Reset));
    o.closed(4, None);
    o.retransmit(1, Some(TcpState::Established));
    o.synack_retransmit(5);
    o.reset(6, Direction::Received, None);
    o.reset(0, Direction::Sent, Some(TcpState::Established));
    let ok = |latency_ns| Handshake::Established { latency_ns };
    let failed = Handshake::Failed;
    for (cookie, role, outcome) in [
        (13, Role::Client, ok(Some(80_000))),
        (14, Role::Client, ok(Some(1_020_000_000))),
        (15, Role::Client, ok(None)),
        (16, Role::Server, ok(None)),
        (17, Role::Client, failed(HandshakeFailure::Refused)),
        (18, Role::Client, failed(HandshakeFailure::TimedOut)),
        (19, Role::Server, failed(HandshakeFailure::Reset)),
    ] {
        o.handshake(cookie, role, outcome);
    }
    o.time_wait_ended(1, TimeWaitEnd::Expired);
    o.time_wait_ended(7, TimeWaitEnd::Reused);
    o.time_wait_never_appeared(8);
    for c in Correction::ALL {
        o.correction(9, c);
    }
    o.correction(9, Correction::Missed);
    o.time_wait_overflowed(10);
    o.evicted(11, true);
    o.evicted(12, false);
    o.flush();

    let mut counts = [0u64; TcpState::COUNT];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = i as u64;
    }
    m.tcp.set_sockets(&counts);
    m.agent.set_tracked(42);
    m.tcp.set_listening([8080, 443].into());
    m.tcp.split_time_wait(6, |p| if p == 8080 { 3 } else { 1 });
    m.tcp.set_listening([8080].into());
    m.tcp.split_time_wait(9, |_| 4);

    let mut read = [0; 5];
    read[Kind::State as usize] = 2;
    read[Kind::ResetSent as usize] = 1;
    m.agent.events_read(&mut read);
    assert_eq!(read, [0; 5]);
    m.netns.events_not_followed(1);
    m.agent.tallied(&Tallies {
        lost: 3,
        undecodable: 1,
    });

    m.netns.publish(&NetnsTally {
        tracked: 2,
        refused: 1,
        unnamed: 2,
        unnamed_alive: 1,
        over_cap: 3,
        sharing_host_table: 2,
        ended: 0,
        containers: ResolverStats {
            attributed: 1,
            cached: 2,
            evictions: 3,
        },
    });
    let error = anyhow::anyhow!("dump failed");
    for (full, cpu_ns, interval_s, looked_up, error) in [
        (false, 250_000_000, 1, 0, Some(&error)),
        (true, 500_000_000, 5, 0, None),
        (false, 1_000_000, 1, 7, None),
    ] {
        m.reconcile.dumped(&Dumped {
            full,
            cpu_ns,
            interval: Duration::from_secs(interval_s),
            looked_up,
            error,
        });
    }

    m.leaks.publish(&Gauges {
        close_wait_leaks: 3,
        close_wait_by_comm: vec![("nginx".into(), 2), ("other".into(), 1)],
        half_open: [
            (Reason::Retransmitting, 1),
            (Reason::KeepaliveUnanswered, 0),
        ],
        stuck_handshakes: [
            (Reason::SynSent, 0),
            (Reason::SynRecv, 4),
            (Reason::AcceptQueueFull, 1),
        ],
        idle_without_keepalive: 5,
        orphaned_fin_wait2: 6,
    });
    m.leaks.flagged(LeakKind::CloseWait);
    m.leaks.flagged(LeakKind::CloseWait);
    m.leaks.flagged(LeakKind::HalfOpen);
    m.forecast.publish(&super::forecast::sample());

    let pod = Workload {
        pod_namespace: "shop".into(),
        pod: "cart".into(),
        container: "app".into(),
        netns: String::new(),
    };
    let host = Workload {
        netns: "host".into(),
        ..Workload::default()
    };
    m.workloads.set(
        [
            (
                pod,
                Counts {
                    sockets: [1, 2, 3, 4, 5],
                    leaks: [1, 0, 0, 0, 0],
                },
            ),
            (
                host,
                Counts {
                    sockets: [6, 0, 0, 0, 7],
                    leaks: [0, 0, 1, 2, 0],
                },
            ),
        ]
        .into_iter()
        .collect(),
    );
}

#[test]
fn exposition_has_every_family_with_zeroes() {
    let m = Metrics::new();
    let o = &mut m.recorders();
    o.transition(1, TcpState::FinWait2, TcpState::Close);
    o.stay(1, TcpState::TimeWait, 60_200_000_000, false);
    o.flush();
    m.tcp.set_listening([8080].into());
    m.tcp.split_time_wait(6, |_| 3);
    let text = m.encode();
    for needle in [
        "tracer_tcp_sockets{state=\"time_wait\"} 0",
        "tracer_tcp_state_transitions_total{from=\"fin_wait2\",to=\"close\"} 1",
        "tracer_tcp_state_transitions_total{from=\"established\",to=\"close_wait\"} 0",
        "tracer_tcp_state_duration_seconds_bucket{le=\"61.0\",state=\"time_wait\"} 1",
        "tracer_tcp_state_duration_seconds_bucket{le=\"60.0\",state=\"time_wait\"} 0",
        "tracer_tcp_connections_closed_total{closed_by=\"reset\"} 0",
        "tracer_tcp_time_wait_sockets{port=\"8080\"} 3",
        "tracer_tcp_time_wait_sockets{port=\"other\"} 3",
        "tracer_tcp_resets_total{direction=\"received\"} 0",
        "tracer_tcp_connections_established_total{role=\"server\"} 0",
        "tracer_tcp_handshake_failures_total{role=\"client\",reason=\"refused\"} 0",
        "tracer_tcp_handshake_seconds_count{role=\"client\"} 0",
        "tracer_events_total{kind=\"synack_retransmit\"} 0",
        "tracer_events_lost_total 0",
        "tracer_reconcile_corrections_total{reason=\"missed\"} 0",
        "tracer_reconcile_corrections_total{reason=\"netns_gone\"} 0",
        "tracer_netns_tracked 0",
        "tracer_netns_sharing_host_table 0",
        "tracer_netns_unreachable{reason=\"no_cap_sys_admin\"} 0",
        "tracer_tracked_sockets 0",
        "tracer_evictions_total 0",
        "tracer_time_wait_overflows_total 0",
        "tracer_build_info{",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    // A transition the kernel never reports has no pre-created series,
    // nor does a handshake failure that cannot happen to its role.
    assert!(!text.contains("from=\"time_wait\""));
    assert!(!text.contains("role=\"server\",reason=\"refused\""));
    assert!(!text.contains("tracer_tcp_handshake_seconds_count{role=\"server\"}"));
}

#[test]
fn a_rare_transition_appears_when_it_first_happens_and_keeps_counting() {
    let m = Metrics::new();
    let o = &mut m.recorders();
    let series = "tracer_tcp_state_transitions_total{from=\"syn_sent\",to=\"syn_recv\"}";
    o.flush();
    assert!(!m.encode().contains(series));
    // Simultaneous open: rare, and not pre-created.
    o.transition(7, TcpState::SynSent, TcpState::SynRecv);
    assert!(!m.encode().contains(series), "shown before the flush");
    o.flush();
    let text = m.encode();
    assert!(text.contains(&format!("{series} 1\n")), "{text}");
    o.transition(8, TcpState::SynSent, TcpState::SynRecv);
    o.transition(9, TcpState::SynSent, TcpState::SynRecv);
    o.flush();
    let text = m.encode();
    assert!(text.contains(&format!("{series} 3\n")), "{text}");
}

#[test]
fn counters_catch_up_with_totals_kept_elsewhere() {
    use crate::pipeline::Tallies;
    let m = Metrics::new();
    for (lost, undecodable) in [(3, 0), (5, 1), (4, 1)] {
        m.agent.tallied(&Tallies { lost, undecodable });
    }
    let text = m.encode();
    assert!(text.contains("tracer_events_lost_total 5\n"), "{text}");
    assert!(
        text.contains("tracer_events_undecodable_total 1\n"),
        "{text}"
    );
}

/// Thousands of listeners export a bounded number of series: the ports
/// holding the most TIME_WAIT sockets, none for a port holding none.
#[test]
fn time_wait_by_port_shows_the_busiest_ports_only() {
    use super::tcp::TIME_WAIT_PORTS;
    let m = Metrics::new();
    m.tcp.set_listening((20000..21000).collect());
    // Port 20000 + k holds k TIME_WAIT sockets below 20100, none above.
    let on = |p: u16| if p < 20100 { u64::from(p - 20000) } else { 0 };
    let total: u64 = (20000..20100).map(on).sum::<u64>() + 7;
    m.tcp.split_time_wait(total, on);
    let text = m.encode();
    let shown: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tracer_tcp_time_wait_sockets{port=\"2"))
        .collect();
    assert_eq!(shown.len(), TIME_WAIT_PORTS, "{shown:?}");
    assert!(text.contains("tracer_tcp_time_wait_sockets{port=\"20099\"} 99\n"));
    assert!(text.contains("tracer_tcp_time_wait_sockets{port=\"20080\"} 80\n"));
    assert!(!text.contains("port=\"20079\""), "{text}");
    assert!(
        !text.contains("port=\"20500\""),
        "no series for a port without TIME_WAIT"
    );
    let busiest: u64 = (20080..20100).map(on).sum();
    assert!(text.contains(&format!(
        "tracer_tcp_time_wait_sockets{{port=\"other\"}} {}\n",
        total - busiest
    )));
    // The busiest change: the series follow.
    m.tcp.split_time_wait(5, |p| u64::from(p == 20500) * 5);
    let text = m.encode();
    assert!(text.contains("tracer_tcp_time_wait_sockets{port=\"20500\"} 5\n"));
    assert!(!text.contains("port=\"20099\""), "{text}");
}

#[test]
fn a_port_no_longer_listened_on_loses_its_series() {
    let m = Metrics::new();
    m.tcp.set_listening([8080, 443].into());
    m.tcp.split_time_wait(10, |p| u64::from(p == 443));
    assert!(
        m.encode()
            .contains("tracer_tcp_time_wait_sockets{port=\"443\"} 1\n")
    );
    m.tcp.set_listening([8080].into());
    m.tcp.split_time_wait(10, |_| 2);
    let text = m.encode();
    assert!(!text.contains("port=\"443\""), "{text}");
    assert!(
        text.contains("tracer_tcp_time_wait_sockets{port=\"8080\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("tracer_tcp_time_wait_sockets{port=\"other\"} 8\n"),
        "{text}"
    );
}
