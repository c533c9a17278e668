//! What the agent keeps beside the engine: the state the HTTP handlers
//! read, and the observer that turns engine outcomes into metrics and
//! dwell percentiles.
use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64},
    },
};

use super::dwell::Dwell;
use crate::{
    config::Settings,
    engine::{ClosedBy, Correction, Direction, Observer, TimeWaitEnd},
    export::metrics::Metrics,
    pipeline::{Core, SharedCore},
    tcp::TcpState,
};

/// The agent's part of the pipeline's core: fed with every engine outcome.
pub struct AgentState {
    /// All metrics.
    pub metrics: Arc<Metrics>,
    /// Recent stays, for percentiles.
    pub dwell: Dwell,
    /// Local ports the host listens on, from the last dump.
    pub listening: HashSet<u16>,
}

impl AgentState {
    /// Empty, feeding `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> AgentState {
        AgentState {
            metrics,
            dwell: Dwell::new(),
            listening: HashSet::new(),
        }
    }
}

impl Observer for AgentState {
    fn stay(&mut self, cookie: u64, state: TcpState, duration_ns: u64, lower_bound: bool) {
        let mut m = &*self.metrics;
        m.stay(cookie, state, duration_ns, lower_bound);
        if !lower_bound {
            self.dwell.record(state, duration_ns as f64 / 1e9);
        }
    }
    fn transition(&mut self, cookie: u64, from: TcpState, to: TcpState) {
        let mut m = &*self.metrics;
        Observer::transition(&mut m, cookie, from, to);
    }
    fn closed(&mut self, cookie: u64, by: Option<ClosedBy>) {
        let mut m = &*self.metrics;
        Observer::closed(&mut m, cookie, by);
    }
    fn retransmit(&mut self, cookie: u64, state: Option<TcpState>) {
        let mut m = &*self.metrics;
        m.retransmit(cookie, state);
    }
    fn synack_retransmit(&mut self, cookie: u64) {
        let mut m = &*self.metrics;
        m.synack_retransmit(cookie);
    }
    fn reset(&mut self, cookie: u64, direction: Direction, state: Option<TcpState>) {
        let mut m = &*self.metrics;
        Observer::reset(&mut m, cookie, direction, state);
    }
    fn time_wait_ended(&mut self, cookie: u64, how: TimeWaitEnd) {
        let mut m = &*self.metrics;
        Observer::time_wait_ended(&mut m, cookie, how);
    }
    fn time_wait_never_appeared(&mut self, cookie: u64) {
        let mut m = &*self.metrics;
        m.time_wait_never_appeared(cookie);
    }
    fn correction(&mut self, cookie: u64, reason: Correction) {
        let mut m = &*self.metrics;
        Observer::correction(&mut m, cookie, reason);
    }
    fn time_wait_overflowed(&mut self, cookie: u64) {
        let mut m = &*self.metrics;
        m.time_wait_overflowed(cookie);
    }
    fn evicted(&mut self, cookie: u64, live: bool) {
        let mut m = &*self.metrics;
        m.evicted(cookie, live);
    }
}

/// State shared between the event loop and the HTTP handlers.
pub struct Shared {
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
}

impl Shared {
    /// Copy engine-derived gauges into the metrics.
    pub fn publish(&self, core: &Core<AgentState>) {
        let counts = core.engine.sockets_by_state();
        self.metrics.set_sockets(&counts);
        self.metrics.tracked.set(core.engine.tracked() as i64);
        // TIME_WAIT by listening port, the rest under "other": O(ports
        // listened on), from counts the engine keeps as it goes.
        let engine = &core.engine;
        let total = counts[TcpState::TimeWait.index()];
        let listed: u64 = core
            .derived
            .listening
            .iter()
            .map(|&p| engine.time_wait_on_port(p))
            .sum();
        let per_port = core
            .derived
            .listening
            .iter()
            .map(|&p| (Some(p), engine.time_wait_on_port(p)))
            .chain([(None, total.saturating_sub(listed))]);
        self.metrics.set_time_wait_by_port(per_port);
    }
}
