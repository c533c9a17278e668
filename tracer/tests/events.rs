//! `tracer events` against real sockets: exact transition sequences, cookies
//! that match sock_diag, resets, retransmissions, and no loss.
//! Privileged: loads the real kernel programs. Each test filters by its own
//! ports and never assumes it is alone on the machine.
mod common;
#[path = "events/resets.rs"]
mod resets;
#[path = "events/stream.rs"]
mod stream;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{
    Events, LeakyServer, NamedNetns, Netns, NetnsPair, ss_cookies, ss_time_wait, wait_close_wait,
    wait_until,
};
use socket2::{Domain, Socket, Type};

/// A bound, not yet listening, socket on an ephemeral port of `ip`; the
/// port is known before the tracer starts, so it can filter on it.
fn bound(ip: IpAddr) -> (Socket, u16) {
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::new(ip, 0).into()).expect("bind");
    let port = s
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet")
        .port();
    (s, port)
}

fn lifecycle(ip: IpAddr) {
    let _ns = Netns::enter(if ip.is_ipv4() { "life4" } else { "life6" });
    let began = std::time::SystemTime::now();
    let (sock, port) = bound(ip);
    let tracer = Events::start(&["--port", &port.to_string()]);
    sock.listen(16).expect("listen");
    let listener: TcpListener = sock.into();
    let mut client = TcpStream::connect((ip, port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).expect("read");

    // While they are open, sock_diag (through ss) names their cookies.
    let diag = ss_cookies(port);
    let client_addr = client.local_addr().unwrap();
    let server_key = (server.local_addr().unwrap(), server.peer_addr().unwrap());
    let client_cookie = diag[&(client_addr, client.peer_addr().unwrap())];
    let server_cookie = diag[&server_key];

    // Client closes first; the server sees EOF (close_wait), then closes.
    drop(client);
    assert_eq!(server.read(&mut buf).expect("read eof"), 0);
    drop(server);
    drop(listener);
    // The client's fin_wait2->close needs the server's FIN to arrive: wait
    // until ss shows the client's 4-tuple only as a timewait socket.
    assert!(wait_until(Duration::from_secs(5), || {
        ss_time_wait(port).contains(&client_addr)
    }));
    let out = tracer.stop();
    assert!(out.status.success(), "tracer events failed: {}", out.stderr);
    out.assert_none_dropped();
    // Every event's wall-clock time lies within the test.
    let ended = std::time::SystemTime::now();
    let walls: Vec<std::time::SystemTime> = out
        .events
        .iter()
        .map(|e| {
            serde_json::from_value::<tracer::wall::Wall>(e["ts"].clone())
                .unwrap_or_else(|err| panic!("{err}: {e}"))
                .0
        })
        .collect();
    assert!(!walls.is_empty());
    let slack = Duration::from_millis(50);
    for w in &walls {
        assert!(
            *w + slack >= began && *w <= ended + slack,
            "{w:?} not in {began:?}..{ended:?}"
        );
    }

    let paths = out.paths();
    assert_eq!(
        paths
            .get(&client_cookie)
            .map(|p| p.iter().map(String::as_str).collect::<Vec<_>>())
            .as_deref(),
        Some(
            &[
                "close->syn_sent",
                "syn_sent->established",
                "established->fin_wait1",
                "fin_wait1->fin_wait2",
                "fin_wait2->close"
            ][..]
        ),
        "client path; all paths: {paths:?}"
    );
    assert_eq!(
        paths
            .get(&server_cookie)
            .map(|p| p.iter().map(String::as_str).collect::<Vec<_>>())
            .as_deref(),
        Some(out.server_path(&[
            "listen->syn_recv",
            "syn_recv->established",
            "established->close_wait",
            "close_wait->last_ack",
            "last_ack->close"
        ])),
        "server path; all paths: {paths:?}"
    );
    let listener_paths: Vec<_> = paths
        .iter()
        .filter(|(c, _)| **c != client_cookie && **c != server_cookie)
        .collect();
    assert_eq!(listener_paths.len(), 1, "one listener: {paths:?}");
    assert_eq!(listener_paths[0].1, &["close->listen", "listen->close"]);

    // Every event carries the right family, endpoints and namespace.
    let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    let netns = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    };
    for e in &out.events {
        assert_eq!(e["netns"], netns, "{e}");
        assert_eq!(e["family"], family, "{e}");
        assert_eq!(e["saddr"], ip.to_string(), "{e}");
        assert!(e["sport"] == port || e["dport"] == port, "{e}");
        assert!(e["pid"].as_u64().is_some() && e["comm"].is_string(), "{e}");
    }
    // The connect() ran in this process: the owner is known there.
    let connect = out
        .events
        .iter()
        .find(|e| e["cookie"] == client_cookie && e["new_state"] == "syn_sent")
        .expect("connect event");
    assert_eq!(connect["pid"], std::process::id());
    // Receive-path transitions run in softirq, where the current task is
    // unrelated to the socket: they carry no task at all.
    let handshake = out
        .events
        .iter()
        .find(|e| e["cookie"] == client_cookie && e["new_state"] == "established")
        .expect("handshake event");
    assert_eq!(
        (&handshake["pid"], &handshake["comm"]),
        (&0.into(), &"".into()),
        "{handshake}"
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn ipv4_loopback_lifecycle() {
    lifecycle("127.0.0.1".parse().unwrap());
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn ipv6_loopback_lifecycle() {
    lifecycle("::1".parse().unwrap());
}

/// The "done when" of the foundation: hundreds of real connections, every
/// transition reported once, and cookies that match sock_diag.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn hundreds_of_connections_none_missing_none_duplicated() {
    let _ns = Netns::enter("many");
    const N: usize = 300;
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let (sock, port) = bound(ip);
    let tracer = Events::start(&["--port", &port.to_string(), "--kind", "state"]);
    sock.listen(1024).expect("listen");
    let listener: TcpListener = sock.into();
    let mut pairs = Vec::with_capacity(N);
    for _ in 0..N {
        let c = TcpStream::connect((ip, port)).expect("connect");
        let (s, _) = listener.accept().expect("accept");
        pairs.push((c, s));
    }
    let diag: BTreeSet<u64> = ss_cookies(port).values().copied().collect();
    for (c, mut s) in pairs {
        drop(c);
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).expect("eof"), 0);
    }
    drop(listener);
    let out = tracer.stop();
    out.assert_none_dropped();

    let paths = out.paths();
    // 2N connection ends plus the listener.
    assert_eq!(paths.len(), 2 * N + 1);
    assert_eq!(
        diag.len(),
        2 * N + 1,
        "ss sees every socket and the listener"
    );
    let traced: BTreeSet<u64> = paths.keys().copied().collect();
    assert_eq!(traced, diag, "event cookies equal sock_diag cookies");
    let mut clients = 0;
    let mut servers = 0;
    for (cookie, p) in &paths {
        match p.first().map(String::as_str) {
            Some("close->syn_sent") => {
                clients += 1;
                assert_eq!(
                    p.len(),
                    5,
                    "client {cookie}: {p:?}\n{}",
                    out.explain(*cookie)
                );
                assert_eq!(p[4], "fin_wait2->close", "client {cookie}: {p:?}");
            }
            Some(first)
                if first == out.server_path(&["listen->syn_recv", "syn_recv->established"])[0] =>
            {
                servers += 1;
                let steps = out.server_path(&["", "", "", "", ""]).len();
                assert_eq!(
                    p.len(),
                    steps,
                    "server {cookie}: {p:?}\n{}",
                    out.explain(*cookie)
                );
                assert_eq!(p[steps - 1], "last_ack->close", "server {cookie}: {p:?}");
            }
            Some("close->listen") => assert_eq!(p, &["close->listen", "listen->close"]),
            other => panic!("unexpected first transition {other:?} for {cookie}: {p:?}"),
        }
    }
    assert_eq!((clients, servers), (N, N));
    // Either every accept was named, or none was (the kernel decides).
    assert!(
        [0, N].contains(&out.unnamed_accepts()),
        "{} of {N} accepts unnamed",
        out.unnamed_accepts()
    );
}

