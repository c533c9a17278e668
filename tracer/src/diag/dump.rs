//! Taking a NETLINK_SOCK_DIAG dump of every TCP socket (IPv4 then IPv6).
//!
//! One request per family, `SOCK_DIAG_BY_FAMILY` with `NLM_F_DUMP`, state
//! mask all ones (every state including TIME_WAIT, NEW_SYN_RECV and, on
//! 6.8+, bound-inactive sockets). The kernel answers with multi-part
//! datagrams of at most ~32 KiB each (netlink caps a dump skb at
//! `SKB_WITH_OVERHEAD(32768)`) until `NLMSG_DONE`; 100k timewait sockets
//! came in 299 datagrams (about 0.18 s in a debug build), all received into
//! one reused buffer.
//!
//! One walk for both families. The kernel walks its whole established hash
//! for every dump request, whatever the request's family and state filter
//! (beside 131,072 timewait sockets a walk costs 15-30 ms), so a request
//! per family costs two walks. The original `TCPDIAG_GETSOCK` request,
//! which the kernel still serves (`inet_diag_dump_compat`), dumps with
//! `AF_UNSPEC`: both families in one walk, answered with the same
//! `inet_diag_msg` records. The `Dumper` uses it, and falls back to one
//! `SOCK_DIAG_BY_FAMILY` request per family, for good, when a kernel
//! refuses it.
//!
//! Cost: [`Dumper::dump_into`] allocates nothing per socket; it pushes into
//! the caller's `Vec`, which keeps its capacity between reconciles. The
//! requests are built once, the receive buffer lives in the `Dumper`.
//!
//! Capture: a `Dumper` told to ([`Dumper::set_capture`]; off by default)
//! also keeps a copy of every datagram of its last dump
//! ([`Dumper::take_captured`]), which
//! [`parse_datagrams`](super::parse_datagrams) turns into the same
//! sockets again. That is what a recording holds; off, it costs a
//! branch per datagram and nothing else.
use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::error::DiagError;
use super::netns::NetnsHandle;
use super::parse::{
    Counts, Datagram, Step, TCPDIAG_GETSOCK, Walk, on_dump_clock, parse_datagram, refused_one_walk,
};
use crate::{snapshot::SocketSnapshot, wall::monotonic_ns};

/// Initial receive buffer: twice the largest datagram a dump sends today.
const RECV_BUF_LEN: usize = 64 * 1024;

/// What to ask the kernel for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpOptions {
    /// Request `INET_DIAG_INFO` (`struct tcp_info`) for full sockets. Costs
    /// a few hundred bytes per socket on the wire.
    pub with_info: bool,
    /// Leave out timewait sockets in the TIME_WAIT substate (orphaned
    /// FIN_WAIT2 timewait sockets stay in). On a busy host they are the bulk
    /// of a dump: 131,072 of them cost ~150 ms of kernel time.
    pub without_time_wait: bool,
}

/// Sizes of the last dump, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Datagrams received (both families).
    pub datagrams: u32,
    /// Sockets decoded.
    pub sockets: u32,
    /// Socket messages skipped because their state or family is unknown
    /// to this build (a newer kernel).
    pub skipped: u32,
}

/// A reusable sock_diag dumper: one netlink socket, one receive buffer and
/// the two prebuilt requests, kept across dumps.
///
/// The socket belongs to the network namespace of the thread that created
/// the `Dumper` ([`Dumper::new`]), or to the one it was opened in
/// ([`Dumper::inside`]), and sees only that namespace's sockets.
pub struct Dumper {
    /// `None` after an error; reopened by the next dump, in the same namespace.
    socket: Option<Socket>,
    /// The namespace entered to (re)open the socket; `None`: the caller's.
    netns: Option<NetnsHandle>,
    /// Written into every [`SocketSnapshot::netns`] this dumper lists.
    netns_inode: u32,
    buf: Vec<u8>,
    /// Serialized requests, indexed by [`Walk`]: both families
    /// (`TCPDIAG_GETSOCK`), AF_INET and AF_INET6; the sequence number is
    /// patched in before each send.
    requests: [Vec<u8>; 3],
    /// The same for listening sockets only: the kernel then walks its
    /// listening table alone, not the established one.
    listeners: [Vec<u8>; 3],
    /// Dump both families in one request; false once the kernel refused it.
    one_walk: bool,
    /// Ask for `tcp_info` ([`DumpOptions::with_info`]), in lookups too.
    with_info: bool,
    seq: u32,
    stats: DumpStats,
    /// The datagrams of the last dump, when capturing.
    capture: Option<Vec<Datagram>>,
    /// Monotonic ns the timers of the next walk count from
    /// ([`Dumper::timers_from`]); `None`: from its first request.
    epoch_ns: Option<u64>,
}

