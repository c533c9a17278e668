//! Decoding of sock_diag reply datagrams into [`SocketSnapshot`]s, in place:
//! as they are received ([`parse_datagram`], called by `dump`), or as a
//! capturing [`Dumper`](super::Dumper) kept them ([`parse_datagrams`], which
//! a replay calls: the same parser, fed the same bytes).
//!
//! Everything here reads straight out of the receive buffer: the netlink
//! header with `netlink_packet_core::NetlinkBuffer`, the socket id with
//! `netlink_packet_sock_diag::inet::SocketId`, attributes with
//! `NlasIterator`. Nothing is allocated per socket, so a dump of N sockets
//! costs N pushes into the caller's (reused) `Vec` and nothing else. The
//! crate's own `InetResponse` is not used: it boxes every message, copies
//! `tcp_info` into a `Vec`, and drops `idiag_expires` for timewait sockets
//! and `idiag_retrans` for keepalive/probe timers.
//!
//! What the kernel reports, per `net/ipv4/inet_diag.c` (6.18) and checked by
//! `tests/diag.rs`:
//! - full sockets (`inet_sk_diag_fill`) always carry `INET_DIAG_SHUTDOWN`;
//!   request and timewait sockets never carry it;
//! - timewait sockets (`inet_twsk_diag_fill`): `idiag_timer = 3`,
//!   `idiag_state = tw_substate` (TIME_WAIT, or FIN_WAIT2 for an orphan),
//!   inode, uid and queues 0, `idiag_expires` = ms left;
//! - request sockets (`inet_req_diag_fill`): `idiag_state = TCP_SYN_RECV`
//!   (not NEW_SYN_RECV), timer 1, inode 0: reported here as `NewSynRecv`;
//! - bound-but-inactive sockets (6.8+, `TCPF_BOUND_INACTIVE` in the mask)
//!   come from the bind hash with `idiag_state = TCP_CLOSE` and no peer:
//!   reported here as `BoundInactive`.
use std::mem::size_of;

use netlink_packet_core::{
    NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NetlinkBuffer, NlasIterator,
    ParseableParametrized,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, INET_DIAG_INFO, INET_DIAG_SHUTDOWN, SOCK_DIAG_BY_FAMILY, inet::SocketId,
};

use super::error::DiagError;
use crate::snapshot::{SocketSnapshot, TcpInfo, TimerKind};
use crate::tcp::{Family, TcpState};

/// Netlink message type of the original TCP dump request
/// (`TCPDIAG_GETSOCK`, which `dump` sends for its one-walk dump).
pub(super) const TCPDIAG_GETSOCK: u16 = 18;

/// `sizeof(struct inet_diag_msg)`.
const INET_DIAG_MSG_LEN: usize = 72;
/// Offsets in `struct inet_diag_msg` (`include/uapi/linux/inet_diag.h`).
const OFF_FAMILY: usize = 0;
const OFF_STATE: usize = 1;
const OFF_TIMER: usize = 2;
const OFF_RETRANS: usize = 3;
const OFF_ID: usize = 4;
const OFF_EXPIRES: usize = 52;
const OFF_RQUEUE: usize = 56;
const OFF_WQUEUE: usize = 60;
const OFF_UID: usize = 64;
const OFF_INODE: usize = 68;

/// Offsets in `struct tcp_info` (`include/uapi/linux/tcp.h`); the attribute
/// is as long as the kernel's struct, so every read is bounds-checked.
pub(super) mod tcpi {
    pub const RETRANSMITS: usize = 2;
    pub const PROBES: usize = 3;
    pub const BACKOFF: usize = 4;
    pub const RTO: usize = 8;
    pub const UNACKED: usize = 24;
    pub const LAST_DATA_SENT: usize = 44;
    pub const LAST_DATA_RECV: usize = 52;
    pub const LAST_ACK_RECV: usize = 56;
    pub const TOTAL_RETRANS: usize = 100;
    pub const BYTES_ACKED: usize = 120;
}

/// Where a datagram left the dump.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` for our request was seen.
    Done,
}

