//! Plain snapshot data: what the kernel and `/proc` say about sockets at
//! one moment, with no I/O.
//!
//! [`crate::diag`] fills these in (a sock_diag dump gives
//! [`SocketSnapshot`]s, a `/proc` scan gives an [`OwnerScan`]); the engine
//! reconciles against them and the leak detectors judge them, without
//! depending on the netlink and procfs code.
use std::collections::HashMap;
use std::net::IpAddr;

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
    /// `tcpi_bytes_acked` (Linux 4.1): bytes the peer acknowledged; 0 for
    /// an accepted socket that never sent data, 1 for a connecting one
    /// (its SYN).
    pub bytes_acked: u64,
}

impl TcpInfo {
    /// Data in flight unacknowledged, with the retransmit timer fired: the
    /// evidence of a stall.
    pub fn retransmitting(&self) -> bool {
        self.unacked > 0 && (self.retransmits > 0 || self.backoff > 0)
    }
}

/// One socket to look up: its family, 4-tuple (addresses as the kernel
/// lays them out: an IPv4 address in the first 4 bytes) and cookie.
/// A live reconcile asks the kernel for each such socket
/// ([`crate::diag::Dumper::lookup_append`]) instead of walking its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Its family.
    pub family: Family,
    /// Local address.
    pub local: [u8; 16],
    /// Local port.
    pub lport: u16,
    /// Remote address.
    pub remote: [u8; 16],
    /// Remote port.
    pub rport: u16,
    /// Its socket cookie: a socket with the same 4-tuple and another
    /// cookie is not it.
    pub cookie: u64,
    /// The interface it is bound to ([`SocketSnapshot::ifindex`]); 0 for
    /// none. The kernel finds a bound socket only when it is named.
    pub ifindex: u32,
}

/// An address as the kernel lays it out in a socket id (and the engine
/// stores it): IPv4 in the first four bytes.
pub fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Lookup {
    /// The lookup of the socket `local` -> `remote` with `cookie`.
    pub fn between(
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        cookie: u64,
        ifindex: u32,
    ) -> Lookup {
        Lookup {
            family: if local.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            local: addr_bytes(local.ip()),
            lport: local.port(),
            remote: addr_bytes(remote.ip()),
            rport: remote.port(),
            cookie,
            ifindex,
        }
    }
}

/// One socket as a sock_diag dump lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketSnapshot {
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
    /// `idiag_rqueue`: the kernel's `rcv_nxt - copied_seq` (established
    /// sockets), or the accept backlog (listeners). Once the peer's FIN has
    /// arrived it counts the FIN too, until the application reads it: see
    /// [`SocketSnapshot::unread_bytes`].
    pub rqueue: u32,
    /// `idiag_wqueue`: bytes not yet acknowledged, or the backlog limit.
    pub wqueue: u32,
    /// `tcp_info`, for full sockets when it was requested.
    pub info: Option<TcpInfo>,
    /// Inode of the network namespace the socket lives in: that of the
    /// [`Dumper`](crate::diag::Dumper) that listed it (0 when unknown).
    pub netns: u32,
    /// `idiag_if`: the interface the socket is bound to, 0 for none
    /// (`SO_BINDTODEVICE`, a VRF, or the scope of an IPv6 link-local
    /// address). A lookup of a bound socket must name it.
    pub ifindex: u32,
}

impl SocketSnapshot {
    /// Whether the peer's FIN has arrived: a full socket in CLOSE_WAIT,
    /// LAST_ACK or CLOSING.
    fn fin_received(&self) -> bool {
        !self.timewait
            && matches!(
                self.state,
                TcpState::CloseWait | TcpState::LastAck | TcpState::Closing
            )
    }

