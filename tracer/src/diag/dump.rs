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
use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::DiagSocket;
use super::parse::{Counts, Step, parse_datagram};

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

/// A failed dump, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The netlink socket could not be created or bound.
    #[error("cannot open a NETLINK_SOCK_DIAG socket (needed to list TCP sockets)")]
    Open(#[source] io::Error),
    /// Sending the dump request failed.
    #[error("cannot send the {family} TCP socket dump request to the kernel")]
    Send {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The send error.
        #[source]
        source: io::Error,
    },
    /// Receiving the dump failed.
    #[error("cannot read the {family} TCP socket dump from the kernel")]
    Recv {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The receive error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered with an error (`NLMSG_ERROR`, or a negative
    /// status in `NLMSG_DONE`).
    #[error("the kernel refused the {family} TCP socket dump: {}", explain(*.errno))]
    Refused {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The positive errno.
        errno: i32,
    },
    /// A datagram was larger than the receive buffer and was cut; the
    /// buffer has been grown, so the next dump will fit.
    #[error("a {family} sock_diag datagram of {needed} bytes did not fit the receive buffer")]
    Truncated {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The datagram's real size.
        needed: usize,
    },
    /// The kernel's reply could not be decoded.
    #[error("the kernel sent a malformed {family} sock_diag reply: {detail}")]
    Malformed {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// One sentence for a sock_diag errno.
fn explain(errno: i32) -> String {
    match errno {
        libc::EPERM | libc::EACCES => "permission denied; a seccomp, SELinux or AppArmor policy \
            blocks sock_diag: run tracer as root or allow NETLINK_SOCK_DIAG"
            .to_owned(),
        libc::ENOENT => "this kernel has no TCP sock_diag support; load it with \
            `modprobe tcp_diag` or build with CONFIG_INET_DIAG and CONFIG_INET_TCP_DIAG"
            .to_owned(),
        e => format!("{}", io::Error::from_raw_os_error(e)),
    }
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
/// the `Dumper`, and sees only that namespace's sockets.
pub struct Dumper {
    /// `None` after an error; reopened by the next dump.
    socket: Option<Socket>,
    buf: Vec<u8>,
    /// Serialized requests: both families (`TCPDIAG_GETSOCK`), AF_INET and
    /// AF_INET6; the sequence number is patched in before each send.
    requests: [Vec<u8>; 3],
    /// Dump both families in one request; false once the kernel refused it.
    one_walk: bool,
    seq: u32,
    stats: DumpStats,
}

impl Dumper {
    /// Open the netlink socket and build the requests.
    pub fn new(opts: DumpOptions) -> Result<Dumper, DiagError> {
        Dumper::with_buffer(opts, RECV_BUF_LEN)
    }

    fn with_buffer(opts: DumpOptions, len: usize) -> Result<Dumper, DiagError> {
        Ok(Dumper {
            socket: Some(open_socket()?),
            buf: vec![0; len],
            requests: [
                request_both(opts),
                request(AF_INET, opts),
                request(AF_INET6, opts),
            ],
            one_walk: true,
            seq: 0,
            stats: DumpStats::default(),
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
    pub fn dump_into(&mut self, out: &mut Vec<DiagSocket>) -> Result<(), DiagError> {
        match self.dump_once(out) {
            // dump_family grew the buffer to fit; retry once, and return a
            // second truncation (a kernel sending ever larger datagrams).
            Err(DiagError::Truncated { .. }) => self.dump_once(out),
            r => r,
        }
    }

    /// Sizes of the last completed or failed dump.
    pub fn last_stats(&self) -> DumpStats {
        self.stats
    }

    fn dump_once(&mut self, out: &mut Vec<DiagSocket>) -> Result<(), DiagError> {
        out.clear();
        self.stats = DumpStats::default();
        // On error the socket is dropped, not put back: a half-read dump
        // would make the kernel answer the next request with EBUSY.
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => open_socket()?,
        };
        if self.one_walk {
            match self.dump_family(&socket, 0, "IPv4 and IPv6", out) {
                Err(DiagError::Refused {
                    errno: libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP,
                    ..
                }) => {
                    // A kernel without the old request: one per family from
                    // now on. The error ended that request; the socket is
                    // clean.
                    self.one_walk = false;
                    out.clear();
                }
                r => {
                    r?;
                    self.socket = Some(socket);
                    return Ok(());
                }
            }
        }
        for (which, family) in [(1, "IPv4"), (2, "IPv6")] {
            self.dump_family(&socket, which, family, out)?;
        }
        self.socket = Some(socket);
        Ok(())
    }

    fn dump_family(
        &mut self,
        socket: &Socket,
        which: usize,
        family: &'static str,
        out: &mut Vec<DiagSocket>,
    ) -> Result<(), DiagError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = &mut self.requests[which];
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
            let mut counts = Counts::default();
            let step = parse_datagram(&self.buf[..n], seq, family, out, &mut counts);
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
pub fn dump_tcp(opts: DumpOptions) -> Result<Vec<DiagSocket>, DiagError> {
    let mut out = Vec::new();
    Dumper::new(opts)?.dump_into(&mut out)?;
    Ok(out)
}

fn open_socket() -> Result<Socket, DiagError> {
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

/// Netlink message type of the original TCP dump request.
pub(super) const TCPDIAG_GETSOCK: u16 = 18;

/// A serialized `TCPDIAG_GETSOCK` dump request (an `inet_diag_req`): both
/// families in one walk. The crate models only the newer request, so the
/// 60-byte payload is laid out here: family, src_len, dst_len, ext, a
/// 48-byte `inet_diag_sockid` (unused by a dump), states, dbs.
fn request_both(opts: DumpOptions) -> Vec<u8> {
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
    p[52..56].copy_from_slice(&states(opts).to_ne_bytes());
    buf
}

/// A serialized `inet_diag_req_v2` dump request for one family.
fn request(family: u8, opts: DumpOptions) -> Vec<u8> {
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
            states: StateFlags::from_bits_retain(states(opts)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_asks_for_every_state_and_info() {
        let req = request(
            AF_INET6,
            DumpOptions {
                with_info: true,
                without_time_wait: false,
            },
        );
        // nlmsghdr(16) + inet_diag_req_v2(56)
        assert_eq!(req.len(), 72);
        let nl = NetlinkBuffer::new_checked(&req[..]).expect("header");
        assert_eq!(
            nl.message_type(),
            netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY
        );
        assert_eq!(nl.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        let p = nl.payload();
        assert_eq!((p[0], p[1]), (AF_INET6, IPPROTO_TCP));
        assert_eq!(p[2], 1 << (netlink_packet_sock_diag::INET_DIAG_INFO - 1));
        assert_eq!(u32::from_ne_bytes([p[4], p[5], p[6], p[7]]), u32::MAX);
        let plain = request(AF_INET, DumpOptions::default());
        assert_eq!(
            NetlinkBuffer::new_checked(&plain[..])
                .expect("header")
                .payload()[2],
            0
        );
    }

    #[test]
    fn one_walk_request_is_an_inet_diag_req() {
        let req = request_both(DumpOptions {
            with_info: true,
            without_time_wait: true,
        });
        // nlmsghdr(16) + inet_diag_req(60)
        assert_eq!(req.len(), 76);
        let nl = NetlinkBuffer::new_checked(&req[..]).expect("header");
        assert_eq!(nl.message_type(), TCPDIAG_GETSOCK);
        assert_eq!(nl.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        let p = nl.payload();
        assert_eq!(p.len(), 60);
        assert_eq!(p[3], 1 << (netlink_packet_sock_diag::INET_DIAG_INFO - 1));
        let states = u32::from_ne_bytes([p[52], p[53], p[54], p[55]]);
        assert_eq!(states, !(1 << 6), "every state but TIME_WAIT");
        assert_eq!(&p[56..60], &[0; 4], "idiag_dbs");
        let all = request_both(DumpOptions::default());
        assert_eq!(all[16 + 3], 0);
        assert_eq!(&all[16 + 52..16 + 56], &u32::MAX.to_ne_bytes());
    }

    /// Needs no privileges: any user may dump TCP sockets.
    #[test]
    fn truncated_datagrams_grow_the_buffer_and_retry() {
        // Enough listeners that the first datagram (at least NLMSG_GOODSIZE,
        // ~3.7 KiB) overflows a 512-byte buffer.
        let listeners: Vec<_> = (0..16)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let mut dumper = Dumper::with_buffer(
            DumpOptions {
                with_info: true,
                without_time_wait: false,
            },
            512,
        )
        .expect("open");
        let mut out = Vec::new();
        dumper.dump_into(&mut out).expect("dump after one retry");
        assert!(dumper.buf.len() > 512);
        for l in &listeners {
            let port = l.local_addr().expect("addr").port();
            assert!(
                out.iter()
                    .any(|s| s.sport == port && s.state == crate::tcp::TcpState::Listen)
            );
        }
    }

    /// The agent moves a `Dumper` into `spawn_blocking`.
    const _: () = {
        const fn send<T: Send>() {}
        send::<Dumper>();
    };

    #[test]
    fn errors_read_as_sentences() {
        let e = DiagError::Refused {
            family: "IPv4",
            errno: libc::EPERM,
        };
        assert!(
            e.to_string()
                .starts_with("the kernel refused the IPv4 TCP socket dump: permission denied")
        );
        let e = DiagError::Refused {
            family: "IPv6",
            errno: libc::EINVAL,
        };
        assert!(e.to_string().contains("Invalid argument"), "{e}");
    }
}