#[test]
fn bad_flags_exit_nonzero_with_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["events", "--kind", "bogus"])
        .output()
        .expect("run tracer");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown kind \"bogus\""), "{err}");
    assert!(out.stdout.is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["events", "--duration", "-1"])
        .output()
        .expect("run tracer");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// `tracer events` with a stdout nobody reads, after 1000 connections:
/// some ten lines of 300 bytes each, far more than a pipe holds. The loop
/// has read the lanes and handed the lines over; the writer blocks.
fn unread_events_after_a_flood() -> Events {
    let tracer = Events::start_unread(&["--no-leaks"]);
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    for _ in 0..1000 {
        let c = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (s, _) = listener.accept().expect("accept");
        drop((c, s));
    }
    std::thread::sleep(Duration::from_millis(600));
    tracer
}

/// A reader that stops reading does not hold up SIGTERM: `tracer events`
/// ends within its two seconds of patience, says what it left unwritten,
/// and exits 0.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn sigterm_ends_events_whose_stdout_nobody_reads() {
    let _ns = Netns::enter("unread");
    let mut tracer = unread_events_after_a_flood();
    let mut pipe = tracer.take_unread();
    let out = Events::terminate_within(tracer, Duration::from_secs(8))
        .expect("tracer events still ran 8 s after SIGTERM");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("stdout stopped reading"),
        "{}",
        out.stderr
    );
    // What the pipe took, read after the end, is what the exit line
    // counts as printed: whole lines, each once.
    let mut left = Vec::new();
    std::io::Read::read_to_end(&mut pipe, &mut left).expect("read the pipe");
    let whole = left.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(left.last(), Some(&b'\n'), "a line written in part");
    assert!(
        out.stderr.contains(&format!(" {whole} lines printed (")),
        "{whole} lines in the pipe: {}",
        out.stderr
    );
}

