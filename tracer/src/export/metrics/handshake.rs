//! Handshake outcomes: connections established by role, handshakes that
//! failed by role and reason, and the client's handshake latency. The
//! engine judges each outcome (`engine/handshake.rs`); this counts them.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::{Registry, Unit},
};

use super::fold::{Histogram, Spread, Tally};
use crate::engine::{Handshake, HandshakeFailure, Observer, Role};

/// Buckets from a loopback connect (~10 µs) to the kernel's SYN
/// retransmits: a connect answered after n retransmits lands just above
/// the n-th retransmit time (1 s, then 2, 3, 4 s while the SYN timeouts
/// are linear, `tcp_syn_linear_timeouts`, or 3, 7, 15, 31, 63 s with the
/// classic doubling).
pub const HANDSHAKE_BUCKETS: [f64; 24] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 7.0, 15.0, 31.0, 63.0, 127.0,
];

const ROLES: usize = Role::ALL.len();
const REASONS: usize = HandshakeFailure::ALL.len();

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: Role,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    role: Role,
    reason: HandshakeFailure,
}

/// The handshake families. Clones share their series: the engine's
/// observer is one, and what it counts shows once it flushes.
#[derive(Clone)]
pub struct Handshakes {
    established: [Tally; ROLES],
    /// Indexed by role, then reason; a reason that does not apply to a
    /// role (a server refused) counts into a counter outside the family.
    failed: [[Tally; REASONS]; ROLES],
    /// Client handshakes only: a server's SYN_RECV stay is not one.
    latency: Spread,
}

impl Handshakes {
    /// Register the families in `r`, every known label value at 0.
    pub fn register(r: &mut Registry) -> Handshakes {
        let established = Family::<RoleLabel, Counter>::default();
        r.register(
            "tcp_connections_established",
            "Connections whose handshake completed, by role",
            established.clone(),
        );
        let failed = Family::<FailureLabels, Counter>::default();
        r.register(
            "tcp_handshake_failures",
            "Handshakes that ended in CLOSE, by role and reason",
            failed.clone(),
        );
        let latency = Family::<RoleLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(&HANDSHAKE_BUCKETS)) as fn() -> Histogram,
        );
        r.register_with_unit(
            "tcp_handshake",
            "Client handshakes completed: time from SYN_SENT to ESTABLISHED",
            Unit::Seconds,
            latency.clone(),
        );
        Handshakes {
            established: Role::ALL
                .map(|role| Tally::new(established.get_or_create_owned(&RoleLabel { role }))),
            failed: Role::ALL.map(|role| {
                HandshakeFailure::ALL.map(|reason| {
                    Tally::new(if reason.applies_to(role) {
                        failed.get_or_create_owned(&FailureLabels { role, reason })
                    } else {
                        Counter::default()
                    })
                })
            }),
            latency: Spread::new(latency.get_or_create_owned(&RoleLabel { role: Role::Client })),
        }
    }
}

/// Counts how handshakes ended.
impl Observer for Handshakes {
    fn handshake(&mut self, _cookie: u64, role: Role, outcome: Handshake) {
        match outcome {
            Handshake::Established { latency_ns } => {
                self.established[role.index()].inc();
                if let (Role::Client, Some(ns)) = (role, latency_ns) {
                    self.latency.observe_ns(ns);
                }
            }
            Handshake::Failed(why) => {
                self.failed[role.index()][why.index()].inc();
            }
        }
    }

    fn flush(&mut self) {
        self.established
            .iter_mut()
            .chain(self.failed.iter_mut().flatten())
            .for_each(Tally::flush);
        self.latency.flush();
    }
}
