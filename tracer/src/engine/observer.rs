//! What the engine reports, and the vocabulary it reports it in.
//!
//! The engine calls an [`Observer`] synchronously from `apply` and
//! `reconcile`. Every method has a no-op default, so an implementation (the
//! Prometheus layer, a test recorder, `()`) overrides only what it needs.
//! Arguments are plain `Copy` values: reporting never allocates.
use super::handshake::{Handshake, Role};
use super::record::ClosedBy;
use crate::tcp::TcpState;

/// Which way a reset went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This host sent it.
    Sent,
    /// This host received it.
    Received,
}

impl Direction {
    /// The `direction` label value.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }

    /// A dense index in `0..2`, for per-value arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a TIME_WAIT stay ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeWaitEnd {
    /// Its 60 s timer fired: the stay ended at exactly entry + 60 s (also
    /// for an inferred one that no full dump judged in time).
    Expired,
    /// A new connection took the same 4-tuple.
    Reused,
    /// Killed before its timer: a reset was seen, or a full dump no longer
    /// showed it well before its 60 s were up (a RST or an explicit kill;
    /// resolution: the full-dump interval).
    Reset,
}

impl TimeWaitEnd {
    /// Every value, in [`TimeWaitEnd::index`] order.
    pub const ALL: [TimeWaitEnd; 3] = [
        TimeWaitEnd::Expired,
        TimeWaitEnd::Reused,
        TimeWaitEnd::Reset,
    ];

    /// The `how` label value.
    pub fn name(self) -> &'static str {
        match self {
            TimeWaitEnd::Expired => "expired",
            TimeWaitEnd::Reused => "reused",
            TimeWaitEnd::Reset => "reset",
        }
    }

    /// A dense index in `0..3`, for per-value arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a reconcile corrected the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Correction {
    /// The dump showed a socket the engine did not track (its events were
    /// lost, or it was evicted); it was adopted with a lower-bound age.
    Missed,
    /// A tracked open socket was absent from the dump; it was closed.
    Vanished,
    /// The dump showed another state than the engine's; the dump won.
    StateMismatch,
    /// The socket's network namespace is gone (no process or mount holds
    /// it any more): the socket went with it, and was closed.
    NetnsGone,
    /// A full dump showed a TIME_WAIT socket the engine did not track, in
    /// a namespace where a close since the last full dump was judged to
    /// leave none because `tcp_max_tw_buckets` was reached. At the limit
    /// the engine cannot tell which closes the kernel still had room for
    /// (its TIME_WAIT stays end at the late edge of the kernel's timer
    /// wheel, so for a few ms it reads "full" while the kernel has room):
    /// such sockets are adopted under this reason, not as `Missed`.
    TimeWaitAtLimit,
}

impl Correction {
    /// Every value, in [`Correction::index`] order.
    pub const ALL: [Correction; 5] = [
        Correction::Missed,
        Correction::Vanished,
        Correction::StateMismatch,
        Correction::NetnsGone,
        Correction::TimeWaitAtLimit,
    ];

    /// The `reason` label value.
    pub fn name(self) -> &'static str {
        match self {
            Correction::Missed => "missed",
            Correction::Vanished => "vanished",
            Correction::StateMismatch => "state_mismatch",
            Correction::NetnsGone => "netns_gone",
            Correction::TimeWaitAtLimit => "time_wait_at_limit",
        }
    }

    /// A dense index in `0..5`, for per-value arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Receives what the engine learns, as it learns it.
///
/// `cookie` names the socket in every per-socket call, so an event stream
/// can link outcomes to connections; counters ignore it. Calls happen while
/// the engine is borrowed: look records up afterwards, not from inside.
#[expect(unused_variables, reason = "default methods ignore their arguments")]
pub trait Observer {
    /// A socket left `state` after `duration_ns`. `lower_bound` is true when
    /// the engine did not see the state begin (an adopted socket, or a state
    /// learnt from a dump): the real stay was at least this long.
    /// TIME_WAIT stays are reported here too (state `TimeWait`), and the
    /// stay of an orphaned FIN_WAIT2 timewait socket as `FinWait2`.
    fn stay(&mut self, cookie: u64, state: TcpState, duration_ns: u64, lower_bound: bool) {}

    /// The kernel reported a state change (only kernel events: the inferred
    /// entry into TIME_WAIT is not a transition of its own).
    fn transition(&mut self, cookie: u64, from: TcpState, to: TcpState) {}

    /// A socket reached CLOSE. `by` is `None` when no close handshake or
    /// reset was seen (a listener closing, a connect timing out, lost events).
    fn closed(&mut self, cookie: u64, by: Option<ClosedBy>) {}

