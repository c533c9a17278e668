//! Prometheus metrics (prometheus-client), documented in docs/metrics.md.
//!
//! Every labelled series is created up front, and the hot path holds
//! handles to them in arrays, so counting an event never hashes labels,
//! takes a lock or allocates. `/metrics` only reads atomics, so a scrape
//! never waits for the engine.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{event::Kind, tcp::TcpState};

/// Buckets that resolve both sub-millisecond handshakes and the 60 s of
/// TIME_WAIT (which the reconcile interval, 1 s by default, quantises).
pub const DURATION_BUCKETS: [f64; 30] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 3.5, 5.0,
    10.0, 30.0, 55.0, 59.0, 60.0, 61.0, 62.0, 65.0, 90.0, 120.0, 300.0, 900.0, 3600.0, 86400.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FromTo {
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedByLabel {
    closed_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DumpLabel {
    dump: &'static str,
}

/// `dump` label values of the reconcile self-metrics: `live` is every
/// `--reconcile-interval` (every state but TIME_WAIT), `full` every
/// `--time-wait-interval` (everything).
pub const DUMPS: [&str; 2] = ["live", "full"];

/// Self-metrics of one kind of reconcile dump.
pub struct DumpMetrics {
    /// `tracer_reconciles_total{dump}`
    pub count: Counter,
    /// `tracer_reconcile_cpu_seconds_total{dump}`
    pub cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `tracer_reconcile_interval_seconds{dump}`
    pub interval_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    abi: String,
}

/// `closed_by` label values.
pub const CLOSED_BY: [&str; 3] = ["local", "remote", "reset"];
/// `direction` label values of `tracer_tcp_resets_total`.
pub const DIRECTIONS: [&str; 2] = ["sent", "received"];
/// `reason` label values of `tracer_reconcile_corrections_total`.
pub const CORRECTION_REASONS: [&str; 5] = [
    "missed",
    "vanished",
    "state_mismatch",
    "time_wait_never_appeared",
    "netns_gone",
];
/// `reason` label values of `tracer_netns_unreachable`.
pub const NETNS_UNREACHABLE: [&str; 3] = ["no_cap_sys_admin", "unnamed", "over_cap"];

const N: usize = TcpState::COUNT;

/// All metrics and the registry that exposes them.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    sockets: [Gauge; N],
    durations: [Histogram; N],
    transitions: Vec<Counter>,
    closed: [Counter; 3],
    time_wait_by_port: Family<PortLabel, Gauge>,
    /// The ports `time_wait_by_port` has a series for.
    time_wait_ports_shown: std::sync::Mutex<Vec<u16>>,
    /// `tracer_tcp_retransmits_total`
    pub retransmits: Counter,
    /// `tracer_tcp_synack_retransmits_total`
    pub synack_retransmits: Counter,
    resets: [Counter; 2],
    events: [Counter; 5],
    /// `tracer_events_lost_total`
    pub events_lost: Counter,
    /// `tracer_events_undecodable_total`
    pub events_undecodable: Counter,
    /// `tracer_events_other_netns_total`
    pub events_other_netns: Counter,
    corrections: [Counter; 5],
    /// `tracer_netns_tracked`
    pub netns_tracked: Gauge,
    /// `tracer_netns_unreachable{reason}`, indexed like [`NETNS_UNREACHABLE`].
    pub netns_unreachable: [Gauge; 3],
    /// `tracer_tracked_sockets`
    pub tracked: Gauge,
    /// `tracer_evictions_total`
    pub evictions: Counter,
    /// `tracer_time_wait_overflows_total`
    pub time_wait_overflows: Counter,
    /// `tracer_reconcile_errors_total`
    pub reconcile_errors: Counter,
    /// Reconcile dumps, indexed like [`DUMPS`].
    pub dumps: [DumpMetrics; 2],
    /// `tracer_time_wait_ended_total{how}` handles: expired, reused, reset.
    time_wait_ended: [Counter; 3],
    close_wait_leaks: Gauge,
    close_wait_by_comm: Family<CommLabel, Gauge>,
    half_open: Family<ReasonLabel, Gauge>,
    stuck_handshakes: Family<KindLabel, Gauge>,
    idle_without_keepalive: Gauge,
    orphaned_fin_wait2: Gauge,
    leaks_flagged: Family<KindLabel, Counter>,
    /// Per-workload gauges and the container attribution's counters.
    pub workloads: super::workload::Workloads,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommLabel {
    comm: String,
}

/// How a TIME_WAIT stay ended, as the `how` label spells it.
pub const TIME_WAIT_ENDS: [&str; 3] = ["expired", "reused", "reset"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Register every metric, with every known label value at 0.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("tracer");
        let sockets_f = Family::<StateLabel, Gauge>::default();
        r.register(
            "tcp_sockets",
            "Current TCP sockets per state",
            sockets_f.clone(),
        );
        let durations_f = Family::<StateLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        r.register_with_unit(
            "tcp_state_duration",
            "Completed stays in each TCP state",
            prometheus_client::registry::Unit::Seconds,
            durations_f.clone(),
        );
        let transitions_f = Family::<FromTo, Counter>::default();
        r.register(
            "tcp_state_transitions",
            "TCP state transitions",
            transitions_f.clone(),
        );
        let closed_f = Family::<ClosedByLabel, Counter>::default();
        r.register(
            "tcp_connections_closed",
            "Connections closed, by who closed first",
            closed_f.clone(),
        );
        let time_wait_by_port = Family::<PortLabel, Gauge>::default();
        r.register(
            "tcp_time_wait_sockets",
            "TIME_WAIT sockets by local listening port (port=\"other\" for the rest)",
            time_wait_by_port.clone(),
        );
        let retransmits = Counter::default();
        r.register(
            "tcp_retransmits",
            "Retransmitted TCP segments",
            retransmits.clone(),
        );
        let synack_retransmits = Counter::default();
        r.register(
            "tcp_synack_retransmits",
            "Retransmitted SYN-ACKs",
            synack_retransmits.clone(),
        );
        let resets_f = Family::<DirectionLabel, Counter>::default();
        r.register(
            "tcp_resets",
            "TCP resets sent and received",
            resets_f.clone(),
        );
        let events_f = Family::<KindLabel, Counter>::default();
        r.register(
            "events",
            "Kernel events received, by kind",
            events_f.clone(),
        );
        let events_lost = Counter::default();
        r.register(
            "events_lost",
            "Events the kernel could not deliver (ring buffer full or failed read)",
            events_lost.clone(),
        );
        let events_undecodable = Counter::default();
        r.register(
            "events_undecodable",
            "Ring buffer records that could not be decoded",
            events_undecodable.clone(),
        );
        let events_other_netns = Counter::default();
        r.register(
            "events_other_netns",
            "Events of sockets in other network namespaces, which the agent does not follow",
            events_other_netns.clone(),
        );
        let corrections_f = Family::<ReasonLabel, Counter>::default();
        r.register(
            "reconcile_corrections",
            "Differences between tracked state and sock_diag that reconciliation corrected",
            corrections_f.clone(),
        );
        let netns_tracked = Gauge::default();
        r.register(
            "netns_tracked",
            "Network namespaces followed, each with its own sock_diag sockets",
            netns_tracked.clone(),
        );
        let netns_unreachable_f = Family::<ReasonLabel, Gauge>::default();
        r.register(
            "netns_unreachable",
            "Network namespaces that cannot be followed, by why",
            netns_unreachable_f.clone(),
        );
        let netns_unreachable = NETNS_UNREACHABLE
            .map(|r| netns_unreachable_f.get_or_create_owned(&ReasonLabel { reason: r }));
        let tracked = Gauge::default();
        r.register(
            "tracked_sockets",
            "Socket records held by the engine",
            tracked.clone(),
        );
        let evictions = Counter::default();
        r.register(
            "evictions",
            "Socket records evicted at the --max-sockets cap",
            evictions.clone(),
        );
        let time_wait_overflows = Counter::default();
        r.register(
            "time_wait_overflows",
            "Closes that left no TIME_WAIT socket because the namespace held tcp_max_tw_buckets of them",
            time_wait_overflows.clone(),
        );
        let reconcile_errors = Counter::default();
        r.register(
            "reconcile_errors",
            "sock_diag dumps that failed",
            reconcile_errors.clone(),
        );
        let dump_count_f = Family::<DumpLabel, Counter>::default();
        r.register(
            "reconciles",
            "sock_diag dumps reconciled, by kind",
            dump_count_f.clone(),
        );
        let dump_cpu_f = Family::<DumpLabel, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        r.register(
            "reconcile_cpu_seconds",
            "CPU time spent on reconcile dumps: the kernel's walk and the engine's update",
            dump_cpu_f.clone(),
        );
        let dump_interval_f =
            Family::<DumpLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        r.register(
            "reconcile_interval_seconds",
            "Gap between reconcile dumps in force: the configured interval, or longer when --reconcile-budget stretched it",
            dump_interval_f.clone(),
        );
        let dumps = DUMPS.map(|dump| DumpMetrics {
            count: dump_count_f.get_or_create_owned(&DumpLabel { dump }),
            cpu_seconds: dump_cpu_f.get_or_create_owned(&DumpLabel { dump }),
            interval_seconds: dump_interval_f.get_or_create_owned(&DumpLabel { dump }),
        });
        let tw_end_f = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        r.register(
            "tcp_time_wait_ended",
            "TIME_WAIT stays that ended, by how",
            tw_end_f.clone(),
        );
        // A gauge fixed at 1 rather than an OpenMetrics `info`, which the
        // classic text parser (promtool 2.x) rejects.
        let close_wait_leaks = Gauge::default();
        r.register(
            "close_wait_leaks",
            "Sockets in CLOSE_WAIT longer than --close-wait-threshold",
            close_wait_leaks.clone(),
        );
        let close_wait_by_comm = Family::<CommLabel, Gauge>::default();
        r.register(
            "close_wait_leaks_by_process",
            "CLOSE_WAIT leaks by process name: the top 20, the rest under comm=\"other\"",
            close_wait_by_comm.clone(),
        );
        let half_open = Family::<ReasonLabel, Gauge>::default();
        r.register(
            "half_open_connections",
            "Connections whose peer seems to have vanished",
            half_open.clone(),
        );
        let stuck_handshakes = Family::<KindLabel, Gauge>::default();
        r.register(
            "stuck_handshakes",
            "Handshakes that did not finish within --handshake-threshold",
            stuck_handshakes.clone(),
        );
        let idle_without_keepalive = Gauge::default();
        r.register(
            "idle_without_keepalive",
            "ESTABLISHED sockets idle longer than --idle-threshold with no keepalive timer (a risk)",
            idle_without_keepalive.clone(),
        );
        let orphaned_fin_wait2 = Gauge::default();
        r.register(
            "orphaned_fin_wait2",
            "Orphaned FIN_WAIT2 sockets older than --fin-wait2-threshold",
            orphaned_fin_wait2.clone(),
        );
        let leaks_flagged = Family::<KindLabel, Counter>::default();
        r.register(
            "leaks_flagged",
            "Leak and risk flags raised, by kind",
            leaks_flagged.clone(),
        );
        for k in crate::leaks::LeakKind::ALL {
            leaks_flagged
                .get_or_create(&KindLabel { kind: k.name() })
                .inc_by(0);
        }
        for reason in crate::leaks::Reason::HALF_OPEN {
            half_open
                .get_or_create(&ReasonLabel {
                    reason: reason.name(),
                })
                .set(0);
        }
        for kind in crate::leaks::Reason::HANDSHAKE {
            stuck_handshakes
                .get_or_create(&KindLabel { kind: kind.name() })
                .set(0);
        }
        close_wait_by_comm
            .get_or_create(&CommLabel {
                comm: "other".into(),
            })
            .set(0);
        let workloads = super::workload::Workloads::register(&mut r);
        let build = Family::<BuildLabels, Gauge>::default();
        r.register("build_info", "Build information; always 1", build.clone());
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                abi: tracer_common::ABI_VERSION.to_string(),
            })
            .set(1);

        let by_state = |st: TcpState| StateLabel { state: st.name() };
        let sockets = TcpState::ALL.map(|st| sockets_f.get_or_create_owned(&by_state(st)));
        let durations = TcpState::ALL.map(|st| durations_f.get_or_create_owned(&by_state(st)));
        let mut transitions = Vec::with_capacity(N * N);
        for from in TcpState::ALL {
            for to in TcpState::ALL {
                // Only pairs the kernel can report get a pre-created series;
                // the rest are created (once) if they ever occur.
                let label = FromTo {
                    from: from.name(),
                    to: to.name(),
                };
                transitions.push(if plausible(from, to) {
                    transitions_f.get_or_create_owned(&label)
                } else {
                    Counter::default()
                });
            }
        }
        let closed =
            CLOSED_BY.map(|c| closed_f.get_or_create_owned(&ClosedByLabel { closed_by: c }));
        let resets =
            DIRECTIONS.map(|d| resets_f.get_or_create_owned(&DirectionLabel { direction: d }));
        let events = Kind::ALL.map(|k| events_f.get_or_create_owned(&KindLabel { kind: k.name() }));
        let corrections = CORRECTION_REASONS
            .map(|r| corrections_f.get_or_create_owned(&ReasonLabel { reason: r }));
        let time_wait_ended =
            TIME_WAIT_ENDS.map(|h| tw_end_f.get_or_create_owned(&vec![("how", h)]));
        let m = Metrics {
            registry: r,
            sockets,
            durations,
            transitions,
            closed,
            time_wait_by_port,
            time_wait_ports_shown: std::sync::Mutex::default(),
            retransmits,
            synack_retransmits,
            resets,
            events,
            events_lost,
            events_undecodable,
            events_other_netns,
            corrections,
            netns_tracked,
            netns_unreachable,
            tracked,
            evictions,
            time_wait_overflows,
            reconcile_errors,
            dumps,
            time_wait_ended,
            close_wait_leaks,
            close_wait_by_comm,
            half_open,
            stuck_handshakes,
            idle_without_keepalive,
            orphaned_fin_wait2,
            leaks_flagged,
            workloads,
        };
        m.time_wait_by_port
            .get_or_create(&PortLabel {
                port: "other".into(),
            })
            .set(0);
        let _ = transitions_f;
        m
    }

    /// Set `tracer_tcp_sockets{state}` from per-state counts.
    pub fn set_sockets(&self, counts: &[u64; N]) {
        for (g, &c) in self.sockets.iter().zip(counts) {
            g.set(c as i64);
        }
    }

    /// Record a completed stay.
    pub fn observe_stay(&self, state: TcpState, secs: f64) {
        self.durations[state.index()].observe(secs);
    }

    /// Count a transition.
    pub fn transition(&self, from: TcpState, to: TcpState) {
        self.transitions[from.index() * N + to.index()].inc();
    }

    /// Count a closed connection; `by` indexes [`CLOSED_BY`].
    pub fn closed(&self, by: usize) {
        if let Some(c) = self.closed.get(by) {
            c.inc();
        }
    }

    /// Count a reset; `dir` indexes [`DIRECTIONS`].
    pub fn reset(&self, dir: usize) {
        if let Some(c) = self.resets.get(dir) {
            c.inc();
        }
    }

    /// Count an event of `kind`.
    pub fn event(&self, kind: Kind) {
        self.events[kind as usize].inc();
    }

    /// Count a reconcile correction; `reason` indexes [`CORRECTION_REASONS`].
    pub fn correction(&self, reason: usize, n: u64) {
        if let Some(c) = self.corrections.get(reason) {
            c.inc_by(n);
        }
    }

    /// Count a TIME_WAIT end; `how` indexes [`TIME_WAIT_ENDS`].
    pub fn time_wait_ended(&self, how: usize) {
        if let Some(c) = self.time_wait_ended.get(how) {
            c.inc();
        }
    }

    /// Replace `tracer_tcp_time_wait_sockets{port}`: `listening` lists the
    /// ports the host listens on; counts for other ports go to "other".
    ///
    /// Series are set in place, and those of ports no longer listed are
    /// removed, so a concurrent scrape never sees the family half-built.
    pub fn set_time_wait_by_port(&self, per_port: impl Iterator<Item = (Option<u16>, u64)>) {
        let mut shown = self
            .time_wait_ports_shown
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let before = std::mem::take(&mut *shown);
        let mut other = 0u64;
        for (port, n) in per_port {
            match port {
                Some(p) => {
                    self.time_wait_by_port
                        .get_or_create(&PortLabel {
                            port: p.to_string(),
                        })
                        .set(n as i64);
                    shown.push(p);
                }
                None => other += n,
            }
        }
        for gone in before.into_iter().filter(|p| !shown.contains(p)) {
            self.time_wait_by_port.remove(&PortLabel {
                port: gone.to_string(),
            });
        }
        self.time_wait_by_port
            .get_or_create(&PortLabel {
                port: "other".into(),
            })
            .set(other as i64);
    }

    /// Publish the leak detector's gauges.
    pub fn set_leaks(&self, g: &crate::leaks::Gauges) {
        self.close_wait_leaks.set(g.close_wait_leaks as i64);
        self.close_wait_by_comm.clear();
        for (comm, n) in &g.close_wait_by_comm {
            self.close_wait_by_comm
                .get_or_create(&CommLabel { comm: comm.clone() })
                .set(*n as i64);
        }
        for (reason, n) in g.half_open {
            self.half_open
                .get_or_create(&ReasonLabel {
                    reason: reason.name(),
                })
                .set(n as i64);
        }
        for (kind, n) in g.stuck_handshakes {
            self.stuck_handshakes
                .get_or_create(&KindLabel { kind: kind.name() })
                .set(n as i64);
        }
        self.idle_without_keepalive
            .set(g.idle_without_keepalive as i64);
        self.orphaned_fin_wait2.set(g.orphaned_fin_wait2 as i64);
    }

    /// Count a raised flag of `kind`.
    pub fn leak_flagged(&self, kind: crate::leaks::LeakKind) {
        self.leaks_flagged
            .get_or_create(&KindLabel { kind: kind.name() })
            .inc();
    }

    /// Encode the registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Turn an OpenMetrics exposition into the classic Prometheus text format
