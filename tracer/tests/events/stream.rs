//! Beyond state changes: leak flags in the stream, and a full ring
//! buffer counted.
use super::*;

/// The stream carries leak_flagged and leak_cleared with the agent's fields.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn close_wait_leak_is_flagged_then_cleared_in_the_stream() {
    let _ns = Netns::enter("leakev");
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let (sock, port) = bound(ip);
    let tracer = Events::start(&[
        "--port",
        &port.to_string(),
        "--close-wait-threshold",
        "1s",
        "--kind",
        "leak_flagged",
        "--kind",
        "leak_cleared",
    ]);
    sock.listen(4).expect("listen");
    let listener: TcpListener = sock.into();
    let c = TcpStream::connect((ip, port)).expect("connect");
    let (mut s, _) = listener.accept().expect("accept");
    let server_cookie = ss_cookies(port)[&(s.local_addr().unwrap(), s.peer_addr().unwrap())];
    drop(c);
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 0);
    // Flags are raised and cleared by the dumps (one a second, later when
    // a dump costs more than the reconcile budget allows): leave room for
    // a few on a loaded machine.
    std::thread::sleep(Duration::from_millis(5000));
    drop(s);
    std::thread::sleep(Duration::from_millis(3000));
    let out = tracer.stop();
    let kinds: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["leak_flagged", "leak_cleared"], "{:?}", out.events);
    for e in &out.events {
        assert_eq!(e["leak"], "close_wait");
        assert_eq!(e["cookie"], server_cookie);
        assert_eq!(e["local"], format!("127.0.0.1:{port}"));
        assert!(e["ts_ns"].as_u64().is_some());
        // A parallel test's child holds copies of this process's
        // descriptors from its fork to its exec: the test process is one
        // owner, maybe not the only one.
        let owners = e["owners"].as_array().expect("owners");
        assert!(owners.iter().any(|o| o["pid"] == std::process::id()), "{e}");
    }
    assert!(
        out.events[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("CLOSE_WAIT")
    );
}

/// A ring buffer that fills while the reader is stopped: the kernel counts
/// every dropped event and says why, once, through its own log.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_full_ring_is_counted_and_the_kernel_says_why() {
    let _ns = Netns::enter("ringfull");
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let (sock, port) = bound(ip);
    let tracer = Events::start(&["--port", &port.to_string(), "--ring-bytes", "4096"]);
    sock.listen(64).expect("listen");
    let listener: TcpListener = sock.into();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGSTOP) };
    for _ in 0..100 {
        let c = TcpStream::connect((ip, port)).expect("connect");
        let (s, _) = listener.accept().expect("accept");
        drop(c);
        drop(s);
    }
    // SAFETY: as above.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGCONT) };
    let out = tracer.stop();
    assert!(
        out.lost() > 0,
        "a 4 KiB ring held 100 connections: {}",
        out.stderr
    );
    let why: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(" WARN kernel: "))
        .collect();
    assert!(
        why.iter()
            .any(|l| l.contains("sock/inet_sock_set_state: the event ring buffer is full")),
        "{}",
        out.stderr
    );
    // Rate-limited: one line per message in 10 s, however many CPUs and
    // lost events said it.
    let state = why
        .iter()
        .filter(|l| l.contains("sock/inet_sock_set_state: the event ring buffer is full"))
        .count();
    assert_eq!(state, 1, "{}", out.stderr);
}
