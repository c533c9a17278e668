//! Per-workload gauges: the socket counts users alert on and the leak
//! gauges, by Kubernetes pod (namespace, pod, container) where the runtime
//! recorded one, else by container, else by network namespace; and the
//! container attribution's own counters. Documented in docs/metrics.md.
//!
//! Cardinality is capped: at most `--max-workloads` label sets (256 by
//! default) hold their own series, first come first served while they have
//! sockets or flags; the rest are summed under `other` (every label
//! `other`) and counted in `tracer_workloads_overflow`.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{container::ContainerMap, leaks::LeakKind, tcp::TcpState};

/// The states counted per workload.
pub const WORKLOAD_STATES: [TcpState; 5] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::CloseWait,
    TcpState::TimeWait,
];

/// Who owns a namespace's sockets, as labels. Unknown parts are empty.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container: its name in the pod spec, else its runtime's name,
    /// else the first 12 digits of its id.
    pub container: String,
    /// The namespace inode, or `host` for tracer's own, when no container is known.
    pub netns: String,
}

impl Workload {
    /// The workload of namespace `netns`; `own` is tracer's own namespace.
    pub fn of(netns: u32, own: u32, containers: &ContainerMap) -> Workload {
        let Some(c) = containers.get(netns) else {
            let netns = if netns == own || netns == 0 {
                "host".into()
            } else {
                netns.to_string()
            };
            return Workload {
                netns,
                ..Workload::default()
            };
        };
        let short_id = || c.id.get(..12).unwrap_or(&c.id).to_owned();
        match &c.pod {
            Some(p) => Workload {
                pod_namespace: p.namespace.clone(),
                pod: p.name.clone(),
                container: p.container.clone().unwrap_or_default(),
                netns: String::new(),
            },
            None => Workload {
                container: c.name.clone().unwrap_or_else(short_id),
                ..Workload::default()
            },
        }
    }

    /// Where workloads beyond the cap are summed.
    pub fn other() -> Workload {
        let o = || "other".to_owned();
        Workload {
            pod_namespace: o(),
            pod: o(),
            container: o(),
            netns: o(),
        }
    }
}

/// Counts of one workload: sockets per [`WORKLOAD_STATES`], active flags
/// per [`LeakKind::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Live sockets per state, indexed like [`WORKLOAD_STATES`].
    pub sockets: [u64; 5],
    /// Active leak flags per kind, indexed like [`LeakKind::ALL`].
    pub leaks: [u64; 5],
}