impl Dumper {
    /// Open the netlink socket and build the requests.
    pub fn new(opts: DumpOptions) -> Result<Dumper, DiagError> {
        Dumper::with_buffer(opts, RECV_BUF_LEN, None)
    }

    /// A dumper whose socket is opened inside the namespace `netns` (on a
    /// helper thread; see [`super::netns`]). Fails with [`DiagError::Enter`]
    /// when the namespace cannot be entered.
    /// Its receive buffer starts at 8 KiB, not 64: the kernel sizes a
    /// dump's datagrams to the reader's buffer, and a host may hold
    /// hundreds of namespaces (a larger datagram grows it, as usual).
    pub fn inside(opts: DumpOptions, netns: NetnsHandle) -> Result<Dumper, DiagError> {
        Dumper::with_buffer(opts, 8 * 1024, Some(netns))
    }

    /// The namespace inode written into the sockets it lists.
    pub fn netns(&self) -> u32 {
        self.netns_inode
    }

    fn with_buffer(
        opts: DumpOptions,
        len: usize,
        netns: Option<NetnsHandle>,
    ) -> Result<Dumper, DiagError> {
        Ok(Dumper {
            socket: Some(open_socket(netns.as_ref())?),
            netns_inode: netns
                .as_ref()
                .map_or_else(super::netns::own_netns, NetnsHandle::inode),
            netns,
            buf: vec![0; len],
            requests: [
                request_both(opts, states(opts)),
                request(AF_INET, opts, states(opts)),
                request(AF_INET6, opts, states(opts)),
            ],
            listeners: [
                request_both(opts, LISTENING),
                request(AF_INET, opts, LISTENING),
                request(AF_INET6, opts, LISTENING),
            ],
            one_walk: true,
            with_info: opts.with_info,
            seq: 0,
            stats: DumpStats::default(),
            capture: None,
            epoch_ns: None,
        })
    }

    /// A `Dumper` that asks for each family separately, as it does after
    /// a kernel refused the one-walk request.
    pub fn per_family(opts: DumpOptions) -> Result<Dumper, DiagError> {
        let mut d = Dumper::new(opts)?;
        d.one_walk = false;
        Ok(d)
    }

    /// True while dumps take one walk for both families.
    pub fn one_walk(&self) -> bool {
        self.one_walk
    }

    /// Replace the contents of `out` with every TCP socket of this network
    /// namespace. `out` keeps its capacity, so a steady-state
    /// reconcile allocates nothing. On error `out` holds a partial dump.
    pub fn dump_into(&mut self, out: &mut Vec<SocketSnapshot>) -> Result<(), DiagError> {
        out.clear();
        self.dump_append(out)
    }

    /// Append every TCP socket of this dumper's namespace to `out`, each
    /// with [`SocketSnapshot::netns`] set. On error `out` may hold part of it.
    pub fn dump_append(&mut self, out: &mut Vec<SocketSnapshot>) -> Result<(), DiagError> {
        self.walk_append(false, out)
    }

    /// Append the listening sockets of this dumper's namespace to `out`,
    /// like [`Dumper::dump_append`]. The kernel walks only its table of
    /// listeners: cheap beside the established table of a busy host.
    pub fn listeners_append(&mut self, out: &mut Vec<SocketSnapshot>) -> Result<(), DiagError> {
        self.walk_append(true, out)
    }

