//! Handshake outcomes: how a socket left SYN_SENT or SYN_RECV, and why a
//! failed one failed, judged from what the kernel programs report.
//!
//! A client socket leaves SYN_SENT for ESTABLISHED (a success; its stay in
//! SYN_SENT is the handshake's latency) or for CLOSE. The `SYN_SENT ->
//! CLOSE` event carries the socket's `sk_err`, the errno `connect()`
//! returns, which the kernel sets before it closes the socket:
//! - ECONNREFUSED ([`HandshakeFailure::Refused`]): the SYN was answered
//!   with a RST (`tcp_reset()` in SYN_SENT);
//! - ETIMEDOUT ([`HandshakeFailure::TimedOut`]): nobody answered, and the
//!   kernel gave up after `tcp_syn_retries` (`tcp_write_err()`);
//! - EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENETDOWN
//!   ([`HandshakeFailure::Unreachable`]): an ICMP error ended it
//!   (`tcp_v4_err()`, `tcp_v6_err()`), or, when the first one came while
//!   `connect()` held the socket, the timeout that followed it;
//! - no error ([`HandshakeFailure::Aborted`]): the application closed it
//!   (a connect timeout of its own, a Happy Eyeballs loser);
//! - no error and no local port ([`HandshakeFailure::NoLocalPort`]):
//!   `connect()` found no free port for the destination (EADDRNOTAVAIL,
//!   `inet_hash_connect()`) and closed the socket before any SYN. The
//!   kernel enters SYN_SENT before it picks the port, so the close of such
//!   a socket shows local port 0. Only the automatic choice is seen so: a
//!   socket bound to its port first whose 4-tuple is taken shows its port
//!   (and counts as aborted), and a `bind()` to port 0 that finds none
//!   fails before any state.
//!
//! Without an error (events from an older agent's replay) the evidence seen
//! in SYN_SENT decides: a reset received is `Refused`, a retransmitted SYN
//! `TimedOut`, nothing `Aborted`.
//!
//! A server's full socket leaves SYN_RECV for ESTABLISHED (a success) or
//! for CLOSE: [`HandshakeFailure::Reset`] with a reset received there, else
//! as a client's. Linux creates that socket only when the handshake's last
//! ACK arrives (`inet_csk_clone_lock()`), so its SYN_RECV stay is the
//! kernel's own microseconds, not the handshake: no latency is reported
//! for it. Request sockets that die before (a SYN-ACK unanswered or reset)
//! change no state the kernel reports, and are not counted.
//!
//! A socket adopted from a dump mid-handshake is counted when it leaves,
//! without a latency (its SYN_SENT began before the agent).
use super::{Engine, record::flag};
use crate::tcp::TcpState;

/// Which end of the handshake the socket was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// It called `connect()`: SYN_SENT (also SYN_RECV after a simultaneous
    /// open).
    Client,
    /// A listener's new connection: SYN_RECV.
    Server,
}

impl Role {
    /// Every value, in [`Role::index`] order.
    pub const ALL: [Role; 2] = [Role::Client, Role::Server];

    /// The `role` label value.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    /// A dense index in `0..2`, for per-value arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a handshake failed. See the module docs for the evidence of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// A client's SYN was answered with a reset (ECONNREFUSED).
    Refused,
    /// A server's half-open connection was reset.
    Reset,
    /// Closed after the SYN (or SYN-ACK) was retransmitted unanswered.
    TimedOut,
    /// Closed with no error: the application closed it.
    Aborted,
    /// An ICMP error said the peer cannot be reached (EHOSTUNREACH,
    /// ENETUNREACH, EHOSTDOWN, ENETDOWN).
    Unreachable,
    /// `connect()` found no free local port for the destination
    /// (EADDRNOTAVAIL) and sent no SYN: its ports are exhausted.
    NoLocalPort,
}

