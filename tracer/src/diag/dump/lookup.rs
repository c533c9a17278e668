//! Exact lookups: each socket asked for by its 4-tuple and cookie, the
//! kernel's answer one hash lookup, where a walk visits every socket of
//! the namespace.
//!
//! A `SOCK_DIAG_BY_FAMILY` request without `NLM_F_DUMP` names one socket
//! (`inet_diag_req_v2` with the full `inet_diag_sockid`). The kernel looks
//! it up in its established hash (`inet_diag_find_one_icsk`), checks the
//! cookie, and answers with its `inet_diag_msg`, or with an `NLMSG_ERROR`:
//! `ENOENT` when no socket has the 4-tuple, `ESTALE` when another socket
//! (a newer one) has it. Either way, the socket asked for is gone.
//!
//! Requests go [`BATCH`] to a datagram (the kernel handles every message
//! of one `send` in turn), and the answers are read until each request
//! has one, matched by sequence number.
use std::io;

use netlink_packet_core::{NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, inet::ExtensionFlags,
};

use super::{DiagError, Dumper, open_socket};
use crate::{
    diag::parse::{decode_socket, messages, read_i32, status},
    snapshot::{Lookup, SocketSnapshot},
    tcp::Family,
};

/// Requests sent in one datagram. Each answer with `tcp_info` is a
/// datagram of ~1 KiB of socket buffer; 32 stay well inside the default
/// receive buffer (`net.core.rmem_default`, 208 KiB).
pub const BATCH: usize = 32;

/// nlmsghdr (16) + inet_diag_req_v2 (56).
const REQUEST_LEN: usize = 72;

/// Write the request for `p`, sequence number `seq`, into `out`.
fn encode(p: &Lookup, seq: u32, info: bool, out: &mut [u8; REQUEST_LEN]) {
    out.fill(0);
    let mut nl = NetlinkBuffer::new(&mut out[..]);
    nl.set_length(REQUEST_LEN as u32);
    nl.set_message_type(SOCK_DIAG_BY_FAMILY);
    nl.set_flags(NLM_F_REQUEST);
    nl.set_sequence_number(seq);
    let b = &mut out[16..];
    b[0] = match p.family {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    };
    b[1] = IPPROTO_TCP;
    if info {
        b[2] = ExtensionFlags::INFO.bits();
    }
    // idiag_states: ignored by a lookup, all ones like a dump.
    b[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: sport, dport (network order), src, dst, if, cookie.
    let id = &mut b[8..];
    id[0..2].copy_from_slice(&p.lport.to_be_bytes());
    id[2..4].copy_from_slice(&p.rport.to_be_bytes());
    id[4..20].copy_from_slice(&p.local);
    id[20..36].copy_from_slice(&p.remote);
    id[36..40].copy_from_slice(&p.ifindex.to_ne_bytes());
    // idiag_cookie: __u32[2], low half first (as `cookie_from_id` reads it).
    id[40..44].copy_from_slice(&(p.cookie as u32).to_ne_bytes());
    id[44..48].copy_from_slice(&((p.cookie >> 32) as u32).to_ne_bytes());
}

impl Dumper {
    /// Look each of `lookups` up in this dumper's namespace and append
    /// those found to `out`, with [`SocketSnapshot::netns`] set. Returns
    /// how many were found; the others are gone. On error `out` may hold
    /// some of them, and the socket is reopened by the next call.
    pub fn lookup_append(
        &mut self,
        lookups: &[Lookup],
        out: &mut Vec<SocketSnapshot>,
    ) -> Result<usize, DiagError> {
        let from = out.len();
        // Dropped on error, not put back: unread answers would be read
        // as the next request's.
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => open_socket(self.netns.as_ref())?,
        };
        let mut requests = Vec::with_capacity(BATCH * REQUEST_LEN);
        for chunk in lookups.chunks(BATCH) {
            let first = self.seq.wrapping_add(1);
            self.seq = self.seq.wrapping_add(chunk.len() as u32);
            requests.clear();
            for (i, p) in chunk.iter().enumerate() {
                let mut req = [0u8; REQUEST_LEN];
                encode(p, first.wrapping_add(i as u32), self.with_info, &mut req);
                requests.extend_from_slice(&req);
            }
            loop {
                match socket.send(&requests, 0) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(DiagError::Send {
                            family: "lookup",
                            source,
                        });
                    }
                }
            }
            let mut answered = 0;
            while answered < chunk.len() {
                let n = match socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(DiagError::Recv {
                            family: "lookup",
                            source,
                        });
                    }
                };
                if n > self.buf.len() {
                    self.buf.resize(n.next_multiple_of(4096), 0);
                    return Err(DiagError::Truncated {
                        family: "lookup",
                        needed: n,
                    });
                }
                answered += read_answers(&self.buf[..n], first, chunk.len(), out)?;
            }
        }
        for d in &mut out[from..] {
            d.netns = self.netns_inode;
        }
        self.socket = Some(socket);
        Ok(out.len() - from)
    }
}

