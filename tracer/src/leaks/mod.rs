//! Leak detection: which sockets look leaked or doomed, who holds them, and
//! since when.
//!
//! Pure: [`Detector::update`] takes a sock_diag dump (with `tcp_info`), the
//! current monotonic time, a lookup of known state-entry times (the engine)
//! and an owner lookup (the `/proc` scan's
//! [`OwnerScan`](crate::snapshot::OwnerScan), which also says whether an
//! owner it did not find could not be read), and returns the flags raised
//! and cleared since the last call. It does no I/O of its own.
//!
//! - [`detect`]: the rules and the [`Detector`] state (first-seen times,
//!   active flags, a bounded ring of cleared flags);
//! - [`rollup`]: per-process CLOSE_WAIT roll-up with growth, the gauges the
//!   agent exports, and the [`Report`] served by `/api/v1/leaks` and printed
//!   by `tracer leaks`;
//! - [`table`]: the report as a table for people.
//!
//! Kinds and their conditions (thresholds in [`Thresholds`]):
//!
//! | kind | condition |
//! |---|---|
//! | `close_wait` | CLOSE_WAIT longer than `close_wait` |
//! | `half_open` / `retransmitting` | unacked data, RTO retransmits or backoff, no ACK for `half_open`, seen stalled for `half_open` |
//! | `half_open` / `keepalive_unanswered` | keepalive probes unanswered, seen for `half_open` |
//! | `idle_no_keepalive` (a risk) | ESTABLISHED, no data either way for `idle`, no timer armed (a retransmit or zero-window probe timer hides the keepalive one, and watches the peer too) |
//! | `stuck_handshake` / `syn_sent` | SYN_SENT longer than `handshake` |
//! | `stuck_handshake` / `syn_recv` | per listening port: request sockets that retransmitted their SYN-ACK at least twice, or are older than `handshake` |
//! | `stuck_handshake` / `accept_queue_full` | a listener whose accept queue was full (more waiting than its backlog) at every dump for `handshake` |
//! | `orphaned_fin_wait2` | FIN_WAIT2 without an owner (timewait substate or inode 0) longer than `fin_wait2` |
//!
//! A half-open stall lasts until an ACK arrives: when its evidence changes
//! (an application writes into a connection whose keepalive probes go
//! unanswered), the flag stays and its reason follows.
use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    snapshot::FdOwner,
    tcp::TcpState,
    wall::{Wall, WallClock},
};

pub mod detect;
pub mod report;
pub mod rollup;
mod rules;
pub mod table;
#[cfg(test)]
mod tests;

pub use detect::{Coverage, Detector, DetectorStats};
pub use report::{ProcessLeaks, Report, Source, ThresholdSeconds, snapshot_report};
pub use rollup::Gauges;

/// One value per kind of leak, named as the thresholds are: how long each
/// condition must last before it is flagged ([`Thresholds`]), the same in
/// seconds as a report shows them ([`ThresholdSeconds`]), in milliseconds
/// in a recording, or as a command's flags give them (`Option`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerKind<T> {
    /// CLOSE_WAIT longer than this is a leak.
    pub close_wait: T,
    /// Stalled (retransmitting without ACK, or keepalive unanswered) this long: half-open.
    pub half_open: T,
    /// ESTABLISHED and idle this long without a keepalive timer: at risk.
    pub idle: T,
    /// SYN_SENT, or a request socket, this long: a stuck handshake.
    pub handshake: T,
    /// Orphaned FIN_WAIT2 this long: flagged. The kernel ends an orphan
    /// at `tcp_fin_timeout` (60 s by default), so the default is half that:
    /// at 60 s a flag would live for the orphan's last moment only.
    pub fin_wait2: T,
}

impl<T: Copy> PerKind<T> {
    /// The value of one kind.
    pub fn of(&self, kind: LeakKind) -> T {
        match kind {
            LeakKind::CloseWait => self.close_wait,
            LeakKind::HalfOpen => self.half_open,
            LeakKind::IdleNoKeepalive => self.idle,
            LeakKind::StuckHandshake => self.handshake,
            LeakKind::OrphanedFinWait2 => self.fin_wait2,
        }
    }

