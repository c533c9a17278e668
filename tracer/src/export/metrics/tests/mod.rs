//! Tests of the whole exposition: a golden copy of it, and its agreement
//! with docs/metrics.md.
mod docs;
mod golden;

use super::*;

/// The exposition with what varies between runs and builds made fixed:
/// series within a family sorted by their labels (a family keeps its
/// series in a hash map), histogram lines of one series kept in their
/// order, and the version in `tracer_build_info` spelled `VERSION`.
pub(super) fn canonical(text: &str) -> String {
    let text = text.replace(
        &format!(
            "version=\"{}\",abi=\"{}\"",
            env!("CARGO_PKG_VERSION"),
            tracer_common::ABI_VERSION
        ),
        "version=\"VERSION\",abi=\"ABI\"",
    );
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        // Stable: the lines of one series (a histogram's buckets, sum and
        // count) keep the order the encoder gave them.
        samples.sort_by_key(|l| series_key(l));
        for l in samples.drain(..) {
            out.push_str(l);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

/// A sample line's label set, without the `le` of a histogram bucket.
fn series_key(line: &str) -> String {
    let Some((_, rest)) = line.split_once('{') else {
        return String::new();
    };
    let labels = rest.rsplit_once('}').map_or(rest, |(l, _)| l);
    labels
        .split(',')
        .filter(|l| !l.starts_with("le="))
        .collect::<Vec<_>>()
        .join(",")
}

/// A fixed sequence of engine outcomes and published gauges, touching
/// every family.
pub(super) fn drive(m: &Metrics) {
    use crate::{
        engine::{ClosedBy, Correction, Direction, Observer, TimeWaitEnd},
        event::Kind,
        export::workload::{Counts, Workload},
        leaks::{Gauges, LeakKind, Reason},
    };
    let mut observer = m;
    let o: &mut dyn Observer = &mut observer;
    o.stay(1, TcpState::TimeWait, 60_200_000_000, false);
    o.stay(2, TcpState::Established, 1_500_000, true);
    o.stay(3, TcpState::SynSent, 400_000, false);
    o.transition(1, TcpState::FinWait2, TcpState::Close);
    o.transition(1, TcpState::Established, TcpState::FinWait1);
    // A pair the kernel does not report.
    o.transition(1, TcpState::TimeWait, TcpState::Established);
    o.closed(1, Some(ClosedBy::Local));
    o.closed(3, Some(ClosedBy::Reset));
    o.closed(4, None);
    o.retransmit(1, Some(TcpState::Established));
    o.synack_retransmit(5);
    o.reset(6, Direction::Received, None);
    o.reset(0, Direction::Sent, Some(TcpState::Established));
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

    let mut counts = [0u64; TcpState::COUNT];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = i as u64;
    }
    m.set_sockets(&counts);
    m.tracked.set(42);
    m.set_time_wait_by_port([(Some(8080), 3), (Some(443), 1), (None, 2)].into_iter());
    m.set_time_wait_by_port([(Some(8080), 4), (None, 2), (None, 3)].into_iter());

    m.event(Kind::State);
    m.event(Kind::State);
    m.event(Kind::ResetSent);
    m.events_other_netns.inc();
    m.events_lost.inc_by(3);
    m.events_undecodable.inc_by(1);

    m.netns_tracked.set(2);
    for (g, n) in m.netns_unreachable.iter().zip([1, 2, 3]) {
        g.set(n);
    }
    for (d, (cpu, interval)) in m.dumps.iter().zip([(0.25, 1.0), (0.5, 5.0)]) {
        d.count.inc();
        d.cpu_seconds.inc_by(cpu);
        d.interval_seconds.set(interval);
    }
    m.reconcile_errors.inc();

    m.set_leaks(&Gauges {
        close_wait_leaks: 3,
        close_wait_by_comm: vec![("nginx".into(), 2), ("other".into(), 1)],
        half_open: [
            (Reason::Retransmitting, 1),
            (Reason::KeepaliveUnanswered, 0),
        ],
        stuck_handshakes: [(Reason::SynSent, 0), (Reason::SynRecv, 4)],
        idle_without_keepalive: 5,
        orphaned_fin_wait2: 6,
    });
    m.leak_flagged(LeakKind::CloseWait);
    m.leak_flagged(LeakKind::CloseWait);
    m.leak_flagged(LeakKind::HalfOpen);

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
    m.workloads.containers.set(1);
    m.workloads.cache_entries.set(2);
    m.workloads.cache_evictions.inc_by(3);
}

#[test]
fn exposition_has_every_family_with_zeroes() {
    let m = Metrics::new();
    m.transition(TcpState::FinWait2, TcpState::Close);
    m.observe_stay(TcpState::TimeWait, 60.2);
    m.set_time_wait_by_port([(Some(8080), 3), (None, 2), (None, 1)].into_iter());
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
        "tracer_events_total{kind=\"synack_retransmit\"} 0",
        "tracer_events_lost_total 0",
        "tracer_reconcile_corrections_total{reason=\"missed\"} 0",
        "tracer_reconcile_corrections_total{reason=\"netns_gone\"} 0",
        "tracer_netns_tracked 0",
        "tracer_netns_unreachable{reason=\"no_cap_sys_admin\"} 0",
        "tracer_tracked_sockets 0",
        "tracer_evictions_total 0",
        "tracer_time_wait_overflows_total 0",
        "tracer_build_info{",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    let classic = to_classic_text(&text);
    assert!(
        classic.contains("# TYPE tracer_tcp_retransmits_total counter\n"),
        "{classic}"
    );
    assert!(classic.contains("# HELP tracer_tcp_retransmits_total "));
    assert!(classic.contains("# TYPE tracer_tcp_sockets gauge\n"));
    assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
    // A transition the kernel never reports has no pre-created series.
    assert!(!text.contains("from=\"time_wait\""));
}
