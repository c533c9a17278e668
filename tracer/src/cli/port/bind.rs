//! Would a new TCP listener's `bind()` + `listen()` on ADDR:PORT succeed,
//! given the sockets already bound to PORT in the same network namespace?
//! Pure: Linux's rules, no I/O.
//!
//! The rules are those of `inet_csk_bind_conflict`, `inet_bind_conflict`
//! and `inet_rcv_saddr_equal` (net/ipv4/inet_connection_sock.c, Linux
//! 6.1 to 6.18; the same in substance since 4.x), checked against real
//! `bind()` calls by tests/port.rs:
//! - Only sockets in the bind table count: listeners, connections
//!   (accepted or connected from that port), TIME_WAIT and orphaned
//!   FIN_WAIT2 mini sockets, bound-but-idle sockets. Request sockets
//!   (`NEW_SYN_RECV`) are not in it.
//! - Only sockets on an overlapping address count: `0.0.0.0` overlaps
//!   every IPv4 address; `::` overlaps every IPv6 address and, unless it
//!   is `IPV6_V6ONLY`, every IPv4 one; an IPv4-mapped address
//!   (`::ffff:a.b.c.d`) is that IPv4 address; a specific IPv6 address
//!   never overlaps an IPv4 one.
//! - Without `SO_REUSEADDR` on the new socket, every such socket blocks,
//!   TIME_WAIT included.
//! - With it, a socket blocks when it listens, or when it did not set
//!   `SO_REUSEADDR` itself: Linux lets two sockets share a port only when
//!   both set it (an accepted connection and its TIME_WAIT inherit the
//!   listener's). A TIME_WAIT socket, or a live connection, of a server
//!   that set it does not block.
//!
//! Not modelled: `SO_REUSEPORT` (the new listener is assumed not to set
//! it), and `SO_BINDTODEVICE` (sockets bound to different devices do not
//! conflict; sock_diag here does not report the device, so they are
//! taken to overlap: a conservative "busy").
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::tcp::TcpState;

/// The new listener: where it binds and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The local address (`0.0.0.0`, `::`, or a specific one).
    pub addr: IpAddr,
    /// `IPV6_V6ONLY` on an IPv6 socket (ignored for IPv4).
    pub v6only: bool,
    /// `SO_REUSEADDR` set before `bind()`.
    pub reuseaddr: bool,
}

/// A socket already bound to the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its local address, as sock_diag reports it.
    pub addr: IpAddr,
    /// Its state.
    pub state: TcpState,
    /// `IPV6_V6ONLY`, when known; unknown counts as off (the default).
    pub v6only: Option<bool>,
    /// `SO_REUSEADDR`, when known. sock_diag does not report it.
    pub reuseaddr: Option<bool>,
}

/// Why a socket blocks the new listener, or may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// It listens on an overlapping address: nothing gets past that.
    Listening,
    /// The new socket has no `SO_REUSEADDR`: any socket on an overlapping
    /// address blocks it, TIME_WAIT included.
    Bound,
    /// It did not set `SO_REUSEADDR`; both sockets need it.
    NoReuseAddr,
    /// It blocks unless it set `SO_REUSEADDR`, which is not known.
    ReuseAddrUnknown,
}

impl Reason {
    /// A stable name for the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Listening => "listening",
            Reason::Bound => "bound",
            Reason::NoReuseAddr => "no_reuseaddr",
            Reason::ReuseAddrUnknown => "reuseaddr_unknown",
        }
    }
}

/// The answer for one new listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `bind()` and `listen()` succeed.
    Free,
    /// They fail with `EADDRINUSE`.
    Busy,
    /// They succeed only if the sockets with [`Reason::ReuseAddrUnknown`]
    /// set `SO_REUSEADDR`.
    Unknown,
}

impl Outcome {
    /// `free`, `busy` or `unknown`, as the JSON output spells it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Free => "free",
            Outcome::Busy => "busy",
            Outcome::Unknown => "unknown",
        }
    }
}

/// Whether `state` puts a socket in the kernel's bind table.
pub fn in_bind_table(state: TcpState) -> bool {
    state != TcpState::NewSynRecv
}

/// An address as the bind table compares it: IPv4 (an IPv4-mapped IPv6
/// address included) or IPv6.
#[derive(Clone, Copy)]
enum Side {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

fn side(addr: IpAddr) -> Side {
    match addr {
        IpAddr::V4(a) => Side::V4(a),
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(Side::V6(a), Side::V4),
    }
}

/// `inet_rcv_saddr_equal(new, old, match_wildcard = true)`: do two
/// sockets' local addresses overlap?
pub fn overlaps(new: IpAddr, new_v6only: bool, old: IpAddr, old_v6only: bool) -> bool {
    match (side(new), side(old)) {
        (Side::V4(a), Side::V4(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
        (Side::V4(_), Side::V6(b)) => b.is_unspecified() && !old_v6only,
        (Side::V6(a), Side::V4(_)) => a.is_unspecified() && !new_v6only,
        (Side::V6(a), Side::V6(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
    }
}

/// Whether `old` keeps `new` from binding, and why; `None` when it does not.
pub fn blocks(new: &Bind, old: &Holder) -> Option<Reason> {
    if !in_bind_table(old.state)
        || !overlaps(new.addr, new.v6only, old.addr, old.v6only.unwrap_or(false))
    {
        return None;
    }
    if old.state == TcpState::Listen {
        return Some(Reason::Listening);
    }
    if !new.reuseaddr {
        return Some(Reason::Bound);
    }
    match old.reuseaddr {
        Some(true) => None,
        Some(false) => Some(Reason::NoReuseAddr),
        None => Some(Reason::ReuseAddrUnknown),
    }
}

/// The outcome for `new`, and the sockets in its way (index, reason).
pub fn verdict(new: &Bind, holders: &[Holder]) -> (Outcome, Vec<(usize, Reason)>) {
    let blockers: Vec<(usize, Reason)> = holders
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((i, blocks(new, h)?)))
        .collect();
    let outcome = if blockers.is_empty() {
        Outcome::Free
    } else if blockers.iter().all(|&(_, r)| r == Reason::ReuseAddrUnknown) {
        Outcome::Unknown
    } else {
        Outcome::Busy
    };
    (outcome, blockers)
}

#[cfg(test)]
mod tests;
