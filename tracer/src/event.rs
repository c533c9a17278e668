//! Decoded kernel events: the one typed form every user-space layer consumes.
//!
//! [`SockEvent::decode`] turns the raw bytes of one ring-buffer record into a
//! [`SockEvent`] without allocating, and rejects anything it does not
//! understand (short records, unknown kinds, another ABI version) with a
//! [`DecodeError`] instead of misreading it.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use tracer_common as abi;

use crate::tcp::{Family, TcpState};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A TCP state change.
    State,
    /// A data segment was retransmitted.
    Retransmit,
    /// A listener retransmitted a SYN-ACK.
    SynackRetransmit,
    /// This host sent a RST.
    ResetSent,
    /// This host received a RST.
    ResetReceived,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 5] = [
        Kind::State,
        Kind::Retransmit,
        Kind::SynackRetransmit,
        Kind::ResetSent,
        Kind::ResetReceived,
    ];

    /// The name used in JSON, flags and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::State => "state",
            Kind::Retransmit => "retransmit",
            Kind::SynackRetransmit => "synack_retransmit",
            Kind::ResetSent => "reset_sent",
            Kind::ResetReceived => "reset_received",
        }
    }

    /// Parse a name as users type it (`--kind retransmit`).
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == s)
    }

    fn from_wire(n: u8) -> Option<Kind> {
        Some(match n {
            abi::KIND_STATE => Kind::State,
            abi::KIND_RETRANSMIT => Kind::Retransmit,
            abi::KIND_SYNACK_RETRANSMIT => Kind::SynackRetransmit,
            abi::KIND_RESET_SENT => Kind::ResetSent,
            abi::KIND_RESET_RECEIVED => Kind::ResetReceived,
            _ => return None,
        })
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than one event.
    #[error("event record is {0} bytes, expected {expected}", expected = abi_size())]
    Short(usize),
    /// Written by kernel programs of another version.
    #[error("event ABI version {0} is not the supported version {v}", v = abi::ABI_VERSION)]
    Version(u8),
    /// A kind this agent does not know.
    #[error("unknown event kind {0}")]
    Kind(u8),
    /// An address family other than IPv4/IPv6 on a socket event.
    #[error("unknown address family {0}")]
    Family(u8),
    /// A state number that is not a TCP state.
    #[error("unknown TCP state {0}")]
    State(u8),
}

const fn abi_size() -> usize {
    size_of::<abi::Event>()
}

/// One kernel event, decoded. `Copy` and allocation-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockEvent {
    /// CLOCK_MONOTONIC nanoseconds when the hook fired.
    pub ts_ns: u64,
    /// What happened.
    pub kind: Kind,
    /// Socket cookie; 0 for a RST that matched no socket.
    pub cookie: u64,
    /// Address family; `None` only for a RST that matched no socket.
    pub family: Option<Family>,
    /// Local address.
    pub saddr: IpAddr,
    /// Local port.
    pub sport: u16,
    /// Remote address.
    pub daddr: IpAddr,
    /// Remote port.
    pub dport: u16,
    /// State before the change (`Kind::State` only).
    pub old_state: Option<TcpState>,
    /// State after the change; for other kinds, the state when it fired.
    pub new_state: Option<TcpState>,
    /// Thread-group id of the task that was running, where the kernel
    /// program records it (the owner's syscalls); 0 otherwise, for the
    /// idle task, and for a close with an error (decoding clears it).
    pub pid: u32,
    /// Thread id of that task (0 as `pid` is).
    pub tid: u32,
    /// `comm` of that task, NUL-padded (empty as `pid` is).
    pub comm: [u8; 16],
    /// Inode number of the socket's network namespace; 0 when unknown.
    pub netns: u32,
    /// A state change to `close`: the socket's pending error (`sk_err`,
    /// an errno such as ECONNREFUSED); 0 when none, and for other events.
    pub err: u8,
}

/// The name of an errno a closing socket carries (`econnrefused`), for the
/// event stream; `None` for 0.
pub fn errno_name(err: u8) -> Option<&'static str> {
    Some(match i32::from(err) {
        0 => return None,
        libc::EPIPE => "epipe",
        libc::EPROTO => "eproto",
        libc::ENETDOWN => "enetdown",
        libc::ENETUNREACH => "enetunreach",
        libc::ECONNABORTED => "econnaborted",
        libc::ECONNRESET => "econnreset",
        libc::ETIMEDOUT => "etimedout",
        libc::ECONNREFUSED => "econnrefused",
        libc::EHOSTDOWN => "ehostdown",
        libc::EHOSTUNREACH => "ehostunreach",
        _ => "other",
    })
}