    fn walk_append(
        &mut self,
        listeners: bool,
        out: &mut Vec<SocketSnapshot>,
    ) -> Result<(), DiagError> {
        let from = out.len();
        let epoch = self.epoch_ns.take().unwrap_or_else(monotonic_ns);
        let r = match self.dump_once(listeners, epoch, out, from) {
            // dump_family grew the buffer to fit; retry once, and return a
            // second truncation (a kernel sending ever larger datagrams).
            Err(DiagError::Truncated { .. }) => self.dump_once(listeners, epoch, out, from),
            r => r,
        };
        for d in &mut out[from..] {
            d.netns = self.netns_inode;
        }
        r
    }

    /// Keep (`true`) or stop keeping the datagrams of each dump. Off by
    /// default; turning it on allocates nothing until a dump.
    pub fn set_capture(&mut self, on: bool) {
        match (on, self.capture.is_some()) {
            (true, false) => self.capture = Some(Vec::new()),
            (false, true) => self.capture = None,
            _ => {}
        }
    }

    /// The datagrams of the last dump, in the order received, when
    /// capturing (empty otherwise): those of requests that gave the
    /// sockets listed, not of an attempt retried or refused. Parsed by
    /// [`parse_datagrams`](super::parse_datagrams) with [`Dumper::netns`],
    /// they give those sockets again.
    pub fn take_captured(&mut self) -> Vec<Datagram> {
        self.capture
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Count the time left on the timers the next walk lists from
    /// monotonic `start_ns` (a caller's dump spanning namespaces starts
    /// before this one's first request). Every walk counts them from its
    /// start, not from when the kernel wrote each
    /// ([`on_dump_clock`]).
    pub fn timers_from(&mut self, start_ns: u64) {
        self.epoch_ns = Some(start_ns);
    }

    /// Sizes of the last completed or failed dump.
    pub fn last_stats(&self) -> DumpStats {
        self.stats
    }

    fn dump_once(
        &mut self,
        listeners: bool,
        epoch: u64,
        out: &mut Vec<SocketSnapshot>,
        from: usize,
    ) -> Result<(), DiagError> {
        out.truncate(from);
        self.stats = DumpStats::default();
        if let Some(c) = &mut self.capture {
            c.clear();
        }
        // On error the socket is dropped, not put back: a half-read dump
        // would make the kernel answer the next request with EBUSY.
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => open_socket(self.netns.as_ref())?,
        };
        if self.one_walk {
            match self.dump_family(&socket, listeners, Walk::Both, epoch, out) {
                Err(e) if refused_one_walk(&e) => {
                    // A kernel without the old request: one per family from
                    // now on. The error ended that request; the socket is
                    // clean.
                    self.one_walk = false;
                    out.truncate(from);
                    if let Some(c) = &mut self.capture {
                        c.clear();
                    }
                }
                r => {
                    r?;
                    self.socket = Some(socket);
                    return Ok(());
                }
            }
        }
        for walk in [Walk::Ipv4, Walk::Ipv6] {
            self.dump_family(&socket, listeners, walk, epoch, out)?;
        }
        self.socket = Some(socket);
        Ok(())
    }

