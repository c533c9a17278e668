//! The TCP lifecycle: sockets per state, completed stays, transitions,
//! closes, retransmits, resets, and TIME_WAIT (per listening port, how
//! stays ended, and closes the `tcp_max_tw_buckets` limit swallowed).
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::fold::{Histogram, Spread, Tally};

use crate::{
    engine::{ClosedBy, Direction, Engine, Observer, TimeWaitEnd},
    snapshot::SocketSnapshot,
    tcp::TcpState,
};

/// Buckets that resolve both sub-millisecond handshakes and the 60 s of
/// TIME_WAIT (which the reconcile interval, 1 s by default, quantises).
pub const DURATION_BUCKETS: [f64; 30] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 3.5, 5.0,
    10.0, 30.0, 55.0, 59.0, 60.0, 61.0, 62.0, 65.0, 90.0, 120.0, 300.0, 900.0, 3600.0, 86400.0,
];

const N: usize = TcpState::COUNT;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: TcpState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FromTo {
    from: TcpState,
    to: TcpState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedByLabel {
    closed_by: ClosedBy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabel {
    how: TimeWaitEnd,
}

/// At most this many ports get a `tracer_tcp_time_wait_sockets` series of
/// their own: those listened on that hold the most TIME_WAIT sockets.
pub const TIME_WAIT_PORTS: usize = 20;

/// The `port` label of `tracer_tcp_time_wait_sockets`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Port {
    /// A port the host listens on.
    Listening(u16),
    /// Every other port.
    Other,
}

impl EncodeLabelValue for Port {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        match self {
            Port::Listening(p) => write!(e, "{p}"),
            Port::Other => e.write_str("other"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: Port,
}

/// The ports `tracer_tcp_time_wait_sockets` splits TIME_WAIT by.
#[derive(Debug, Default)]
struct Ports {
    /// Local ports the host listens on, as of the last dump.
    listening: HashSet<u16>,
    /// The ports the family has a series for.
    shown: Vec<u16>,
}

/// The TCP lifecycle's families. Clones share their series: the engine's
/// observer is one, and what it counts shows once it flushes.
#[derive(Clone)]
pub struct Tcp {
    sockets: [Gauge; N],
    durations: [Spread; N],
    /// Indexed by `from * N + to`. The pairs the kernel reports are in the
    /// family from the start; any other appears in it when first flushed.
    transitions: Vec<Tally>,
    transition_family: Family<FromTo, Counter>,
    closed: [Tally; ClosedBy::ALL.len()],
    time_wait_by_port: Family<PortLabel, Gauge>,
    ports: Arc<Mutex<Ports>>,
    retransmits: Tally,
    synack_retransmits: Tally,
    resets: [Tally; 2],
    time_wait_ended: [Tally; 3],
    time_wait_overflows: Tally,
}

impl Tcp {
    /// Register the families in `r`, every known label value at 0.
    pub fn register(r: &mut Registry) -> Tcp {
        let sockets = Family::<StateLabel, Gauge>::default();
        r.register(
            "tcp_sockets",
            "Current TCP sockets per state",
            sockets.clone(),
        );
        let durations = Family::<StateLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(&DURATION_BUCKETS)) as fn() -> Histogram,
        );
        r.register_with_unit(
            "tcp_state_duration",
            "Completed stays in each TCP state",
            Unit::Seconds,
            durations.clone(),
        );
        let transitions = Family::<FromTo, Counter>::default();
        r.register(
            "tcp_state_transitions",
            "TCP state transitions",
            transitions.clone(),
        );
        let closed = Family::<ClosedByLabel, Counter>::default();
        r.register(
            "tcp_connections_closed",
            "Connections closed, by who closed first, or what ended them (a reset, the kernel giving up on the peer)",
            closed.clone(),
        );
        let time_wait_by_port = Family::<PortLabel, Gauge>::default();
        r.register(
            "tcp_time_wait_sockets",
            format!(
                "TIME_WAIT sockets by local listening port, for the {TIME_WAIT_PORTS} ports holding \
                 the most (port=\"other\" for the rest)"
            ),
            time_wait_by_port.clone(),
        );
        time_wait_by_port
            .get_or_create(&PortLabel { port: Port::Other })
            .set(0);
        let retransmits = Counter::default();
        r.register(
            "tcp_retransmits",
            "Retransmitted TCP segments",
            retransmits.clone(),
        );
        let synack_retransmits = Counter::default();
        r.register(
            "tcp_synack_retransmits",
            "Retransmitted SYN-ACKs",
            synack_retransmits.clone(),
        );
        let resets = Family::<DirectionLabel, Counter>::default();
        r.register("tcp_resets", "TCP resets sent and received", resets.clone());
        let time_wait_ended = Family::<HowLabel, Counter>::default();
        r.register(
            "tcp_time_wait_ended",
            "TIME_WAIT stays that ended, by how",
            time_wait_ended.clone(),
        );
        let time_wait_overflows = Counter::default();
        r.register(
            "time_wait_overflows",
            "Closes that left no TIME_WAIT socket because the namespace held tcp_max_tw_buckets of them",
            time_wait_overflows.clone(),
        );

        let by_state = |state| StateLabel { state };
        let mut pairs = Vec::with_capacity(N * N);
        for from in TcpState::ALL {
            for to in TcpState::ALL {
                pairs.push(if plausible(from, to) {
                    Tally::new(transitions.get_or_create_owned(&FromTo { from, to }))
                } else {
                    Tally::deferred()
                });
            }
        }
        Tcp {
            sockets: TcpState::ALL.map(|st| sockets.get_or_create_owned(&by_state(st))),
            durations: TcpState::ALL
                .map(|st| Spread::new(durations.get_or_create_owned(&by_state(st)))),
            transitions: pairs,
            transition_family: transitions,
            closed: ClosedBy::ALL.map(|closed_by| {
                Tally::new(closed.get_or_create_owned(&ClosedByLabel { closed_by }))
            }),
            time_wait_by_port,
            ports: Arc::default(),
            retransmits: Tally::new(retransmits),
            synack_retransmits: Tally::new(synack_retransmits),
            resets: [Direction::Sent, Direction::Received].map(|direction| {
                Tally::new(resets.get_or_create_owned(&DirectionLabel { direction }))
            }),
            time_wait_ended: TimeWaitEnd::ALL
                .map(|how| Tally::new(time_wait_ended.get_or_create_owned(&HowLabel { how }))),
            time_wait_overflows: Tally::new(time_wait_overflows),
        }
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, Ports> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the ports the host listens on from a dump: TIME_WAIT is split
    /// by these until the next one.
    pub fn listening_in(&self, dump: &[SocketSnapshot]) {
        self.set_listening(
            dump.iter()
                .filter(|d| d.state == TcpState::Listen)
                .map(|d| d.sport)
                .collect(),
        );
    }

    pub(super) fn set_listening(&self, ports: HashSet<u16>) {
        self.ports().listening = ports;
    }

    /// Copy the engine's counts: sockets per state, and TIME_WAIT by
    /// listening port.
    pub fn publish(&self, engine: &Engine) {
        let counts = engine.sockets_by_state();
        self.set_sockets(&counts);
        self.split_time_wait(counts[TcpState::TimeWait.index()], |p| {
            engine.time_wait_on_port(p)
        });
    }

    /// Set `tracer_tcp_sockets{state}` from per-state counts.
    pub(super) fn set_sockets(&self, counts: &[u64; N]) {
        for (g, &c) in self.sockets.iter().zip(counts) {
            g.set(c as i64);
        }
    }

    /// Replace `tracer_tcp_time_wait_sockets{port}`: `on_port(p)` for the
    /// [`TIME_WAIT_PORTS`] ports listened on that hold the most TIME_WAIT
    /// sockets (none for a port that holds none), the rest of `total`
    /// under "other". O(ports listened on), from counts the engine keeps as
    /// it goes: a host with thousands of listeners exports a bounded
    /// number of series.
    ///
    /// Series are set in place, and those of ports no longer shown are
    /// removed, so a concurrent scrape never sees the family half-built.
    pub(super) fn split_time_wait(&self, total: u64, on_port: impl Fn(u16) -> u64) {
        let series = |port| PortLabel { port };
        let mut ports = self.ports();
        let Ports { listening, shown } = &mut *ports;
        let mut most: Vec<(u64, u16)> = listening
            .iter()
            .map(|&p| (on_port(p), p))
            .filter(|&(n, _)| n > 0)
            .collect();
        if most.len() > TIME_WAIT_PORTS {
            most.select_nth_unstable_by(TIME_WAIT_PORTS - 1, |a, b| b.cmp(a));
            most.truncate(TIME_WAIT_PORTS);
        }
        let before = std::mem::take(shown);
        let mut listed = 0u64;
        for &(n, p) in &most {
            listed += n;
            self.time_wait_by_port
                .get_or_create(&series(Port::Listening(p)))
                .set(n as i64);
            shown.push(p);
        }
        self.time_wait_by_port
            .get_or_create(&series(Port::Other))
            .set(total.saturating_sub(listed) as i64);
        let now: HashSet<u16> = shown.iter().copied().collect();
        for gone in before.into_iter().filter(|p| !now.contains(p)) {
            self.time_wait_by_port
                .remove(&series(Port::Listening(gone)));
        }
    }
}

/// Counts what the engine learns about connections.
impl Observer for Tcp {
    fn stay(&mut self, _cookie: u64, state: TcpState, duration_ns: u64, _lower_bound: bool) {
        self.durations[state.index()].observe_ns(duration_ns);
    }

    fn transition(&mut self, _cookie: u64, from: TcpState, to: TcpState) {
        self.transitions[from.index() * N + to.index()].inc();
    }

    fn closed(&mut self, _cookie: u64, by: Option<ClosedBy>) {
        if let Some(by) = by {
            self.closed[by.index()].inc();
        }
    }

    fn retransmit(&mut self, _cookie: u64, _state: Option<TcpState>) {
        self.retransmits.inc();
    }

    fn synack_retransmit(&mut self, _cookie: u64) {
        self.synack_retransmits.inc();
    }

    fn reset(&mut self, _cookie: u64, direction: Direction, _state: Option<TcpState>) {
        self.resets[direction.index()].inc();
    }

    fn time_wait_ended(&mut self, _cookie: u64, how: TimeWaitEnd) {
        self.time_wait_ended[how.index()].inc();
    }

    fn time_wait_overflowed(&mut self, _cookie: u64) {
        self.time_wait_overflows.inc();
    }

    fn flush(&mut self) {
        let Tcp {
            durations,
            transitions,
            transition_family,
            closed,
            retransmits,
            synack_retransmits,
            resets,
            time_wait_ended,
            time_wait_overflows,
            ..
        } = self;
        durations.iter_mut().for_each(Spread::flush);
        for (i, pair) in transitions.iter_mut().enumerate() {
            pair.flush_making(|| {
                let (from, to) = (TcpState::ALL[i / N], TcpState::ALL[i % N]);
                transition_family.get_or_create_owned(&FromTo { from, to })
            });
        }
        closed
            .iter_mut()
            .chain(resets)
            .chain(time_wait_ended)
            .chain([retransmits, synack_retransmits, time_wait_overflows])
            .for_each(Tally::flush);
    }
}

/// Transitions `inet_sock_set_state` reports in practice.
fn plausible(from: TcpState, to: TcpState) -> bool {
    use TcpState::*;
    matches!(
        (from, to),
        (Close, SynSent)
            | (Close, Listen)
            | (Listen, Close)
            | (Listen, SynRecv)
            | (SynSent, Established)
            | (SynSent, Close)
            | (SynRecv, Established)
            | (SynRecv, Close)
            | (Established, FinWait1)
            | (Established, CloseWait)
            | (Established, Close)
            | (FinWait1, FinWait2)
            | (FinWait1, Closing)
            | (FinWait1, Close)
            | (FinWait2, Close)
            | (Closing, Close)
            | (CloseWait, LastAck)
            | (CloseWait, Close)
            | (LastAck, Close)
    )
}