impl SockEvent {
    /// Decode one ring-buffer record.
    pub fn decode(buf: &[u8]) -> Result<SockEvent, DecodeError> {
        if buf.len() < abi_size() {
            return Err(DecodeError::Short(buf.len()));
        }
        // SAFETY: length checked above; Event is plain old data, any bit
        // pattern is valid, and read_unaligned needs no alignment.
        let raw: abi::Event = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        SockEvent::from_raw(&raw)
    }

    /// Validate and convert a raw event.
    pub fn from_raw(raw: &abi::Event) -> Result<SockEvent, DecodeError> {
        if raw.version != abi::ABI_VERSION {
            return Err(DecodeError::Version(raw.version));
        }
        let kind = Kind::from_wire(raw.kind).ok_or(DecodeError::Kind(raw.kind))?;
        let (family, saddr, daddr) = match raw.family {
            abi::FAMILY_INET => (
                Some(Family::Ipv4),
                IpAddr::V4(v4(&raw.saddr)),
                IpAddr::V4(v4(&raw.daddr)),
            ),
            abi::FAMILY_INET6 => (
                Some(Family::Ipv6),
                IpAddr::V6(Ipv6Addr::from(raw.saddr)),
                IpAddr::V6(Ipv6Addr::from(raw.daddr)),
            ),
            abi::FAMILY_NONE if kind == Kind::ResetSent => (
                None,
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ),
            other => return Err(DecodeError::Family(other)),
        };
        let state = |n: u8| -> Result<Option<TcpState>, DecodeError> {
            if n == 0 {
                Ok(None)
            } else {
                TcpState::from_kernel(n)
                    .map(Some)
                    .ok_or(DecodeError::State(n))
            }
        };
        let old_state = state(raw.old_state)?;
        let new_state = state(raw.new_state)?;
        if kind == Kind::State && (old_state.is_none() || new_state.is_none()) {
            return Err(DecodeError::State(0));
        }
        // A close with an error ran in softirq or a timer (a reset came,
        // or the kernel gave up on the peer), whatever task the kernel
        // program took for the owner's: the one interrupted. And a task of
        // pid 0 is the idle task, no process.
        let kernel_side = kind == Kind::State && raw.err != 0;
        let (pid, tid, comm) = if kernel_side || raw.pid == 0 {
            (0, 0, [0; 16])
        } else {
            (raw.pid, raw.tid, raw.comm)
        };
        Ok(SockEvent {
            ts_ns: raw.ts_ns,
            kind,
            cookie: raw.cookie,
            family,
            saddr,
            sport: raw.sport,
            daddr,
            dport: raw.dport,
            old_state: if kind == Kind::State { old_state } else { None },
            new_state,
            pid,
            tid,
            comm,
            netns: raw.netns,
            err: if kind == Kind::State { raw.err } else { 0 },
        })
    }

    /// `comm` as text, up to the first NUL; invalid UTF-8 gives `"?"`.
    pub fn comm_str(&self) -> &str {
        comm_str(&self.comm)
    }

    /// True when either endpoint uses `port`.
    pub fn has_port(&self, port: u16) -> bool {
        self.sport == port || self.dport == port
    }
}

/// A NUL-padded kernel `comm` as text.
pub fn comm_str(comm: &[u8; 16]) -> &str {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    std::str::from_utf8(&comm[..end]).unwrap_or("?")
}

