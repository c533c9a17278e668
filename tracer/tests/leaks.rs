//! Privileged tests of leak detection with real sockets and a real,
//! separate server process (python3), so pid and fd attribution is real.
//!
//! The server accepts connections and never closes them; the clients (this
//! process) close theirs, which leaves the server's sockets in CLOSE_WAIT.
//! Every assertion filters by the server's own port and never assumes the
//! host is otherwise quiet.
mod common;
#[path = "leaks/kit.rs"]
mod kit;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{NO_AGENT, ss_recv_q, tracer_leaks, wait_close_wait};
use kit::{
    CONNS, SERIAL, close_wait_agent, flags_on_port, leaking_server, wait_cleared, wait_flagged,
};
use serde_json::Value;
use tracer::diag::{DumpOptions, Dumper, owners_of};
use tracer::leaks::{Change, Detector, LeakKind, Thresholds};

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn snapshot_names_the_server_pid_and_fds_then_clears() {
    common::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Before any of the sockets: their CLOSE_WAIT is younger than this.
    let start = std::time::Instant::now();
    let server = leaking_server();
    let (port, pid) = (server.port, server.pid());
    wait_close_wait(port, CONNS);

    // The fds /proc/<pid>/fd shows for those sockets.
    let proc_fds: BTreeSet<u32> = server
        .fds
        .keys()
        .copied()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:["))
        })
        .collect();
    assert_eq!(proc_fds.len(), CONNS);

    // The host's namespace only: another namespace may have a leak on the
    // same port number.
    let (code, stdout) = tracer_leaks(&["--json", "--agent", NO_AGENT, "--netns", "host"]);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(code, 1, "leaks present: exit 1");
    assert_eq!(report["source"], "snapshot");
    assert_eq!(
        report["note"],
        format!("no agent at {NO_AGENT}: one-shot snapshot of suspects, ages not exact")
    );
    let flags = flags_on_port(&report, port);
    assert_eq!(flags.len(), CONNS, "{flags:#?}");
    let mut fds = BTreeSet::new();
    for f in &flags {
        assert_eq!(
            (f["kind"].as_str(), f["state"].as_str()),
            (Some("close_wait"), Some("close_wait"))
        );
        // A snapshot's age is at least the time since the peer's FIN.
        assert_eq!(f["age_is_lower_bound"], true, "{f}");
        let age = f["age_seconds"].as_f64().unwrap_or(0.0);
        assert!(age <= start.elapsed().as_secs_f64() + 0.05, "{f}");
        let owners = f["owners"].as_array().expect("owners");
        let mine: Vec<&Value> = owners.iter().filter(|o| o["pid"] == pid).collect();
        assert_eq!(mine.len(), 1, "{owners:?}");
        assert_eq!(mine[0]["comm"], "python3");
        fds.insert(mine[0]["fd"].as_u64().expect("fd") as u32);
        let peer: u16 = f["remote"]
            .as_str()
            .and_then(|r| r.rsplit(':').next()?.parse().ok())
            .expect("remote port");
        assert_eq!(
            server.fds[&(mine[0]["fd"].as_u64().expect("fd") as u32)],
            peer,
            "fd and peer agree"
        );
    }
    assert_eq!(fds, proc_fds);

    // The table names the process.
    let (code, table) = tracer_leaks(&["--agent", NO_AGENT]);
    assert_eq!(code, 1);
    assert!(table.contains(&format!("PID {pid} python3: ")), "{table}");
    assert!(table.contains("ages not exact"), "{table}");
    assert!(table.contains(" suspected leak"), "{table}");

    // The server closes them (it exits): the flags are gone.
    drop(server);
    wait_close_wait(port, 0);
    let (_, stdout) = tracer_leaks(&["--json", "--agent", NO_AGENT, "--netns", "host"]);
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert!(flags_on_port(&report, port).is_empty());
    // Other sockets of the host may be in CLOSE_WAIT: the exit status
    // counts only what is shown, here the server's port.
    let (code, stdout) = tracer_leaks(&[
        "--json",
        "--agent",
        NO_AGENT,
        "--netns",
        "host",
        "--port",
        &port.to_string(),
    ]);
    assert_eq!(code, 0, "no leaks left on {port}: exit 0; {stdout}");
}