impl Counts {
    /// Add `o` to these counts.
    pub fn add(&mut self, o: &Counts) {
        for (a, b) in self.sockets.iter_mut().zip(o.sockets) {
            *a += b;
        }
        for (a, b) in self.leaks.iter_mut().zip(o.leaks) {
            *a += b;
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pod_namespace: String,
    pod: String,
    container: String,
    netns: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    pod_namespace: String,
    pod: String,
    container: String,
    netns: String,
    kind: &'static str,
}

/// The per-workload families, and which workloads hold series.
pub struct Workloads {
    sockets: Family<StateLabels, Gauge>,
    leaks: Family<KindLabels, Gauge>,
    /// `tracer_workloads_overflow`: workloads summed under `other` now.
    overflow: Gauge,
    /// `tracer_containers`: namespaces attributed to a container.
    pub containers: Gauge,
    /// `tracer_container_cache_entries`
    pub cache_entries: Gauge,
    /// `tracer_container_cache_evictions_total`
    pub cache_evictions: Counter,
    admitted: Mutex<(usize, BTreeSet<Workload>)>,
}

impl Workloads {
    /// Register the families in `r`.
    pub fn register(r: &mut Registry) -> Workloads {
        let w = Workloads {
            sockets: Family::default(),
            leaks: Family::default(),
            overflow: Gauge::default(),
            containers: Gauge::default(),
            cache_entries: Gauge::default(),
            cache_evictions: Counter::default(),
            admitted: Mutex::new((crate::config::DEFAULT_MAX_WORKLOADS, BTreeSet::new())),
        };
        r.register(
            "workload_sockets",
            "Live TCP sockets per workload (pod, container or netns) and state",
            w.sockets.clone(),
        );
        r.register(
            "workload_leaks",
            "Active leak and risk flags per workload (pod, container or netns) and kind",
            w.leaks.clone(),
        );
        r.register(
            "workloads_overflow",
            "Workloads beyond --max-workloads, summed under the label value other",
            w.overflow.clone(),
        );
        r.register(
            "containers",
            "Network namespaces attributed to a container",
            w.containers.clone(),
        );
        r.register(
            "container_cache_entries",
            "Containers whose runtime metadata is cached",
            w.cache_entries.clone(),
        );
        r.register(
            "container_cache_evictions",
            "Containers evicted from the full metadata cache",
            w.cache_evictions.clone(),
        );
        w
    }

    /// Set the cap on workloads with series of their own (`--max-workloads`).
    pub fn set_cap(&self, cap: usize) {
        self.lock().0 = cap;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, BTreeSet<Workload>)> {
        self.admitted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish the counts of every workload that has sockets or flags now.
    /// Workloads gone since the last call lose their series.
    pub fn set(&self, tally: BTreeMap<Workload, Counts>) {
        let mut guard = self.lock();
        let (cap, admitted) = &mut *guard;
        let stale: Vec<Workload> = admitted
            .iter()
            .filter(|w| !tally.contains_key(*w))
            .cloned()
            .collect();
        for w in stale {
            admitted.remove(&w);
            self.remove(&w);
        }
        let (mut other, mut folded) = (Counts::default(), 0);
        for (w, c) in tally {
            if admitted.contains(&w) || admitted.len() < *cap {
                admitted.insert(w.clone());
                self.write(&w, &c);
            } else {
                folded += 1;
                other.add(&c);
            }
        }
        self.write(&Workload::other(), &other);
        self.overflow.set(folded);
    }

    fn labels(w: &Workload) -> impl Fn(&'static str) -> StateLabels + '_ {
        move |state| StateLabels {
            pod_namespace: w.pod_namespace.clone(),
            pod: w.pod.clone(),
            container: w.container.clone(),
            netns: w.netns.clone(),
            state,
        }
    }

    fn kind_labels(s: StateLabels) -> KindLabels {
        KindLabels {
            pod_namespace: s.pod_namespace,
            pod: s.pod,
            container: s.container,
            netns: s.netns,
            kind: s.state,
        }
    }

    fn write(&self, w: &Workload, c: &Counts) {
        let l = Self::labels(w);
        for (st, n) in WORKLOAD_STATES.iter().zip(c.sockets) {
            self.sockets.get_or_create(&l(st.name())).set(n as i64);
        }
        for (k, n) in LeakKind::ALL.iter().zip(c.leaks) {
            self.leaks
                .get_or_create(&Self::kind_labels(l(k.name())))
                .set(n as i64);
        }
    }

    fn remove(&self, w: &Workload) {
        let l = Self::labels(w);
        for st in WORKLOAD_STATES {
            self.sockets.remove(&l(st.name()));
        }
        for k in LeakKind::ALL {
            self.leaks.remove(&Self::kind_labels(l(k.name())));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::container::{Container, Pod, Runtime};

    fn counts(close_wait: u64) -> Counts {
        Counts {
            sockets: [1, 0, 0, close_wait, 0],
            leaks: [close_wait, 0, 0, 0, 0],
        }
    }

    fn exposition(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, r).expect("encode");
        s
    }

    #[test]
    fn workloads_are_named_by_pod_container_or_netns() {
        let id = "ab".repeat(32);
        let pod = Container {
            id: id.clone(),
            runtime: Some(Runtime::Containerd),
            name: None,
            pod: Some(Pod {
                namespace: "shop".into(),
                name: "cart".into(),
                container: Some("app".into()),
            }),
        };
        let plain = Container {
            id: id.clone(),
            runtime: Some(Runtime::Podman),
            name: None,
            pod: None,
        };
        let map: ContainerMap = [(7, Arc::new(pod)), (8, Arc::new(plain))]
            .into_iter()
            .collect();
        let w = Workload::of(7, 1, &map);
        assert_eq!(
            (
                w.pod_namespace.as_str(),
                w.pod.as_str(),
                w.container.as_str()
            ),
            ("shop", "cart", "app")
        );
        assert_eq!(Workload::of(8, 1, &map).container, id[..12]);
        assert_eq!(Workload::of(1, 1, &map).netns, "host");
        assert_eq!(Workload::of(9, 1, &map).netns, "9");
    }

    #[test]
    fn the_cap_folds_the_rest_into_other_and_gone_ones_lose_their_series() {
        let mut r = Registry::with_prefix("tracer");
        let w = Workloads::register(&mut r);
        w.set_cap(2);
        let ns = |n: u32| Workload {
            netns: n.to_string(),
            ..Workload::default()
        };
        w.set((1..=4).map(|n| (ns(n), counts(u64::from(n)))).collect());
        let text = exposition(&r);
        let line = |netns: &str, state: &str| {
            format!(
                "tracer_workload_sockets{{pod_namespace=\"\",pod=\"\",container=\"\",netns=\"{netns}\",state=\"{state}\"}}"
            )
        };
        assert!(
            text.contains(&format!("{} 1\n", line("1", "close_wait"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 2\n", line("2", "close_wait"))),
            "{text}"
        );
        assert!(!text.contains(&line("3", "close_wait")), "{text}");
        assert!(
            text.contains("container=\"other\",netns=\"other\",state=\"close_wait\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("tracer_workloads_overflow 2\n"), "{text}");
        // 1 goes away: 3 takes its place, 4 still folded.
        w.set((2..=4).map(|n| (ns(n), counts(u64::from(n)))).collect());
        let text = exposition(&r);
        assert!(!text.contains(&line("1", "close_wait")), "{text}");
        assert!(
            text.contains(&format!("{} 3\n", line("3", "close_wait"))),
            "{text}"
        );
        assert!(text.contains("tracer_workloads_overflow 1\n"), "{text}");
        assert!(
            text.contains("netns=\"other\",kind=\"close_wait\"} 4\n"),
            "{text}"
        );
    }
}