fn v4(b: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_state(old: u8, new: u8) -> abi::Event {
        let mut e = abi::Event::ZERO;
        e.kind = abi::KIND_STATE;
        e.version = abi::ABI_VERSION;
        e.family = abi::FAMILY_INET;
        e.old_state = old;
        e.new_state = new;
        e.ts_ns = 42;
        e.cookie = 0x1920f;
        e.sport = 8080;
        e.dport = 51000;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        e.comm[..4].copy_from_slice(b"curl");
        (e.pid, e.tid) = (4242, 4242);
        e.netns = 4026531840;
        e
    }

    /// The wire bytes of `e`.
    pub(super) fn bytes(e: &abi::Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) plain data without uninitialised padding
        // (every padding byte is a named field).
        unsafe {
            std::slice::from_raw_parts(
                (e as *const abi::Event).cast::<u8>(),
                size_of::<abi::Event>(),
            )
        }
        .to_vec()
    }

    /// A close with an error ran in softirq or a timer: whatever task the
    /// kernel program named is not the owner. Pid 0 is no process.
    #[test]
    fn a_kernel_side_close_and_the_idle_task_name_no_process() {
        let mut raw = raw_state(1, 7);
        raw.err = libc::ETIMEDOUT as u8;
        let ev = SockEvent::from_raw(&raw).expect("decodes");
        assert_eq!((ev.pid, ev.tid, ev.comm_str()), (0, 0, ""));
        assert_eq!(ev.err, libc::ETIMEDOUT as u8);
        raw.err = 0;
        let abort = SockEvent::from_raw(&raw).expect("decodes");
        assert_eq!(abort.comm_str(), "curl", "an abort in close(): the owner");
        assert_ne!(abort.pid, 0);
        raw.pid = 0;
        raw.comm[..9].copy_from_slice(b"swapper/0");
        let idle = SockEvent::from_raw(&raw).expect("decodes");
        assert_eq!(idle.comm_str(), "");
    }

    #[test]
    fn decodes_a_state_event() {
        let ev = SockEvent::decode(&bytes(&raw_state(7, 2))).expect("decodes");
        assert_eq!(ev.kind, Kind::State);
        assert_eq!(ev.old_state, Some(TcpState::Close));
        assert_eq!(ev.new_state, Some(TcpState::SynSent));
        assert_eq!(ev.cookie, 0x1920f);
        assert_eq!(ev.saddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ev.daddr, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!((ev.sport, ev.dport), (8080, 51000));
        assert_eq!(ev.comm_str(), "curl");
        assert_eq!(ev.netns, 4026531840);
        assert!(ev.has_port(51000) && !ev.has_port(1));
    }

    #[test]
    fn decodes_ipv6() {
        let mut e = raw_state(1, 4);
        e.family = abi::FAMILY_INET6;
        e.saddr = Ipv6Addr::LOCALHOST.octets();
        let ev = SockEvent::decode(&bytes(&e)).expect("decodes");
        assert_eq!(ev.family, Some(Family::Ipv6));
        assert_eq!(ev.saddr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn rejects_short_buffers() {
        let b = bytes(&raw_state(7, 2));
        for len in [0, 1, 8, 87] {
            assert_eq!(SockEvent::decode(&b[..len]), Err(DecodeError::Short(len)));
        }
    }

    #[test]
    fn rejects_unknown_kind_version_family_state() {
        let mut e = raw_state(7, 2);
        e.kind = 9;
        assert_eq!(SockEvent::decode(&bytes(&e)), Err(DecodeError::Kind(9)));
        let mut e = raw_state(7, 2);
        e.version = abi::ABI_VERSION + 1;
        assert_eq!(
            SockEvent::decode(&bytes(&e)),
            Err(DecodeError::Version(abi::ABI_VERSION + 1))
        );
        let mut e = raw_state(7, 2);
        e.family = 1;
        assert_eq!(SockEvent::decode(&bytes(&e)), Err(DecodeError::Family(1)));
        let e = raw_state(7, 99);
        assert_eq!(SockEvent::decode(&bytes(&e)), Err(DecodeError::State(99)));
        let e = raw_state(0, 2);
        assert_eq!(SockEvent::decode(&bytes(&e)), Err(DecodeError::State(0)));
    }

    #[test]
    fn reset_without_socket_has_no_family() {
        let mut e = abi::Event::ZERO;
        e.kind = abi::KIND_RESET_SENT;
        e.version = abi::ABI_VERSION;
        let ev = SockEvent::decode(&bytes(&e)).expect("decodes");
        assert_eq!(ev.family, None);
        assert_eq!(ev.cookie, 0);
        // ...but only a reset may lack a socket.
        e.kind = abi::KIND_RETRANSMIT;
        assert_eq!(SockEvent::decode(&bytes(&e)), Err(DecodeError::Family(0)));
    }
}
