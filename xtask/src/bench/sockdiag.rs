//! The kernel's own count of TIME_WAIT (or ESTABLISHED) sockets, as
//! `ss -tan state time-wait` would list them: one `NETLINK_SOCK_DIAG` dump per address family with the
//! state filter `1 << TCP_TIME_WAIT`, counting the replies. It runs in the
//! calling thread's network namespace (the one the churn runs in), in
//! process and without formatting, so a count takes milliseconds and can be
//! taken right beside a scrape of the agent. The same request `ss` sends,
//! but not the agent's code: an independent oracle.
//!
//! The kernel filters timewait sockets by their substate, so orphaned
//! FIN_WAIT2 sockets (also timewait sockets) are not counted, as in `ss`.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, bail};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_TIME_WAIT` (include/net/tcp_states.h).
const TCP_TIME_WAIT: u32 = 6;

/// `struct inet_diag_sockid` (linux/inet_diag.h).
#[repr(C)]
#[derive(Default)]
struct InetDiagSockId {
    sport_be: u16,
    dport_be: u16,
    src_be: [u32; 4],
    dst_be: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2` (linux/inet_diag.h).
#[repr(C)]
#[derive(Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
struct Request {
    hdr: libc::nlmsghdr,
    req: InetDiagReqV2,
}

const _: () = assert!(size_of::<InetDiagReqV2>() == 56);
const _: () = assert!(size_of::<Request>() == 72);

/// `TCP_ESTABLISHED` (include/net/tcp_states.h).
const TCP_ESTABLISHED: u32 = 1;

/// TIME_WAIT TCP sockets (IPv4 and IPv6) in this thread's network namespace.
pub fn count_time_wait() -> anyhow::Result<u64> {
    count_states(1 << TCP_TIME_WAIT)
}

/// ESTABLISHED TCP sockets (IPv4 and IPv6) in this thread's network
/// namespace, as `ss -tan state established` lists them.
pub fn count_established() -> anyhow::Result<u64> {
    count_states(1 << TCP_ESTABLISHED)
}

fn count_states(states: u32) -> anyhow::Result<u64> {
    Ok(count(libc::AF_INET as u8, states)? + count(libc::AF_INET6 as u8, states)?)
}

fn count(family: u8, states: u32) -> anyhow::Result<u64> {
    // SAFETY: plain syscall; the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a sock_diag socket");
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = Request {
        hdr: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        req: InetDiagReqV2 {
            family,
            protocol: libc::IPPROTO_TCP as u8,
            states,
            ..InetDiagReqV2::default()
        },
    };
    // SAFETY: sending a live, fully initialised repr(C) value of the size given.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&req as *const Request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("sending a sock_diag dump request");
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_sockets = 0;
    loop {
        // SAFETY: receiving into a buffer we own, of the length given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("reading a sock_diag dump");
        }
        match walk(&buf[..n as usize])? {
            Walk::More(k) => n_sockets += k,
            Walk::Done(k) => return Ok(n_sockets + k),
        }
    }
}

enum Walk {
    More(u64),
    Done(u64),
}

/// Count the socket messages in one datagram of the dump.
fn walk(mut b: &[u8]) -> anyhow::Result<Walk> {
    let hdr_len = size_of::<libc::nlmsghdr>();
    let mut k = 0;
    while b.len() >= hdr_len {
        // SAFETY: at least a header's worth of bytes; read unaligned.
        let h: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        let len = h.nlmsg_len as usize;
        if len < hdr_len || len > b.len() {
            bail!("a truncated sock_diag message ({len} bytes of {})", b.len());
        }
        match i32::from(h.nlmsg_type) {
            libc::NLMSG_DONE => return Ok(Walk::Done(k)),
            libc::NLMSG_ERROR => {
                let code = b
                    .get(hdr_len..hdr_len + 4)
                    .map_or(0, |e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
                if code != 0 {
                    return Err(std::io::Error::from_raw_os_error(-code))
                        .context("the kernel refused the sock_diag dump");
                }
            }
            _ if h.nlmsg_type == SOCK_DIAG_BY_FAMILY => k += 1,
            _ => {}
        }
        b = b.get((len + 3) & !3..).unwrap_or_default();
    }
    Ok(Walk::More(k))
}

/// Timewait TCP sockets of this thread's network namespace, TIME_WAIT and
/// orphaned FIN_WAIT2 alike: `tw` of `/proc/thread-self/net/sockstat`, the
/// kernel's own counter (the one `tcp_max_tw_buckets` is held against), in
/// one read.
pub fn sockstat_tw() -> anyhow::Result<u64> {
    let path = "/proc/thread-self/net/sockstat";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_sockstat_tw(&text).with_context(|| format!("no `TCP: ... tw N` in {path}"))
}

fn parse_sockstat_tw(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "tw")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, TcpListener, TcpStream},
        time::{Duration, Instant},
    };

    use super::*;

    /// Clients that close first leave TIME_WAIT sockets the count sees
    /// (sock_diag dumps need no privilege; each stay lasts 60 s).
    #[test]
    fn counts_time_wait_sockets() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        for _ in 0..20 {
            let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
            let (mut s, _) = l.accept().expect("accept");
            drop(c);
            let mut b = [0u8; 1];
            assert_eq!(std::io::Read::read(&mut s, &mut b).expect("eof"), 0);
        }
        let t0 = Instant::now();
        while count_time_wait().expect("count") < 20 {
            assert!(t0.elapsed() < Duration::from_secs(5), "no TIME_WAIT seen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn sockstat_gives_the_timewait_count() {
        let text =
            "sockets: used 8\nTCP: inuse 1 orphan 0 tw 73 alloc 1 mem 0\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat_tw(text), Some(73));
        assert_eq!(parse_sockstat_tw("TCP: inuse 1 orphan 0\n"), None);
        assert_eq!(parse_sockstat_tw("UDP: tw 3\n"), None);
        assert!(sockstat_tw().is_ok());
    }
}
