//! The compact per-socket record and its public read-only view.
//!
//! A [`Record`] is 112 bytes: times as u64 ns, addresses as `[u8; 16]` plus a
//! family, the network namespace inode, the state path as up to [`PATH_LEN`]
//! kernel state numbers, small saturating counters, and the place of its
//! entry in the store's queue of finished records.
//! Only the store (`store.rs`) may change `state` or the `FINISHED`/`TW`
//! flags, through `Store::update`, which keeps every index in step.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::tcp::{Family, TcpState};

/// Who started closing a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClosedBy {
    /// This host: the socket left ESTABLISHED for FIN_WAIT1.
    Local,
    /// The peer: the socket left ESTABLISHED for CLOSE_WAIT.
    Remote,
    /// A reset (sent or received) moved the socket to CLOSE.
    Reset,
    /// The kernel gave up on the peer and closed the socket: its keepalive
    /// probes or retransmissions went unanswered (`sk_err` ETIMEDOUT, or
    /// the ICMP error that came meanwhile), whatever reset it sent then.
    Timeout,
}

impl ClosedBy {
    /// Every value, in [`ClosedBy::index`] order.
    pub const ALL: [ClosedBy; 4] = [
        ClosedBy::Local,
        ClosedBy::Remote,
        ClosedBy::Reset,
        ClosedBy::Timeout,
    ];

    /// The `closed_by` label value.
    pub fn name(self) -> &'static str {
        match self {
            ClosedBy::Local => "local",
            ClosedBy::Remote => "remote",
            ClosedBy::Reset => "reset",
            ClosedBy::Timeout => "timeout",
        }
    }

    /// A dense index in `0..4`, for per-value arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How many states of a socket's path are kept; later ones set `truncated`.
pub const PATH_LEN: usize = 8;

/// `Record::flags` bits.
pub(super) mod flag {
    /// `since_ns` is later than the real entry into `state` (not seen).
    pub const LOWER_BOUND: u16 = 1 << 0;
    /// The socket's creation was seen (`created_ns` is exact).
    pub const BIRTH_SEEN: u16 = 1 << 1;
    /// The full socket closed into a timewait socket (state TimeWait, or
    /// FinWait2 for an orphan); cleared when that ends.
    pub const TW: u16 = 1 << 2;
    /// A dump showed the timewait socket.
    pub const TW_CONFIRMED: u16 = 1 << 3;
    /// Closed and past any TIME_WAIT: kept only for the retention period.
    pub const FINISHED: u16 = 1 << 4;
    /// More than `PATH_LEN` states were visited.
    pub const TRUNCATED: u16 = 1 << 5;
    /// A half-closed state outlasted the configured threshold.
    pub const HALF_CLOSED: u16 = 1 << 6;
    /// `pid`/`comm` came from a syscall-context transition.
    pub const OWNER: u16 = 1 << 7;
    /// A reset was received in the current state; on a finished record,
    /// a reset received (or the close's ECONNRESET, EPIPE) ended it, until
    /// a new life starts.
    pub const RST_RX: u16 = 1 << 8;
    /// A reset was sent in the current state.
    pub const RST_TX: u16 = 1 << 9;
    /// Seen in the dump being reconciled (cleared by the same reconcile).
    pub const SEEN: u16 = 1 << 10;
    /// A record the last dump that judged it did not show: for a timewait
    /// record the last full dump, for any other the last dump. A dump that
    /// races with churn can skip sockets (it resumes each netlink message
    /// by position in a hash bucket that moved meanwhile), and a close
    /// made just before the walk passed may not be applied yet when the
    /// dump is judged, so only a second such dump in a row without it ends
    /// it. Cleared when the record changes state.
    pub const MISSING: u16 = 1 << 11;
    /// A segment (in SYN_SENT, the SYN) was retransmitted in the current
    /// state.
    pub const RTX: u16 = 1 << 12;
    /// `fin_seq` holds how long the FIN_WAIT2 stay had lasted when the
    /// close handed the socket over to a timewait socket (see
    /// [`Record::fin_wait2_before_ns`]). Set only by that close.
    pub const FW2_KEPT: u16 = 1 << 13;
    /// An orphaned FIN_WAIT2 record the last frequent dump did not list,
    /// well before its timer. A second frequent dump in a row without it
    /// takes it into TIME_WAIT (see `reconcile.rs`).
    pub const ORPHAN_MISSING: u16 = 1 << 14;
    /// A dump listed it bound to an interface (`idiag_if`: `SO_BINDTODEVICE`,
    /// a VRF): a lookup that does not name the interface finds nothing, so
    /// only walks judge it.
    pub const BOUND: u16 = 1 << 15;
}

