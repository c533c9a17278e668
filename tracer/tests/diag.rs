//! Privileged tests of `tracer::diag` against real loopback sockets.
//!
//! They run as root (uid, inode and timer details are only complete for
//! root) and fail loudly otherwise. Every test finds its own sockets by the
//! ports it was given and never assumes it is alone; `ss` is used only as
//! an oracle for cookies and states.
mod common;
#[path = "diag/owners.rs"]
mod owners;
#[path = "diag/scale.rs"]
mod scale;
#[path = "diag/states.rs"]
mod states;

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tracer::diag::{DumpOptions, Dumper, dump_tcp, owners_of};
use tracer::snapshot::{SocketSnapshot, TimerKind};
use tracer::tcp::{Family, TcpState};

use common::{
    counting::{ALLOCS, COUNTING, Counting},
    require_root,
};

/// Counts allocations made by threads that opted in, so a test can check
/// that a steady-state dump allocates nothing.
#[global_allocator]
static GLOBAL: Counting = Counting;

fn dump(with_info: bool) -> Vec<SocketSnapshot> {
    dump_tcp(DumpOptions {
        with_info,
        without_time_wait: false,
    })
    .expect("sock_diag dump")
}

/// The sockets whose local and remote endpoints are exactly these.
fn find(socks: &[SocketSnapshot], local: SocketAddr, peer: SocketAddr) -> Vec<SocketSnapshot> {
    let key = (local.ip(), local.port(), peer.ip(), peer.port());
    socks
        .iter()
        .filter(|s| (s.saddr, s.sport, s.daddr, s.dport) == key)
        .copied()
        .collect()
}

fn one(socks: &[SocketSnapshot], local: SocketAddr, peer: SocketAddr) -> SocketSnapshot {
    let found = find(socks, local, peer);
    assert_eq!(found.len(), 1, "one socket {local} -> {peer}: {found:#?}");
    found[0]
}

/// The inode of the socket behind a descriptor (stat of /proc/self/fd/N).
fn inode_of(fd: &impl AsRawFd) -> u64 {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::metadata(path).expect("stat fd").ino()
}

/// `ss` as an oracle: the `sk:<hex>` cookie of the one socket in `state`
/// from port `local` to port `peer`.
fn ss_cookie(state: &str, local: u16, peer: u16) -> u64 {
    let filter = match peer {
        0 => format!("( sport = :{local} )"),
        _ => format!("( sport = :{local} and dport = :{peer} )"),
    };
    let out = Command::new("ss")
        .args(["-Htaniep", &filter])
        .output()
        .expect("run ss");
    assert!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let hits: Vec<u64> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(state))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("sk:")))
        .filter_map(|hex| u64::from_str_radix(hex, 16).ok())
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "ss shows one {state} {local}->{peer}:\n{text}"
    );
    hits[0]
}

/// Poll dumps until `f` finds what it wants (5 s at most).
fn wait_for<T>(what: &str, mut f: impl FnMut(&[SocketSnapshot]) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(t) = f(&dump(false)) {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A listener, a client and the accepted server socket on loopback.
struct Conn {
    listener: TcpListener,
    client: TcpStream,
    server: TcpStream,
    /// The listener's (and server's) local address.
    laddr: SocketAddr,
    /// The client's local address.
    caddr: SocketAddr,
}

/// A [`Conn`] on `ip`, or None when `ip` is not configured here.
fn conn(ip: IpAddr) -> Option<Conn> {
    let listener = TcpListener::bind((ip, 0)).ok()?;
    let laddr = listener.local_addr().ok()?;
    let client = TcpStream::connect(laddr).expect("connect");
    let (server, caddr) = listener.accept().expect("accept");
    Some(Conn {
        listener,
        client,
        server,
        laddr,
        caddr,
    })
}

fn conn4() -> Conn {
    conn(Ipv4Addr::LOCALHOST.into()).expect("127.0.0.1")
}

fn check_loopback(ip: IpAddr, family: Family) {
    // A namespace of its own: in the host's, a TIME_WAIT socket left by
    // another test, to a listener that had the port `bind(0)` hands out
    // again, would count as a fourth socket on the port.
    let _ns = common::Netns::enter(if ip.is_ipv4() { "loop4" } else { "loop6" });
    let Some(c) = conn(ip) else {
        eprintln!("skipped: cannot bind {ip} (no such loopback address here)");
        return;
    };
    let (mut client, mut server) = (&c.client, &c.server);
    client.write_all(b"hello").expect("write");
    server.read_exact(&mut [0u8; 5]).expect("read");
    let socks = dump(true);
    let port = c.laddr.port();
    let mine = socks.iter().filter(|s| s.sport == port || s.dport == port);
    assert_eq!(
        mine.count(),
        3,
        "listener, client and server on port {port}"
    );

    let any = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let any = any.parse().expect("address");
    let rows = [
        (one(&socks, c.laddr, any), c.listener.as_raw_fd(), "LISTEN"),
        (one(&socks, c.caddr, c.laddr), c.client.as_raw_fd(), "ESTAB"),
        (one(&socks, c.laddr, c.caddr), c.server.as_raw_fd(), "ESTAB"),
    ];
    for (sock, fd, ss_state) in rows {
        let what = format!("{ss_state} {}->{}", sock.sport, sock.dport);
        let state = match ss_state {
            "LISTEN" => TcpState::Listen,
            _ => TcpState::Established,
        };
        assert_eq!(
            (sock.state, sock.family, sock.timewait, sock.uid),
            (state, family, false, 0)
        );
        assert_eq!(sock.inode, inode_of(&fd), "inode of {what}");
        let info = sock.info.expect("tcp_info was requested");
        if state == TcpState::Established {
            // A listener's tcp_info holds only its backlog (tcp_get_info).
            assert!(info.rto_us >= 200_000, "RTO >= TCP_RTO_MIN: {info:?}");
            assert_eq!(
                (info.retransmits, info.total_retrans, info.unacked),
                (0, 0, 0)
            );
            assert!(info.last_data_sent_ms.min(info.last_data_recv_ms) < 5_000);
        }
        assert_eq!(
            sock.cookie,
            ss_cookie(ss_state, sock.sport, sock.dport),
            "cookie of {what}"
        );
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn ipv4_loopback_sockets_match_ss() {
    check_loopback(Ipv4Addr::LOCALHOST.into(), Family::Ipv4);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn ipv6_loopback_sockets_match_ss() {
    check_loopback(Ipv6Addr::LOCALHOST.into(), Family::Ipv6);
}
