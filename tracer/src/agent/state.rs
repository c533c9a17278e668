//! What the agent keeps beside the engine: the state the HTTP handlers
//! read, and the observers of engine outcomes (the metrics' recorders and
//! the dwell percentiles).
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64},
};

use super::{dwell::Dwell, handshakes::HandshakeTally};
use crate::{
    config::Settings,
    engine::Observer,
    export::metrics::{Metrics, Recorders},
    pipeline::{Core, SharedCore},
    tcp::TcpState,
};

/// The agent's part of the pipeline's core, fed with every engine
/// outcome: the metrics' recorders, recent stays for percentiles, and
/// handshake outcomes for the summary.
pub type AgentState = (Recorders, (Dwell, HandshakeTally));

/// A new [`AgentState`] feeding `metrics`.
pub fn agent_state(metrics: &Metrics) -> AgentState {
    (metrics.recorders(), (Dwell::new(), HandshakeTally::new()))
}

/// Stays whose start was seen, for percentiles.
impl Observer for Dwell {
    fn stay(&mut self, _cookie: u64, state: TcpState, duration_ns: u64, lower_bound: bool) {
        if !lower_bound {
            self.record(state, duration_ns as f64 / 1e9);
        }
    }
}

/// State shared between the event loop and the HTTP handlers.
pub struct Shared {
    /// The network namespace tracer runs in: its workload is `host`.
    pub own_netns: u32,
    /// The one namespace `--netns` chose, if it chose one.
    pub followed_netns: Option<u32>,
    /// Engine, detectors and [`AgentState`], under one short-held lock.
    pub core: Arc<SharedCore<AgentState>>,
    /// All metrics.
    pub metrics: Arc<Metrics>,
    /// Settings in force.
    pub settings: Settings,
    /// Monotonic ns when the agent started.
    pub started_ns: u64,
    /// Programs attached.
    pub attached: AtomicBool,
    /// Monotonic ns of the last event-loop turn.
    pub heartbeat_ns: AtomicU64,
    /// Monotonic ns of the last event received (0: none yet).
    pub last_event_ns: AtomicU64,
    /// Monotonic ns of the last successful reconcile.
    pub last_reconcile_ns: AtomicU64,
    /// `--max-sockets` binds: sockets go untracked (gauges come from the
    /// dumps for them; `/healthz` says "degraded").
    pub cap_binding: AtomicBool,
    /// Asks the event loop to read the ring buffer before a scrape.
    pub drain: Arc<crate::ingest::Drain>,
    /// The forecasts of the last reconcile, for `/api/v1/leaks`.
    pub forecasts: std::sync::Mutex<crate::forecast::Forecasts>,
    /// The namespaces after the last dump: which could not be followed,
    /// and why, for `/api/v1/leaks`
    /// ([`NetnsTally::not_followed`](crate::pipeline::NetnsTally::not_followed)).
    pub netns: std::sync::Mutex<crate::pipeline::NetnsTally>,
}

impl Shared {
    /// Copy engine-derived gauges into the metrics.
    pub fn publish(&self, core: &Core<AgentState>) {
        self.metrics.publish(&core.engine);
        // O(namespaces + flags): the engine counts per namespace as it goes.
        self.metrics.netns.publish_workloads(core, self.own_netns);
    }
}
