//! Privileged tests of `tracer::diag` against real loopback sockets.
//!
//! They run as root (uid, inode and timer details are only complete for
//! root) and fail loudly otherwise. Every test finds its own sockets by the
//! ports it was given and never assumes it is alone; `ss` is used only as
//! an oracle for cookies and states.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
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

use common::require_root;

/// Counts allocations made by threads that opted in, so a test can check
/// that a steady-state dump allocates nothing.
struct CountingAlloc;
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

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
    require_root();
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

/// Kills and reaps the child on drop, even when an assertion fails.
struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn owners_list_every_process_and_fd() {
    require_root();
    let c = conn4();
    let dup = c.client.try_clone().expect("dup");
    let client_fd = c.client.as_raw_fd();
    // SAFETY: between fork and exec the child only calls dup2, which is
    // async-signal-safe; the new fd 3 has no CLOEXEC and survives exec.
    let child = Reaped(unsafe {
        Command::new("sleep")
            .arg("30")
            .pre_exec(move || match libc::dup2(client_fd, 3) {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            })
            .spawn()
            .expect("spawn sleep")
    });
    let kid = child.0.id();
    let (ci, si) = (inode_of(&c.client), inode_of(&c.server));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{kid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "child never exec'd sleep");
        std::thread::sleep(Duration::from_millis(5));
    }

    let owners = owners_of(&HashSet::from([ci, si, u64::MAX]));
    let me = std::process::id();
    // Other tests' children may hold our fds between fork and exec: look
    // only at this process and our child.
    let ours = |ino: u64| -> Vec<(u32, u32)> {
        let it = owners[&ino].iter().filter(|o| o.pid == me || o.pid == kid);
        it.map(|o| (o.pid, o.fd)).collect()
    };
    let fd = |f: &dyn AsRawFd| f.as_raw_fd() as u32;
    let mut want = vec![(me, fd(&c.client)), (me, fd(&dup)), (kid, 3)];
    want.sort();
    assert_eq!(ours(ci), want);
    assert_eq!(ours(si), [(me, fd(&c.server))]);
    assert!(!owners.contains_key(&u64::MAX));

    let sleeper = owners[&ci]
        .iter()
        .find(|o| o.pid == kid)
        .expect("child listed");
    assert_eq!(
        (sleeper.comm.as_str(), sleeper.cmdline.as_str()),
        ("sleep", "sleep 30")
    );
    let mine = owners[&si]
        .iter()
        .find(|o| o.pid == me)
        .expect("self listed");
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    assert_eq!(mine.comm, comm.trim_end());
    let cg = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let v2 = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("");
    assert_eq!(mine.cgroup, v2);
    assert_eq!(mine.container_id.as_deref(), tracer::diag::container_id(v2));
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn client_close_leaves_timewait_with_the_client_cookie() {
    require_root();
    let mut c = conn4();
    let (laddr, caddr) = (c.laddr, c.caddr);
    let (port, cport) = (laddr.port(), caddr.port());
    let cookie = one(&dump(false), caddr, laddr).cookie;
    let client_in = |state: TcpState, timewait: bool| {
        move |s: &[SocketSnapshot]| {
            find(s, caddr, laddr)
                .into_iter()
                .find(|s| (s.state, s.timewait) == (state, timewait))
        }
    };

    // Half-close: a full FIN_WAIT2 socket, still owned (inode != 0).
    c.client.shutdown(Shutdown::Write).expect("shutdown");
    let fw2 = wait_for("full FIN_WAIT2", client_in(TcpState::FinWait2, false));
    assert_eq!(fw2.cookie, cookie);
    assert_ne!(fw2.inode, 0);
    assert_eq!(one(&dump(false), laddr, caddr).state, TcpState::CloseWait);

    // close() orphans it, and tcp_close turns an orphan in FIN_WAIT2 into a
    // timewait socket with substate FIN_WAIT2 (tcp_fin_timeout <= 60 s).
    drop(c.client);
    let orphan = wait_for("orphaned FIN_WAIT2", client_in(TcpState::FinWait2, true));
    assert_eq!(
        (orphan.cookie, orphan.timer, orphan.inode, orphan.uid),
        (cookie, TimerKind::TimeWait, 0, 0)
    );
    assert!(orphan.expires_ms <= 60_000, "{orphan:?}");
    assert_eq!(ss_cookie("FIN-WAIT-2", cport, port), cookie);

    // The server's FIN moves the same timewait socket to TIME_WAIT.
    assert_eq!(c.server.read(&mut [0u8; 1]).expect("read EOF"), 0);
    drop(c.server);
    let tw = wait_for("TIME_WAIT", client_in(TcpState::TimeWait, true));
    assert_eq!(
        (tw.cookie, tw.timer, tw.inode),
        (cookie, TimerKind::TimeWait, 0)
    );
    assert!(tw.expires_ms > 0 && tw.expires_ms <= 60_000, "{tw:?}");
    assert_eq!(ss_cookie("TIME-WAIT", cport, port), cookie);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn request_socket_reads_as_new_syn_recv() {
    require_root();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let laddr = listener.local_addr().expect("addr");
    // TCP_DEFER_ACCEPT drops the bare final ACK, so the request socket
    // stays in NEW_SYN_RECV while the client is already ESTABLISHED.
    let secs: libc::c_int = 30;
    let len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid fd and an option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            len,
        )
    };
    assert_eq!(rc, 0, "TCP_DEFER_ACCEPT");
    let client = TcpStream::connect(laddr).expect("connect");
    let caddr = client.local_addr().expect("addr");
    let req = wait_for("request socket", |s| find(s, laddr, caddr).first().copied());
    assert_eq!(
        (req.state, req.inode, req.timer, req.timewait),
        (TcpState::NewSynRecv, 0, TimerKind::Retransmit, false)
    );
    assert_eq!(
        ss_cookie("SYN-RECV", laddr.port(), caddr.port()),
        req.cookie
    );
    assert_eq!(one(&dump(false), caddr, laddr).state, TcpState::Established);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn bound_socket_reads_as_bound_inactive() {
    require_root();
    // SAFETY: socket/bind/getsockname on a socket this test owns, with
    // address buffers of the sizes passed.
    let (fd, port) = unsafe {
        let fd = OwnedFd::from_raw_fd(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ));
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len),
            0,
            "bind"
        );
        assert_eq!(
            libc::getsockname(fd.as_raw_fd(), (&raw mut sa).cast(), &mut len),
            0
        );
        (fd, u16::from_be(sa.sin_port))
    };
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let s = one(
        &dump(false),
        local,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    );
    assert_eq!((s.state, s.inode), (TcpState::BoundInactive, inode_of(&fd)));
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn many_sockets_span_many_datagrams_and_reuse_allocates_nothing() {
    require_root();
    const N: usize = 1000;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let laddr = listener.local_addr().expect("addr");
    let held: Vec<_> = (0..N)
        .flat_map(|_| {
            [
                TcpStream::connect(laddr).expect("connect"),
                listener.accept().expect("accept").0,
            ]
        })
        .collect();
    let mut dumper = Dumper::new(DumpOptions {
        with_info: true,
        without_time_wait: false,
    })
    .expect("dumper");
    let mut out = Vec::new();
    dumper.dump_into(&mut out).expect("dump");
    let ours = |s: &&SocketSnapshot| {
        s.state == TcpState::Established && (s.sport == laddr.port() || s.dport == laddr.port())
    };
    assert_eq!(out.iter().filter(ours).count(), held.len());
    let stats = dumper.last_stats();
    assert!(stats.datagrams > 10, "{stats:?}");
    assert_eq!(stats.sockets as usize, out.len());

    // Steady state: with room for newcomers, a dump must not allocate.
    out.reserve(out.len() + 4096);
    COUNTING.with(|c| c.set(true));
    let result = dumper.dump_into(&mut out);
    COUNTING.with(|c| c.set(false));
    result.expect("second dump");
    let allocs = ALLOCS.with(Cell::get);
    assert_eq!(
        allocs,
        0,
        "allocations in a reused dump of {} sockets",
        out.len()
    );
}

