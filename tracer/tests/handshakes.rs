//! Handshake outcomes against real connections: connects that succeed
//! (both ends counted, the client's latency timed), that a closed port
//! refuses, that time out against a peer dropping every SYN, and that the
//! application gives up on; on the server's side, Fast Open connections
//! reset before their handshake ended. The agent follows only the test's
//! own client (or server) namespace (`--netns NAME`), and serves from the
//! host's, so its own HTTP connections are not counted and the counts are
//! exact.
mod common;
#[path = "handshakes/fast_open.rs"]
mod fast_open;

use std::{
    io::{ErrorKind, Read as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::{Agent, NetnsPair, metric_lines, metric_value, sh, wait_until};

/// The series the test reads, and how many of each it expects.
const EXPECTED: [(&str, f64); 10] = [
    (
        "tracer_tcp_connections_established_total{role=\"client\"}",
        5.0,
    ),
    (
        "tracer_tcp_connections_established_total{role=\"server\"}",
        5.0,
    ),
    ("tracer_tcp_handshake_seconds_count{role=\"client\"}", 5.0),
    (
        "tracer_tcp_handshake_failures_total{role=\"client\",reason=\"refused\"}",
        3.0,
    ),
    (
        "tracer_tcp_handshake_failures_total{role=\"client\",reason=\"timed_out\"}",
        2.0,
    ),
    (
        "tracer_tcp_handshake_failures_total{role=\"client\",reason=\"aborted\"}",
        1.0,
    ),
    (
        "tracer_tcp_handshake_failures_total{role=\"client\",reason=\"unreachable\"}",
        0.0,
    ),
    (
        "tracer_tcp_handshake_failures_total{role=\"server\",reason=\"reset\"}",
        0.0,
    ),
    (
        "tracer_tcp_handshake_failures_total{role=\"server\",reason=\"timed_out\"}",
        0.0,
    ),
    (
        "tracer_tcp_handshake_failures_total{role=\"server\",reason=\"aborted\"}",
        0.0,
    ),
];

fn values(agent: &Agent) -> (Vec<f64>, String) {
    let text = agent.get("/metrics");
    let v = EXPECTED
        .iter()
        .map(|(s, _)| metric_value(&text, s).unwrap_or_else(|| panic!("no series {s}")))
        .collect();
    (v, text)
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn refused_timed_out_aborted_and_established_connects_are_counted_exactly() {
    // The kernel skips a program run that would nest inside another on
    // the same CPU (`recursion_misses`, counted in
    // `tracer_events_lost_total`): a round in which the agent reports a
    // loss, or a socket its dumps found closed without its event
    // (`vanished`), and miscounts is run again with a fresh agent, at most
    // three times; a miscount without either fails.
    for round in 1..=3 {
        if counted_exactly(round == 3) {
            return;
        }
    }
}

/// One round of [`refused_timed_out_aborted_and_established_connects_are_counted_exactly`]:
/// false when the counts missed and the agent counted a lost event (and
/// `final_round` is false), to run again.
fn counted_exactly(final_round: bool) -> bool {
    // a: the clients (and a loopback server); b: a peer that drops every
    // packet, so a's SYNs to it go unanswered.
    let pair = NetnsPair::new("hs", 71);
    // One SYN retransmit, not six: a connect times out in ~3 s, not ~2 min.
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &pair.a,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_syn_retries=1",
        ],
    );
    NetnsPair::blackhole(&pair.b);
    let agent = Agent::start(&["--netns", &pair.a]);
    let (before, _) = values(&agent);
    let lost = agent.metric("tracer_events_lost_total");
    let vanished_series = "tracer_reconcile_corrections_total{reason=\"vanished\"}";
    let vanished = agent.metric(vanished_series);

    let silent: SocketAddr = format!("{}:80", pair.addr_b).parse().expect("addr");
    let took = NetnsPair::in_ns(&pair.a, move || {
        // Five connections that complete, on loopback: both ends counted.
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut keep = Vec::new();
        for _ in 0..5 {
            keep.push(TcpStream::connect(addr).expect("connect"));
            keep.push(listener.accept().expect("accept").0);
        }
        drop(keep);

        // Three refused: a loopback port nobody listens on answers with a RST.
        let closed = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        for _ in 0..3 {
            let err = TcpStream::connect(closed).expect_err("nobody listens");
            assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        }

        // One aborted: the application gives up after 200 ms, before the
        // first SYN retransmit (1 s).
        let err = TcpStream::connect_timeout(&silent, Duration::from_millis(200))
            .expect_err("the peer drops SYNs");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");

        // Two timed out by the kernel, side by side.
        let start = Instant::now();
        let waits: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || TcpStream::connect(silent)))
            .collect();
        for w in waits {
            // The threads were spawned from a thread inside namespace a,
            // and a new thread starts in its creator's namespace.
            let err = w.join().expect("thread").expect_err("the peer drops SYNs");
            assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        }
        start.elapsed()
    });
    assert!(
        took < Duration::from_secs(20),
        "tcp_syn_retries=1 should time a connect out in ~3 s, took {took:?}"
    );

    let want: Vec<f64> = before
        .iter()
        .zip(EXPECTED)
        .map(|(b, (_, n))| b + n)
        .collect();
    let mut last = String::new();
    let settled = wait_until(Duration::from_secs(10), || {
        let (got, text) = values(&agent);
        last = text;
        got == want
    });
    let prefixes = ["tracer_tcp_connections_established", "tracer_tcp_handshake"];
    let lost_now = agent.metric("tracer_events_lost_total");
    let vanished_now = agent.metric(vanished_series);
    if !settled && (lost_now > lost || vanished_now > vanished) && !final_round {
        eprintln!(
            "{} events lost, {} sockets vanished without their close, run again",
            lost_now - lost,
            vanished_now - vanished
        );
        return false;
    }
    assert!(
        settled,
        "want {want:?} for {:?}, got:\n{}\nevents lost {lost} -> {lost_now}; vanished {}",
        EXPECTED.map(|(s, _)| s),
        metric_lines(&last, &prefixes),
        agent.metric(vanished_series)
    );
    // Nothing more arrives later (each outcome is counted once).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(values(&agent).0, want);
    // Loopback handshakes take microseconds: all five under 10 ms.
    let fast = metric_value(
        &last,
        "tracer_tcp_handshake_seconds_bucket{le=\"0.01\",role=\"client\"}",
    )
    .expect("bucket");
    assert_eq!(fast, want[2], "{}", metric_lines(&last, &prefixes));
    eprintln!("{}", metric_lines(&last, &prefixes));

    let summary = agent.json("/api/v1/summary");
    let hs = &summary["handshakes"];
    eprintln!("{}", serde_json::to_string_pretty(hs).expect("json"));
    assert_eq!(hs["established"]["client"], 5, "{hs}");
    assert_eq!(hs["established"]["server"], 5, "{hs}");
    assert_eq!(hs["failed"]["client"]["refused"], 3, "{hs}");
    assert_eq!(hs["failed"]["client"]["timed_out"], 2, "{hs}");
    assert_eq!(hs["failed"]["client"]["aborted"], 1, "{hs}");
    let p = &hs["latency_seconds"]["client"];
    assert_eq!(p["count"], 5, "{hs}");
    assert!(p["max"].as_f64().is_some_and(|m| m < 0.01), "{hs}");
    agent.stop();
    true
}