/// Counts for one datagram, added to the dump's totals.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    /// Socket messages decoded and pushed.
    pub sockets: u32,
    /// Socket messages skipped: unknown state number or family.
    pub skipped: u32,
}

/// The request a dump datagram answers: both families in one walk
/// (`TCPDIAG_GETSOCK`), or one family (`SOCK_DIAG_BY_FAMILY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// IPv4 and IPv6 in one walk.
    Both,
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

impl Walk {
    /// The families, as errors name them.
    pub fn label(self) -> &'static str {
        match self {
            Walk::Both => "IPv4 and IPv6",
            Walk::Ipv4 => "IPv4",
            Walk::Ipv6 => "IPv6",
        }
    }

    /// A short name (`both`, `ipv4`, `ipv6`), for a recording.
    pub fn name(self) -> &'static str {
        match self {
            Walk::Both => "both",
            Walk::Ipv4 => "ipv4",
            Walk::Ipv6 => "ipv6",
        }
    }

    /// The walk called `name` by [`Walk::name`].
    pub fn from_name(name: &str) -> Option<Walk> {
        [Walk::Both, Walk::Ipv4, Walk::Ipv6]
            .into_iter()
            .find(|w| w.name() == name)
    }
}

/// One datagram of a dump as the kernel sent it, kept by a capturing
/// [`Dumper`](super::Dumper).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The request it answers.
    pub walk: Walk,
    /// That request's sequence number: messages with another are ignored.
    pub seq: u32,
    /// The datagram's bytes.
    pub bytes: Vec<u8>,
    /// Milliseconds between the dump's start and this datagram's arrival,
    /// which [`on_dump_clock`] adds to each timer it lists.
    pub late_ms: u32,
}

/// Count the timers of `sockets`, received `late_ms` after the dump's
/// start, from that start.
///
/// The kernel writes a socket's `idiag_expires` as the time left when it
/// fills the datagram, and a walk of a busy host's table takes tens of
/// milliseconds; a reader that takes the times left as of the dump's start
/// (as the engine does, for the start of each TIME_WAIT it adopts) would put
/// the sockets listed late in the walk that much early: beside 131,072
/// timewait sockets under churn, 3% of them in the bucket of the kernel's
/// timer wheel before their own. 0 stays 0 (no timer).
pub fn on_dump_clock(sockets: &mut [SocketSnapshot], late_ms: u32) {
    if late_ms == 0 {
        return;
    }
    for s in sockets.iter_mut().filter(|s| s.expires_ms != 0) {
        s.expires_ms = s.expires_ms.saturating_add(late_ms);
    }
}

/// True when a one-walk request was refused by a kernel without
/// `TCPDIAG_GETSOCK`: the dump asks for each family instead, for good.
pub(super) fn refused_one_walk(e: &DiagError) -> bool {
    matches!(
        e,
        DiagError::Refused {
            errno: libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP,
            ..
        }
    )
}

/// Decode the datagrams of one namespace's dump, kept by a capturing
/// [`Dumper`](super::Dumper), into the sockets that dump listed, in the
/// same order, each with [`SocketSnapshot::netns`] set to `netns`. Each
/// datagram goes through `parse_datagram` as it did when received; a
/// one-walk request the kernel refused is dropped as the dumper drops it,
/// and every request must end with `NLMSG_DONE`. On error `out` may hold
/// part of the dump.
pub fn parse_datagrams(
    datagrams: &[Datagram],
    netns: u32,
    out: &mut Vec<SocketSnapshot>,
) -> Result<(), DiagError> {
    let from = out.len();
    let mut walk_from = from;
    let mut open: Option<&Datagram> = None;
    let mut counts = Counts::default();
    for d in datagrams {
        if open.is_some_and(|o| (o.walk, o.seq) != (d.walk, d.seq)) {
            break;
        }
        if open.is_none() {
            walk_from = out.len();
        }
        open = Some(d);
        let before = out.len();
        let step = parse_datagram(&d.bytes, d.seq, d.walk.label(), out, &mut counts);
        on_dump_clock(&mut out[before..], d.late_ms);
        match step {
            Ok(Step::More) => {}
            Ok(Step::Done) => open = None,
            Err(e) if d.walk == Walk::Both && refused_one_walk(&e) => {
                out.truncate(walk_from);
                open = None;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(o) = open {
        return Err(DiagError::Malformed {
            family: o.walk.label(),
            detail: "a request's datagrams end before its NLMSG_DONE".into(),
        });
    }
    for d in &mut out[from..] {
        d.netns = netns;
    }
    Ok(())
}

/// The netlink messages of one received datagram, in order; a malformed
/// header ends it with an error.
pub(super) fn messages<'a>(
    buf: &'a [u8],
    family: &'static str,
) -> impl Iterator<Item = Result<NetlinkBuffer<&'a [u8]>, DiagError>> + 'a {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off >= buf.len() {
            return None;
        }
        let at = off;
        match NetlinkBuffer::new_checked(&buf[at..]) {
            Ok(msg) => {
                // NLMSG_ALIGN; new_checked guaranteed a length >= 16.
                off += (msg.length() as usize + 3) & !3;
                Some(Ok(msg))
            }
            Err(e) => {
                off = buf.len();
                Some(Err(DiagError::Malformed {
                    family,
                    detail: format!("netlink header at byte {at}: {e}"),
                }))
            }
        }
    })
}