/// Two CLOSE_WAIT sockets of this process: one whose 5 bytes and the
/// peer's FIN were never read, and one read to EOF. The kernel counts the
/// FIN in Recv-Q until it is read; tracer counts bytes, and says whether
/// the application read to EOF.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn unread_bytes_leave_out_the_peers_fin_and_say_whether_eof_was_read() {
    common::require_root();
    // Its CLOSE_WAIT sockets would be foreign to the others' exit statuses.
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut unread = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (held_unread, _) = listener.accept().expect("accept");
    unread.write_all(b"hello").expect("write");
    let unread_peer = unread.local_addr().expect("addr").port();
    drop(unread);
    let eof = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut held_eof, _) = listener.accept().expect("accept");
    let eof_peer = eof.local_addr().expect("addr").port();
    drop(eof);
    let mut rest = Vec::new();
    held_eof.read_to_end(&mut rest).expect("read to EOF");
    assert!(rest.is_empty());
    wait_close_wait(port, 2);

    // The kernel's view: the FIN is one more byte until it is read.
    let kernel = ss_recv_q(port);
    assert_eq!(kernel.get(&unread_peer), Some(&6), "{kernel:?}");
    assert_eq!(kernel.get(&eof_peer), Some(&0), "{kernel:?}");

    let (code, stdout) = tracer_leaks(&["--json", "--agent", NO_AGENT, "--netns", "host"]);
    assert_eq!(code, 1, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let flags = flags_on_port(&report, port);
    let by_peer = |peer: u16| {
        flags
            .iter()
            .find(|f| f["remote"] == format!("127.0.0.1:{peer}"))
            .unwrap_or_else(|| panic!("no flag for peer {peer}: {flags:#?}"))
    };
    for (peer, bytes, read_to_end, words) in [
        (unread_peer, 5, false, "5 bytes unread, EOF not read"),
        (eof_peer, 0, true, "0 bytes unread, EOF read"),
    ] {
        let f = by_peer(peer);
        assert_eq!(
            (&f["unread_bytes"], &f["read_to_end"]),
            (&bytes.into(), &read_to_end.into()),
            "{f:#}"
        );
        let evidence = f["evidence"].as_str().expect("evidence");
        assert!(
            evidence.starts_with("in CLOSE_WAIT for at least ")
                && evidence.ends_with(&format!(" (since the peer's last ACK; snapshot); {words}")),
            "{evidence}"
        );
    }
    drop((held_unread, held_eof));
}

