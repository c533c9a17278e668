//! Stuck handshakes: a connect whose SYN-ACKs are dropped, seen from both
//! ends (SYN_SENT on the client, a request socket on the listening port),
//! and a listener whose process stops accepting.
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::common::{
    NO_AGENT, Netns, NetnsPair, NotAccepting, http_get, metric_value, sh, tracer_leaks_json,
    wait_until,
};
use crate::support::*;
use serde_json::Value;
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
    const ARGS: [&str; 2] = ["--handshake-threshold", "2s"];
    // An agent on each side, each following its own namespace only: a sees
    // the SYN_SENT socket, b the request socket.
    let agent_b = NetnsPair::in_ns(&pair.b, || start_agent(&ARGS));
    let _inside = Inside::enter(&pair.a);
    let agent_a = start_agent(&ARGS);
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
    // The socket API finds it by its local port, which its syn_sent event
    // did not carry.
    let found = agent_a.json(&format!(
        "/api/v1/sockets?state=syn_sent&port={}",
        local.port()
    ));
    assert_eq!(
        (found.as_array().map(Vec::len), found[0]["sport"].as_u64()),
        (Some(1), Some(u64::from(local.port()))),
        "{found:#}"
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

/// A process that stops accepting: its listener's queue fills (a backlog
/// of 1 holds two connections), the kernel drops further SYNs, and no
/// request socket is left for the `syn_recv` flag. The agent flags the
/// listener itself, naming this process and the listener's fd; a snapshot
/// without an agent names it too; accepting clears the flag.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_listener_that_stops_accepting_is_flagged_with_its_process() {
    let _ns = Netns::enter("acceptq");
    let agent = start_agent(&["--handshake-threshold", "2s"]);
    let url = format!("http://{}", agent.addr);
    let queue = NotAccepting::start(([127, 0, 0, 1], 0).into(), 4);
    let (listener, addr) = (&queue.listener, queue.addr);
    let mine = |r: &Value| {
        all_flags(r)
            .into_iter()
            .find(|f| f["reason"] == "accept_queue_full" && f["local"] == addr.to_string())
    };
    let started = Instant::now();
    let (code, report, ok) = poll(&url, Duration::from_secs(8), |r| mine(r).is_some());
    assert!(
        ok,
        "{addr} not flagged after {:?}: {report:#}",
        started.elapsed()
    );
    let f = mine(&report).expect("flag");
    assert_eq!(
        (f["kind"].as_str(), f["state"].as_str()),
        (Some("stuck_handshake"), Some("listen")),
        "{f:#}"
    );
    assert!(
        f["cookie"].is_u64() && f["remote"].is_null(),
        "about the listener: {f:#}"
    );
    assert!(f["age_seconds"].as_f64().is_some_and(|a| a >= 2.0), "{f:#}");
    let evidence = f["evidence"].as_str().expect("evidence");
    assert!(
        evidence.contains(": 2 connections wait for accept(), backlog 1;"),
        "{evidence}"
    );
    assert_owned_by_us(&f, listener.as_raw_fd());
    assert_eq!(code, 1, "a full accept queue is a leak: exit 1");
    assert_eq!(
        agent.metric("tracer_stuck_handshakes{kind=\"accept_queue_full\"}"),
        1.0
    );

    // Without an agent: a snapshot sees the full queue as it is now.
    let (code, snap) = tracer_leaks_json(&["--agent", NO_AGENT, "--netns", "host"]);
    let s = mine(&snap).unwrap_or_else(|| panic!("snapshot: {snap:#}"));
    assert!(s["age_seconds"].is_null(), "{s:#}");
    assert_owned_by_us(&s, listener.as_raw_fd());
    assert_eq!(code, 1);

    // The process accepts again: every waiting connection, and those whose
    // SYNs the kernel dropped as they come back.
    listener.set_nonblocking(true).expect("nonblocking");
    let mut accepted = Vec::new();
    // (Clients whose SYNs were dropped may still be flagged in SYN_SENT
    // until their next retransmit: the exit status is not judged here.)
    let (_, report, ok) = poll(&url, Duration::from_secs(10), |r| {
        while let Ok((s, _)) = listener.accept() {
            accepted.push(s);
        }
        r["recently_cleared"].as_array().is_some_and(|c| {
            c.iter()
                .any(|f| f["reason"] == "accept_queue_full" && f["local"] == addr.to_string())
        })
    });
    assert!(ok, "{addr} not cleared: {report:#}");
    let cleared = report["recently_cleared"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["reason"] == "accept_queue_full")
        .expect("cleared");
    assert_eq!(
        cleared["cleared_how"],
        "the process accepted: its accept queue has room again"
    );
    drop((accepted, queue));
}

