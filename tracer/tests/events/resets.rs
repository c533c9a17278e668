//! Resets and retransmits: an abortive close, and a peer that drops
//! every packet.
use super::*;

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn linger_zero_close_sends_and_receives_reset() {
    let _ns = Netns::enter("linger");
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let (sock, port) = bound(ip);
    let tracer = Events::start(&[
        "--port",
        &port.to_string(),
        "--kind",
        "reset_sent",
        "--kind",
        "reset_received",
        "--kind",
        "state",
    ]);
    sock.listen(16).expect("listen");
    let listener: TcpListener = sock.into();
    let client = TcpStream::connect((ip, port)).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let diag = ss_cookies(port);
    let client_cookie = diag[&(client.local_addr().unwrap(), client.peer_addr().unwrap())];
    let server_cookie = diag[&(server.local_addr().unwrap(), server.peer_addr().unwrap())];
    let client = Socket::from(client);
    client
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(client);
    let mut server = server;
    let mut buf = [0u8; 1];
    assert!(server.read(&mut buf).is_err(), "the server sees the reset");
    drop(server);
    let out = tracer.stop();
    out.assert_none_dropped();

    let sent: Vec<_> = out.of_kind("reset_sent");
    let received: Vec<_> = out.of_kind("reset_received");
    assert_eq!(sent.len(), 1, "{:?}", out.events);
    assert_eq!(sent[0]["cookie"], client_cookie);
    // tcp_close() moves to close before it sends the abortive RST.
    assert_eq!(sent[0]["state"], "close");
    assert_eq!(received.len(), 1, "{:?}", out.events);
    assert_eq!(received[0]["cookie"], server_cookie);
    let paths = out.paths();
    assert_eq!(
        paths[&client_cookie].last().map(String::as_str),
        Some("established->close")
    );
    assert_eq!(
        paths[&server_cookie].last().map(String::as_str),
        Some("established->close")
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn dropped_peer_causes_retransmits() {
    let pair = NetnsPair::new("rtx", 41);
    let server_ip: IpAddr = pair.addr_b.parse().unwrap();
    let (sock, port) = NetnsPair::in_ns(&pair.b, move || bound(server_ip));
    let tracer = Events::start(&["--port", &port.to_string(), "--netns", &pair.a]);
    sock.listen(16).expect("listen");
    let listener: TcpListener = sock.into();
    let mut client = NetnsPair::in_ns(&pair.a, move || {
        TcpStream::connect((server_ip, port)).expect("connect")
    });
    let (_server, _) = listener.accept().expect("accept");
    client.write_all(b"before").expect("write");

    NetnsPair::blackhole(&pair.b);
    client.write_all(b"into the void").expect("write");
    // RTO starts around 200 ms and doubles: expect several within 3 s.
    std::thread::sleep(Duration::from_secs(3));
    let out = tracer.stop();
    out.assert_none_dropped();

    let client_cookie = out
        .events
        .iter()
        .find(|e| e["new_state"] == "syn_sent")
        .and_then(|e| e["cookie"].as_u64())
        .expect("client connect event");
    let rtx: Vec<_> = out
        .of_kind("retransmit")
        .into_iter()
        .filter(|e| e["cookie"] == client_cookie)
        .collect();
    assert!(
        rtx.len() >= 2,
        "expected retransmits of cookie {client_cookie}: {:?}",
        out.events
    );
    for e in &rtx {
        assert_eq!(e["state"], "established");
        assert_eq!(e["daddr"], pair.addr_b);
        assert_eq!(e["dport"], port);
    }
    drop(pair);
}

/// A reset that answers a segment no socket matched (a connect to a port
/// nothing listens on) has no socket of its own, but it is placed in the
/// namespace of the device the segment came in on: `--netns` keeps the one
/// refused in its namespace and leaves out one refused in another.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_reset_for_no_socket_is_placed_in_its_namespace() {
    if !common::kernel_at_least(6, 10) {
        eprintln!("skipped: tcp_send_reset fires for a reset of no socket from Linux 6.10 on");
        return;
    }
    let ns = NamedNetns::new("rstno", &[]);
    let other = NamedNetns::new("rstother", &[]);
    let tracer = Events::start(&["--netns", &ns.name, "--kind", "reset_sent"]);
    let refuse = || {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        // Bound, never listening: the port is taken, and refuses.
        let (_closed, port) = bound(ip);
        let err = TcpStream::connect((ip, port)).expect_err("nothing listens");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    };
    other.run(refuse);
    ns.run(refuse);
    let out = tracer.stop();
    out.assert_none_dropped();
    let resets = out.of_kind("reset_sent");
    // The namespace is new and only this test connects in it: one reset.
    assert_eq!(resets.len(), 1, "{:?}", out.events);
    assert_eq!(resets[0]["cookie"], 0, "no socket: {:?}", resets[0]);
    assert_eq!(resets[0]["netns"], ns.inode, "{:?}", resets[0]);
}
