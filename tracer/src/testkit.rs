//! Test support for the crate's unit tests: the one builder of synthetic
//! sock_diag snapshots, used by the engine's and the leak detectors' tests,
//! and the one synthetic kernel event the engine's and the pipeline's
//! tests start from.
//!
//! It is `#[cfg(test)]`: only unit tests make up snapshots and events. The
//! integration tests in `tracer/tests` read real ones from the kernel and
//! have their own kit (`tests/common`: privilege check, HTTP client,
//! exposition reader), so nothing here needs to be public API.
//!
//! ```ignore
//! let s = snapshot(7, TcpState::CloseWait).local(ip, 8080).timer(TimerKind::Keepalive, 3);
//! ```
use std::net::{IpAddr, Ipv4Addr};

use crate::event::{Kind, SockEvent};
use crate::snapshot::{SocketSnapshot, TcpInfo, TimerKind};
use crate::tcp::{Family, TcpState};

/// The default local address (198.18.0.0/15 is set aside for tests).
pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
/// The default remote address.
pub const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
/// The default remote port.
pub const REMOTE_PORT: u16 = 80;

/// The default local port of `cookie`: distinct per cookie, so tuples only
/// collide when a test says so.
pub fn local_port(cookie: u64) -> u16 {
    10_000 + (cookie % 50_000) as u16
}

/// A state event of the IPv4 socket `cookie`, `LOCAL:local_port(cookie)
/// -> REMOTE:80`, at time 0, in namespace 0, from a bystander task (pid
/// 999), its states not set yet.
pub fn event(cookie: u64) -> SockEvent {
    let mut comm = [0u8; 16];
    comm[..9].copy_from_slice(b"bystander");
    SockEvent {
        ts_ns: 0,
        kind: Kind::State,
        cookie,
        family: Some(Family::Ipv4),
        saddr: LOCAL,
        sport: local_port(cookie),
        daddr: REMOTE,
        dport: REMOTE_PORT,
        old_state: None,
        new_state: None,
        pid: 999,
        tid: 999,
        comm,
        netns: 0,
        err: 0,
    }
}

/// A full IPv4 socket `LOCAL:local_port(cookie) -> REMOTE:80` in `state`,
/// inode `1000 + cookie`, no timer, empty queues, no `tcp_info`.
pub fn snapshot(cookie: u64, state: TcpState) -> SocketSnapshot {
    SocketSnapshot {
        ifindex: 0,
        cookie,
        family: Family::Ipv4,
        state,
        timewait: false,
        saddr: LOCAL,
        sport: local_port(cookie),
        daddr: REMOTE,
        dport: REMOTE_PORT,
        inode: 1000 + cookie,
        uid: 0,
        timer: TimerKind::None,
        expires_ms: 0,
        timer_retrans: 0,
        rqueue: 0,
        wqueue: 0,
        info: None,
        netns: 0,
    }
}

/// Chained changes to a [`SocketSnapshot`] under construction.
pub trait SnapshotBuilder: Sized {
    /// Local address and port.
    fn local(self, addr: IpAddr, port: u16) -> Self;
    /// Remote address and port.
    fn peer(self, addr: IpAddr, port: u16) -> Self;
    /// A timewait mini socket (its `state` is TimeWait or FinWait2) with
    /// `expires_ms` left on its timer and no inode.
    fn timewait(self, expires_ms: u32) -> Self;
    /// The armed timer and its retransmit/probe count.
    fn timer(self, kind: TimerKind, retrans: u8) -> Self;
    /// `tcp_info`.
    fn info(self, info: TcpInfo) -> Self;
    /// The network namespace inode.
    fn netns(self, netns: u32) -> Self;
}

impl SnapshotBuilder for SocketSnapshot {
    fn local(mut self, addr: IpAddr, port: u16) -> Self {
        self.saddr = addr;
        self.sport = port;
        self
    }
    fn peer(mut self, addr: IpAddr, port: u16) -> Self {
        self.daddr = addr;
        self.dport = port;
        self
    }
    fn timewait(mut self, expires_ms: u32) -> Self {
        self.timewait = true;
        self.timer = TimerKind::TimeWait;
        self.expires_ms = expires_ms;
        self.inode = 0;
        self
    }
    fn timer(mut self, kind: TimerKind, retrans: u8) -> Self {
        self.timer = kind;
        self.timer_retrans = retrans;
        self
    }
    fn info(mut self, info: TcpInfo) -> Self {
        self.info = Some(info);
        self
    }
    fn netns(mut self, netns: u32) -> Self {
        self.netns = netns;
        self
    }
}