/// Decode one received datagram (possibly several netlink messages),
/// pushing sockets into `out`. Messages with another sequence number (left
/// over from an abandoned dump) are ignored.
pub(super) fn parse_datagram(
    buf: &[u8],
    seq: u32,
    family: &'static str,
    out: &mut Vec<SocketSnapshot>,
    counts: &mut Counts,
) -> Result<Step, DiagError> {
    let malformed = |detail: String| DiagError::Malformed { family, detail };
    for msg in messages(buf, family) {
        let msg = msg?;
        let len = msg.length() as usize;
        if msg.sequence_number() != seq {
            continue;
        }
        let payload = msg.payload();
        match msg.message_type() {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                // The dump's final status (`nlk->dump_done_errno`); may be absent.
                let code = read_i32(payload, 0).unwrap_or(0);
                if let Some(errno) = status(code).map_err(malformed)? {
                    return Err(DiagError::Refused { family, errno });
                }
                return Ok(Step::Done);
            }
            NLMSG_ERROR => {
                let code = read_i32(payload, 0)
                    .ok_or_else(|| malformed(format!("NLMSG_ERROR of {len} bytes")))?;
                if let Some(errno) = status(code).map_err(malformed)? {
                    return Err(DiagError::Refused { family, errno });
                }
                // 0 is an ACK; a dump does not ask for one, but it is harmless.
            }
            NLMSG_OVERRUN => return Err(malformed("NLMSG_OVERRUN: data was lost".into())),
            // Replies carry the request's type; both requests get
            // `inet_diag_msg` records.
            SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                match decode_socket(payload).map_err(malformed)? {
                    Some(sock) => {
                        out.push(sock);
                        counts.sockets += 1;
                    }
                    None => counts.skipped += 1,
                }
            }
            _ => {}
        }
    }
    Ok(Step::More)
}