/// (version 0.0.4) for clients that do not ask for OpenMetrics, such as
/// `curl` or `promtool check metrics`: counter families are named with
/// their `_total` suffix, and `# UNIT` and `# EOF` lines are dropped.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 1024);
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Transitions `inet_sock_set_state` reports in practice.
fn plausible(from: TcpState, to: TcpState) -> bool {
    use TcpState::*;
    matches!(
        (from, to),
        (Close, SynSent)
            | (Close, Listen)
            | (Listen, Close)
            | (Listen, SynRecv)
            | (SynSent, Established)
            | (SynSent, Close)
            | (SynRecv, Established)
            | (SynRecv, Close)
            | (Established, FinWait1)
            | (Established, CloseWait)
            | (Established, Close)
            | (FinWait1, FinWait2)
            | (FinWait1, Closing)
            | (FinWait1, Close)
            | (FinWait2, Close)
            | (Closing, Close)
            | (CloseWait, LastAck)
            | (CloseWait, Close)
            | (LastAck, Close)
    )
}

/// Feeds what the engine learns into the metrics.
impl crate::engine::Observer for &Metrics {
    fn stay(&mut self, _cookie: u64, state: TcpState, duration_ns: u64, _lower_bound: bool) {
        self.observe_stay(state, duration_ns as f64 / 1e9);
    }

