//! The agent's sink: metrics, the agent's log of leak flags, and the
//! health and freshness marks the HTTP API reports.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
};

use super::state::{AgentState, Shared};
use crate::{
    diag::DiagSocket,
    event::SockEvent,
    export::workload::{Counts, WORKLOAD_STATES, Workload},
    leaks::{Change, LeakKind},
    pipeline::{Core, Dumped, Flow, NetnsTally, Sink, Tallies, monotonic_ns},
    tcp::TcpState,
};

/// Feeds the agent's metrics and shared state from the pipeline.
pub struct AgentSink {
    shared: Arc<Shared>,
    /// Kernel losses and undecodable records already counted in the metrics.
    lost_seen: u64,
    undecodable_seen: u64,
    /// Container cache evictions already counted.
    evictions_seen: u64,
    /// The namespace tracer runs in: its workload is `host`.
    own_netns: u32,
    /// When the per-workload gauges were last refreshed (monotonic ns).
    workloads_at_ns: u64,
}

/// How often the per-workload gauges follow the engine between dumps: a
/// walk over every record, so not every turn.
const WORKLOADS_EVERY_NS: u64 = 1_000_000_000;

impl AgentSink {
    /// A sink writing into `shared`; `own_netns` is the namespace tracer runs in.
    pub fn new(shared: Arc<Shared>, own_netns: u32) -> AgentSink {
        AgentSink {
            shared,
            lost_seen: 0,
            undecodable_seen: 0,
            evictions_seen: 0,
            own_netns,
            workloads_at_ns: 0,
        }
    }

    /// Say once when `--max-sockets` starts or stops binding, and mark it
    /// for `/healthz`.
    fn note_cap(&self, core: &Core<AgentState>) {
        let binding = core.engine.cap_binding();
        if self.shared.cap_binding.swap(binding, Ordering::Relaxed) != binding {
            let stats = core.engine.stats();
            if binding {
                eprintln!(
                    "tracer: warning: --max-sockets {} is binding: new sockets go untracked \
                     (their states still count in tracer_tcp_sockets, from the dumps) and \
                     TIME_WAIT records are evicted first; raise --max-sockets to follow every socket",
                    core.engine.config().max_sockets
                );
            } else {
                eprintln!(
                    "tracer: --max-sockets {} no longer binds: every socket is followed again \
                     ({} tracked)",
                    core.engine.config().max_sockets,
                    stats.tracked
                );
            }
        }
    }

    /// Per-workload socket counts and leak flags, into the metrics.
    fn publish_workloads(&mut self, core: &Core<AgentState>) {
        self.workloads_at_ns = monotonic_ns();
        let mut by_netns: HashMap<u32, Counts> = HashMap::new();
        for v in core.engine.sockets().filter(|v| v.is_live()) {
            if let Some(i) = WORKLOAD_STATES.iter().position(|&s| s == v.state()) {
                by_netns.entry(v.netns()).or_default().sockets[i] += 1;
            }
        }
        for f in core.detector.active() {
            if let Some(i) = LeakKind::ALL.iter().position(|&k| k == f.kind) {
                let n = match f.kind {
                    LeakKind::StuckHandshake => u64::from(f.count.unwrap_or(1)),
                    _ => 1,
                };
                by_netns.entry(f.netns).or_default().leaks[i] += n;
            }
        }
        let mut tally: BTreeMap<Workload, Counts> = BTreeMap::new();
        for (netns, c) in by_netns {
            let w = Workload::of(netns, self.own_netns, &core.containers);
            tally.entry(w).or_default().add(&c);
        }
        self.shared.metrics.workloads.set(tally);
    }
}

impl Sink for AgentSink {
    type Derived = AgentState;

    fn event(&mut self, ev: &SockEvent, in_scope: bool) {
        let metrics = &self.shared.metrics;
        metrics.event(ev.kind);
        if !in_scope {
            metrics.events_other_netns.inc();
        }
    }