/// Decode one `inet_diag_msg` and its attributes. `Ok(None)` for a state
/// or family this code does not know (a newer kernel), which the caller counts.
pub(super) fn decode_socket(p: &[u8]) -> Result<Option<SocketSnapshot>, String> {
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(format!(
            "inet_diag_msg of {} bytes, expected at least {INET_DIAG_MSG_LEN}",
            p.len()
        ));
    }
    let family = match p[OFF_FAMILY] {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        _ => return Ok(None),
    };
    let id = SocketId::parse_with_param(&p[OFF_ID..OFF_EXPIRES], p[OFF_FAMILY])
        .map_err(|e| format!("socket id: {e}"))?;
    let timer_raw = p[OFF_TIMER];
    let mut full = false;
    let mut info = None;
    for nla in NlasIterator::new(&p[INET_DIAG_MSG_LEN..]) {
        let nla = nla.map_err(|e| format!("attribute: {e}"))?;
        match nla.kind() {
            INET_DIAG_SHUTDOWN => full = true,
            INET_DIAG_INFO => info = Some(decode_tcp_info(nla.value())),
            _ => {}
        }
    }
    let timewait = timer_raw == 3 || p[OFF_STATE] == TcpState::TimeWait as u8;
    let Some(state) = TcpState::from_kernel(p[OFF_STATE]) else {
        return Ok(None);
    };
    let state = match state {
        TcpState::SynRecv if !full && !timewait => TcpState::NewSynRecv,
        TcpState::Close if id.destination_port == 0 && !timewait => TcpState::BoundInactive,
        s => s,
    };
    let timer = match timer_raw {
        1 => TimerKind::Retransmit,
        2 => TimerKind::Keepalive,
        3 => TimerKind::TimeWait,
        4 => TimerKind::Probe,
        _ => TimerKind::None,
    };
    Ok(Some(SocketSnapshot {
        ifindex: id.interface_id,
        cookie: cookie_from_id(&id.cookie),
        family,
        state,
        timewait,
        saddr: id.source_address,
        sport: id.source_port,
        daddr: id.destination_address,
        dport: id.destination_port,
        inode: u64::from(read_u32(p, OFF_INODE).unwrap_or(0)),
        uid: read_u32(p, OFF_UID).unwrap_or(0),
        timer,
        expires_ms: read_u32(p, OFF_EXPIRES).unwrap_or(0),
        timer_retrans: p[OFF_RETRANS],
        rqueue: read_u32(p, OFF_RQUEUE).unwrap_or(0),
        wqueue: read_u32(p, OFF_WQUEUE).unwrap_or(0),
        info,
        netns: 0,
    }))
}

/// `idiag_cookie` is `__u32[2]` in host byte order, low half first
/// (`sock_diag_save_cookie`: `cookie[0] = (u32)res; cookie[1] = res >> 32`).
/// `ss` prints `(u64)cookie[1] << 32 | cookie[0]` as `sk:<hex>`.
pub(super) fn cookie_from_id(raw: &[u8; 8]) -> u64 {
    let low = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let high = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    u64::from(high) << 32 | u64::from(low)
}

/// The [`TcpInfo`] subset of a `struct tcp_info` attribute; fields past the
/// end of a short (older kernel) struct read as 0.
pub(super) fn decode_tcp_info(v: &[u8]) -> TcpInfo {
    let u8_at = |off: usize| v.get(off).copied().unwrap_or(0);
    let u32_at = |off: usize| read_u32(v, off).unwrap_or(0);
    let u64_at = |off: usize| {
        v.get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    };
    TcpInfo {
        retransmits: u8_at(tcpi::RETRANSMITS),
        probes: u8_at(tcpi::PROBES),
        backoff: u8_at(tcpi::BACKOFF),
        rto_us: u32_at(tcpi::RTO),
        unacked: u32_at(tcpi::UNACKED),
        last_data_sent_ms: u32_at(tcpi::LAST_DATA_SENT),
        last_data_recv_ms: u32_at(tcpi::LAST_DATA_RECV),
        last_ack_recv_ms: u32_at(tcpi::LAST_ACK_RECV),
        total_retrans: u32_at(tcpi::TOTAL_RETRANS),
        bytes_acked: u64_at(tcpi::BYTES_ACKED),
    }
}

fn read_u32(buf: &[u8], off: usize) -> Option<u32> {
    let bytes = buf.get(off..off.checked_add(size_of::<u32>())?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

/// What a netlink status word (the first four bytes of `NLMSG_ERROR` and
/// `NLMSG_DONE`) says: `None` for success, `Some(errno)` for a refusal.
/// The kernel's errnos run from 1 to `MAX_ERRNO` (4095); a status past
/// them is a damaged reply, not a refusal (and negating `i32::MIN` would
/// overflow).
pub(super) fn status(code: i32) -> Result<Option<i32>, String> {
    const MAX_ERRNO: i32 = 4095;
    match code {
        0.. => Ok(None),
        _ if code >= -MAX_ERRNO => Ok(Some(-code)),
        _ => Err(format!("status {code} is no errno")),
    }
}

pub(super) fn read_i32(buf: &[u8], off: usize) -> Option<i32> {
    let bytes = buf.get(off..off.checked_add(size_of::<i32>())?)?;
    Some(i32::from_ne_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