/// A half-close in use is no leak: the peer shut down its side
/// (`shutdown(SHUT_WR)`) and our side still sends its answer from
/// CLOSE_WAIT. Once it has sent nothing for the threshold, it is flagged.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn close_wait_that_still_sends_after_the_peers_shutdown_is_not_flagged() {
    let _ns = common::Netns::enter("halfclose");
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = l.local_addr().unwrap().port();
    let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut s, _) = l.accept().expect("accept");
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0, "the peer's FIN");
    let reader = std::thread::spawn(move || std::io::copy(&mut &c, &mut std::io::sink()));
    let mut det = Detector::new(Thresholds {
        close_wait: Duration::from_secs(1),
        ..Thresholds::default()
    });
    let mut dumper = live_dumper();
    let mut dump = Vec::new();
    let mut judge = || {
        dumper.dump_into(&mut dump).expect("dump");
        det.update(&dump, tracer::agent::monotonic_ns(), |_, _| None, owners_of)
            .into_iter()
            .filter(|c| c.flag().kind == LeakKind::CloseWait && c.flag().local.port() == port)
            .collect::<Vec<_>>()
    };
    let sending = Instant::now();
    while sending.elapsed() < Duration::from_millis(2500) {
        s.write_all(b"answer\n").expect("write");
        let flags = judge();
        assert!(flags.is_empty(), "flagged while sending: {flags:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nor is it a suspect to a snapshot without an agent: it sent lately.
    let (_, stdout) = tracer_leaks(&["--json", "--agent", NO_AGENT, "--netns", "host"]);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(flags_on_port(&report, port).is_empty(), "{report:#}");
    let quiet = Instant::now();
    let mut flags = Vec::new();
    while flags.is_empty() && quiet.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(200));
        flags = judge();
    }
    let f = flags
        .first()
        .expect("not flagged 4 s after it stopped sending");
    assert!(
        f.flag().evidence.contains(", nothing sent for "),
        "{}",
        f.flag().evidence
    );
    drop(s);
    reader.join().unwrap().expect("read the answer");
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn detector_flags_real_close_wait_and_clears_when_the_process_exits() {
    common::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = leaking_server();
    let (port, pid) = (server.port, server.pid());
    wait_close_wait(port, CONNS);
    let t = Thresholds {
        close_wait: Duration::from_secs(1),
        ..Thresholds::default()
    };
    let mut det = Detector::new(t);
    let mut dumper = Dumper::new(DumpOptions {
        with_info: true,
        without_time_wait: false,
    })
    .expect("sock_diag");
    let mut dump = Vec::new();
    let mine = |c: &Change| c.flag().kind == LeakKind::CloseWait && c.flag().local.port() == port;

    let mut raised = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3); // threshold + 2 s
    while raised.len() < CONNS {
        assert!(
            Instant::now() < deadline,
            "only {} of {CONNS} flagged in time",
            raised.len()
        );
        dumper.dump_into(&mut dump).expect("dump");
        let changes = det.update(&dump, tracer::agent::monotonic_ns(), |_, _| None, owners_of);
        raised.extend(
            changes
                .into_iter()
                .filter(|c| mine(c) && matches!(c, Change::Raised(_))),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for c in &raised {
        let f = c.flag();
        assert!(
            f.age_is_lower_bound && f.age_seconds.is_some_and(|a| a >= 1.0),
            "{f:?}"
        );
        assert!(
            f.evidence.starts_with("in CLOSE_WAIT for at least")
                && f.evidence.ends_with("; 0 bytes unread, EOF not read"),
            "{}",
            f.evidence
        );
        // The server never reads: the peer's FIN is all its queue holds.
        assert_eq!((f.unread_bytes, f.read_to_end), (0, Some(false)), "{f:?}");
        assert!(
            f.owners
                .iter()
                .any(|o| o.pid == pid && server.fds.contains_key(&o.fd)),
            "{:?}",
            f.owners
        );
        assert_eq!(c.to_json()["event"], "leak_flagged");
    }
    let report = det.report(tracer::agent::monotonic_ns());
    let group = report
        .leaks
        .iter()
        .find(|g| g.pid == Some(pid))
        .expect("server's group");
    assert_eq!(
        (group.comm.as_deref(), group.close_wait),
        (Some("python3"), CONNS)
    );
    assert!(det.gauges().close_wait_leaks >= CONNS as u64);

    drop(server);
    wait_close_wait(port, 0);
    dumper.dump_into(&mut dump).expect("dump");
    let changes = det.update(&dump, tracer::agent::monotonic_ns(), |_, _| None, owners_of);
    let cleared: Vec<_> = changes
        .iter()
        .filter(|c| mine(c) && matches!(c, Change::Cleared(_)))
        .collect();
    assert_eq!(cleared.len(), CONNS);
    for c in cleared {
        let how = c.flag().cleared_how.as_deref().unwrap_or("");
        assert!(
            how.starts_with("socket gone") || how.starts_with("socket left close_wait"),
            "{how}"
        );
    }
    assert!(det.active().all(|f| f.local.port() != port));
}

/// The "done when" of leak detection: with the agent running, one command
/// names the process, the fds, the peers and the ages within threshold + 2 s,
/// a Prometheus alert on `tracer_close_wait_leaks` fires, and everything
/// clears when the process closes them. Runs in its own network namespace,
/// so no other CLOSE_WAIT socket on the host can disturb the exit statuses.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn agent_flags_the_leak_and_a_prometheus_alert_fires() {
    let _ns = common::Netns::enter("leakagent");
    let agent = common::Agent::start(&[
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "250ms",
    ]);
    let url = format!("http://{}", agent.addr);
    let rules = "groups:\n  - name: tracer\n    rules:\n      - alert: CloseWaitLeak\n        expr: tracer_close_wait_leaks > 0\n";
    let prom = common::Prometheus::start(agent.addr, rules);
    let server = leaking_server();
    let (port, pid) = (server.port, server.pid());
    wait_close_wait(port, CONNS);
    let start = Instant::now();

    // Within threshold (1 s) + 2 s, `tracer leaks` names all of them.
    let mut last = (0, String::new());
    let found = common::wait_until(Duration::from_secs(3), || {
        last = tracer_leaks(&["--json", "--agent", &url]);
        last.0 == 1
            && serde_json::from_str::<Value>(&last.1)
                .is_ok_and(|r| flags_on_port(&r, port).len() == CONNS)
    });
    assert!(
        found,
        "after {:?}: exit {} {}",
        start.elapsed(),
        last.0,
        last.1
    );
    let report: Value = serde_json::from_str(&last.1).unwrap();
    assert_eq!(report["source"], "agent");
    let flags = flags_on_port(&report, port);
    let fds: BTreeSet<u64> = flags
        .iter()
        .flat_map(|f| f["owners"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["pid"] == pid)
        .filter_map(|o| o["fd"].as_u64())
        .collect();
    let want: BTreeSet<u64> = server.fds.keys().map(|&fd| fd as u64).collect();
    assert_eq!(fds, want, "the fds /proc/{pid}/fd shows: {flags:#?}");
    // The filters narrow the report, in `tracer leaks` and in the API.
    let pid_s = pid.to_string();
    let (code, out) = tracer_leaks(&["-j", "--agent", &url, "-p", &pid_s, "-s", "close-wait"]);
    let narrowed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (code, flags_on_port(&narrowed, port).len()),
        (1, CONNS),
        "{out}"
    );
    let (code, out) = tracer_leaks(&["-j", "--agent", &url, "-c", "no-such-comm"]);
    assert_eq!(code, 0, "{out}");
    let api = agent.json(&format!(
        "/api/v1/leaks?pid={pid}&state=close-wait&port={port}"
    ));
    assert_eq!(flags_on_port(&api, port).len(), CONNS, "{api:#}");
    let api = agent.json("/api/v1/leaks?comm=no-such-comm");
    assert_eq!(api["leak_count"], 0, "{api:#}");
    for f in &flags {
        assert_eq!(f["kind"], "close_wait");
        let age = f["age_seconds"].as_f64().expect("age known to the agent");
        assert!(age >= 1.0 && f["age_is_lower_bound"] == false, "{f}");
        assert!(
            f["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.1:")),
            "{f}"
        );
    }
    assert!(agent.metric("tracer_close_wait_leaks") >= CONNS as f64);
    assert!(agent.metric("tracer_leaks_flagged_total{kind=\"close_wait\"}") >= CONNS as f64);
    assert!(
        common::wait_until(Duration::from_secs(30), || prom
            .firing()
            .iter()
            .any(|a| a == "CloseWaitLeak")),
        "the Prometheus alert on tracer_close_wait_leaks fires"
    );

    // The process exits: the flags clear and the exit status is 0.
    drop(server);
    let cleared = common::wait_until(Duration::from_secs(5), || {
        tracer_leaks(&["--json", "--agent", &url]).0 == 0
    });
    assert!(cleared, "{:?}", tracer_leaks(&["--agent", &url]));
    assert_eq!(agent.metric("tracer_close_wait_leaks"), 0.0);
}