    /// Bytes received that the application has not read. The peer's FIN
    /// takes one sequence number, so after it `idiag_rqueue` is one more
    /// than the data until the application reads the FIN (the read that
    /// returns EOF, or the read that takes the last data when the FIN came
    /// with it): `ss` shows 1 in Recv-Q for a CLOSE_WAIT socket with
    /// nothing left to read.
    pub fn unread_bytes(&self) -> u32 {
        if self.fin_received() {
            self.rqueue.saturating_sub(1)
        } else {
            self.rqueue
        }
    }

    /// In CLOSE_WAIT: how long since the peer's FIN at least, in ns. That
    /// segment was an ACK, so the time since the last ACK came
    /// (`tcpi_last_ack_recv`) is no longer than the stay; for an idle
    /// leaked socket it is about the whole stay. `None` in other states,
    /// or without `tcp_info`.
    pub fn close_wait_at_least_ns(&self) -> Option<u64> {
        let i = self.info.as_ref()?;
        (self.state == TcpState::CloseWait && !self.timewait)
            .then(|| u64::from(i.last_ack_recv_ms) * 1_000_000)
    }

    /// A listener with more connections waiting for `accept()` than its
    /// backlog (`ss -lt`'s Recv-Q above its Send-Q): the kernel's
    /// `sk_acceptq_is_full()`, under which it drops new handshakes
    /// (`ListenOverflows`) until the process accepts.
    pub fn accept_queue_full(&self) -> bool {
        self.state == TcpState::Listen && self.rqueue > self.wqueue
    }

    /// A connection the kernel completed that no process has accepted
    /// yet: a full socket, ESTABLISHED or (its peer closed meanwhile)
    /// CLOSE_WAIT, with no file. It waits in its listener's accept queue
    /// ([`listener_for`]); closed unaccepted, it would be an orphan in
    /// another state.
    pub fn awaits_accept(&self) -> bool {
        self.inode == 0
            && !self.timewait
            && matches!(self.state, TcpState::Established | TcpState::CloseWait)
    }

    /// Once the peer's FIN has arrived: whether the application has read
    /// everything, the FIN too, so that it has seen EOF or will at its next
    /// read without waiting. `None` before the FIN. For a CLOSE_WAIT leak
    /// this tells the two bugs apart: the code that handles EOF does not
    /// close (true), or nothing reads the socket any more (false).
    pub fn read_to_end(&self) -> Option<bool> {
        self.fin_received().then_some(self.rqueue == 0)
    }
}

/// One descriptor of a socket in one process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdOwner {
    /// Process id (thread group id).
    pub pid: u32,
    /// `/proc/<pid>/comm`: the thread group leader's name.
    pub comm: String,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces; empty for kernel
    /// threads and zombies.
    pub cmdline: String,
    /// The descriptor number in that process.
    pub fd: u32,
    /// The cgroup v2 path (the `0::` line of `/proc/<pid>/cgroup`), or empty
    /// when there is no unified hierarchy.
    pub cgroup: String,
    /// The 64-hex container id found in the cgroup path, if any (see
    /// [`container_id`](crate::diag::container_id)).
    pub container_id: Option<String>,
}

/// What an owner scan ([`crate::diag::owners_of`]) found, and how much of
/// `/proc` it could read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerScan {
    /// Every (process, fd) holding each inode, sorted by pid then fd.
    /// Inodes nobody was seen to hold are absent.
    pub owners: HashMap<u64, Vec<FdOwner>>,
    /// Processes whose descriptors could not be read (permission denied).
    pub unreadable: usize,
}

/// Why an owner is unknown when other users' descriptors were unreadable.
pub const HINT_UNREADABLE: &str = "other users' /proc/<pid>/fd could not be read: \
     run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, to name the owner";
/// Why an owner is unknown when every process could be read.
pub const HINT_NOT_VISIBLE: &str = "no process in this pid namespace holds it: \
     run in the host's pid namespace to name the owner (or it was closed since the dump)";