/// `Record::tw_end` values.
pub(super) mod tw_end {
    pub const NONE: u8 = 0;
    pub const EXPIRED: u8 = 1;
    pub const REUSED: u8 = 2;
    pub const RESET: u8 = 3;
    pub const NEVER_APPEARED: u8 = 4;
}

/// "No slot".
pub(super) const NIL: u32 = u32::MAX;

/// One tracked socket. Plain data; see the module docs for the rules.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub cookie: u64,
    pub created_ns: u64,
    pub since_ns: u64,
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub comm: [u8; 16],
    pub pid: u32,
    pub retransmits: u32,
    /// While finished: the sequence number of its entry in the store's
    /// queue of finished records (see `store.rs`). While live with
    /// `FW2_KEPT`: how long the FIN_WAIT2 stay had lasted at the close that
    /// made its timewait socket, in ms ([`Record::fin_wait2_before_ns`]).
    pub fin_seq: u32,
    /// Inode of the socket's network namespace (0: unknown).
    pub netns: u32,
    pub synack_retransmits: u16,
    pub lport: u16,
    pub rport: u16,
    pub resets_sent: u8,
    pub resets_received: u8,
    pub path: [u8; PATH_LEN],
    pub path_len: u8,
    pub state: TcpState,
    /// `from` of the last kernel transition applied (duplicate detection).
    pub prev: Option<TcpState>,
    pub family: Family,
    pub closed_by: Option<ClosedBy>,
    pub tw_end: u8,
    pub flags: u16,
}

const _: () = assert!(size_of::<Record>() == 112);

pub(super) use crate::snapshot::addr_bytes;

fn addr_of(family: Family, b: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*b)),
    }
}

impl Record {
    /// A fresh record in `state` since `since_ns`; everything else empty.
    pub fn new(cookie: u64, family: Family, state: TcpState, since_ns: u64) -> Record {
        Record {
            cookie,
            created_ns: since_ns,
            since_ns,
            local: [0; 16],
            remote: [0; 16],
            comm: [0; 16],
            pid: 0,
            retransmits: 0,
            fin_seq: 0,
            netns: 0,
            synack_retransmits: 0,
            lport: 0,
            rport: 0,
            resets_sent: 0,
            resets_received: 0,
            path: [0; PATH_LEN],
            path_len: 0,
            state,
            prev: None,
            family,
            closed_by: None,
            tw_end: tw_end::NONE,
            flags: 0,
        }
    }

    /// Set the 4-tuple.
    pub fn set_tuple(&mut self, local: IpAddr, lport: u16, remote: IpAddr, rport: u16) {
        self.local = addr_bytes(local);
        self.lport = lport;
        self.remote = addr_bytes(remote);
        self.rport = rport;
    }

    /// True when the record already has this 4-tuple and namespace.
    pub fn has_tuple(
        &self,
        netns: u32,
        local: IpAddr,
        lport: u16,
        remote: IpAddr,
        rport: u16,
    ) -> bool {
        self.netns == netns
            && self.lport == lport
            && self.rport == rport
            && self.local == addr_bytes(local)
            && self.remote == addr_bytes(remote)
    }

    /// True when the record holds this 4-tuple in `netns`, an IPv4-mapped
    /// address being the IPv4 address it maps (as in `hash::tuple_hash`):
    /// the two ends of one connection, or a tuple a TIME_WAIT of either
    /// family holds.
    pub fn holds_tuple(&self, netns: u32, local: (IpAddr, u16), remote: (IpAddr, u16)) -> bool {
        let same =
            |b: &[u8; 16], a: IpAddr| addr_of(self.family, b).to_canonical() == a.to_canonical();
        self.netns == netns
            && self.lport == local.1
            && self.rport == remote.1
            && same(&self.local, local.0)
            && same(&self.remote, remote.0)
    }