/// Ports run out: with two local ports, both in TIME_WAIT to the one
/// destination, `connect()` fails with EADDRNOTAVAIL before any SYN. Each
/// counts as `no_local_port`, not as an application that gave up.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_connect_with_no_free_local_port_counts_as_no_local_port() {
    let pair = NetnsPair::new("hsport", 74);
    for setting in [
        "net.ipv4.ip_local_port_range=40000 40001",
        "net.ipv4.tcp_tw_reuse=0",
    ] {
        sh("ip", &["netns", "exec", &pair.a, "sysctl", "-qw", setting]);
    }
    let agent = Agent::start(&["--netns", &pair.a]);
    let read = |agent: &Agent| -> [f64; 2] {
        let text = agent.get("/metrics");
        ["no_local_port", "aborted"].map(|r| {
            let series =
                format!("tracer_tcp_handshake_failures_total{{role=\"client\",reason=\"{r}\"}}");
            metric_value(&text, &series).expect("series")
        })
    };
    let before = read(&agent);
    let lost = agent.metric("tracer_events_lost_total");
    const N: usize = 3;
    let errors = NetnsPair::in_ns(&pair.a, || {
        // Outside the range, so that the listener takes neither port.
        let listener = TcpListener::bind("127.0.0.1:8080").expect("listen");
        for _ in 0..2 {
            let client = TcpStream::connect("127.0.0.1:8080").expect("connect");
            let (server, _) = listener.accept().expect("accept");
            // The client closes first, and keeps the TIME_WAIT.
            drop(client);
            drop(server);
        }
        (0..N)
            .map(|_| {
                TcpStream::connect("127.0.0.1:8080")
                    .expect_err("no local port left")
                    .raw_os_error()
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(errors, [Some(libc::EADDRNOTAVAIL); N]);
    let want = [before[0] + N as f64, before[1]];
    let mut got = before;
    let counted = wait_until(Duration::from_secs(10), || {
        got = read(&agent);
        got == want
    });
    assert!(
        counted,
        "no_local_port and aborted: want {want:?}, got {got:?}; events lost {lost} -> {}",
        agent.metric("tracer_events_lost_total")
    );
}

/// A peer whose firewall answers SYNs with ICMP host-unreachable: each
/// connect fails with EHOSTUNREACH and is counted once, as `unreachable`
/// (never `refused`, `timed_out` or `aborted`): the `syn_sent -> close`
/// event carries the socket's error. Over a veth the first ICMP comes back
/// inside `connect()`, while it holds the socket, and is only noted; the
/// next one, answering the 1 s retransmit, closes it with that error.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_icmp_unreachable_connect_is_one_failure_not_a_refusal() {
    let pair = NetnsPair::new("hsicmp", 72);
    NetnsPair::blackhole(&pair.b);
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "nft",
            "insert rule inet tracer_test in tcp dport 81 reject with icmpx type host-unreachable",
        ],
    );
    let agent = Agent::start(&["--netns", &pair.a]);
    let series = |reason: &str| {
        format!("tracer_tcp_handshake_failures_total{{role=\"client\",reason=\"{reason}\"}}")
    };
    let read = |agent: &Agent| -> Vec<f64> {
        let text = agent.get("/metrics");
        ["refused", "timed_out", "aborted", "unreachable"]
            .map(|r| metric_value(&text, &series(r)).expect("series"))
            .to_vec()
    };
    let target: SocketAddr = format!("{}:81", pair.addr_b).parse().expect("addr");
    const N: usize = 2;
    // The kernel skips a program run that would nest inside another on
    // the same CPU (`recursion_misses`, counted in
    // `tracer_events_lost_total`): a round in which the agent reports a
    // loss is run again, at most three times; a miscount without one
    // fails. (A socket a dump did not list is closed only by the next dump
    // without it, so a close still on its way when a dump passed is
    // counted, not judged `vanished`.)
    let vanished =
        |agent: &Agent| agent.metric("tracer_reconcile_corrections_total{reason=\"vanished\"}");
    for round in 1..=3 {
        let before = read(&agent);
        let lost = agent.metric("tracer_events_lost_total");
        let gone = vanished(&agent);
        NetnsPair::in_ns(&pair.a, move || {
            for _ in 0..N {
                let err = TcpStream::connect(target).expect_err("the peer rejects");
                assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");
            }
        });
        let mut got = before.clone();
        let settled = wait_until(Duration::from_secs(10), || {
            got = read(&agent);
            got[3] - before[3] == N as f64
        });
        let lost_now = agent.metric("tracer_events_lost_total");
        let gone_now = vanished(&agent);
        if !settled && lost_now > lost && round < 3 {
            eprintln!("round {round}: {} events lost, run again", lost_now - lost);
            continue;
        }
        assert!(
            settled,
            "before {before:?}, after {got:?}; events lost {lost} -> {lost_now}; \
             vanished {gone} -> {gone_now}; sockets: {}",
            agent.get("/api/v1/sockets")
        );
        std::thread::sleep(Duration::from_millis(500));
        let after = read(&agent);
        assert_eq!(after[3] - before[3], N as f64, "{before:?} -> {after:?}");
        assert_eq!(
            after[..3],
            before[..3],
            "an ICMP error is neither a refusal, a timeout nor the application's close"
        );
        break;
    }
    agent.stop();
}

