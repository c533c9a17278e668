//! At risk: idle connections without keepalive, listed as risks (exit 0);
//! the same connection with SO_KEEPALIVE is not.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::common::Netns;
use crate::support::*;
use serde_json::Value;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn idle_without_keepalive_is_a_risk_and_with_keepalive_is_not() {
    let _ns = Netns::enter("atrisk");
    // This namespace only: other tests' namespaces hold idle sockets too.
    let agent = start_agent(&["--idle-threshold", "2s"]);
    let url = format!("http://{}", agent.addr);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");

    // Two connections that carry one message each way, then go quiet.
    let mut conns: Vec<(TcpStream, TcpStream)> = Vec::new();
    for keepalive in [false, true] {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        s.set_keepalive(keepalive).expect("SO_KEEPALIVE");
        s.connect(&addr.into()).expect("connect");
        let mut client: TcpStream = s.into();
        let (mut server, _) = listener.accept().expect("accept");
        SockRef::from(&server)
            .set_keepalive(keepalive)
            .expect("SO_KEEPALIVE");
        client.write_all(b"ping").expect("write");
        server.read_exact(&mut [0u8; 4]).expect("read");
        server.write_all(b"pong").expect("write");
        client.read_exact(&mut [0u8; 4]).expect("read");
        conns.push((client, server));
    }
    let ends = |s: &TcpStream| (s.local_addr().expect("local"), s.peer_addr().expect("peer"));
    let plain = [ends(&conns[0].0), ends(&conns[0].1)];
    let with_keepalive = [ends(&conns[1].0), ends(&conns[1].1)];

    let both_flagged = |r: &Value| {
        plain
            .iter()
            .all(|&(l, p)| flag_of(&all_flags(r), "idle_no_keepalive", l, p).is_some())
    };
    let (code, report, ok) = poll(&url, Duration::from_secs(7), both_flagged);
    assert!(
        ok,
        "idle connection without keepalive not listed: {report:#}"
    );
    // Risks are listed apart from leaks, and do not make the exit status 1.
    assert_eq!(
        (code, report["leak_count"].as_u64()),
        (0, Some(0)),
        "{report:#}"
    );
    assert!(
        report["leaks"].as_array().is_some_and(Vec::is_empty),
        "{report:#}"
    );
    let risks = report["risks"].as_array().expect("risks");
    assert_eq!(
        risks.len(),
        2,
        "both ends of the plain connection, nothing else: {report:#}"
    );
    let fds = [conns[0].0.as_raw_fd(), conns[0].1.as_raw_fd()];
    for (f, fd) in plain
        .iter()
        .map(|&(l, p)| flag_of(risks, "idle_no_keepalive", l, p).expect("risk"))
        .zip(fds)
    {
        assert_eq!(f["state"], "established", "{f:#}");
        let evidence = f["evidence"].as_str().expect("evidence");
        assert!(
            number_after(evidence, "no data received for ").is_some_and(|s| s >= 2.0),
            "{evidence}"
        );
        assert!(evidence.contains("no keepalive timer armed"), "{evidence}");
        assert_owned_by_us(&f, fd);
    }
    assert_eq!(agent.metric("tracer_idle_without_keepalive"), 2.0);

    // A second later, both have been idle even longer; keepalive still is no risk.
    std::thread::sleep(Duration::from_secs(1));
    let (_, report) = tracer_leaks(&url);
    let flags = all_flags(&report);
    for (l, p) in with_keepalive {
        assert!(
            flag_of(&flags, "idle_no_keepalive", l, p).is_none(),
            "{l}->{p} has SO_KEEPALIVE: {report:#}"
        );
    }
    assert_eq!(
        agent.metric("tracer_leaks_flagged_total{kind=\"idle_no_keepalive\"}"),
        2.0
    );

    // Arming keepalive on the plain connection clears its risks.
    for s in [&conns[0].0, &conns[0].1] {
        SockRef::from(s).set_keepalive(true).expect("SO_KEEPALIVE");
    }
    let (code, report, ok) = poll(&url, Duration::from_secs(5), |r| {
        r["risks"].as_array().is_some_and(Vec::is_empty)
            && r["recently_cleared"]
                .as_array()
                .is_some_and(|c| c.len() == 2)
    });
    assert!(
        ok,
        "risks did not clear once keepalive was armed: {report:#}"
    );
    for f in report["recently_cleared"].as_array().expect("cleared") {
        assert_eq!(
            f["cleared_how"], "traffic resumed or keepalive armed",
            "{f:#}"
        );
    }
    assert_eq!(code, 0);
    assert_eq!(agent.metric("tracer_idle_without_keepalive"), 0.0);
}

/// A connection we half-closed (`shutdown(SHUT_WR)`) whose peer never
/// closes its side: our socket sits in FIN_WAIT2, held, with no timer to
/// end it. Quiet past the idle threshold it is at risk, named with its
/// process and fd; the peer's close clears it.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_half_closed_connection_whose_peer_never_closes_is_at_risk() {
    let _ns = Netns::enter("heldfw2");
    let agent = start_agent(&["--idle-threshold", "2s"]);
    let url = format!("http://{}", agent.addr);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"request").expect("write");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown(SHUT_WR)");
    let mut got = Vec::new();
    server.read_to_end(&mut got).expect("read to EOF");
    assert_eq!(got, b"request");
    let (local, peer) = (
        client.local_addr().expect("local"),
        client.peer_addr().expect("peer"),
    );

    let (code, report, ok) = poll(&url, Duration::from_secs(7), |r| {
        r["risks"]
            .as_array()
            .and_then(|risks| flag_of(risks, "idle_no_keepalive", local, peer))
            .is_some()
    });
    assert!(ok, "a held FIN_WAIT2 socket not listed at risk: {report:#}");
    assert_eq!(code, 0, "a risk is not a leak: {report:#}");
    let risks = report["risks"].as_array().expect("risks");
    assert_eq!(risks.len(), 1, "only our half-closed end: {report:#}");
    let f = flag_of(risks, "idle_no_keepalive", local, peer).expect("risk");
    assert_eq!(f["state"], "fin_wait2", "{f:#}");
    let evidence = f["evidence"].as_str().expect("evidence");
    assert!(
        evidence.starts_with("in FIN_WAIT2 and held: the process shut its side down"),
        "{evidence}"
    );
    assert_owned_by_us(&f, client.as_raw_fd());
    let (_, text) = crate::common::tracer_leaks(&["--agent", &url]);
    assert!(text.contains("in FIN_WAIT2 and held"), "{text}");

    // The peer closes at last: our side moves on to TIME_WAIT.
    drop(server);
    let (_, report, ok) = poll(&url, Duration::from_secs(5), |r| {
        r["risks"].as_array().is_some_and(Vec::is_empty)
            && r["recently_cleared"]
                .as_array()
                .and_then(|c| flag_of(c, "idle_no_keepalive", local, peer))
                .is_some()
    });
    assert!(
        ok,
        "the risk did not clear when the peer closed: {report:#}"
    );
    let cleared = report["recently_cleared"].as_array().expect("cleared");
    let how = flag_of(cleared, "idle_no_keepalive", local, peer).expect("cleared")["cleared_how"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        how.contains("TIME_WAIT") || how.contains("time_wait"),
        "{how}"
    );
}