    fn dump_family(
        &mut self,
        socket: &Socket,
        listeners: bool,
        walk: Walk,
        epoch_ns: u64,
        out: &mut Vec<SocketSnapshot>,
    ) -> Result<(), DiagError> {
        let family = walk.label();
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let set = if listeners {
            &mut self.listeners
        } else {
            &mut self.requests
        };
        let req = &mut set[walk as usize];
        NetlinkBuffer::new(&mut req[..]).set_sequence_number(seq);
        loop {
            match socket.send(req, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(DiagError::Send { family, source }),
            }
        }
        loop {
            let n = match socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(DiagError::Recv { family, source }),
            };
            self.stats.datagrams += 1;
            if n > self.buf.len() {
                self.buf.resize(n.next_multiple_of(4096), 0);
                return Err(DiagError::Truncated { family, needed: n });
            }
            if n == 0 {
                return Err(DiagError::Malformed {
                    family,
                    detail: "empty datagram".into(),
                });
            }
            let late_ms = (monotonic_ns().saturating_sub(epoch_ns) / 1_000_000) as u32;
            if let Some(c) = &mut self.capture {
                c.push(Datagram {
                    walk,
                    seq,
                    bytes: self.buf[..n].to_vec(),
                    late_ms,
                });
            }
            let mut counts = Counts::default();
            let before = out.len();
            let step = parse_datagram(&self.buf[..n], seq, family, out, &mut counts);
            on_dump_clock(&mut out[before..], late_ms);
            self.stats.sockets += counts.sockets;
            self.stats.skipped += counts.skipped;
            if step? == Step::Done {
                return Ok(());
            }
        }
    }
}

/// Take one dump with a fresh [`Dumper`]. For repeated dumps keep a
/// `Dumper` and call [`Dumper::dump_into`].
pub fn dump_tcp(opts: DumpOptions) -> Result<Vec<SocketSnapshot>, DiagError> {
    let mut out = Vec::new();
    Dumper::new(opts)?.dump_into(&mut out)?;
    Ok(out)
}

/// A sock_diag socket in `netns`, or in the caller's namespace.
fn open_socket(netns: Option<&NetnsHandle>) -> Result<Socket, DiagError> {
    match netns {
        None => open_here(),
        Some(ns) => ns.run_inside(open_here).map_err(DiagError::Enter)?,
    }
}

fn open_here() -> Result<Socket, DiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DiagError::Open)?;
    socket.bind_auto().map_err(DiagError::Open)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(DiagError::Open)?;
    Ok(socket)
}

/// `TCP_TIME_WAIT`, the bit of the state mask that selects timewait sockets
/// in the TIME_WAIT substate.
const TCP_TIME_WAIT: u32 = 6;

/// The state mask of listening sockets alone (`TCP_LISTEN` is 10).
const LISTENING: u32 = 1 << 10;

/// The state mask of a request: all ones, like `ss -a` (the crate's
/// `StateFlags::all()` stops at CLOSING and would miss NEW_SYN_RECV (12)
/// and BOUND_INACTIVE (13)), without TIME_WAIT if asked.
fn states(opts: DumpOptions) -> u32 {
    if opts.without_time_wait {
        !(1u32 << TCP_TIME_WAIT)
    } else {
        u32::MAX
    }
}

/// A serialized `TCPDIAG_GETSOCK` dump request (an `inet_diag_req`): both
/// families in one walk. The crate models only the newer request, so the
/// 60-byte payload is laid out here: family, src_len, dst_len, ext, a
/// 48-byte `inet_diag_sockid` (unused by a dump), states, dbs.
fn request_both(opts: DumpOptions, states: u32) -> Vec<u8> {
    const PAYLOAD: usize = 60;
    let mut buf = vec![0u8; 16 + PAYLOAD];
    let mut nl = NetlinkBuffer::new(&mut buf[..]);
    nl.set_length((16 + PAYLOAD) as u32);
    nl.set_message_type(TCPDIAG_GETSOCK);
    nl.set_flags(NLM_F_REQUEST | NLM_F_DUMP);
    let p = &mut buf[16..];
    // The kernel dumps AF_UNSPEC whatever this says; AF_INET for old ones.
    p[0] = AF_INET;
    if opts.with_info {
        p[3] = ExtensionFlags::INFO.bits();
    }
    p[52..56].copy_from_slice(&states.to_ne_bytes());
    buf
}

/// A serialized `inet_diag_req_v2` dump request for one family.
fn request(family: u8, opts: DumpOptions, states: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut msg = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: if opts.with_info {
                ExtensionFlags::INFO
            } else {
                ExtensionFlags::empty()
            },
            states: StateFlags::from_bits_retain(states),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

mod lookup;
pub use lookup::BATCH as LOOKUP_BATCH;

#[cfg(test)]
mod tests;
