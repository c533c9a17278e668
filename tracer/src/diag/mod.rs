//! NETLINK_SOCK_DIAG: what the kernel says about every TCP socket right now.
//!
//! The agent takes a dump at start (to adopt sockets that predate it) and on
//! every reconcile interval (to confirm and end TIME_WAIT, and to heal lost
//! events). `tracer leaks` takes one when no agent runs. A sock_diag socket
//! sees only the network namespace it was created in: [`netns`] creates
//! one inside any namespace.
//!
//! - [`dump`]: the netlink request/receive loop ([`Dumper`], [`dump_tcp`]);
//! - `parse`: zero-copy decoding of the replies;
//! - [`netns`]: entering a network namespace to open a socket there;
//! - [`owner`]: which processes hold a socket inode, like `ss -p`;
//! - [`cgroup`]: container ids from cgroup paths (pure).
use std::net::IpAddr;

pub mod cgroup;
pub mod dump;
pub mod netns;
pub mod netstat;
pub mod owner;
mod parse;

pub use cgroup::container_id;
pub use dump::{DiagError, DumpOptions, DumpStats, Dumper, dump_tcp};
pub use netns::{NetnsHandle, own_netns};
pub use owner::{Owner, owners_of};

use crate::tcp::{Family, TcpState};

/// The kernel timer armed on a socket (`idiag_timer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// No timer.
    None,
    /// Retransmission (or SYN/SYN-ACK, loss probe, RACK reorder) timer.
    Retransmit,
    /// Keepalive timer (also used for SYN_SENT/FIN_WAIT2 timeouts).
    Keepalive,
    /// The TIME_WAIT timer of a timewait socket.
    TimeWait,
    /// Zero-window probe timer.
    Probe,
}

/// The fields of `struct tcp_info` the detectors use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `tcpi_retransmits`: consecutive RTO retransmits of the head segment.
    pub retransmits: u8,
    /// `tcpi_probes`: unanswered zero-window or keepalive probes.
    pub probes: u8,
    /// `tcpi_backoff`: RTO exponential backoff.
    pub backoff: u8,
    /// `tcpi_rto`, microseconds.
    pub rto_us: u32,
    /// `tcpi_unacked`: segments sent and not yet acknowledged.
    pub unacked: u32,
    /// `tcpi_last_data_sent`, milliseconds ago.
    pub last_data_sent_ms: u32,
    /// `tcpi_last_data_recv`, milliseconds ago.
    pub last_data_recv_ms: u32,
    /// `tcpi_last_ack_recv`, milliseconds ago.
    pub last_ack_recv_ms: u32,
    /// `tcpi_total_retrans`.
    pub total_retrans: u32,
}

/// One socket in a sock_diag dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    /// `idiag_cookie`: the same cookie the kernel programs report.
    pub cookie: u64,
    /// Address family.
    pub family: Family,
    /// `idiag_state`. A timewait socket reports its substate here:
    /// `TimeWait`, or `FinWait2` for an orphaned FIN_WAIT2 socket. Two
    /// kernel quirks are undone: a request socket (reported as SYN_RECV)
    /// reads `NewSynRecv`, and a bound-but-inactive socket (reported as
    /// CLOSE with no peer) reads `BoundInactive`.
    pub state: TcpState,
    /// True for an `inet_timewait_sock` (the mini socket that replaces a
    /// closed full socket during TIME_WAIT or orphaned FIN_WAIT2).
    pub timewait: bool,
    /// Local address. IPv4 peers of a dual-stack IPv6 socket appear as
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`), as the kernel reports them.
    pub saddr: IpAddr,
    /// Local port.
    pub sport: u16,
    /// Remote address.
    pub daddr: IpAddr,
    /// Remote port.
    pub dport: u16,
    /// `idiag_inode`; 0 for timewait and orphaned sockets.
    pub inode: u64,
    /// `idiag_uid`.
    pub uid: u32,
    /// The armed timer.
    pub timer: TimerKind,
    /// Milliseconds until the timer fires (`idiag_expires`); for a timewait
    /// socket, until it is destroyed.
    pub expires_ms: u32,
    /// `idiag_retrans`: retransmits or unanswered probes counted by the timer.
    pub timer_retrans: u8,
    /// `idiag_rqueue`: bytes not yet read by the application (established
    /// sockets), or the accept backlog (listeners).
    pub rqueue: u32,
    /// `idiag_wqueue`: bytes not yet acknowledged, or the backlog limit.
    pub wqueue: u32,
    /// `tcp_info`, for full sockets when it was requested.
    pub info: Option<TcpInfo>,
    /// Inode of the network namespace the socket lives in: that of the
    /// [`Dumper`] that listed it (0 when unknown).
    pub netns: u32,
}