impl HandshakeFailure {
    /// Every value, in [`HandshakeFailure::index`] order.
    pub const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::Refused,
        HandshakeFailure::Reset,
        HandshakeFailure::TimedOut,
        HandshakeFailure::Aborted,
        HandshakeFailure::Unreachable,
        HandshakeFailure::NoLocalPort,
    ];

    /// The `reason` label value.
    pub fn name(self) -> &'static str {
        match self {
            HandshakeFailure::Refused => "refused",
            HandshakeFailure::Reset => "reset",
            HandshakeFailure::TimedOut => "timed_out",
            HandshakeFailure::Aborted => "aborted",
            HandshakeFailure::Unreachable => "unreachable",
            HandshakeFailure::NoLocalPort => "no_local_port",
        }
    }

    /// A dense index in `0..6`, for per-value arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// True when a socket of `role` can fail this way (a client is
    /// refused, finds its peer unreachable or no local port, a server is
    /// reset).
    pub fn applies_to(self, role: Role) -> bool {
        !matches!(
            (self, role),
            (
                HandshakeFailure::Refused
                    | HandshakeFailure::Unreachable
                    | HandshakeFailure::NoLocalPort,
                Role::Server
            ) | (HandshakeFailure::Reset, Role::Client)
        )
    }

    /// The reason an errno names, for a socket of `role`; `None` for 0 and
    /// for errors that name none.
    fn of_errno(err: u8, role: Role) -> Option<HandshakeFailure> {
        Some(match i32::from(err) {
            libc::ECONNREFUSED | libc::ECONNRESET => match role {
                Role::Client => HandshakeFailure::Refused,
                Role::Server => HandshakeFailure::Reset,
            },
            libc::ETIMEDOUT => HandshakeFailure::TimedOut,
            libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN => match role
            {
                Role::Client => HandshakeFailure::Unreachable,
                Role::Server => HandshakeFailure::TimedOut,
            },
            _ => return None,
        })
    }
}

/// How a handshake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Handshake {
    /// The socket reached ESTABLISHED.
    Established {
        /// A client's stay in SYN_SENT when the engine saw it begin;
        /// `None` for a server, and for a socket adopted from a dump or
        /// first seen leaving.
        latency_ns: Option<u64>,
    },
    /// The socket closed.
    Failed(HandshakeFailure),
}

/// What the engine saw of the socket in the state it leaves.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    /// The state was entered at the record's `since_ns`, seen by an event
    /// (not adopted, not learnt from a dump).
    pub entry_seen: bool,
    /// How long the state lasted, as the stay reports it.
    pub stay_ns: u64,
    /// The state before it (`SynSent` for a simultaneous open).
    pub prev: Option<TcpState>,
    /// A reset was received in it.
    pub reset_received: bool,
    /// A segment (the SYN or SYN-ACK) was retransmitted in it.
    pub retransmitted: bool,
}

/// The outcome of a transition `from -> to` whose event carried `err` and
/// local port `lport`, if it ends a handshake. `seen` is `None` when the
/// engine did not follow the socket in `from` (a new record, or events
/// lost): it is counted, by its error, else with the weakest reason.
pub(super) fn outcome(
    from: TcpState,
    to: TcpState,
    err: u8,
    lport: u16,
    seen: Option<Seen>,
) -> Option<(Role, Handshake)> {
    use TcpState::*;
    let role = match from {
        SynSent => Role::Client,
        SynRecv if seen.is_some_and(|s| s.prev == Some(SynSent)) => Role::Client,
        SynRecv => Role::Server,
        _ => return None,
    };
    let outcome = match to {
        Established => Handshake::Established {
            latency_ns: seen
                .filter(|s| from == SynSent && s.entry_seen)
                .map(|s| s.stay_ns),
        },
        Close => Handshake::Failed(HandshakeFailure::of_errno(err, role).unwrap_or(match seen {
            Some(s) if s.reset_received => match role {
                Role::Client => HandshakeFailure::Refused,
                Role::Server => HandshakeFailure::Reset,
            },
            Some(s) if s.retransmitted => HandshakeFailure::TimedOut,
            _ if from == SynSent && lport == 0 => HandshakeFailure::NoLocalPort,
            _ => HandshakeFailure::Aborted,
        })),
        _ => return None,
    };
    Some((role, outcome))
}

impl Engine {
    /// What the engine saw of `slot` in `state`, the state an event at
    /// `ts` says it leaves; `None` when the record is not in it (closed,
    /// or events were lost).
    pub(super) fn seen_in(&self, slot: u32, state: TcpState, ts: u64) -> Option<Seen> {
        let r = self.store.rec(slot);
        (r.state == state && !r.has(flag::FINISHED | flag::TW)).then(|| Seen {
            entry_seen: !r.has(flag::LOWER_BOUND),
            stay_ns: ts.saturating_sub(r.since_ns),
            prev: r.prev,
            reset_received: r.has(flag::RST_RX),
            retransmitted: r.has(flag::RTX),
        })
    }
}
