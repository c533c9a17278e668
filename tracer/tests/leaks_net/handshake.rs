//! Stuck handshakes: a connect whose SYN-ACKs are dropped, seen from both
//! ends (SYN_SENT on the client, a request socket on the listening port).
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::common::{Agent, NetnsPair, http_get, metric_value, sh, wait_until};
use crate::support::*;
use socket2::{Domain, Protocol, Socket, Type};

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn connect_whose_syn_acks_are_dropped_is_a_stuck_handshake() {
    let pair = NetnsPair::new("synsent", 62);
    let b_ip: IpAddr = pair.addr_b.parse().expect("addr");
    let listener = NetnsPair::in_ns(&pair.b, move || {
        TcpListener::bind((b_ip, 0)).expect("bind in b")
    });
    let server = SocketAddr::new(b_ip, listener.local_addr().expect("addr").port());
    // a drops what b sends: the SYNs arrive, the SYN-ACKs never do.
    let rule = format!(
        "add table inet tracer_test; add chain inet tracer_test in {{ type filter hook input priority 0; policy accept; }}; \
         add rule inet tracer_test in ip saddr {b_ip} drop"
    );
    sh("ip", &["netns", "exec", &pair.a, "nft", &rule]);
    const ARGS: [&str; 6] = [
        "--handshake-threshold",
        "2s",
        "--reconcile-interval",
        "250ms",
        "--netns",
        "host",
    ];
    // An agent on each side, each following its own namespace only: a sees
    // the SYN_SENT socket, b the request socket.
    let agent_b = NetnsPair::in_ns(&pair.b, || Agent::start(&ARGS));
    let _inside = Inside::enter(&pair.a);
    let agent_a = Agent::start(&ARGS);
    let url = format!("http://{}", agent_a.addr);

    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    sock.set_nonblocking(true).expect("nonblocking");
    match sock.connect(&server.into()) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        other => panic!("non-blocking connect to {server}: {other:?}"),
    }
    let local = sock.local_addr().expect("local").as_socket().expect("inet");
    let started = Instant::now();

    let (code, report, ok) = poll(&url, Duration::from_secs(7), |r| {
        flag_of(&all_flags(r), "stuck_handshake", local, server).is_some()
    });
    assert!(
        ok,
        "connect {local} -> {server} not flagged after {:?}: {report:#}",
        started.elapsed()
    );
    let f = flag_of(&all_flags(&report), "stuck_handshake", local, server).expect("flag");
    assert_eq!(
        (f["reason"].as_str(), f["state"].as_str()),
        (Some("syn_sent"), Some("syn_sent")),
        "{f:#}"
    );
    assert!(f["age_seconds"].as_f64().is_some_and(|a| a >= 2.0), "{f:#}");
    assert_eq!(
        f["age_is_lower_bound"], false,
        "the agent saw the connect: {f:#}"
    );
    let evidence = f["evidence"].as_str().expect("evidence");
    assert!(
        number_after(evidence, "in SYN_SENT for ").is_some_and(|s| s >= 2.0),
        "{evidence}"
    );
    assert!(evidence.contains("SYN retransmits"), "{evidence}");
    assert_owned_by_us(&f, sock.as_raw_fd());
    assert_eq!(code, 1, "a stuck handshake is a leak: exit 1");
    assert_eq!(
        agent_a.metric("tracer_stuck_handshakes{kind=\"syn_sent\"}"),
        1.0
    );
    assert_eq!(
        agent_a.metric("tracer_leaks_flagged_total{kind=\"stuck_handshake\"}"),
        1.0
    );

    // The listener's side: one request socket that needed SYN-ACK retransmits.
    let b_addr = agent_b.addr;
    let deadline = Instant::now() + Duration::from_secs(5);
    let port_flag = loop {
        let report = json_in(&pair.b, b_addr, "/api/v1/leaks");
        let found = all_flags(&report)
            .into_iter()
            .find(|f| f["kind"] == "stuck_handshake" && f["local"] == server.to_string());
        match found {
            Some(f) => break f,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(250)),
            None => panic!("no syn_recv flag on {server} in b: {report:#}"),
        }
    };
    assert_eq!(
        (port_flag["reason"].as_str(), port_flag["count"].as_u64()),
        (Some("syn_recv"), Some(1)),
        "{port_flag:#}"
    );
    assert!(
        port_flag["cookie"].is_null() && port_flag["remote"].is_null(),
        "{port_flag:#}"
    );
    let evidence = port_flag["evidence"].as_str().expect("evidence");
    assert!(
        number_after(evidence, ": ").is_some_and(|n| n >= 1.0),
        "{evidence}"
    );
    assert!(
        evidence.contains("needed SYN-ACK retransmits"),
        "{evidence}"
    );
    let (_, metrics) =
        NetnsPair::in_ns(&pair.b, move || http_get(b_addr, "/metrics")).expect("metrics");
    assert_eq!(
        metric_value(&metrics, "tracer_stuck_handshakes{kind=\"syn_recv\"}"),
        Some(1.0)
    );

    // Let the SYN-ACKs through: the handshake completes and both flags clear.
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &pair.a,
            "nft",
            "delete table inet tracer_test",
        ],
    );
    let (code, report, ok) = poll(&url, Duration::from_secs(20), |r| {
        r["recently_cleared"].as_array().is_some_and(|c| {
            c.iter()
                .any(|f| f["kind"] == "stuck_handshake" && f["local"] == local.to_string())
        })
    });
    assert!(ok, "syn_sent flag did not clear: {report:#}");
    assert_eq!(
        report["recently_cleared"][0]["cleared_how"],
        "socket left syn_sent (now established)"
    );
    assert_eq!(code, 0, "{report:#}");
    let cleared = wait_until(Duration::from_secs(5), || {
        let r = json_in(&pair.b, b_addr, "/api/v1/leaks");
        r["leak_count"] == 0
            && r["recently_cleared"][0]["cleared_how"] == "no stuck handshakes left on the port"
    });
    assert!(cleared, "{:#}", json_in(&pair.b, b_addr, "/api/v1/leaks"));
    drop(listener);
}