    /// A data segment was retransmitted; `state` is the socket's state then.
    fn retransmit(&mut self, cookie: u64, state: Option<TcpState>) {}

    /// A listener retransmitted a SYN-ACK.
    fn synack_retransmit(&mut self, cookie: u64) {}

    /// A reset was sent or received (`cookie` 0: it matched no socket).
    fn reset(&mut self, cookie: u64, direction: Direction, state: Option<TcpState>) {}

    /// A socket left SYN_SENT or SYN_RECV: its handshake completed or
    /// failed (see `handshake.rs` for the evidence of each reason).
    fn handshake(&mut self, cookie: u64, role: Role, outcome: Handshake) {}

    /// A TIME_WAIT stay ended; its duration went to [`Observer::stay`] first.
    fn time_wait_ended(&mut self, cookie: u64, how: TimeWaitEnd) {}

    /// A close that should have left a timewait socket (FIN_WAIT2 or CLOSING
    /// to CLOSE) was not followed by one in the next reconcile dump:
    /// `tcp_max_tw_buckets` overflowed, or it was killed unseen.
    fn time_wait_never_appeared(&mut self, cookie: u64) {}

    /// A close left no timewait socket because its namespace held
    /// `tcp_max_tw_buckets` of them (the kernel's `TCPTimeWaitOverflow`).
    fn time_wait_overflowed(&mut self, cookie: u64) {}

    /// A reconcile corrected the engine.
    fn correction(&mut self, cookie: u64, reason: Correction) {}

    /// A record was dropped to stay under `max_sockets`; `live` is true when
    /// it was still open (no finished record was left to drop).
    fn evicted(&mut self, cookie: u64, live: bool) {}

    /// Show what was counted since the last flush to whoever reads it (the
    /// exported metrics keep their per-event counts in plain memory until
    /// then). The pipeline calls it once per batch of events, timer pass
    /// and reconcile.
    fn flush(&mut self) {}
}

/// Ignores everything.
impl Observer for () {}

/// Both observers see every outcome, `A` first: the one fan-out, nested
/// for more than two (`(a, (b, c))`). A method added to [`Observer`] is
/// added here too, and nowhere else.
impl<A: Observer, B: Observer> Observer for (A, B) {
    fn stay(&mut self, cookie: u64, state: TcpState, duration_ns: u64, lower_bound: bool) {
        self.0.stay(cookie, state, duration_ns, lower_bound);
        self.1.stay(cookie, state, duration_ns, lower_bound);
    }
    fn transition(&mut self, cookie: u64, from: TcpState, to: TcpState) {
        self.0.transition(cookie, from, to);
        self.1.transition(cookie, from, to);
    }
    fn closed(&mut self, cookie: u64, by: Option<ClosedBy>) {
        self.0.closed(cookie, by);
        self.1.closed(cookie, by);
    }
    fn retransmit(&mut self, cookie: u64, state: Option<TcpState>) {
        self.0.retransmit(cookie, state);
        self.1.retransmit(cookie, state);
    }
    fn synack_retransmit(&mut self, cookie: u64) {
        self.0.synack_retransmit(cookie);
        self.1.synack_retransmit(cookie);
    }
    fn reset(&mut self, cookie: u64, direction: Direction, state: Option<TcpState>) {
        self.0.reset(cookie, direction, state);
        self.1.reset(cookie, direction, state);
    }
    fn handshake(&mut self, cookie: u64, role: Role, outcome: Handshake) {
        self.0.handshake(cookie, role, outcome);
        self.1.handshake(cookie, role, outcome);
    }
    fn time_wait_ended(&mut self, cookie: u64, how: TimeWaitEnd) {
        self.0.time_wait_ended(cookie, how);
        self.1.time_wait_ended(cookie, how);
    }
    fn time_wait_never_appeared(&mut self, cookie: u64) {
        self.0.time_wait_never_appeared(cookie);
        self.1.time_wait_never_appeared(cookie);
    }
    fn time_wait_overflowed(&mut self, cookie: u64) {
        self.0.time_wait_overflowed(cookie);
        self.1.time_wait_overflowed(cookie);
    }
    fn correction(&mut self, cookie: u64, reason: Correction) {
        self.0.correction(cookie, reason);
        self.1.correction(cookie, reason);
    }
    fn evicted(&mut self, cookie: u64, live: bool) {
        self.0.evicted(cookie, live);
        self.1.evicted(cookie, live);
    }

    fn flush(&mut self) {
        self.0.flush();
        self.1.flush();
    }
}