/// A reader that takes some lines and goes away (a consumer that
/// crashes): the exit line counts as printed exactly the lines it got
/// whole, and a warning says how many never reached it.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_reader_that_goes_away_mid_stream_is_counted_exactly() {
    let _ns = Netns::enter("gone");
    let mut tracer = unread_events_after_a_flood();
    // 100,000 bytes: whole lines and part of one.
    let got = tracer.read_unread(100_000);
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer
        .hang_up_within(Duration::from_secs(3))
        .expect("tracer events still ran 3 s after its reader went away");
    assert!(out.status.success(), "{}", out.stderr);
    let whole = got.iter().filter(|&&b| b == b'\n').count();
    let printed = out
        .stderr
        .split(" lines printed")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    eprintln!("{whole} whole lines read; {}", out.stderr);
    assert_eq!(printed, Some(whole), "{}", out.stderr);
    assert!(
        out.stderr.contains("stdout's reader went away: "),
        "{}",
        out.stderr
    );
}

/// A reader that goes away (`tracer events -s syn_sent | head -1`, once
/// head has its line) ends `tracer events` at once with status 0, even
/// when no line is written after it: a narrow filter may print nothing for
/// hours.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_reader_that_goes_away_ends_events_without_another_line() {
    let _ns = Netns::enter("hangup");
    // Port 1 in a namespace of our own: nothing will ever match.
    let tracer = Events::start_unread(&["--no-leaks", "--port", "1"]);
    let out = tracer
        .hang_up_within(Duration::from_secs(3))
        .expect("tracer events still ran 3 s after its reader went away");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("events read"), "{}", out.stderr);
}

/// Without root or CAP_BPF+CAP_PERFMON: one sentence that says how to fix
/// it, exit status 2, nothing on stdout, no panic.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn unprivileged_user_gets_one_sentence() {
    refused_through_setpriv(
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ],
        "needs root, or the CAP_BPF and CAP_PERFMON capabilities",
    );
}

/// `tracer events` run through `setpriv SETPRIV` is refused: status 2, one
/// line on stderr that says `says`, nothing on stdout.
fn refused_through_setpriv(setpriv: &[&str], says: &str) {
    common::require_root();
    let out = std::process::Command::new("setpriv")
        .args(setpriv)
        .arg(env!("CARGO_BIN_EXE_tracer"))
        .args(["events", "--duration", "1"])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(says), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
}