/// Read the answers in one datagram to the requests numbered `first` and
/// the `count` after it, pushing the sockets found; returns how many
/// requests it answered.
fn read_answers(
    buf: &[u8],
    first: u32,
    count: usize,
    out: &mut Vec<SocketSnapshot>,
) -> Result<usize, DiagError> {
    let malformed = |detail: String| DiagError::Malformed {
        family: "lookup",
        detail,
    };
    let mut answered = 0;
    for msg in messages(buf, "lookup") {
        let msg = msg?;
        let len = msg.length() as usize;
        if msg.sequence_number().wrapping_sub(first) as usize >= count {
            // Left over from an earlier request.
            continue;
        }
        let payload = msg.payload();
        match msg.message_type() {
            NLMSG_ERROR => {
                let code = read_i32(payload, 0)
                    .ok_or_else(|| malformed(format!("NLMSG_ERROR of {len} bytes")))?;
                match status(code).map_err(malformed)? {
                    // An ACK, which a lookup does not ask for (and which
                    // answers none of its requests: waiting on would
                    // block the dump thread for good).
                    None => return Err(malformed("an ACK the lookup did not ask for".into())),
                    // Not there, or another socket in its place: gone.
                    Some(libc::ENOENT | libc::ESTALE) => answered += 1,
                    Some(errno) => {
                        return Err(DiagError::Refused {
                            family: "lookup",
                            errno,
                        });
                    }
                }
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(sock) = decode_socket(payload).map_err(malformed)? {
                    out.push(sock);
                }
                answered += 1;
            }
            _ => {}
        }
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn v4(a: std::net::Ipv4Addr) -> [u8; 16] {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&a.octets());
        b
    }

    /// One `NLMSG_ERROR` answering request `seq` with status `code`.
    fn error_reply(seq: u32, code: i32) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&20u32.to_ne_bytes());
        d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        d.extend_from_slice(&0u16.to_ne_bytes());
        d.extend_from_slice(&seq.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&code.to_ne_bytes());
        d
    }

    #[test]
    fn error_replies_read_as_gone_refused_or_malformed() {
        let answers = |code| read_answers(&error_reply(7, code), 7, 1, &mut Vec::new());
        assert_eq!(answers(-libc::ENOENT).expect("gone"), 1);
        assert_eq!(answers(-libc::ESTALE).expect("gone"), 1);
        assert!(matches!(answers(0), Err(DiagError::Malformed { .. })));
        assert!(matches!(
            answers(-libc::EPERM),
            Err(DiagError::Refused {
                errno: libc::EPERM,
                ..
            })
        ));
        for lie in [i32::MIN, -4096] {
            assert!(
                matches!(answers(lie), Err(DiagError::Malformed { .. })),
                "status {lie}"
            );
        }
    }

    #[test]
    fn a_request_names_the_socket_like_the_kernel_lays_it_out() {
        let p = Lookup {
            family: Family::Ipv4,
            local: v4([127, 0, 0, 1].into()),
            lport: 0x1234,
            remote: v4([10, 0, 0, 2].into()),
            rport: 443,
            cookie: 0x0000_0001_0000_0002,
            ifindex: 7,
        };
        let mut req = [0; REQUEST_LEN];
        encode(&p, 7, true, &mut req);
        let nl = NetlinkBuffer::new_checked(&req[..]).expect("header");
        assert_eq!(nl.message_type(), SOCK_DIAG_BY_FAMILY);
        assert_eq!(nl.flags(), NLM_F_REQUEST, "a lookup, not a dump");
        assert_eq!(nl.sequence_number(), 7);
        let b = nl.payload();
        assert_eq!((b[0], b[1]), (AF_INET, IPPROTO_TCP));
        assert_eq!(&b[8..10], &[0x12, 0x34]);
        assert_eq!(&b[10..12], &443u16.to_be_bytes());
        assert_eq!(&b[12..16], &[127, 0, 0, 1]);
        assert_eq!(&b[28..32], &[10, 0, 0, 2]);
        assert_eq!(&b[44..48], &7u32.to_ne_bytes(), "idiag_if");
        let mut id = [0; 8];
        id.copy_from_slice(&b[48..56]);
        assert_eq!(crate::diag::parse::cookie_from_id(&id), p.cookie);
    }

    /// Needs no privileges: any user may look up TCP sockets.
    #[test]
    fn a_lookup_finds_a_live_socket_and_not_a_closed_one_or_a_wrong_cookie() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let (ca, sa) = (c.local_addr().unwrap(), s.local_addr().unwrap());
        let all = crate::diag::dump_tcp(crate::diag::DumpOptions::default()).expect("dump");
        let cookie = |from: std::net::SocketAddr, to: std::net::SocketAddr| {
            all.iter()
                .find(|d| d.sport == from.port() && d.dport == to.port())
                .expect("both sockets in a dump")
                .cookie
        };
        let ip = |a: std::net::SocketAddr| match a.ip() {
            std::net::IpAddr::V4(v) => v4(v),
            std::net::IpAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
        };
        let client = Lookup {
            family: Family::Ipv4,
            local: ip(ca),
            lport: ca.port(),
            remote: ip(sa),
            rport: sa.port(),
            cookie: cookie(ca, sa),
            ifindex: 0,
        };
        let server = Lookup {
            local: ip(sa),
            lport: sa.port(),
            remote: ip(ca),
            rport: ca.port(),
            cookie: cookie(sa, ca),
            ifindex: 0,
            ..client
        };
        let stale = Lookup {
            cookie: client.cookie ^ 1,
            ..client
        };
        let nowhere = Lookup { rport: 1, ..client };
        let mut d = Dumper::new(crate::diag::DumpOptions {
            with_info: true,
            without_time_wait: false,
        })
        .expect("sock_diag socket");
        // More than a batch: the answers of every batch are matched.
        let mut lookups = vec![nowhere; BATCH + 3];
        lookups.extend([client, stale, server]);
        let mut out = Vec::new();
        assert_eq!(d.lookup_append(&lookups, &mut out).expect("lookup"), 2);
        assert_eq!(
            out.iter().map(|s| s.cookie).collect::<Vec<_>>(),
            [client.cookie, server.cookie]
        );
        assert_eq!(out[0].state, crate::tcp::TcpState::Established);
        assert!(out[0].info.is_some(), "tcp_info asked for");
        assert_eq!(out[0].netns, d.netns());
        // The listening table alone lists the listener, not the others.
        let mut listening = Vec::new();
        d.listeners_append(&mut listening).expect("listeners");
        let port = l.local_addr().unwrap().port();
        assert!(listening.iter().any(|s| s.sport == port));
        assert!(
            listening
                .iter()
                .all(|s| s.state == crate::tcp::TcpState::Listen)
        );
        // The client closes first: the server's socket goes through
        // LAST_ACK and is gone, and the same dumper says so.
        drop(c);
        drop(s);
        let gone = (0..100).any(|_| {
            let mut out = Vec::new();
            let found = d.lookup_append(&[server], &mut out).expect("lookup");
            std::thread::sleep(std::time::Duration::from_millis(10));
            found == 0
        });
        assert!(gone, "the closed server socket is still found");
    }
}
