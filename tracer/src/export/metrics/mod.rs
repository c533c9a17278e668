//! Prometheus metrics (prometheus-client), documented in docs/metrics.md.
//!
//! One recorder per concern registers its own families and turns what
//! its concern learns into series:
//!
//! | recorder | file | families |
//! |---|---|---|
//! | [`Tcp`] | `tcp.rs` | `tracer_tcp_*`, `tracer_time_wait_overflows_total` |
//! | [`Handshakes`] | `handshake.rs` | `tracer_tcp_connections_established_total`, `tracer_tcp_handshake_*` |
//! | [`Leaks`] | `leaks.rs` | leak and risk gauges, `tracer_leaks_flagged_total` |
//! | [`Forecast`] | `forecast.rs` | `tracer_forecast_*`, `tracer_process_*fd*`, `tracer_ephemeral_ports_*` |
//! | [`Workloads`] | `../workload.rs` | `tracer_workload_*`, container attribution |
//! | [`Namespaces`] | `netns.rs` | `tracer_netns_*`, `tracer_events_other_netns_total`; publishes the workloads |
//! | [`Reconcile`] | `reconcile.rs` | `tracer_reconcile*` |
//! | [`Agent`] | `agent.rs` | events read and lost, the engine's records, `tracer_build_info` |
//!
//! This module owns the registry and the exposition; `classic.rs` turns
//! it into the classic text format. Every labelled series is created up
//! front, and the hot path holds handles to them, indexed by typed label
//! values, so counting an event never hashes labels, takes a lock or
//! allocates. The per-event counts (transitions, stays, handshakes, events
//! read) are kept in plain memory and folded into their series once per
//! drain (`fold.rs`), so counting one is not even an atomic. `/metrics`
//! reads the series, so a scrape never waits for the engine.
mod agent;
mod classic;
mod fold;
mod forecast;
mod handshake;
mod leaks;
mod netns;
mod reconcile;
mod tcp;

use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use self::{
    agent::Agent,
    classic::to_classic_text,
    forecast::Forecast,
    handshake::{HANDSHAKE_BUCKETS, Handshakes},
    leaks::Leaks,
    netns::Namespaces,
    reconcile::Reconcile,
    tcp::{DURATION_BUCKETS, Tcp},
};
use super::workload::Workloads;
use crate::engine::Engine;

/// Label values spelled as the type's `name()` spells them.
macro_rules! label_values {
    ($($t:ty),* $(,)?) => {$(
        impl prometheus_client::encoding::EncodeLabelValue for $t {
            fn encode(
                &self,
                e: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> std::fmt::Result {
                std::fmt::Write::write_str(e, self.name())
            }
        }
    )*};
}
use label_values;

label_values!(
    crate::tcp::TcpState,
    crate::event::Kind,
    crate::engine::ClosedBy,
    crate::engine::Direction,
    crate::engine::TimeWaitEnd,
    crate::engine::Role,
    crate::engine::HandshakeFailure,
    crate::leaks::LeakKind,
    crate::leaks::Reason,
);

/// Bring `counter` up to `total`, a count kept elsewhere since start.
fn catch_up(counter: &prometheus_client::metrics::counter::Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// The recorders that observe the engine's outcomes, as the pipeline's
/// observer: each sees every outcome and counts those of its concern.
/// They share their series with the ones in [`Metrics`].
pub type Recorders = (Tcp, (Handshakes, (Reconcile, Agent)));

/// Every recorder, and the registry that exposes them.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// TCP lifecycle.
    pub tcp: Tcp,
    /// Handshake outcomes.
    pub handshakes: Handshakes,
    /// Leak detectors.
    pub leaks: Leaks,
    /// Forecasts of descriptor and port exhaustion.
    pub forecast: Forecast,
    /// Per-workload gauges and the container attribution's counters.
    pub workloads: Arc<Workloads>,
    /// Network namespaces.
    pub netns: Namespaces,
    /// Reconciliation with sock_diag.
    pub reconcile: Reconcile,
    /// The agent's own health and build.
    pub agent: Agent,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Register every metric, with every known label value at 0.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("tracer");
        let tcp = Tcp::register(&mut r);
        let handshakes = Handshakes::register(&mut r);
        let leaks = Leaks::register(&mut r);
        let forecast = Forecast::register(&mut r);
        let workloads = Arc::new(Workloads::register(&mut r));
        let netns = Namespaces::register(&mut r, workloads.clone());
        let reconcile = Reconcile::register(&mut r);
        let agent = Agent::register(&mut r);
        Metrics {
            registry: r,
            tcp,
            handshakes,
            leaks,
            forecast,
            workloads,
            netns,
            reconcile,
            agent,
        }
    }

    /// The observer to give the pipeline: handles on the same series.
    pub fn recorders(&self) -> Recorders {
        (
            self.tcp.clone(),
            (
                self.handshakes.clone(),
                (self.reconcile.clone(), self.agent.clone()),
            ),
        )
    }

    /// Copy the engine's gauges into the metrics.
    pub fn publish(&self, engine: &Engine) {
        self.tcp.publish(engine);
        self.agent.publish(engine);
    }

    /// Encode the registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests;
