//! The public, read-only view of a record.
use std::net::SocketAddr;

use super::super::observer::TimeWaitEnd;
use super::ClosedBy;
use super::{Record, addr_of, flag, tw_end};
use crate::event::comm_str;
use crate::tcp::{Family, TcpState};

/// The process that owns a socket, as seen in a syscall-context transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallOwner {
    /// Thread-group id.
    pub pid: u32,
    /// `comm`, NUL-padded.
    pub comm: [u8; 16],
}

impl SyscallOwner {
    /// `comm` as text.
    pub fn comm_str(&self) -> &str {
        comm_str(&self.comm)
    }
}

/// A read-only view of one tracked socket.
#[derive(Clone, Copy)]
pub struct SocketView<'a> {
    pub(in crate::engine) rec: &'a Record,
}

impl<'a> SocketView<'a> {
    /// The socket cookie.
    pub fn cookie(&self) -> u64 {
        self.rec.cookie
    }

    /// Address family.
    pub fn family(&self) -> Family {
        self.rec.family
    }

    /// Inode of the socket's network namespace (0 when unknown): two
    /// namespaces may hold the same 4-tuple.
    pub fn netns(&self) -> u32 {
        self.rec.netns
    }

    /// Local endpoint (unspecified until an event or dump gave it).
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(addr_of(self.rec.family, &self.rec.local), self.rec.lport)
    }

    /// Remote endpoint.
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(addr_of(self.rec.family, &self.rec.remote), self.rec.rport)
    }

    /// Current state: `TimeWait` while in (inferred or confirmed) TIME_WAIT,
    /// `FinWait2` for an orphaned FIN_WAIT2 timewait socket, `Close` once
    /// finished.
    pub fn state(&self) -> TcpState {
        self.rec.state
    }

    /// When the socket entered [`SocketView::state`] (monotonic ns). For
    /// an orphaned FIN_WAIT2, its full socket's entry when it was seen (an
    /// orphan's FIN_WAIT2 goes on across the close that hands it over).
    pub fn state_since_ns(&self) -> u64 {
        self.rec.state_entry_ns()
    }

    /// True when the entry was not seen: the socket has been in this state
    /// at least since `state_since_ns`.
    pub fn since_is_lower_bound(&self) -> bool {
        self.rec.entry_is_lower_bound()
    }

    /// False once closed (and past any TIME_WAIT): the record is only kept
    /// for the retention period and is not counted in `counts_by_state`.
    pub fn is_live(&self) -> bool {
        !self.rec.has(flag::FINISHED)
    }

    /// True while a timewait socket stands in for the closed socket
    /// (state `TimeWait`, or `FinWait2` for an orphan).
    pub fn in_time_wait(&self) -> bool {
        self.rec.has(flag::TW)
    }

    /// True when a dump showed the timewait socket (not only inferred).
    pub fn time_wait_confirmed(&self) -> bool {
        self.rec.has(flag::TW_CONFIRMED)
    }

    /// How the TIME_WAIT stay ended, once it has.
    pub fn time_wait_end(&self) -> Option<TimeWaitEnd> {
        match self.rec.tw_end {
            tw_end::EXPIRED => Some(TimeWaitEnd::Expired),
            tw_end::REUSED => Some(TimeWaitEnd::Reused),
            tw_end::RESET => Some(TimeWaitEnd::Reset),
            _ => None,
        }
    }

    /// True when a TIME_WAIT was expected but no dump ever showed it.
    pub fn time_wait_never_appeared(&self) -> bool {
        self.rec.tw_end == tw_end::NEVER_APPEARED
    }

    /// States visited, oldest first (the first is the `from` of the first
    /// event seen, or the state a dump showed). The inferred TIME_WAIT
    /// appears after `close`.
    pub fn path(&self) -> impl Iterator<Item = TcpState> + 'a {
        let rec: &'a Record = self.rec;
        rec.path[..rec.path_len as usize]
            .iter()
            .filter_map(|&n| TcpState::from_kernel(n))
    }

    /// True when the path was longer than [`PATH_LEN`](super::PATH_LEN) and was cut.
    pub fn path_truncated(&self) -> bool {
        self.rec.has(flag::TRUNCATED)
    }

    /// Who started closing, once known.
    pub fn closed_by(&self) -> Option<ClosedBy> {
        self.rec.closed_by
    }

    /// How the connection ended, once closed: as [`closed_by`](Self::closed_by),
    /// except that a reset received after either side began closing ended
    /// it (a peer that resets a CLOSE_WAIT socket its process never
    /// closed: the close then carries EPIPE).
    pub fn ended_by(&self) -> Option<ClosedBy> {
        match self.rec.closed_by {
            Some(ClosedBy::Local | ClosedBy::Remote)
                if self.rec.has(flag::FINISHED) && self.rec.has(flag::RST_RX) =>
            {
                Some(ClosedBy::Reset)
            }
            by => by,
        }
    }

    /// True when FIN_WAIT2 or CLOSE_WAIT (one direction shut) lasted longer
    /// than `Config::half_closed_threshold_ns`. Set when the state is left,
    /// and by a reconcile for a socket still in it.
    pub fn half_closed(&self) -> bool {
        self.rec.has(flag::HALF_CLOSED)
    }

    /// Data retransmits seen (saturating).
    pub fn retransmits(&self) -> u32 {
        self.rec.retransmits
    }

    /// SYN-ACK retransmits seen (saturating).
    pub fn synack_retransmits(&self) -> u16 {
        self.rec.synack_retransmits
    }

    /// Resets sent (saturating).
    pub fn resets_sent(&self) -> u8 {
        self.rec.resets_sent
    }

    /// Resets received (saturating).
    pub fn resets_received(&self) -> u8 {
        self.rec.resets_received
    }

    /// The owning process, when a syscall-context transition revealed it.
    pub fn owner(&self) -> Option<SyscallOwner> {
        self.rec.has(flag::OWNER).then_some(SyscallOwner {
            pid: self.rec.pid,
            comm: self.rec.comm,
        })
    }

    /// When the engine first knew the socket (monotonic ns).
    pub fn created_ns(&self) -> u64 {
        self.rec.created_ns
    }

    /// True when the creation itself was seen (`close->syn_sent`,
    /// `close->listen`, `listen->syn_recv`); otherwise the socket is older
    /// than `created_ns` says.
    pub fn birth_seen(&self) -> bool {
        self.rec.has(flag::BIRTH_SEEN)
    }
}

impl std::fmt::Debug for SocketView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketView")
            .field("cookie", &self.cookie())
            .field("netns", &self.netns())
            .field("local", &self.local())
            .field("remote", &self.remote())
            .field("state", &self.state())
            .field("since_ns", &self.state_since_ns())
            .field("flags", &format_args!("{:#x}", self.rec.flags))
            .field("path", &self.path().collect::<Vec<_>>())
            .finish()
    }
}