    /// Each value through `f`.
    pub fn map<U>(self, f: impl Fn(T) -> U) -> PerKind<U> {
        PerKind {
            close_wait: f(self.close_wait),
            half_open: f(self.half_open),
            idle: f(self.idle),
            handshake: f(self.handshake),
            fin_wait2: f(self.fin_wait2),
        }
    }
}

/// How long each condition must last before it is flagged.
pub type Thresholds = PerKind<Duration>;

impl Default for Thresholds {
    /// The defaults of `tracer run` (60 s, 10 s, 10 min, 10 s, 30 s).
    fn default() -> Self {
        Thresholds {
            close_wait: Duration::from_secs(60),
            half_open: Duration::from_secs(10),
            idle: Duration::from_secs(600),
            handshake: Duration::from_secs(10),
            fin_wait2: Duration::from_secs(30),
        }
    }
}

/// What a flag says about a socket. The `kind` label of
/// `tracer_leaks_flagged_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// The peer closed; the application never called close().
    CloseWait,
    /// The peer vanished without FIN or RST; the connection will never work.
    HalfOpen,
    /// Idle without keepalive: if the peer dies nobody will know. A risk, not a leak.
    IdleNoKeepalive,
    /// A handshake that does not complete.
    StuckHandshake,
    /// We closed; the peer never sent its FIN.
    OrphanedFinWait2,
}

impl LeakKind {
    /// Every kind, for pre-created metric labels.
    pub const ALL: [LeakKind; 5] = [
        LeakKind::CloseWait,
        LeakKind::HalfOpen,
        LeakKind::IdleNoKeepalive,
        LeakKind::StuckHandshake,
        LeakKind::OrphanedFinWait2,
    ];

    /// The label value (`close_wait`, `half_open`, ...).
    pub fn name(self) -> &'static str {
        match self {
            LeakKind::CloseWait => "close_wait",
            LeakKind::HalfOpen => "half_open",
            LeakKind::IdleNoKeepalive => "idle_no_keepalive",
            LeakKind::StuckHandshake => "stuck_handshake",
            LeakKind::OrphanedFinWait2 => "orphaned_fin_wait2",
        }
    }

    /// Its threshold's flag, without the dashes: `close-wait-threshold`.
    pub fn threshold_flag(self) -> &'static str {
        match self {
            LeakKind::CloseWait => "close-wait-threshold",
            LeakKind::HalfOpen => "half-open-threshold",
            LeakKind::IdleNoKeepalive => "idle-threshold",
            LeakKind::StuckHandshake => "handshake-threshold",
            LeakKind::OrphanedFinWait2 => "fin-wait2-threshold",
        }
    }

    /// False for risks (`idle_no_keepalive`): they do not make `tracer leaks` exit 1.
    pub fn is_leak(self) -> bool {
        self != LeakKind::IdleNoKeepalive
    }
}

/// The sub-kind of a `half_open` or `stuck_handshake` flag: the `reason`
/// label of `tracer_half_open_connections` and the `kind` label of
/// `tracer_stuck_handshakes`; and `not_accepted` for a `close_wait` flag
/// on a connection still in its listener's accept queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// RTO retransmits or backoff with no ACK progress.
    Retransmitting,
    /// Keepalive probes sent and not answered.
    KeepaliveUnanswered,
    /// A connect() in SYN_SENT too long.
    SynSent,
    /// Request sockets on a listening port needing SYN-ACK retransmits or too old.
    SynRecv,
    /// A listener whose accept queue has been full at every dump for the
    /// threshold: the kernel drops new handshakes until the process accepts.
    AcceptQueueFull,
    /// A `close_wait` connection the process never accepted: it waits in
    /// its listener's accept queue, so the flag's inode and owners are the
    /// listener's (the process that should call `accept()`).
    NotAccepted,
    /// A reason that a newer agent's report names and this build does not
    /// know: `tracer leaks` and `tracer top` still read the report.
    #[serde(other)]
    Other,
}