    /// The fingerprint of the 4-tuple in its namespace (see
    /// `hash::tuple_hash`).
    pub fn tuple_hash(&self) -> u64 {
        super::hash::tuple_hash(
            self.netns,
            self.family,
            &self.local,
            self.lport,
            &self.remote,
            self.rport,
        )
    }

    /// An orphaned FIN_WAIT2 timewait record: how long its full socket had
    /// been in FIN_WAIT2 when the close handed it over, when that stay's
    /// entry was seen; 0 for any other record. The orphan's FIN_WAIT2 goes
    /// on across the handover (with `tcp_fin_timeout` above 60 s the kernel
    /// keeps the full socket for the part above 60 s; after a
    /// `shutdown(SHUT_WR)` the application may hold it for long before its
    /// `close()`), so its state began that much before `since_ns`, the
    /// handover, from which the engine reports its stay.
    pub fn fin_wait2_before_ns(&self) -> u64 {
        if self.is_orphan() && self.has(flag::FW2_KEPT) && !self.has(flag::FINISHED) {
            u64::from(self.fin_seq) * 1_000_000
        } else {
            0
        }
    }

    /// When the socket entered its state: `since_ns`, or for an orphan the
    /// entry of its full socket's FIN_WAIT2 ([`Record::fin_wait2_before_ns`]).
    pub fn state_entry_ns(&self) -> u64 {
        self.since_ns
            .checked_sub(self.fin_wait2_before_ns())
            .unwrap_or(self.since_ns)
    }

    /// Whether the entry into its state is only a lower bound: not seen,
    /// or an orphan whose full socket's FIN_WAIT2 entry was not seen (a
    /// skipped event, or one adopted mid-life).
    pub fn entry_is_lower_bound(&self) -> bool {
        self.has(flag::LOWER_BOUND) || (self.is_orphan() && !self.has(flag::FW2_KEPT))
    }

    /// An orphaned FIN_WAIT2 timewait record: the full socket closed into
    /// a timewait socket that waits in FIN_WAIT2 for the peer's FIN.
    pub fn is_orphan(&self) -> bool {
        self.has(flag::TW) && self.state == TcpState::FinWait2
    }

    /// Keep `ns` for [`Record::fin_wait2_before_ns`] (saturating at 49
    /// days), or forget it (`None`).
    pub fn keep_fin_wait2_before(&mut self, ns: Option<u64>) {
        if let Some(ns) = ns {
            self.fin_seq = u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX);
        }
        self.set(flag::FW2_KEPT, ns.is_some());
    }

    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u16, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    /// The state the kernel's full socket is in: `Close` once it has been
    /// replaced by a timewait socket.
    pub fn kernel_state(&self) -> TcpState {
        if self.has(flag::TW) {
            TcpState::Close
        } else {
            self.state
        }
    }

    /// True when an event's `to` describes where the record is now (a
    /// direct `-> time_wait` counts for a record in TIME_WAIT).
    pub fn is_now(&self, to: TcpState) -> bool {
        to == self.kernel_state() || (to == TcpState::TimeWait && self.has(flag::TW))
    }

    /// Append a state to the path, or note truncation.
    pub fn push_path(&mut self, st: TcpState) {
        let n = self.path_len as usize;
        if n < PATH_LEN {
            self.path[n] = st as u8;
            self.path_len += 1;
        } else {
            self.flags |= flag::TRUNCATED;
        }
    }

    /// Drop the last path entry when it is `st` (a retracted inference).
    pub fn pop_path(&mut self, st: TcpState) {
        if let Some(last) = (self.path_len as usize).checked_sub(1)
            && self.path[last] == st as u8
            && !self.has(flag::TRUNCATED)
        {
            self.path_len -= 1;
        }
    }

    /// Replace the last path entry when it is `from`.
    pub fn replace_last_path(&mut self, from: TcpState, to: TcpState) {
        if let Some(last) = (self.path_len as usize).checked_sub(1)
            && self.path[last] == from as u8
        {
            self.path[last] = to as u8;
        }
    }
}

mod view;

pub use view::{SocketView, SyscallOwner};