/// A server's connection reset before its handshake ended is counted once,
/// as `reset`, and the other server reasons stay 0. Only TCP Fast Open
/// gives a Linux server such a socket: a SYN with a cookie and data makes
/// the listener create it in SYN_RECV and queue it for `accept()` at once.
/// The client's ACK of the SYN-ACK is dropped by its own firewall, so the
/// server's socket stays in SYN_RECV (seen with TCP_INFO) until the client
/// closes with SO_LINGER 0: its RST (in window, RST|ACK passes the rule)
/// moves the socket `syn_recv -> close` with ECONNRESET, the error the
/// server's `read()` returns.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_fast_open_connection_reset_in_syn_recv_is_a_server_reset() {
    // a: the client; b: the server, the only namespace the agent follows.
    let pair = NetnsPair::new("hstfo", 73);
    fast_open::enable(&pair.a);
    fast_open::enable(&pair.b);
    let agent = Agent::start(&["--netns", &pair.b]);
    let series = [
        "tracer_tcp_connections_established_total{role=\"server\"}",
        "tracer_tcp_handshake_failures_total{role=\"server\",reason=\"reset\"}",
        "tracer_tcp_handshake_failures_total{role=\"server\",reason=\"timed_out\"}",
        "tracer_tcp_handshake_failures_total{role=\"server\",reason=\"aborted\"}",
    ];
    let read = |agent: &Agent| -> Vec<f64> {
        let text = agent.get("/metrics");
        series
            .map(|s| metric_value(&text, s).unwrap_or_else(|| panic!("no series {s}")))
            .to_vec()
    };
    let before = read(&agent);

    let addr: SocketAddr = format!("{}:0", pair.addr_b).parse().expect("addr");
    let listener = NetnsPair::in_ns(&pair.b, move || fast_open::listener(addr));
    let server = listener.local_addr().expect("addr");

    // The first connection's SYN asks for a cookie; its handshake completes
    // as any other (one server connection established). The server closes
    // first: the client's FIN carries its last ACK, so the rule added next,
    // dropping bare ACKs, leaves this connection's close alone.
    let mut client = NetnsPair::in_ns(&pair.a, move || {
        fast_open::connect(server, b"cookie?", false)
    });
    let (mut conn, _) = listener.accept().expect("accept");
    let mut buf = [0u8; 16];
    let n = conn.read(&mut buf).expect("read");
    assert_eq!(&buf[..n], b"cookie?");
    drop(conn);
    assert_eq!(client.read(&mut buf).expect("read EOF"), 0);
    drop(client);

    fast_open::drop_bare_acks_to(&pair.a, server.port());
    const N: usize = 2;
    for _ in 0..N {
        let client = NetnsPair::in_ns(&pair.a, move || {
            fast_open::connect(server, b"in the SYN", true)
        });
        // The SYN-ACK arrived; the ACK that answered it was dropped.
        assert_eq!(fast_open::tcp_state(&client), fast_open::ESTABLISHED);
        let (mut conn, _) = listener.accept().expect("accept");
        assert_eq!(
            fast_open::tcp_state(&conn),
            fast_open::SYN_RECV,
            "the server's socket should wait in SYN_RECV: made by a Fast Open SYN, its ACK dropped"
        );
        let n = conn.read(&mut buf).expect("read the SYN's data");
        assert_eq!(&buf[..n], b"in the SYN");
        drop(client);
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let err = conn.read(&mut buf).expect_err("the client reset");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    }

    let want: Vec<f64> = before
        .iter()
        .zip([1.0, N as f64, 0.0, 0.0])
        .map(|(b, n)| b + n)
        .collect();
    let mut got = before.clone();
    let settled = wait_until(Duration::from_secs(10), || {
        got = read(&agent);
        got == want
    });
    assert!(settled, "want {want:?} for {series:?}, got {got:?}");
    // Nothing more arrives later (each reset is counted once).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&agent), want, "{series:?}");
    drop(listener);
    agent.stop();
}