impl Reason {
    /// Half-open reasons, for pre-created labels.
    pub const HALF_OPEN: [Reason; 2] = [Reason::Retransmitting, Reason::KeepaliveUnanswered];
    /// Stuck-handshake kinds, for pre-created labels.
    pub const HANDSHAKE: [Reason; 3] = [Reason::SynSent, Reason::SynRecv, Reason::AcceptQueueFull];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Retransmitting => "retransmitting",
            Reason::KeepaliveUnanswered => "keepalive_unanswered",
            Reason::SynSent => "syn_sent",
            Reason::SynRecv => "syn_recv",
            Reason::AcceptQueueFull => "accept_queue_full",
            Reason::NotAccepted => "not_accepted",
            Reason::Other => "other",
        }
    }
}

/// One flag: a socket (or, for `syn_recv`, a listening port) in trouble.
/// An `accept_queue_full` flag is about the listener: its cookie, inode
/// and owners, and no remote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// What is wrong.
    pub kind: LeakKind,
    /// Sub-kind for `half_open` and `stuck_handshake`; `not_accepted` for a
    /// `close_wait` connection still in its listener's accept queue.
    pub reason: Option<Reason>,
    /// Socket cookie; `None` for a per-port `syn_recv` flag.
    pub cookie: Option<u64>,
    /// Local endpoint (the listening address for a `syn_recv` flag).
    pub local: SocketAddr,
    /// Remote endpoint; `None` for a `syn_recv` flag (many peers) and an
    /// `accept_queue_full` one (a listener).
    pub remote: Option<SocketAddr>,
    /// Socket state (`new_syn_recv` for a `syn_recv` flag).
    #[serde(with = "state_name")]
    pub state: TcpState,
    /// Socket inode (0 for timewait, request and orphaned sockets); the
    /// listener's for a port's `syn_recv` flag and a `not_accepted` one.
    pub inode: u64,
    /// For a `not_accepted` flag: the other listeners bound to its address
    /// (`SO_REUSEPORT`); for a port's `syn_recv` flag, the other listeners
    /// on the port. Which of their queues holds it the kernel does not
    /// say, so their processes are among its owners too. Not in the JSON:
    /// `owners` carries it.
    #[serde(skip)]
    pub sibling_listeners: Vec<u64>,
    /// Inode of the socket's network namespace (0 when unknown).
    #[serde(default)]
    pub netns: u32,
    /// Monotonic ns when the flag was raised (0 in a one-shot snapshot).
    pub raised_at_ns: u64,
    /// `raised_at_ns` on the wall clock (see [`Flag::stamp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_at: Option<Wall>,
    /// How long the condition has held; `None` when unknown (snapshot).
    pub age_seconds: Option<f64>,
    /// True when the condition started before we could see it: the age is at least this.
    pub age_is_lower_bound: bool,
    /// Bytes received and not read by the application (`idiag_rqueue`, less
    /// the peer's FIN: [`SocketSnapshot::unread_bytes`](crate::snapshot::SocketSnapshot::unread_bytes)).
    pub unread_bytes: u32,
    /// Once the peer's FIN has arrived (CLOSE_WAIT): whether the
    /// application has read everything, EOF included; `None` before the FIN
    /// ([`SocketSnapshot::read_to_end`](crate::snapshot::SocketSnapshot::read_to_end)).
    #[serde(default)]
    pub read_to_end: Option<bool>,
    /// Why, in words and numbers.
    pub evidence: String,
    /// For a `syn_recv` flag: how many request sockets are stuck.
    pub count: Option<u32>,
    /// Every (process, fd) holding the socket; empty for orphans, and when
    /// the owner could not be read.
    pub owners: Vec<FdOwner>,
    /// True when the socket has an owner (an inode) that could not be
    /// named: not readable without privileges, or outside our pid
    /// namespace. False with no owners means there is none (orphaned,
    /// timewait and request sockets).
    #[serde(default)]
    pub owner_unknown: bool,
    /// With `owner_unknown`: why, and what would reveal the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_hint: Option<String>,
    /// Monotonic ns when the flag cleared.
    pub cleared_at_ns: Option<u64>,
    /// `cleared_at_ns` on the wall clock (see [`Flag::stamp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Wall>,
    /// How it cleared ("socket gone", "socket left close_wait (now last_ack)", ...).
    pub cleared_how: Option<String>,
    /// The container (and pod) of the socket's namespace, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::container::Container>,
    /// For an `orphaned_fin_wait2` flag whose peer is on this host (its
    /// other end is in the same namespace's dump, in CLOSE_WAIT): that
    /// end, whose process is the one that leaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_peer: Option<LocalPeer>,
    /// The interface the socket is bound to (`idiag_if`, 0: none): the
    /// scope of an IPv6 link-local address, or `SO_BINDTODEVICE`. Lookups
    /// name it, and the table writes a link-local address with it
    /// (`[fe80::1%3]:80`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ifindex: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The other end of a connection, when it is a socket on this host: for an