/// With `--log-format json` every line of the agent's log is one JSON
/// object, and each flag is a structured event naming the leaking process.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn the_agent_logs_each_flag_as_one_structured_json_event() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _ns = common::Netns::enter("leaklog");
    let (agent, log) = common::Agent::start_logged(
        &[],
        &[
            "--log-format",
            "json",
            "--close-wait-threshold",
            "1s",
            "--reconcile-interval",
            "250ms",
        ],
    );
    let server = leaking_server();
    let (port, pid) = (server.port, server.pid());
    wait_close_wait(port, CONNS);
    let mine = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|v| v["event"] == "leak_flagged" && v["pid"] == pid)
            .collect()
    };
    let flagged = common::wait_until(Duration::from_secs(10), || {
        mine(&log.lock().unwrap()).len() >= CONNS
    });
    drop(agent);
    let text = log.lock().unwrap().clone();
    assert!(flagged, "{text}");
    let events = mine(&text);
    let fds: BTreeSet<u64> = events.iter().filter_map(|v| v["fd"].as_u64()).collect();
    let want: BTreeSet<u64> = server.fds.keys().map(|&fd| fd as u64).collect();
    assert_eq!(fds, want, "{events:#?}");
    for v in &events {
        assert_eq!(v["level"], "WARN", "{v}");
        assert_eq!(v["leak"], "close_wait", "{v}");
        assert_eq!(v["comm"], "python3", "{v}");
        assert_eq!(
            (&v["unread_bytes"], &v["read_to_end"]),
            (&0.into(), &false.into()),
            "{v}"
        );
        assert!(
            v["local"]
                .as_str()
                .is_some_and(|l| l.ends_with(&format!(":{port}"))),
            "{v}"
        );
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("leak flagged: in CLOSE_WAIT")),
            "{v}"
        );
        serde_json::from_value::<tracer::wall::Wall>(v["ts"].clone()).expect("wall-clock ts");
    }
    // The agent's own lines name their event too.
    let started: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "started")
        .collect();
    assert_eq!(started.len(), 1, "{text}");
    assert!(
        started[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("agent running:")),
        "{text}"
    );
}

