//! Network namespaces: how many are followed, which cannot be, and the
//! events of those not selected. It also publishes the per-workload
//! gauges ([`Workloads`]), counting each namespace's sockets and flags
//! under the pod, container or namespace that owns it.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{catch_up, label_values};
use crate::{
    export::workload::{Counts, WORKLOAD_STATES, Workload, Workloads},
    leaks::LeakKind,
    pipeline::{Core, NetnsTally},
};

/// Why a network namespace cannot be followed: the `reason` label of
/// `tracer_netns_unreachable`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Unreachable {
    /// Entering it was refused.
    NoCapSysAdmin,
    /// No process or mount the agent may read names it.
    Unnamed,
    /// Beyond the cap on namespaces.
    OverCap,
}

impl Unreachable {
    /// Every reason, in [`Unreachable::index`] order.
    const ALL: [Unreachable; 3] = [
        Unreachable::NoCapSysAdmin,
        Unreachable::Unnamed,
        Unreachable::OverCap,
    ];

    /// The label value.
    fn name(self) -> &'static str {
        match self {
            Unreachable::NoCapSysAdmin => "no_cap_sys_admin",
            Unreachable::Unnamed => "unnamed",
            Unreachable::OverCap => "over_cap",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

label_values!(Unreachable);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Unreachable,
}

/// The namespaces' families, and the workloads they publish.
pub struct Namespaces {
    other_netns_events: Counter,
    tracked: Gauge,
    sharing_host_table: Gauge,
    /// Indexed by [`Unreachable::index`].
    unreachable: [Gauge; 3],
    workloads: Arc<Workloads>,
}

impl Namespaces {
    /// Register the families in `r`, every known label value at 0.
    pub fn register(r: &mut Registry, workloads: Arc<Workloads>) -> Namespaces {
        let other_netns_events = Counter::default();
        r.register(
            "events_other_netns",
            "Events of sockets in other network namespaces, which the agent does not follow",
            other_netns_events.clone(),
        );
        let tracked = Gauge::default();
        r.register(
            "netns_tracked",
            "Network namespaces followed, each with its own sock_diag sockets",
            tracked.clone(),
        );
        let sharing_host_table = Gauge::default();
        r.register(
            "netns_sharing_host_table",
            "Network namespaces followed without a TCP hash table of their own: a dump of each walks every TCP socket of the host",
            sharing_host_table.clone(),
        );
        let unreachable = Family::<ReasonLabel, Gauge>::default();
        r.register(
            "netns_unreachable",
            "Network namespaces that cannot be followed, by why",
            unreachable.clone(),
        );
        Namespaces {
            other_netns_events,
            tracked,
            sharing_host_table,
            unreachable: Unreachable::ALL
                .map(|reason| unreachable.get_or_create_owned(&ReasonLabel { reason })),
            workloads,
        }
    }

    /// Count `n` events of namespaces the agent does not follow.
    pub fn events_not_followed(&self, n: u64) {
        if n > 0 {
            self.other_netns_events.inc_by(n);
        }
    }

    /// Publish the namespaces after a dump, and the container
    /// attribution's counters.
    pub fn publish(&self, t: &NetnsTally) {
        self.tracked.set(t.tracked as i64);
        self.sharing_host_table.set(t.sharing_host_table as i64);
        for (reason, n) in [
            (Unreachable::NoCapSysAdmin, t.refused),
            // Only those still there: one that lived a moment (a build's,
            // a test's) and was gone before a dump looked is unreachable in
            // no sense worth a series, as the log and the API say too.
            (Unreachable::Unnamed, t.unnamed_alive),
            (Unreachable::OverCap, t.over_cap),
        ] {
            self.unreachable[reason.index()].set(n as i64);
        }
        let w = &self.workloads;
        w.containers.set(t.containers.attributed as i64);
        w.cache_entries.set(t.containers.cached as i64);
        catch_up(&w.cache_evictions, t.containers.evictions);
    }

    /// Publish each workload's live sockets and active flags; `own_netns`
    /// is the namespace the agent runs in (its workload is `host`).
    pub fn publish_workloads<D>(&self, core: &Core<D>, own_netns: u32) {
        let mut by_netns: HashMap<u32, Counts> = HashMap::new();
        for (netns, live) in core.engine.live_by_netns() {
            let c = by_netns.entry(netns).or_default();
            for (i, st) in WORKLOAD_STATES.iter().enumerate() {
                c.sockets[i] += u64::from(live[st.index()]);
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
            let w = Workload::of(netns, own_netns, &core.containers);
            tally.entry(w).or_default().add(&c);
        }
        self.workloads.set(tally);
    }
}