impl OwnerScan {
    /// For a socket with no owner found: why its owner is unknown (a hint
    /// with the fix), or `None` when it has none to find (inode 0:
    /// orphaned, timewait and request sockets) or its owner was found.
    pub fn unknown(&self, inode: u64) -> Option<&'static str> {
        if inode == 0 || self.owners.contains_key(&inode) {
            None
        } else if self.unreadable > 0 {
            Some(HINT_UNREADABLE)
        } else {
            Some(HINT_NOT_VISIBLE)
        }
    }
}

/// The scan reads as its map of owners (`scan[&inode]`, `scan.get(&inode)`).
impl std::ops::Deref for OwnerScan {
    type Target = HashMap<u64, Vec<FdOwner>>;

    fn deref(&self) -> &Self::Target {
        &self.owners
    }
}

/// A scan that read everything (tests, and lookups built by hand).
impl From<HashMap<u64, Vec<FdOwner>>> for OwnerScan {
    fn from(owners: HashMap<u64, Vec<FdOwner>>) -> Self {
        OwnerScan {
            owners,
            unreadable: 0,
        }
    }
}

/// The listener a connection to `local` came in through, of `listeners`
/// (address, inode) on its port: one bound to that very address, else a
/// wildcard one of its family, else (IPv4 only) `::`, which takes IPv4
/// unless it is IPv6-only, as it must be when `0.0.0.0` is bound beside
/// it; the first when several are (`SO_REUSEPORT`), and none when every
/// one is bound to another address.
pub fn listener_for(
    listeners: &[(std::net::IpAddr, u64)],
    local: std::net::IpAddr,
) -> Option<&(std::net::IpAddr, u64)> {
    let local = local.to_canonical();
    let exact = listeners.iter().find(|(a, _)| a.to_canonical() == local);
    let any = |v4: bool| {
        listeners
            .iter()
            .find(|(a, _)| a.is_unspecified() && a.is_ipv4() == v4)
    };
    let wildcard = || match local.is_ipv4() {
        true => any(true).or_else(|| any(false)),
        false => any(false),
    };
    exact.or_else(wildcard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(state: TcpState, timewait: bool, rqueue: u32) -> SocketSnapshot {
        SocketSnapshot {
            ifindex: 0,
            timewait,
            rqueue,
            ..crate::testkit::snapshot(1, state)
        }
    }

    /// After the peer's FIN, `idiag_rqueue` counts it as one byte until
    /// the application reads it (what a real socket shows is in
    /// tests/leaks.rs).
    #[test]
    fn the_peers_fin_is_not_an_unread_byte() {
        use TcpState::*;
        let cases = [
            // (state, timewait, rqueue) -> (unread bytes, read to the end)
            ((CloseWait, false, 6), (5, Some(false))),
            ((CloseWait, false, 1), (0, Some(false))),
            ((CloseWait, false, 0), (0, Some(true))),
            ((LastAck, false, 1), (0, Some(false))),
            ((Closing, false, 3), (2, Some(false))),
            ((Established, false, 6), (6, None)),
            ((FinWait2, false, 2), (2, None)),
            ((FinWait2, true, 0), (0, None)),
            ((Listen, false, 4), (4, None)),
        ];
        for ((state, tw, rq), want) in cases {
            let s = sock(state, tw, rq);
            assert_eq!(
                (s.unread_bytes(), s.read_to_end()),
                want,
                "{state:?} rqueue {rq}"
            );
        }
    }

    #[test]
    fn no_owner_and_unknown_owner_are_told_apart() {
        let found = OwnerScan::from(HashMap::from([(7, Vec::new())]));
        // inode 0: orphaned, timewait, request socket: nobody to find.
        assert_eq!(found.unknown(0), None);
        // Found.
        assert_eq!(found.unknown(7), None);
        // Not found, everything readable: outside our pid namespace.
        assert_eq!(found.unknown(8), Some(HINT_NOT_VISIBLE));
        let partial = OwnerScan {
            unreadable: 3,
            ..found
        };
        assert_eq!(partial.unknown(0), None);
        assert_eq!(partial.unknown(8), Some(HINT_UNREADABLE));
        assert!(HINT_UNREADABLE.contains("CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"));
    }
}