/// A connection its peer closed before the process accepted it: CLOSE_WAIT
/// in the listener's accept queue, with no file of its own. The flag names
/// the process that should accept it (the listener's, with the listener's
/// fd), with and without an agent; nothing could have read it.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_connection_closed_before_accept_is_the_listeners_processs_leak() {
    let _ns = Netns::enter("notacc");
    let agent = start_agent(&["--close-wait-threshold", "1s"]);
    let url = format!("http://{}", agent.addr);
    let mut queue = NotAccepting::start(([127, 0, 0, 1], 0).into(), 1);
    let addr = queue.addr;
    let client = queue.clients.pop().expect("a client");
    let client_addr = wait_until(Duration::from_secs(5), || {
        client.peer_addr().is_ok() && client.take_error().ok().flatten().is_none()
    });
    assert!(client_addr, "the client did not connect");
    let from = client
        .local_addr()
        .expect("local")
        .as_socket()
        .expect("inet");
    drop(client);
    let mine = |r: &Value| {
        all_flags(r).into_iter().find(|f| {
            f["kind"] == "close_wait"
                && f["local"] == addr.to_string()
                && f["remote"] == from.to_string()
        })
    };
    let (code, report, ok) = poll(&url, Duration::from_secs(8), |r| mine(r).is_some());
    assert!(ok, "not flagged: {report:#}");
    let f = mine(&report).expect("flag");
    assert_eq!(f["reason"], "not_accepted", "{f:#}");
    assert!(f["read_to_end"].is_null(), "{f:#}");
    assert!(
        f["evidence"]
            .as_str()
            .is_some_and(|e| e.ends_with("never accepted: it waits in the listener's accept queue")),
        "{f:#}"
    );
    assert_owned_by_us(&f, queue.listener.as_raw_fd());
    assert_eq!(code, 1);

    // Without an agent: the same, at once (it cannot send: no wait for quiet).
    let (code, snap) = tracer_leaks_json(&["--agent", NO_AGENT, "--netns", "host"]);
    let s = mine(&snap).unwrap_or_else(|| panic!("snapshot: {snap:#}"));
    assert_eq!(s["reason"], "not_accepted", "{s:#}");
    assert_owned_by_us(&s, queue.listener.as_raw_fd());
    assert_eq!(code, 1);

    // `tracer port` names the listener's process on that connection too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args([
            "port",
            &addr.port().to_string(),
            "--netns",
            "host",
            "--json",
        ])
        .args(["--agent", NO_AGENT])
        .output()
        .expect("tracer port");
    let port: Value = serde_json::from_slice(&out.stdout).expect("port JSON");
    let sockets = port["namespaces"][0]["sockets"].as_array().cloned();
    let queued = sockets
        .iter()
        .flatten()
        .find(|s| s["peer"] == from.to_string())
        .unwrap_or_else(|| panic!("{port:#}"));
    assert_eq!(queued["not_accepted"], true, "{queued:#}");
    assert_eq!(
        queued["listener_owners"][0]["pid"],
        std::process::id(),
        "{queued:#}"
    );
    assert_eq!(
        queued["listener_owners"][0]["fd"],
        queue.listener.as_raw_fd(),
        "{queued:#}"
    );
    drop(queue);
}

/// Two listeners on one address with `SO_REUSEPORT`, as workers share a
/// port: the kernel puts each connection in one of their queues and
/// sock_diag does not say which, so a connection closed before accept
/// names both listeners' fds as its owners, from the agent and from a
/// snapshot alike.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_connection_not_accepted_names_every_reuseport_listener() {
    let _ns = Netns::enter("notaccrp");
    let agent = start_agent(&["--close-wait-threshold", "1s"]);
    let url = format!("http://{}", agent.addr);
    let tcp = || Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let listen = |at: SocketAddr| {
        let l = tcp();
        l.set_reuse_port(true).expect("SO_REUSEPORT");
        l.bind(&at.into()).expect("bind");
        l.listen(8).expect("listen");
        l
    };
    let first = listen(([127, 0, 0, 1], 0).into());
    let addr = first
        .local_addr()
        .expect("local")
        .as_socket()
        .expect("inet");
    let second = listen(addr);
    let fds = [first.as_raw_fd(), second.as_raw_fd()];
    // Enough connections that both queues are likely to hold one; each
    // flag names both listeners whichever holds it.
    let mut from = Vec::new();
    for _ in 0..4 {
        let c = std::net::TcpStream::connect(addr).expect("connect");
        from.push(c.local_addr().expect("local").to_string());
    }
    let ours = |r: &Value| -> Vec<Value> {
        all_flags(r)
            .into_iter()
            .filter(|f| {
                f["kind"] == "close_wait"
                    && f["local"] == addr.to_string()
                    && from.iter().any(|p| f["remote"] == *p)
            })
            .collect()
    };
    let check = |flags: &[Value]| {
        for f in flags {
            assert_eq!(f["reason"], "not_accepted", "{f:#}");
            for fd in fds {
                assert_owned_by_us(f, fd);
            }
        }
    };
    let (_, report, ok) = poll(&url, Duration::from_secs(8), |r| ours(r).len() == 4);
    assert!(ok, "not all flagged: {report:#}");
    check(&ours(&report));
    let (_, snap) = tracer_leaks_json(&["--agent", NO_AGENT, "--netns", "host"]);
    let flags = ours(&snap);
    assert_eq!(flags.len(), 4, "{snap:#}");
    check(&flags);
    drop((first, second));
}
