//! The agent's own health: kernel events read, lost and undecodable, the
//! engine's records and evictions, the HTTP server's refusals under
//! `--web-config` and the connections its cap closed, and the build.
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::catch_up;
use crate::{
    engine::{Engine, Observer},
    event::Kind,
    export::{serve::Closed, web::Refusal},
    pipeline::Tallies,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhyLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: Kind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Refusal,
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(e, self.name())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    abi: String,
}

/// The agent's own families. Clones share their series: the engine's
/// observer is one.
#[derive(Clone)]
pub struct Agent {
    /// Indexed like [`Kind::ALL`].
    events: [Counter; 5],
    lost: Counter,
    undecodable: Counter,
    tracked: Gauge,
    evictions: Counter,
    /// Indexed like [`Refusal::ALL`].
    refusals: [Counter; 4],
    /// Connections the HTTP server's cap closed.
    pub http_closed: Closed,
}

impl Agent {
    /// Register the families in `r`, every known label value at 0.
    pub fn register(r: &mut Registry) -> Agent {
        let events = Family::<KindLabel, Counter>::default();
        r.register("events", "Kernel events received, by kind", events.clone());
        let lost = Counter::default();
        r.register(
            "events_lost",
            "Events the kernel could not deliver (ring buffer full, a failed read, or a run skipped because the program was already running on that CPU)",
            lost.clone(),
        );
        let undecodable = Counter::default();
        r.register(
            "events_undecodable",
            "Ring buffer records that could not be decoded",
            undecodable.clone(),
        );
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
        let refusals = Family::<ReasonLabel, Counter>::default();
        r.register(
            "http_auth_failures",
            "HTTP requests and connections refused under --web-config, by reason",
            refusals.clone(),
        );
        let closed = Family::<WhyLabel, Counter>::default();
        r.register(
            "http_connections_closed",
            "HTTP connections the agent closed: at the --max-http-connections cap, an idle one to make room (evicted) or a newcomer while every connection was busy (refused); and one on which no byte moved for 30 s, such as a client that stopped reading its answer (idle)",
            closed.clone(),
        );
        let http_closed = Closed {
            evicted: closed.get_or_create_owned(&WhyLabel { reason: "evicted" }),
            refused: closed.get_or_create_owned(&WhyLabel { reason: "refused" }),
            idle: closed.get_or_create_owned(&WhyLabel { reason: "idle" }),
        };
        // A gauge fixed at 1 rather than an OpenMetrics `info`, which the
        // classic text parser (promtool 2.x) rejects.
        let build = Family::<BuildLabels, Gauge>::default();
        r.register("build_info", "Build information; always 1", build.clone());
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                abi: tracer_common::ABI_VERSION.to_string(),
            })
            .set(1);
        Agent {
            events: Kind::ALL.map(|kind| events.get_or_create_owned(&KindLabel { kind })),
            lost,
            undecodable,
            tracked,
            evictions,
            refusals: Refusal::ALL
                .map(|reason| refusals.get_or_create_owned(&ReasonLabel { reason })),
            http_closed,
        }
    }

    /// Count a request or connection the web config refused.
    pub fn http_refused(&self, why: Refusal) {
        self.refusals[why as usize].inc();
    }

    /// Add the events read since the last call, counted per kind (indexed
    /// like [`Kind::ALL`]) by the caller, and zero those counts.
    pub fn events_read(&self, read: &mut [u64; 5]) {
        for (series, n) in self.events.iter().zip(read) {
            if *n > 0 {
                series.inc_by(std::mem::take(n));
            }
        }
    }

    /// Bring the loss counters up to the pipeline's counts since start.
    pub fn tallied(&self, t: &Tallies) {
        catch_up(&self.lost, t.lost);
        catch_up(&self.undecodable, t.undecodable);
    }

    /// Copy the engine's record count.
    pub fn publish(&self, engine: &Engine) {
        self.set_tracked(engine.tracked());
    }

    /// Set `tracer_tracked_sockets`.
    pub(super) fn set_tracked(&self, records: usize) {
        self.tracked.set(records as i64);
    }
}

/// Counts evictions at the cap.
impl Observer for Agent {
    fn evicted(&mut self, _cookie: u64, _live: bool) {
        self.evictions.inc();
    }
}