/// The server's clients closed and are gone: their ends are orphans in
/// FIN_WAIT2, waiting for the server's FIN that never comes. Their peer is
/// on this host, so each orphan's flag names the server's process and the
/// fd of its end of that very connection.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_orphans_peer_on_this_host_is_named() {
    common::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = leaking_server();
    let (port, pid) = (server.port, server.pid());
    wait_close_wait(port, CONNS);
    let mut det = Detector::new(Thresholds {
        fin_wait2: Duration::from_secs(1),
        close_wait: Duration::from_secs(3600),
        ..Thresholds::default()
    });
    let mut dumper = live_dumper();
    let mut dump = Vec::new();
    let mut orphans = Vec::new();
    let started = Instant::now();
    while orphans.len() < CONNS && started.elapsed() < Duration::from_secs(5) {
        dumper.dump_into(&mut dump).expect("dump");
        let now = tracer::agent::monotonic_ns();
        det.update(&dump, now, |_, _| None, owners_of);
        orphans = det
            .active()
            .filter(|f| {
                f.kind == LeakKind::OrphanedFinWait2 && f.remote.is_some_and(|r| r.port() == port)
            })
            .cloned()
            .collect();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(orphans.len(), CONNS, "{orphans:#?}");
    for f in &orphans {
        let peer = f
            .local_peer
            .as_ref()
            .unwrap_or_else(|| panic!("no peer: {f:#?}"));
        let owner = peer
            .owners
            .iter()
            .find(|o| o.pid == pid)
            .unwrap_or_else(|| panic!("the server not named: {f:#?}"));
        assert_eq!(server.fds[&owner.fd], f.local.port(), "{f:#?}");
    }
}

/// A dumper as the agent's live dumps make it: `tcp_info`, no TIME_WAIT.
fn live_dumper() -> Dumper {
    Dumper::new(DumpOptions {
        with_info: true,
        without_time_wait: true,
    })
    .expect("sock_diag")
}

/// Leaks older than the agent are in its first answer: the dump it adopts
/// at start is judged at once, not a reconcile interval later (a minute
/// here), so neither `/api/v1/leaks` nor the leak gauge gives a false all
/// clear right after a (re)start. Following every namespace, as deployed
/// (an agent of one namespace happened to judge at once already: its first
/// full dump came due right after the adoption).
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn leaks_older_than_the_agent_are_in_its_first_answer() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _ns = common::Netns::enter("leakfirst");
    let server = leaking_server();
    wait_close_wait(server.port, CONNS);
    std::thread::sleep(Duration::from_millis(1200));
    let agent = common::Agent::start(&[
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "60s",
        "--netns",
        "all",
    ]);
    let report: Value = serde_json::from_str(&agent.get("/api/v1/leaks")).expect("JSON");
    let netns = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/thread-self/ns/net")
            .expect("netns")
            .ino()
    };
    let flags: Vec<Value> = flags_on_port(&report, server.port)
        .into_iter()
        .filter(|f| f["netns"] == netns)
        .collect();
    assert_eq!(flags.len(), CONNS, "{report:#}");
    for f in &flags {
        assert_eq!(f["kind"], "close_wait", "{f}");
        let fds: Vec<u64> = f["owners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["pid"] == server.pid())
            .filter_map(|o| o["fd"].as_u64())
            .collect();
        assert_eq!(fds.len(), 1, "named with its pid and fd: {f}");
    }
    let text = agent.get("/metrics");
    assert!(
        common::metric_value(&text, "tracer_close_wait_leaks").is_some_and(|n| n >= CONNS as f64),
        "{text}"
    );
}