/// orphan whose peer never sent its FIN, the process that has not closed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalPeer {
    /// Its cookie.
    pub cookie: u64,
    /// Its state (`close_wait`).
    #[serde(with = "state_name")]
    pub state: TcpState,
    /// Its inode; its listener's when it was never accepted.
    pub inode: u64,
    /// Its network namespace (inode), when it is not the flag's: a
    /// connection between two namespaces of this host (containers, `ip
    /// netns`), matched by its addresses, which no NAT rewrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    /// Never accepted: the other listeners on its address, as
    /// [`Flag::sibling_listeners`].
    #[serde(skip)]
    pub sibling_listeners: Vec<u64>,
    /// It waits in its listener's accept queue, never accepted: `owners`
    /// hold the listener (the process that should accept it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_accepted: bool,
    /// Every (process, fd) holding it, from the same `/proc` scan as the
    /// flags' owners.
    pub owners: Vec<FdOwner>,
}

impl Flag {
    /// Fill in the wall-clock times of `raised_at_ns` and `cleared_at_ns`
    /// by `clock` (none for a snapshot's 0).
    pub fn stamp(&mut self, clock: &WallClock) {
        self.raised_at = clock.at_known(self.raised_at_ns);
        self.cleared_at = self.cleared_at_ns.and_then(|t| clock.at_known(t));
    }
}

/// A flag raised or cleared by one [`Detector::update`]; the agent turns
/// each into a `leak_flagged` / `leak_cleared` event.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A new flag (owners filled in).
    Raised(Flag),
    /// A flag whose condition ended (`cleared_at_ns` and `cleared_how` set).
    Cleared(Flag),
}

impl Change {
    /// `leak_flagged` or `leak_cleared`.
    pub fn event_name(&self) -> &'static str {
        match self {
            Change::Raised(_) => "leak_flagged",
            Change::Cleared(_) => "leak_cleared",
        }
    }

    /// The flag.
    pub fn flag(&self) -> &Flag {
        match self {
            Change::Raised(f) | Change::Cleared(f) => f,
        }
    }

    /// The event as one JSON object: `{"event": "leak_flagged", ...flag fields}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.flag()).unwrap_or_default();
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("event".into(), self.event_name().into());
        }
        v
    }
}

/// `TcpState` as its kernel name, both ways (the crate's `TcpState` only serializes).
mod state_name {
    use crate::tcp::TcpState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(st: &TcpState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(st.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TcpState, D::Error> {
        let name = String::deserialize(d)?;
        TcpState::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown TCP state {name:?}")))
    }
}

/// A duration for evidence text: `60s`, `1.5s`, `10m` (whole minutes from 10 up).
pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 600.0 && d.as_secs().is_multiple_of(60) && d.subsec_nanos() == 0 {
        format!("{}m", d.as_secs() / 60)
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{s:.1}s")
    }
}