    fn batch(&mut self, read: usize, core: Option<&Core<AgentState>>) {
        if read > 0 {
            self.shared
                .last_event_ns
                .store(monotonic_ns(), Ordering::Relaxed);
        }
        if let Some(core) = core {
            self.shared.publish(core);
        }
    }

    fn adopted(&mut self, core: &mut Core<AgentState>, dump: &[DiagSocket]) {
        core.derived.listening = listening_ports(dump);
        self.note_cap(core);
        self.shared.publish(core);
        self.publish_workloads(core);
    }

    fn advanced(&mut self, core: &Core<AgentState>) {
        self.shared.publish(core);
        // Between dumps (which a budget may space out by a minute), the
        // workloads' socket gauges still follow the events.
        if monotonic_ns().saturating_sub(self.workloads_at_ns) >= WORKLOADS_EVERY_NS {
            self.publish_workloads(core);
        }
    }

    fn reconciled(
        &mut self,
        core: &mut Core<AgentState>,
        dump: &[DiagSocket],
        changes: &[Change],
        start_ns: u64,
    ) {
        let metrics = &*self.shared.metrics;
        for c in changes {
            if let Change::Raised(f) = c {
                metrics.leak_flagged(f.kind);
            }
            // The agent's log: one JSON object per line, the same objects
            // `tracer events` prints.
            let mut line = Vec::with_capacity(512);
            if crate::export::stream::write_leak(&mut line, c, start_ns).is_ok() {
                eprint!("{}", String::from_utf8_lossy(&line));
            }
        }
        metrics.set_leaks(&core.detector.gauges());
        core.derived.listening = listening_ports(dump);
        self.note_cap(core);
        self.shared.publish(core);
        self.publish_workloads(core);
        self.shared
            .last_reconcile_ns
            .store(monotonic_ns(), Ordering::Relaxed);
    }

    fn dumped(&mut self, d: &Dumped<'_>) {
        let metrics = &*self.shared.metrics;
        let m = &metrics.dumps[usize::from(d.full)];
        m.count.inc();
        m.cpu_seconds.inc_by(d.cpu_ns as f64 / 1e9);
        m.interval_seconds.set(d.interval.as_secs_f64());
        if let Some(e) = d.error {
            metrics.reconcile_errors.inc();
            eprintln!("tracer: reconcile skipped: {e:#}");
        }
    }

    fn tallied(&mut self, t: &Tallies) {
        let s = &self.shared;
        s.metrics
            .events_lost
            .inc_by(t.lost.saturating_sub(self.lost_seen));
        self.lost_seen = self.lost_seen.max(t.lost);
        s.metrics
            .events_undecodable
            .inc_by(t.undecodable.saturating_sub(self.undecodable_seen));
        self.undecodable_seen = self.undecodable_seen.max(t.undecodable);
    }

    fn netns(&mut self, t: &NetnsTally) {
        let m = &self.shared.metrics;
        m.netns_tracked.set(t.tracked as i64);
        for (gauge, n) in m
            .netns_unreachable
            .iter()
            .zip([t.refused, t.unnamed, t.over_cap])
        {
            gauge.set(n as i64);
        }
        let w = &m.workloads;
        w.containers.set(t.containers.attributed as i64);
        w.cache_entries.set(t.containers.cached as i64);
        w.cache_evictions
            .inc_by(t.containers.evictions.saturating_sub(self.evictions_seen));
        self.evictions_seen = self.evictions_seen.max(t.containers.evictions);
    }

    fn turn(&mut self) -> anyhow::Result<Flow> {
        self.shared
            .heartbeat_ns
            .store(monotonic_ns(), Ordering::Relaxed);
        Ok(Flow::Continue)
    }
}

fn listening_ports(dump: &[DiagSocket]) -> HashSet<u16> {
    dump.iter()
        .filter(|d| d.state == TcpState::Listen)
        .map(|d| d.sport)
        .collect()
}