/// Root with the capabilities dropped (as a container or capsh leaves
/// it) is told just that, not to run it as root.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn root_without_the_capabilities_is_told_so() {
    refused_through_setpriv(
        &["--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin"],
        "runs as root but without the CAP_BPF and CAP_PERFMON capabilities",
    );
}

/// CAP_BPF and CAP_PERFMON are enough: no root needed.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn runs_with_only_cap_bpf_and_cap_perfmon() {
    let _ns = Netns::enter("caps");
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let (sock, port) = bound(ip);
    let tracer = Events::start_as(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+bpf,+perfmon",
            "--ambient-caps=+bpf,+perfmon",
        ],
        &["--port", &port.to_string()],
    );
    sock.listen(4).expect("listen");
    let listener: TcpListener = sock.into();
    let c = TcpStream::connect((ip, port)).expect("connect");
    let (s, _) = listener.accept().expect("accept");
    drop((c, s, listener));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    out.assert_none_dropped();
    assert!(
        out.paths()
            .values()
            .any(|p| p.first().map(String::as_str) == Some("close->syn_sent")),
        "{:?}",
        out.events
    );
}

/// `-c python3` keeps python's socket from its connect to its close,
/// receive-path transitions included, and leaves out the test's own.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn comm_filter_follows_the_socket_from_connect_to_close() {
    let _ns = Netns::enter("comm");
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let (sock, port) = bound(ip);
    let tracer = Events::start(&["-c", "python3", "-s", "established", "-s", "close"]);
    sock.listen(16).expect("listen");
    let listener: TcpListener = sock.into();
    // The test's own connection: not python's.
    let mine = TcpStream::connect((ip, port)).expect("connect");
    let (theirs, _) = listener.accept().expect("accept");
    drop((mine, theirs));
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); print(s.getsockname()[1]); s.close()",
            &port.to_string(),
        ])
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let py_port: u16 = String::from_utf8_lossy(&py.stdout)
        .trim()
        .parse()
        .expect("port");
    let (s, _) = listener.accept().expect("accept python");
    drop(s);
    assert!(wait_until(Duration::from_secs(5), || {
        ss_time_wait(port).iter().any(|a| a.port() == py_port)
    }));
    let out = tracer.stop();
    let mine: Vec<&serde_json::Value> = out
        .events
        .iter()
        .filter(|e| e["dport"] == port || e["sport"] == port)
        .collect();
    let states: Vec<&str> = mine
        .iter()
        .map(|e| e["new_state"].as_str().unwrap_or(""))
        .collect();
    // syn_sent->established comes from softirq (no pid), fin_wait2->close
    // too: both are python's all the same.
    assert_eq!(states, ["established", "close"], "{mine:#?}");
    assert!(mine.iter().all(|e| e["sport"] == py_port), "{mine:#?}");
}