    fn transition(&mut self, _cookie: u64, from: TcpState, to: TcpState) {
        Metrics::transition(self, from, to);
    }

    fn closed(&mut self, _cookie: u64, by: Option<crate::engine::ClosedBy>) {
        if let Some(by) = by {
            Metrics::closed(self, by.index());
        }
    }

    fn retransmit(&mut self, _cookie: u64, _state: Option<TcpState>) {
        self.retransmits.inc();
    }

    fn synack_retransmit(&mut self, _cookie: u64) {
        self.synack_retransmits.inc();
    }

    fn reset(
        &mut self,
        _cookie: u64,
        direction: crate::engine::Direction,
        _state: Option<TcpState>,
    ) {
        Metrics::reset(self, direction.index());
    }

    fn time_wait_ended(&mut self, _cookie: u64, how: crate::engine::TimeWaitEnd) {
        Metrics::time_wait_ended(self, how.index());
    }

    fn time_wait_never_appeared(&mut self, _cookie: u64) {
        Metrics::correction(self, 3, 1);
    }

    fn correction(&mut self, _cookie: u64, reason: crate::engine::Correction) {
        if let Some(i) = CORRECTION_REASONS.iter().position(|&r| r == reason.name()) {
            Metrics::correction(self, i, 1);
        }
    }

    fn time_wait_overflowed(&mut self, _cookie: u64) {
        self.time_wait_overflows.inc();
    }

    fn evicted(&mut self, _cookie: u64, _live: bool) {
        self.evictions.inc();
    }
}

#[cfg(test)]
mod tests;
