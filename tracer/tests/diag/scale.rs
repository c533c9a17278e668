//! Many sockets: multi-datagram dumps without allocating, one walk
//! against per-family dumps, and (opt-in) 100k sockets.
use super::*;

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