/// The one-walk request (both families at once) and one request per family
/// list the same sockets, with and without TIME_WAIT.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn one_walk_and_per_family_dumps_agree() {
    require_root();
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind v4");
    let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind v6");
    let ports: HashSet<u16> = [&v4, &v6]
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    let mut held = Vec::new();
    for l in [&v4, &v6] {
        let addr = l.local_addr().expect("addr");
        for _ in 0..3 {
            held.push(TcpStream::connect(addr).expect("connect"));
            held.push(l.accept().expect("accept").0);
        }
        // One client-closed connection: a TIME_WAIT socket.
        let c = TcpStream::connect(addr).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        drop(c);
        assert_eq!(s.read(&mut [0u8; 1]).expect("eof"), 0);
    }
    let ours = |out: &[SocketSnapshot]| -> HashSet<(u64, TcpState)> {
        out.iter()
            .filter(|s| ports.contains(&s.sport) || ports.contains(&s.dport))
            .map(|s| (s.cookie, s.state))
            .collect()
    };
    for without_time_wait in [false, true] {
        let opts = DumpOptions {
            with_info: true,
            without_time_wait,
        };
        let mut one = Dumper::new(opts).expect("dumper");
        let mut split = Dumper::per_family(opts).expect("dumper");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // Retry across a racing state change of our own sockets (the
        // TIME_WAIT's FIN handshake may still be settling).
        let agreed = (0..20).any(|_| {
            one.dump_into(&mut a).expect("one-walk dump");
            split.dump_into(&mut b).expect("per-family dump");
            ours(&a) == ours(&b) || {
                std::thread::sleep(Duration::from_millis(50));
                false
            }
        });
        assert!(agreed, "{:?} vs {:?}", ours(&a), ours(&b));
        assert!(one.one_walk(), "this kernel serves TCPDIAG_GETSOCK");
        let tw = ours(&a)
            .iter()
            .filter(|(_, st)| *st == TcpState::TimeWait)
            .count();
        let listen = ours(&a)
            .iter()
            .filter(|(_, st)| *st == TcpState::Listen)
            .count();
        assert_eq!(listen, 2, "both families' listeners");
        assert_eq!(tw, if without_time_wait { 0 } else { 2 });
        let est = ours(&a)
            .iter()
            .filter(|(_, st)| *st == TcpState::Established)
            .count();
        assert_eq!(est, held.len());
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().expect(cmd);
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

/// 100k timewait sockets in a private network namespace: checks the recv
/// loop at scale and prints the dump time. `cargo test --test diag -- --ignored`.
#[test]
#[ignore = "slow: makes 100k connections"]
fn dump_100k_sockets_in_private_netns() {
    require_root();
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread's network namespace.
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare(CLONE_NEWNET)"
        );
        // Children inherit this thread's namespace. No TIME_WAIT reuse on
        // loopback, so every connection keeps its timewait socket.
        run("ip", &["link", "set", "lo", "up"]);
        run("sysctl", &["-qw", "net.ipv4.tcp_tw_reuse=0"]);
        let listeners: Vec<_> = (0..8)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind"))
            .collect();
        const N: usize = 100_000;
        for i in 0..N {
            let l = &listeners[i % listeners.len()];
            let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
            let (s, _) = l.accept().expect("accept");
            drop(c); // client closes first: it keeps the timewait socket
            drop(s);
        }
        let mut dumper = Dumper::new(DumpOptions {
            with_info: true,
            without_time_wait: false,
        })
        .expect("dumper");
        let mut out = Vec::new();
        let t = Instant::now();
        dumper.dump_into(&mut out).expect("dump");
        let took = t.elapsed();
        let tw = out.iter().filter(|s| s.timewait).count();
        eprintln!(
            "{} sockets ({tw} timewait) in {took:?}, {:?}",
            out.len(),
            dumper.last_stats()
        );
        assert!(tw >= N * 9 / 10, "expected ~{N} timewait sockets, got {tw}");
    })
    .join()
    .expect("netns thread");
}