/// `-c` keeps the sockets a server accepts, and those it held before the
/// command started: their moves into CLOSE_WAIT run in softirq and name no
/// process, so they are known by the server's listener and by what it held
/// at start. The test's own CLOSE_WAIT, on a listener of its own, is left
/// out.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn comm_filter_keeps_a_servers_accepted_and_older_sockets() {
    let _ns = Netns::enter("commacc");
    let mut server = LeakyServer::start(None);
    let older = server.connect();
    let tracer = Events::start(&["-c", "python3", "-s", "close-wait"]);
    let newer = server.connect();
    let (sock, port) = bound("127.0.0.1".parse().unwrap());
    sock.listen(16).expect("listen");
    let listener: TcpListener = sock.into();
    let mine = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (_held, _) = listener.accept().expect("accept");
    let ports = [
        older.local_addr().unwrap().port(),
        newer.local_addr().unwrap().port(),
    ];
    drop((older, newer, mine));
    wait_close_wait(server.port, 2);
    wait_close_wait(port, 1);
    let out = tracer.stop();
    let mut got: Vec<(u64, u64)> = out
        .of_kind("state")
        .iter()
        .map(|e| {
            (
                e["sport"].as_u64().unwrap_or(0),
                e["dport"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    got.sort_unstable();
    let mut want: Vec<(u64, u64)> = ports
        .iter()
        .map(|&p| (u64::from(server.port), u64::from(p)))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want, "{:#?}", out.events);
}

/// Two tracers at once (an agent and `tracer events` beside it): the one
/// whose program runs second finds the accepted socket's cookie already
/// made by the first, and must still name the socket by it, not take it
/// for the listener's copy. Kernels before 6.15 announce the socket before
/// it has a cookie or a peer, so there both tracers send 0 and only the
/// agreement is checked; on 6.15 and later the cookie must be the socket's.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn two_tracers_name_an_accepted_socket_alike() {
    let _ns = Netns::enter("twins");
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let (sock, port) = bound(ip);
    let first = Events::start(&["--port", &port.to_string()]);
    let second = Events::start(&["--port", &port.to_string()]);
    sock.listen(16).expect("listen");
    let listener: TcpListener = sock.into();
    let client = TcpStream::connect((ip, port)).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let server_cookie =
        ss_cookies(port)[&(server.local_addr().unwrap(), server.peer_addr().unwrap())];
    drop((client, server, listener));
    let accepts = |out: &common::Output| -> Vec<(u64, u64)> {
        out.of_kind("state")
            .into_iter()
            .filter(|e| e["old_state"] == "listen" && e["new_state"] == "syn_recv")
            .map(|e| {
                (
                    e["cookie"].as_u64().expect("cookie"),
                    e["dport"].as_u64().expect("dport"),
                )
            })
            .collect()
    };
    let (a, b) = (accepts(&first.stop()), accepts(&second.stop()));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a, b, "the two tracers disagree");
    // Kernels that announce the child filled in (6.15 on) give its peer,
    // and then its own cookie; earlier ones give neither.
    let (cookie, dport) = a[0];
    if dport == 0 {
        assert_eq!(cookie, 0, "{a:?}");
    } else {
        assert_eq!(cookie, server_cookie, "{a:?}");
    }
}

/// A dual-stack server on `[::]` sees its IPv4 clients through v4-mapped
/// sockets (`::ffff:127.0.0.1`): `-4` keeps those and the IPv4 client,
/// `-6` keeps the listener and leaves them out.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn ipv4_clients_of_a_dual_stack_server_are_ipv4() {
    let _ns = Netns::enter("dual");
    let sock = Socket::new(Domain::IPV6, Type::STREAM, None).expect("socket");
    sock.set_only_v6(false).expect("dual stack");
    sock.bind(&SocketAddr::from(([0u16; 8], 0)).into())
        .expect("bind");
    let port = sock
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet")
        .port();
    let p = port.to_string();
    let four = Events::start(&["--port", &p, "-4"]);
    let six = Events::start(&["--port", &p, "-6"]);
    sock.listen(4).expect("listen");
    let listener: TcpListener = sock.into();
    let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (s, _) = listener.accept().expect("accept");
    drop((c, s, listener));
    let (four, six) = (four.stop(), six.stop());
    four.assert_none_dropped();
    six.assert_none_dropped();
    let families = |out: &common::Output| -> BTreeSet<(String, String)> {
        out.of_kind("state")
            .iter()
            .map(|e| (e["family"].to_string(), e["saddr"].to_string()))
            .collect()
    };
    // The client's IPv4 socket and the server's v4-mapped one.
    assert_eq!(
        families(&four),
        BTreeSet::from([
            ("\"ipv4\"".to_owned(), "\"127.0.0.1\"".to_owned()),
            ("\"ipv6\"".to_owned(), "\"::ffff:127.0.0.1\"".to_owned()),
        ]),
        "{:?}",
        four.events
    );
    // The listener alone.
    assert_eq!(
        families(&six),
        BTreeSet::from([("\"ipv6\"".to_owned(), "\"::\"".to_owned())]),
        "{:?}",
        six.events
    );
}
