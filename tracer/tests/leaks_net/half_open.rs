//! Half-open: the peer vanished (its namespace drops everything) while we
//! send, or while our keepalive probes go unanswered.
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::common::{NO_AGENT, NetnsPair, sh, tracer_leaks_json};
use crate::support::*;
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn half_open_peer_vanished_is_flagged_and_a_busy_neighbour_is_not() {
    // a holds the surviving sockets (and the agent); b is a healthy peer;
    // c is the peer that vanishes.
    let pair = NetnsPair::new("hopen", 60);
    let spur = Spur::new(&pair.a, "hopen", 61);
    let _inside = Inside::enter(&pair.a);
    let agent = start_agent(&["--half-open-threshold", "2s"]);
    let url = format!("http://{}", agent.addr);
    let stop = Stop::default();

    // The busy neighbour: a round trip every 5 ms through an echo server in b.
    let b_ip: IpAddr = pair.addr_b.parse().expect("addr");
    let listener = NetnsPair::in_ns(&pair.b, move || {
        TcpListener::bind((b_ip, 0)).expect("bind in b")
    });
    let b_port = listener.local_addr().expect("addr").port();
    let _echo = echo_server(listener, stop.0.clone());
    let mut healthy = TcpStream::connect((b_ip, b_port)).expect("connect to b");
    let healthy_ends = (
        healthy.local_addr().expect("local"),
        healthy.peer_addr().expect("peer"),
    );
    let trips = Arc::new(AtomicU64::new(0));
    let (t, s) = (trips.clone(), stop.0.clone());
    let _busy = std::thread::spawn(move || {
        let mut buf = [7u8; 512];
        // An error ends the loop; the test then sees the round trips stop.
        while !s.load(Relaxed)
            && healthy
                .write_all(&buf)
                .and_then(|()| healthy.read_exact(&mut buf))
                .is_ok()
        {
            t.fetch_add(1, Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    // The doomed connection carries data both ways, then c drops everything.
    let c_ip = spur.addr_far;
    let dead_listener = NetnsPair::in_ns(&spur.far, move || {
        TcpListener::bind((c_ip, 0)).expect("bind in c")
    });
    let c_port = dead_listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect((c_ip, c_port)).expect("connect to c");
    let (mut peer, _) = dead_listener.accept().expect("accept");
    client.write_all(b"hello").expect("write");
    peer.read_exact(&mut [0u8; 5]).expect("read");
    peer.write_all(b"world").expect("write");
    client.read_exact(&mut [0u8; 5]).expect("read");
    let ends = (
        client.local_addr().expect("local"),
        client.peer_addr().expect("peer"),
    );
    // Quiet for a while first: the stall's age is how long the data has
    // waited for its ACK, not this idle spell before it.
    const IDLE: Duration = Duration::from_secs(4);
    std::thread::sleep(IDLE);
    NetnsPair::blackhole(&spur.far);
    client.write_all(&[1u8; 4096]).expect("write into the void");
    let vanished = Instant::now();

    // Threshold (2 s) + the first RTO + a few seconds.
    let (code, report, ok) = poll(&url, Duration::from_secs(8), |r| {
        flag_of(&all_flags(r), "half_open", ends.0, ends.1).is_some()
    });
    assert!(
        ok,
        "not flagged half_open {:?} after the peer vanished: {report:#}",
        vanished.elapsed()
    );
    let f = flag_of(&all_flags(&report), "half_open", ends.0, ends.1).expect("flag");
    assert_eq!(
        (f["reason"].as_str(), f["state"].as_str()),
        (Some("retransmitting"), Some("established")),
        "{f:#}"
    );
    let evidence = f["evidence"].as_str().expect("evidence");
    let no_ack = number_after(evidence, "no ACK for ")
        .unwrap_or_else(|| panic!("no ACK time in {evidence:?}"));
    let unacked = number_after(evidence, "with ")
        .unwrap_or_else(|| panic!("no unacked count in {evidence:?}"));
    let head = number_after(evidence, "retransmit timer fired ")
        .unwrap_or_else(|| panic!("no retransmits in {evidence:?}"));
    assert!(no_ack >= 2.0 && unacked >= 1.0 && head >= 1.0, "{evidence}");
    let age = f["age_seconds"].as_f64().expect("age");
    assert!(
        age >= 2.0 && age <= vanished.elapsed().as_secs_f64() + 0.5,
        "age {age} of a stall {:?} old: {f:#}",
        vanished.elapsed()
    );
    assert!(
        no_ack >= age + IDLE.as_secs_f64() - 0.5 && evidence.contains(", for the data sent "),
        "the idle spell is in the silence, not the age: {f:#}"
    );
    assert_owned_by_us(&f, client.as_raw_fd());
    assert_eq!(code, 1, "a half-open connection is a leak: exit 1");

    // The busy neighbour kept talking and was never flagged; nothing else was.
    let before = trips.load(Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        trips.load(Relaxed) > before + 20,
        "the healthy connection stalled"
    );
    let (_, report) = tracer_leaks(&url);
    let flags = all_flags(&report);
    assert!(
        flags
            .iter()
            .all(|f| f["local"] != healthy_ends.0.to_string()),
        "busy healthy connection {healthy_ends:?} flagged: {report:#}"
    );
    assert_eq!(flags.len(), 1, "only the half-open socket: {report:#}");
    assert_eq!(
        agent.metric("tracer_half_open_connections{reason=\"retransmitting\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("tracer_leaks_flagged_total{kind=\"half_open\"}"),
        1.0
    );

    // Without the agent, one snapshot suspects it too, once the timeouts
    // its retransmit timer has spent add up to the default threshold
    // (10 s: 0.2 + 0.4 + ... + 6.4 s, some 13 s after it vanished).
    let mut snap = serde_json::Value::Null;
    let seen = crate::common::wait_until(Duration::from_secs(30), || {
        snap = tracer_leaks_json(&["--agent", NO_AGENT, "--netns", "host"]).1;
        flag_of(&all_flags(&snap), "half_open", ends.0, ends.1).is_some()
    });
    assert!(seen, "the snapshot missed it: {snap:#}");
    assert!(vanished.elapsed() >= Duration::from_secs(10), "{snap:#}");
    let (code, snap) = tracer_leaks_json(&["--agent", NO_AGENT, "--netns", "host"]);
    let s = flag_of(&all_flags(&snap), "half_open", ends.0, ends.1)
        .unwrap_or_else(|| panic!("the snapshot missed it: {snap:#}"));
    assert_eq!(
        (s["reason"].as_str(), s["age_is_lower_bound"].as_bool()),
        (Some("retransmitting"), Some(true)),
        "{s:#}"
    );
    assert_owned_by_us(&s, client.as_raw_fd());
    assert_eq!(code, 1, "{snap:#}");

    // An agent started now, beside a stall whose data has waited past the
    // threshold, flags it at its first dumps, with the data's whole wait
    // as its age: not a threshold after it first saw it.
    // (Its threshold of 8 s: the data has waited 10 s and more, the
    // snapshot said; what the new agent sees of the stall is a second.)
    drop(agent);
    let agent = start_agent(&["--half-open-threshold", "8s"]);
    let url = format!("http://{}", agent.addr);
    let (_, report, ok) = poll(&url, Duration::from_secs(3), |r| {
        flag_of(&all_flags(r), "half_open", ends.0, ends.1).is_some()
    });
    assert!(ok, "a new agent did not flag the stall at once: {report:#}");
    let f = flag_of(&all_flags(&report), "half_open", ends.0, ends.1).expect("flag");
    let age = f["age_seconds"].as_f64().expect("age");
    assert!(
        age >= 10.0 && age <= vanished.elapsed().as_secs_f64() + 0.5,
        "age {age} of a stall {:?} old: {f:#}",
        vanished.elapsed()
    );

    // The peer comes back: the next retransmit is ACKed and the flag clears.
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &spur.far,
            "nft",
            "delete table inet tracer_test",
        ],
    );
    // The next retransmit is one backed-off timeout away (12.8 s or more
    // by now, longer on a slow VM).
    let (code, report, ok) = poll(&url, Duration::from_secs(45), |r| {
        r["recently_cleared"].as_array().is_some_and(|c| {
            c.iter()
                .any(|f| f["kind"] == "half_open" && f["local"] == ends.0.to_string())
        })
    });
    assert!(
        ok,
        "half-open flag did not clear after the peer came back: {report:#}"
    );
    let cleared = &report["recently_cleared"][0];
    assert_eq!(
        cleared["cleared_how"], "ACK progress resumed",
        "{cleared:#}"
    );
    assert!(
        cleared["cleared_at_ns"].as_u64() > cleared["raised_at_ns"].as_u64(),
        "{cleared:#}"
    );
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        agent.metric("tracer_half_open_connections{reason=\"retransmitting\"}"),
        0.0
    );
}

/// The other half-open rule: an idle connection whose keepalive probes go
/// unanswered (no data in flight, so no RTO ever fires).
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn unanswered_keepalive_probes_are_half_open() {
    let pair = NetnsPair::new("kalive", 63);
    let _inside = Inside::enter(&pair.a);
    // A 1 s idle threshold too: a socket with a keepalive timer is never "idle at risk".
    let agent = start_agent(&["--half-open-threshold", "2s", "--idle-threshold", "1s"]);
    let url = format!("http://{}", agent.addr);
    let b_ip: IpAddr = pair.addr_b.parse().expect("addr");
    let listener = NetnsPair::in_ns(&pair.b, move || {
        TcpListener::bind((b_ip, 0)).expect("bind in b")
    });
    let server = SocketAddr::new(b_ip, listener.local_addr().expect("addr").port());
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let probes = TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(30);
    sock.set_tcp_keepalive(&probes).expect("keepalive");
    sock.connect(&server.into()).expect("connect");
    let mut client: TcpStream = sock.into();
    let (mut peer, _) = listener.accept().expect("accept");
    client.write_all(b"hello").expect("write");
    peer.read_exact(&mut [0u8; 5]).expect("read");
    let local = client.local_addr().expect("local");
    NetnsPair::blackhole(&pair.b);

    let (code, report, ok) = poll(&url, Duration::from_secs(8), |r| {
        flag_of(&all_flags(r), "half_open", local, server).is_some()
    });
    assert!(ok, "unanswered keepalive probes not flagged: {report:#}");
    let f = flag_of(&all_flags(&report), "half_open", local, server).expect("flag");
    assert_eq!(f["reason"], "keepalive_unanswered", "{f:#}");
    let evidence = f["evidence"].as_str().expect("evidence");
    assert!(
        number_after(evidence, "").is_some_and(|n| n >= 1.0),
        "probe count in {evidence:?}"
    );
    assert!(
        number_after(evidence, "probing for ").is_some_and(|s| s >= 2.0),
        "{evidence}"
    );
    assert_owned_by_us(&f, client.as_raw_fd());
    assert_eq!(code, 1);
    assert_eq!(
        all_flags(&report).len(),
        1,
        "no idle risk for a socket with keepalive: {report:#}"
    );
    assert_eq!(
        agent.metric("tracer_half_open_connections{reason=\"keepalive_unanswered\"}"),
        1.0
    );

    // The application writes into the dead connection: still the same
    // stall (no ACK since), now with retransmits; the flag must not clear.
    client.write_all(b"anyone there?").expect("write");
    let (_, report, ok) = poll(&url, Duration::from_secs(5), |r| {
        flag_of(&all_flags(r), "half_open", local, server)
            .is_some_and(|f| f["reason"] == "retransmitting")
    });
    assert!(
        ok,
        "the flag should turn to reason retransmitting: {report:#}"
    );
    let cleared = report["recently_cleared"]
        .as_array()
        .expect("recently_cleared");
    assert!(
        flag_of(cleared, "half_open", local, server).is_none(),
        "the peer never answered, yet the flag cleared: {report:#}"
    );
    assert_eq!(
        agent.metric("tracer_leaks_flagged_total{kind=\"half_open\"}"),
        1.0
    );
    // Past the 1 s idle threshold since the write: a socket retransmitting
    // (its keepalive timer hidden behind the retransmit timer) is no idle risk.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, report) = tracer_leaks(&url);
    assert!(
        flag_of(&all_flags(&report), "idle_no_keepalive", local, server).is_none(),
        "a retransmitting socket is not idle: {report:#}"
    );
    assert!(
        report["recently_cleared"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{report:#}"
    );

    // The peer answers again: the next retransmit is ACKed and the flag clears.
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "nft",
            "delete table inet tracer_test",
        ],
    );
    // The next retransmit (backed off to seconds by now) brings the ACK.
    let (code, report, ok) = poll(&url, Duration::from_secs(20), |r| r["leak_count"] == 0);
    assert!(ok, "{report:#}");
    assert_eq!(
        report["recently_cleared"][0]["cleared_how"], "ACK progress resumed",
        "{report:#}"
    );
    assert_eq!(code, 0);
}

/// When its keepalive probes run out, the kernel closes the connection
/// (ETIMEDOUT), sending a reset the peer never gets: the flag clears saying
/// so, and the connection counts as closed by a timeout, not a reset.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_connection_the_kernel_gives_up_on_is_said_to_time_out() {
    let pair = NetnsPair::new("kagone", 66);
    let _inside = Inside::enter(&pair.a);
    let agent = start_agent(&["--half-open-threshold", "1s"]);
    let url = format!("http://{}", agent.addr);
    let b_ip: IpAddr = pair.addr_b.parse().expect("addr");
    let listener = NetnsPair::in_ns(&pair.b, move || {
        TcpListener::bind((b_ip, 0)).expect("bind in b")
    });
    let server = SocketAddr::new(b_ip, listener.local_addr().expect("addr").port());
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let probes = TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(4);
    sock.set_tcp_keepalive(&probes).expect("keepalive");
    sock.connect(&server.into()).expect("connect");
    let mut client: TcpStream = sock.into();
    let (_peer, _) = listener.accept().expect("accept");
    let local = client.local_addr().expect("local");
    NetnsPair::blackhole(&pair.b);

    let (_, report, ok) = poll(&url, Duration::from_secs(8), |r| {
        flag_of(&all_flags(r), "half_open", local, server).is_some()
    });
    assert!(ok, "unanswered keepalive probes not flagged: {report:#}");
    // Four probes a second apart, then the kernel gives up. The dump that
    // clears the flag may come before the close's event is read: the next
    // reconcile then says how the socket ended.
    let gave_up = |r: &serde_json::Value| {
        r["recently_cleared"]
            .as_array()
            .and_then(|c| flag_of(c, "half_open", local, server))
            .and_then(|f| f["cleared_how"].as_str().map(str::to_owned))
            .is_some_and(|h| h.starts_with("the kernel gave up on the peer"))
    };
    let (_, report, ok) = poll(&url, Duration::from_secs(18), gave_up);
    assert!(ok, "the flag never cleared as a timeout: {report:#}");
    let mut buf = [0u8; 1];
    let err = client.read(&mut buf).expect_err("a dead connection");
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    assert_eq!(
        agent.metric("tracer_tcp_connections_closed_total{closed_by=\"timeout\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("tracer_tcp_connections_closed_total{closed_by=\"reset\"}"),
        0.0
    );
}

/// Our packets stop reaching the peer while its own still arrive: its
/// process closes, and its FIN, retransmitted because our ACKs never reach
/// it, keeps coming. Those segments acknowledge none of our data, so the
/// stall goes on: one flag, raised once and never cleared, its age growing,
/// through the move to CLOSE_WAIT that the FIN makes.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_peer_whose_fin_still_arrives_stays_half_open() {
    let pair = NetnsPair::new("hofin", 64);
    let _inside = Inside::enter(&pair.a);
    let agent = start_agent(&["--half-open-threshold", "2s"]);
    let url = format!("http://{}", agent.addr);
    let b_ip: IpAddr = pair.addr_b.parse().expect("addr");
    let listener = NetnsPair::in_ns(&pair.b, move || {
        TcpListener::bind((b_ip, 0)).expect("bind in b")
    });
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect((b_ip, port)).expect("connect to b");
    let (peer, _) = listener.accept().expect("accept");
    let ends = (
        client.local_addr().expect("local"),
        client.peer_addr().expect("peer"),
    );
    NetnsPair::blackhole(&pair.b);
    client.write_all(&[1u8; 4096]).expect("write into the void");
    // The peer's process goes: its FIN reaches us, our ACK does not reach
    // it, and it sends the FIN again and again.
    drop(peer);
    let (_, report, ok) = poll(&url, Duration::from_secs(8), |r| {
        flag_of(&all_flags(r), "half_open", ends.0, ends.1).is_some()
    });
    assert!(ok, "not flagged half_open: {report:#}");
    let first = flag_of(&all_flags(&report), "half_open", ends.0, ends.1).expect("flag");
    let raised = first["raised_at_ns"].as_u64().expect("raised_at_ns");
    // Through several of the peer's FIN retransmits (0.2, 0.4, 0.8, 1.6,
    // 3.2 s after its close): the same flag all along.
    let mut last_age = 0.0;
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        let (_, r) = tracer_leaks(&url);
        let f = flag_of(&all_flags(&r), "half_open", ends.0, ends.1)
            .unwrap_or_else(|| panic!("the flag went: {r:#}"));
        assert_eq!(
            f["raised_at_ns"].as_u64(),
            Some(raised),
            "raised again: {f:#}"
        );
        let age = f["age_seconds"].as_f64().expect("age");
        assert!(
            age >= last_age,
            "age went back from {last_age} to {age}: {f:#}"
        );
        last_age = age;
        let cleared = r["recently_cleared"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            cleared
                .iter()
                .all(|c| c["kind"] != "half_open" || c["local"] != ends.0.to_string()),
            "cleared while stalled: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The FIN did arrive: the socket is in CLOSE_WAIT, the flag says so,
    // and its evidence tells the peer's segments from ACKs of our data.
    let (code, r) = tracer_leaks(&url);
    let f = flag_of(&all_flags(&r), "half_open", ends.0, ends.1).expect("flag");
    assert_eq!(f["state"], "close_wait", "{f:#}");
    assert!(
        f["evidence"]
            .as_str()
            .is_some_and(|e| e.starts_with("no ACK of our data for ")
                && e.contains("the peer's segments acknowledge nothing new")),
        "{f:#}"
    );
    assert!(last_age >= 7.0, "{f:#}");
    assert_eq!(code, 1);
}

/// A client in one namespace closes; its server, in another (a container
/// over a veth), never does. The client's orphan names the server's
/// process, fd and namespace: found by the connection's addresses.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_orphans_peer_in_another_namespace_is_named() {
    use std::os::unix::fs::MetadataExt;
    let pair = NetnsPair::new("xpeer", 67);
    let agent = start_agent(&["--netns", "all", "--fin-wait2-threshold", "1s"]);
    let url = format!("http://{}", agent.addr);
    let b_ip: IpAddr = pair.addr_b.parse().expect("addr");
    let listener = NetnsPair::in_ns(&pair.b, move || {
        TcpListener::bind((b_ip, 0)).expect("bind in b")
    });
    let server = SocketAddr::new(b_ip, listener.local_addr().expect("addr").port());
    let client = NetnsPair::in_ns(&pair.a, move || {
        TcpStream::connect(server).expect("connect from a")
    });
    let (held, _) = listener.accept().expect("accept");
    let local = client.local_addr().expect("local");
    drop(client);
    let b_inode = std::fs::metadata(format!("/run/netns/{}", pair.b))
        .expect("netns b")
        .ino();
    let (_, report, ok) = poll(&url, Duration::from_secs(10), |r| {
        flag_of(&all_flags(r), "orphaned_fin_wait2", local, server)
            .is_some_and(|f| f["local_peer"]["owners"][0]["pid"].is_number())
    });
    assert!(ok, "the orphan's peer not named: {report:#}");
    let f = flag_of(&all_flags(&report), "orphaned_fin_wait2", local, server).expect("flag");
    let peer = &f["local_peer"];
    assert_eq!(peer["netns"], b_inode, "{f:#}");
    assert_eq!(peer["state"], "close_wait", "{f:#}");
    assert_eq!(peer["owners"][0]["pid"], std::process::id(), "{f:#}");
    assert_eq!(peer["owners"][0]["fd"], held.as_raw_fd(), "{f:#}");
}
