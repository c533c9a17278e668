//! The leak detectors' gauges (what is flagged now) and the count of
//! flags raised.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::leaks::{Gauges, LeakKind, Reason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommLabel {
    comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabel {
    kind: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: LeakKind,
}

/// The leak detectors' families.
pub struct Leaks {
    close_wait: Gauge,
    close_wait_by_comm: Family<CommLabel, Gauge>,
    half_open: Family<ReasonLabel, Gauge>,
    stuck_handshakes: Family<HandshakeLabel, Gauge>,
    idle_without_keepalive: Gauge,
    orphaned_fin_wait2: Gauge,
    flagged: Family<KindLabel, Counter>,
}

impl Leaks {
    /// Register the families in `r`, every known label value at 0.
    pub fn register(r: &mut Registry) -> Leaks {
        let close_wait = Gauge::default();
        r.register(
            "close_wait_leaks",
            "Sockets in CLOSE_WAIT longer than --close-wait-threshold",
            close_wait.clone(),
        );
        let close_wait_by_comm = Family::<CommLabel, Gauge>::default();
        r.register(
            "close_wait_leaks_by_process",
            "CLOSE_WAIT leaks by process name: the top 20, the rest under comm=\"other\"",
            close_wait_by_comm.clone(),
        );
        close_wait_by_comm
            .get_or_create(&CommLabel {
                comm: "other".into(),
            })
            .set(0);
        let half_open = Family::<ReasonLabel, Gauge>::default();
        r.register(
            "half_open_connections",
            "Connections whose peer seems to have vanished",
            half_open.clone(),
        );
        for reason in Reason::HALF_OPEN {
            half_open.get_or_create(&ReasonLabel { reason }).set(0);
        }
        let stuck_handshakes = Family::<HandshakeLabel, Gauge>::default();
        r.register(
            "stuck_handshakes",
            "Handshakes that did not finish within --handshake-threshold; for kind accept_queue_full, listeners whose accept queue stayed full as long",
            stuck_handshakes.clone(),
        );
        for kind in Reason::HANDSHAKE {
            stuck_handshakes
                .get_or_create(&HandshakeLabel { kind })
                .set(0);
        }
        let idle_without_keepalive = Gauge::default();
        r.register(
            "idle_without_keepalive",
            "ESTABLISHED sockets, and FIN_WAIT2 ones a process holds, idle longer than --idle-threshold with no timer armed (a risk)",
            idle_without_keepalive.clone(),
        );
        let orphaned_fin_wait2 = Gauge::default();
        r.register(
            "orphaned_fin_wait2",
            "Orphaned FIN_WAIT2 sockets older than --fin-wait2-threshold",
            orphaned_fin_wait2.clone(),
        );
        let flagged = Family::<KindLabel, Counter>::default();
        r.register(
            "leaks_flagged",
            "Leak and risk flags raised, by kind",
            flagged.clone(),
        );
        for kind in LeakKind::ALL {
            flagged.get_or_create(&KindLabel { kind }).inc_by(0);
        }
        Leaks {
            close_wait,
            close_wait_by_comm,
            half_open,
            stuck_handshakes,
            idle_without_keepalive,
            orphaned_fin_wait2,
            flagged,
        }
    }

    /// Publish the detectors' gauges.
    pub fn publish(&self, g: &Gauges) {
        self.close_wait.set(g.close_wait_leaks as i64);
        self.close_wait_by_comm.clear();
        for (comm, n) in &g.close_wait_by_comm {
            self.close_wait_by_comm
                .get_or_create(&CommLabel { comm: comm.clone() })
                .set(*n as i64);
        }
        for (reason, n) in g.half_open {
            self.half_open
                .get_or_create(&ReasonLabel { reason })
                .set(n as i64);
        }
        for (kind, n) in g.stuck_handshakes {
            self.stuck_handshakes
                .get_or_create(&HandshakeLabel { kind })
                .set(n as i64);
        }
        self.idle_without_keepalive
            .set(g.idle_without_keepalive as i64);
        self.orphaned_fin_wait2.set(g.orphaned_fin_wait2 as i64);
    }

    /// Count a raised flag of `kind`.
    pub fn flagged(&self, kind: LeakKind) {
        self.flagged.get_or_create(&KindLabel { kind }).inc();
    }
}