/// `ss -K` on a leak, the 3 a.m. workaround, kills the sockets but not the
/// descriptors: each flag clears saying the process still holds its fd,
/// not that the socket was closed.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_leak_killed_with_ss_k_says_the_fd_is_still_held() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _ns = common::Netns::enter("leakkill");
    let agent = close_wait_agent();
    let server = leaking_server();
    let port = server.port;
    wait_close_wait(port, CONNS);
    wait_flagged(&agent, port, CONNS);
    // Run in this thread's namespace, as its children are.
    common::sh(
        "ss",
        &[
            "-K",
            "-tan",
            "state",
            "close-wait",
            &format!("( sport = :{port} )"),
        ],
    );
    wait_cleared(&agent, port, CONNS, |h| {
        h.starts_with("socket closed under its process (ss -K")
    });
    // The fds are still the server's.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("the server's fds")
        .count();
    assert!(fds >= CONNS, "{fds}");
}

/// A leaking process that exits (killed, here): the kernel closes its
/// sockets for it, and each flag clears saying its process closed it, not
/// that a socket merely went.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_leak_whose_process_exits_says_its_process_closed_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _ns = common::Netns::enter("leakexit");
    let agent = close_wait_agent();
    let server = leaking_server();
    let port = server.port;
    wait_close_wait(port, CONNS);
    wait_flagged(&agent, port, CONNS);
    drop(server);
    wait_cleared(&agent, port, CONNS, |h| {
        h == "its process closed it (close(), or the process exited)"
            || h == "socket left close_wait (now last_ack)"
    });
}

/// A peer that resets a leaked CLOSE_WAIT socket (here: the server writes
/// to it, and the client's closed end answers with a reset) closes it
/// under its process: each flag clears saying a reset ended it and that
/// the descriptor leaks on, not blaming `ss -K`.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_leak_the_peer_resets_says_so_and_that_the_fd_is_still_held() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _ns = common::Netns::enter("leakrst");
    let agent = close_wait_agent();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // This process leaks: it accepts and never closes.
    let mut held = Vec::new();
    for _ in 0..CONNS {
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        held.push(listener.accept().expect("accept").0);
        drop(c);
    }
    wait_close_wait(port, CONNS);
    wait_flagged(&agent, port, CONNS);
    for s in &mut held {
        let _ = s.write_all(b"late answer");
    }
    let want = "a reset ended the connection; its process still holds the descriptor: the fd \
                leaks on until the application closes it";
    wait_cleared(&agent, port, CONNS, |h| h == want);
    drop(held);
}

/// A half-close whose answer is slow: the client shut its side down
/// (`shutdown(SHUT_WR)`) and waits, the server read the EOF and has not
/// answered. The server's CLOSE_WAIT flag names the client's end, held in
/// FIN_WAIT2, so a person can tell it from a missing close().
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_half_close_waiting_for_its_answer_names_the_peer_that_waits() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _ns = common::Netns::enter("halfclose");
    let agent = close_wait_agent();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut buf = [0u8; 16];
    assert_eq!(server.read(&mut buf).expect("read"), 0, "EOF");
    wait_close_wait(port, 1);
    let url = format!("http://{}", agent.addr);
    let want = format!(
        "its peer is on this host, in FIN_WAIT2: PID {} ",
        std::process::id()
    );
    let mut table = String::new();
    let named = common::wait_until(Duration::from_secs(10), || {
        table = tracer_leaks(&["--agent", &url, "--port", &port.to_string()]).1;
        table.contains(&want)
    });
    assert!(named, "{table}");
    assert!(
        table.contains("shut its side down (shutdown(SHUT_WR)) and waits for this answer"),
        "{table}"
    );
    drop((client, server));
}
