//! Reconciliation with sock_diag: what it corrected, and what its dumps
//! cost and how often they run.
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::label_values;
use crate::{
    engine::{Correction, Observer},
    pipeline::Dumped,
};

/// The `reason` label of `tracer_reconcile_corrections_total`: the
/// engine's corrections, and closes whose TIME_WAIT never appeared.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Corrected {
    /// The engine corrected itself from a dump.
    Engine(Correction),
    /// A close's TIME_WAIT was not in the next dump.
    TimeWaitNeverAppeared,
}

impl Corrected {
    fn name(self) -> &'static str {
        match self {
            Corrected::Engine(c) => c.name(),
            Corrected::TimeWaitNeverAppeared => "time_wait_never_appeared",
        }
    }
}

/// The `dump` label of the reconcile families.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Dump {
    /// Every `--reconcile-interval`: every state but TIME_WAIT.
    Live,
    /// Every `--time-wait-interval`: everything.
    Full,
}

impl Dump {
    /// Both kinds, in [`Dump::index`] order.
    const ALL: [Dump; 2] = [Dump::Live, Dump::Full];

    /// The label value.
    fn name(self) -> &'static str {
        match self {
            Dump::Live => "live",
            Dump::Full => "full",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

label_values!(Corrected, Dump);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Corrected,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DumpLabel {
    dump: Dump,
}

/// Series of one kind of dump.
#[derive(Clone)]
struct DumpSeries {
    count: Counter,
    cpu_seconds: Counter<f64, AtomicU64>,
    interval_seconds: Gauge<f64, AtomicU64>,
}

/// Reconciliation's families. Clones share their series: the engine's
/// observer is one.
#[derive(Clone)]
pub struct Reconcile {
    /// Indexed by [`Correction::index`].
    corrections: [Counter; 5],
    time_wait_never_appeared: Counter,
    errors: Counter,
    lookups: Counter,
    /// Indexed by [`Dump::index`].
    dumps: [DumpSeries; 2],
}

impl Reconcile {
    /// Register the families in `r`, every known label value at 0.
    pub fn register(r: &mut Registry) -> Reconcile {
        let corrections = Family::<ReasonLabel, Counter>::default();
        r.register(
            "reconcile_corrections",
            "Differences between tracked state and sock_diag that reconciliation corrected",
            corrections.clone(),
        );
        let errors = Counter::default();
        r.register(
            "reconcile_errors",
            "sock_diag dumps that failed",
            errors.clone(),
        );
        let lookups = Counter::default();
        r.register(
            "reconcile_lookups",
            "Sockets live reconciles looked up one by one instead of walking the kernel's socket tables, when a walk costs more than --reconcile-budget allows every --reconcile-interval",
            lookups.clone(),
        );
        let count = Family::<DumpLabel, Counter>::default();
        r.register(
            "reconciles",
            "sock_diag dumps reconciled, by kind",
            count.clone(),
        );
        let cpu = Family::<DumpLabel, Counter<f64, AtomicU64>>::default();
        r.register(
            "reconcile_cpu_seconds",
            "CPU time spent on reconcile dumps: the kernel's walk and the engine's update",
            cpu.clone(),
        );
        let interval = Family::<DumpLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "reconcile_interval_seconds",
            "Gap between reconcile dumps in force: the configured interval, or longer when --reconcile-budget stretched it",
            interval.clone(),
        );
        let reason = |reason| ReasonLabel { reason };
        Reconcile {
            corrections: Correction::ALL
                .map(|c| corrections.get_or_create_owned(&reason(Corrected::Engine(c)))),
            time_wait_never_appeared: corrections
                .get_or_create_owned(&reason(Corrected::TimeWaitNeverAppeared)),
            errors,
            lookups,
            dumps: Dump::ALL.map(|dump| {
                let l = DumpLabel { dump };
                DumpSeries {
                    count: count.get_or_create_owned(&l),
                    cpu_seconds: cpu.get_or_create_owned(&l),
                    interval_seconds: interval.get_or_create_owned(&l),
                }
            }),
        }
    }

    /// Count a dump: its kind, its cost, the interval now in force, and
    /// whether it failed.
    pub fn dumped(&self, d: &Dumped<'_>) {
        let kind = if d.full { Dump::Full } else { Dump::Live };
        let s = &self.dumps[kind.index()];
        s.count.inc();
        s.cpu_seconds.inc_by(d.cpu_ns as f64 / 1e9);
        s.interval_seconds.set(d.interval.as_secs_f64());
        self.lookups.inc_by(d.looked_up as u64);
        if d.error.is_some() {
            self.errors.inc();
        }
    }
}

/// Counts the engine's corrections.
impl Observer for Reconcile {
    fn time_wait_never_appeared(&mut self, _cookie: u64) {
        self.time_wait_never_appeared.inc();
    }

    fn correction(&mut self, _cookie: u64, reason: Correction) {
        self.corrections[reason.index()].inc();
    }
}
