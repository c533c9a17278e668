//! `tracer run` end to end: real sockets, the agent's API and metrics
//! against sock_diag (through `ss`), a real Prometheus scraping it.
//! Privileged. Each test uses its own ports and never assumes it is alone.
mod common;
#[path = "agent/time_wait.rs"]
mod time_wait;

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::{Agent, Netns, ss_count, wait_until};

const LO: &str = "127.0.0.1";

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind((LO, 0)).expect("bind");
    let p = l.local_addr().unwrap().port();
    (l, p)
}

/// `n` connections to `l` on `port` where the client closes first and the
/// server closes on EOF: each leaves a TIME_WAIT socket on the client side.
fn client_closes_first(l: &TcpListener, port: u16, n: usize) {
    for _ in 0..n {
        let c = TcpStream::connect((LO, port)).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        drop(c);
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 0);
    }
}

/// The agent of the TIME_WAIT tests: it reconciles every `reconcile`,
/// dumps TIME_WAIT every `time_wait`, with `extra` flags after those.
fn time_wait_agent(reconcile: &str, time_wait: &str, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--reconcile-interval",
        reconcile,
        "--time-wait-interval",
        time_wait,
    ];
    args.extend_from_slice(extra);
    Agent::start(&args)
}

/// Within 5 s, a scrape of the TIME_WAIT gauge between two `ss` counts of
/// the whole namespace for which `agree(ss before, gauge, ss after)` holds;
/// panics with every count seen otherwise.
fn gauge_agrees_with_ss(agent: &Agent, agree: impl Fn(usize, usize, usize) -> bool) {
    let mut seen = Vec::new();
    let agrees = wait_until(Duration::from_secs(5), || {
        let before = ss_count("time-wait", "");
        let gauge = agent.metric("tracer_tcp_sockets{state=\"time_wait\"}") as usize;
        let after = ss_count("time-wait", "");
        seen.push((before, gauge, after));
        agree(before, gauge, after)
    });
    assert!(agrees, "(ss before, gauge, ss after): {seen:?}");
}

fn api_sockets(agent: &Agent, state: &str, port: u16) -> Vec<serde_json::Value> {
    agent
        .json(&format!("/api/v1/sockets?state={state}&port={port}"))
        .as_array()
        .cloned()
        .expect("array")
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn time_wait_agrees_with_sock_diag_after_200_client_closes() {
    let _ns = Netns::enter("time598");
    // No CPU budget: under a slow VM (TCG) a budgeted full dump stretches
    // past the wait below; pacing has its own test.
    let agent = time_wait_agent("200ms", "1s", &["--reconcile-budget", "0"]);
    let (l, port) = listener();
    client_closes_first(&l, port, 200);
    let filter = format!("( dport = :{port} )");
    // The last server's FIN may still be on its way to its client (a slow
    // VM defers the loopback's softirq): wait for the kernel's own count.
    let mut held = 0;
    let all_closed = wait_until(Duration::from_secs(10), || {
        held = ss_count("time-wait", &filter);
        held == 200
    });
    assert!(
        all_closed,
        "the kernel holds {held} TIME_WAIT sockets, not 200"
    );
    // After a reconcile confirms them, the API shows exactly the same set.
    let ok = wait_until(Duration::from_secs(10), || {
        let tw = api_sockets(&agent, "time_wait", port);
        tw.len() == 200 && tw.iter().all(|s| s["time_wait_confirmed"] == true)
    });
    let tw = api_sockets(&agent, "time_wait", port);
    let confirmed = tw
        .iter()
        .filter(|s| s["time_wait_confirmed"] == true)
        .count();
    assert!(
        ok,
        "API shows {} TIME_WAIT sockets on port {port}, {confirmed} confirmed; metrics:\n{}",
        tw.len(),
        common::metric_lines(
            &agent.get("/metrics"),
            &["tracer_dump", "tracer_reconcile", "tracer_netns"]
        )
    );
    for s in &tw {
        assert_eq!(s["closed_by"], "local");
        assert_eq!(s["age_is_lower_bound"], false);
        assert!(s["created_ns"].as_u64().is_some_and(|c| c > 0), "{s}");
        assert!(s["created"].is_string(), "{s}");
        assert!(s["age_seconds"].as_f64().unwrap() < 60.0);
        assert_eq!(s["dport"], port);
    }
    assert_eq!(ss_count("time-wait", &filter), 200);
    // Nothing on our port is left in any other live state.
    assert!(api_sockets(&agent, "fin_wait2", port).is_empty());
    // The agent follows its own namespace (the one sock_diag sees), so the
    // gauge equals sock_diag's count for the whole namespace, even while the
    // rest of the host churns. Our own scrapes leave TIME_WAIT sockets too
    // (the agent closes first), one per request: compare with the count
    // just before and just after each scrape.
    gauge_agrees_with_ss(&agent, |before, gauge, after| {
        gauge >= 200 && (gauge == before || gauge == after)
    });
    assert_eq!(agent.stop().code(), Some(0), "SIGTERM exits 0");
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn server_side_time_wait_is_counted_by_listening_port() {
    let _ns = Netns::enter("server587");
    let agent = Agent::start(&["--reconcile-interval", "200ms"]);
    let (l, port) = listener();
    let mut clients = Vec::new();
    for _ in 0..25 {
        let mut c = TcpStream::connect((LO, port)).expect("connect");
        let (s, _) = l.accept().expect("accept");
        drop(s); // the server closes first: TIME_WAIT on the listening port
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap(), 0);
        clients.push(c);
    }
    drop(clients);
    let series = format!("tracer_tcp_time_wait_sockets{{port=\"{port}\"}}");
    let ok = wait_until(Duration::from_secs(5), || {
        common::metric_value(&agent.get("/metrics"), &series) == Some(25.0)
    });
    assert!(
        ok,
        "{series} = {:?}",
        common::metric_value(&agent.get("/metrics"), &series)
    );
    assert_eq!(ss_count("time-wait", &format!("( sport = :{port} )")), 25);
    drop(l);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn close_wait_stays_are_measured() {
    let _ns = Netns::enter("close773");
    let agent = Agent::start(&["--reconcile-interval", "500ms"]);
    let before = agent.get("/metrics");
    let bucket = |text: &str, le: &str| {
        common::metric_value(
            text,
            &format!(
                "tracer_tcp_state_duration_seconds_bucket{{le=\"{le}\",state=\"close_wait\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    let (l, port) = listener();
    let mut held = Vec::new();
    for _ in 0..10 {
        let c = TcpStream::connect((LO, port)).expect("connect");
        let (s, _) = l.accept().expect("accept");
        held.push((c, s));
    }
    let mut servers = Vec::new();
    for (c, mut s) in held {
        drop(c);
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 0);
        servers.push(s);
    }
    let closed_at = Instant::now();
    let closed_wall = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(2500));
    // Mid-stay, the API names each socket with its age so far.
    // The age is taken between asking and the answer; the closes ran just
    // before `closed_at`.
    let asked = closed_at.elapsed().as_secs_f64();
    let cw = api_sockets(&agent, "close_wait", port);
    let answered = closed_at.elapsed().as_secs_f64();
    assert_eq!(cw.len(), 10, "{cw:?}");
    for s in &cw {
        let age = s["age_seconds"].as_f64().unwrap();
        assert!(
            asked - 0.05 < age && age < answered + 0.2,
            "age {age}, asked at {asked} and answered at {answered}"
        );
        assert_eq!(s["closed_by"], "remote");
        // The same moment on the wall clock.
        let since = serde_json::from_value::<tracer::wall::Wall>(s["state_since"].clone())
            .unwrap_or_else(|e| panic!("{e}: {s}"))
            .0;
        let off = since
            .duration_since(closed_wall)
            .unwrap_or_else(|e| e.duration());
        assert!(
            off < Duration::from_millis(200),
            "state_since {since:?} vs {closed_wall:?}"
        );
    }
    std::thread::sleep(Duration::from_secs(3).saturating_sub(closed_at.elapsed()));
    drop(servers);
    let ok = wait_until(Duration::from_secs(3), || {
        let now = agent.get("/metrics");
        bucket(&now, "3.5")
            - bucket(&before, "3.5")
            - (bucket(&now, "2.5") - bucket(&before, "2.5"))
            >= 10.0
    });
    let now = agent.get("/metrics");
    assert!(
        ok,
        "close_wait bucket deltas: le=2.5 {} le=3.5 {}",
        bucket(&now, "2.5") - bucket(&before, "2.5"),
        bucket(&now, "3.5") - bucket(&before, "3.5")
    );
    drop(l);
}

/// The JSON API answers with every event the kernel wrote before the
/// request, as `/metrics` does: it does not wait for the loop's next read
/// of the lanes (every 200 ms at this rate).
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn api_answers_count_the_events_written_just_before() {
    let _ns = Netns::enter("fresh318");
    let agent = Agent::start(&[]);
    let (l, port) = listener();
    for round in 0..5 {
        let mut held = Vec::new();
        for _ in 0..16 {
            let c = TcpStream::connect((LO, port)).expect("connect");
            let (s, _) = l.accept().expect("accept");
            held.push((c, s));
        }
        let est = api_sockets(&agent, "established", port);
        assert_eq!(est.len(), 32, "round {round}: {est:?}");
        let summary = agent.json("/api/v1/summary");
        let counted = summary["sockets"]["established"].as_u64().unwrap_or(0);
        assert!(counted >= 32, "round {round}: summary {summary}");
        drop(held);
        // The closes, too, are seen at once.
        let est = api_sockets(&agent, "established", port);
        assert!(est.is_empty(), "round {round}, after the closes: {est:?}");
    }
    // A path it does not serve says which it does, and where events
    // stream from.
    let (code, body) = common::http_get(agent.addr, "/api/v1/events").expect("an answer");
    assert_eq!(code, 404, "{body}");
    assert!(
        body.starts_with("tracer serves no /api/v1/events: its endpoints are /metrics /healthz")
            && body.contains("the command `tracer events`"),
        "{body}"
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn sockets_older_than_the_agent_are_adopted() {
    let _ns = Netns::enter("socket994");
    let (l, port) = listener();
    let c = TcpStream::connect((LO, port)).expect("connect");
    let (s, _) = l.accept().expect("accept");
    // One TIME_WAIT too: a client-closed connection.
    let c2 = TcpStream::connect((LO, port)).expect("connect");
    let (mut s2, _) = l.accept().expect("accept");
    drop(c2);
    let mut b = [0u8; 1];
    assert_eq!(s2.read(&mut b).unwrap(), 0);
    drop(s2);
    // And one CLOSE_WAIT: its peer closed, it did not.
    let c3 = TcpStream::connect((LO, port)).expect("connect");
    let (s3, _) = l.accept().expect("accept");
    drop(c3);
    let closed = std::time::Instant::now();
    assert!(wait_until(Duration::from_secs(3), || ss_count(
        "time-wait",
        &format!("( dport = :{port} )")
    ) == 1));
    std::thread::sleep(Duration::from_millis(1200));

    let agent = Agent::start(&[]);
    let est = api_sockets(&agent, "established", port);
    assert_eq!(est.len(), 2, "{est:?}");
    for e in &est {
        assert_eq!(
            e["age_is_lower_bound"], true,
            "age unknown before the agent: {e}"
        );
        assert!(
            e["created_ns"].is_null() && e["created"].is_null(),
            "a creation the agent did not see is unknown: {e}"
        );
    }
    let listen = api_sockets(&agent, "listen", port);
    assert_eq!(listen.len(), 1);
    let tw = api_sockets(&agent, "time_wait", port);
    assert_eq!(tw.len(), 1, "{tw:?}");
    // Its entry follows from the remaining timer: at least the 1.2 s we
    // waited, at most the time since the close (the timer's jiffies round
    // up by a few ms; an agent may take seconds to start on a slow machine).
    let age = tw[0]["age_seconds"].as_f64().unwrap();
    let most = closed.elapsed().as_secs_f64() + 0.1;
    assert!(
        tw[0]["age_is_lower_bound"] == false && (1.0..most).contains(&age),
        "age {age} s, closed {most} s ago: {}",
        tw[0]
    );
    // The peer's FIN came with its last ACK or before: at least that old,
    // as the leak report says.
    let cw = api_sockets(&agent, "close_wait", port);
    let most = closed.elapsed().as_secs_f64() + 0.1;
    assert_eq!(cw.len(), 1, "{cw:?}");
    let age = cw[0]["age_seconds"].as_f64().unwrap();
    assert!(
        cw[0]["age_is_lower_bound"] == true && (1.0..most).contains(&age),
        "age {age} s, the peer closed {most} s ago: {}",
        cw[0]
    );
    drop((c, s, s3, l));
}

/// Close `s` with a reset (`SO_LINGER` 0): no FIN, no TIME_WAIT.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor and a pointer to a live `linger`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// `--reconcile-budget` spaces out dumps that cost more than it allows,
/// but events lost in the kernel still bring a dump at the next tick, and
/// that dump heals what they would have told: sockets the events missed
/// are adopted, and sockets whose close they missed are closed by the
/// dump the next tick brings (a socket is judged gone by the second dump
/// in a row without it).
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn reconcile_budget_spaces_dumps_but_losses_still_heal() {
    let _ns = Netns::enter("budget");
    let live = "tracer_reconciles_total{dump=\"live\"}";
    // A budget no dump can meet (0.00001% of a core: 100 µs of CPU buys a
    // 1000 s gap), and the smallest ring, which a frozen agent overflows.
    let agent = Agent::start(&[
        "--reconcile-interval",
        "200ms",
        "--reconcile-budget",
        "0.00001%",
        "--ring-bytes",
        "4096",
    ]);
    // The first dump of each kind does not set the pace (it also opens
    // every namespace and fills caches), nor does the walk that turns
    // live dumps to lookups, nor the first lookups (cold too): the next
    // one does, one interval after each of them.
    let gap = "tracer_reconcile_interval_seconds{dump=\"live\"}";
    assert!(
        wait_until(Duration::from_secs(5), || agent.metric(gap) > 10.0),
        "the budget stretches the 200 ms interval: {} s after {} live dumps",
        agent.metric(gap),
        agent.metric(live)
    );
    let dumps = agent.metric(live);
    let lost = agent.metric("tracer_events_lost_total");
    std::thread::sleep(Duration::from_millis(1500));
    // No dump within the stretched gap, unless events were lost meanwhile:
    // the 4 KiB ring also carries every other namespace's events, which
    // the agent filters in user space, and tests beside this one make them.
    assert!(
        agent.metric(live) == dumps || agent.metric("tracer_events_lost_total") > lost,
        "a dump within the stretched gap, and no events lost"
    );

    // A connection the agent sees open, then freeze the agent and make
    // more events than a 4 KiB ring holds: the connection made last is
    // open, and its events are surely lost, and so is the reset of the
    // first.
    let (l, port) = listener();
    let c0 = TcpStream::connect((LO, port)).expect("connect");
    let (s0, _) = l.accept().expect("accept");
    assert!(
        wait_until(Duration::from_secs(5), || {
            api_sockets(&agent, "established", port).len() == 2
        }),
        "the first connection is seen open"
    );
    let vanished = "tracer_reconcile_corrections_total{reason=\"vanished\"}";
    let gone = agent.metric(vanished);
    agent.freeze(true);
    client_closes_first(&l, port, 60);
    reset(c0);
    reset(s0);
    let c = TcpStream::connect((LO, port)).expect("connect");
    let (s, _) = l.accept().expect("accept");
    // Still frozen: let every socket grow older than the engine's 200 ms
    // reconcile slack, so the dump the losses bring judges them all. (A
    // connection whose establishment fit in the ring and whose close did
    // not is otherwise too young to judge, and the next dump is 1000 s away.)
    std::thread::sleep(Duration::from_millis(300));
    agent.freeze(false);
    assert!(
        wait_until(Duration::from_secs(5), || {
            agent.metric("tracer_events_lost_total") > 0.0 && agent.metric(live) > dumps
        }),
        "lost events bring a dump regardless of the budget"
    );
    // The dump the losses brought may have begun before the last
    // connection: wait for one that lists it, and for the one after it,
    // which closes the reset connection's ends.
    wait_until(Duration::from_secs(5), || {
        api_sockets(&agent, "established", port).len() == 2
    });
    let est = api_sockets(&agent, "established", port);
    assert_eq!(
        est.len(),
        2,
        "both ends of the open connection, healed, and not those of the reset one: {est:?}"
    );
    assert!(agent.metric("tracer_reconcile_corrections_total{reason=\"missed\"}") >= 1.0);
    assert!(
        agent.metric(vanished) >= gone + 2.0,
        "the reset connection's ends, vanished"
    );
    drop((c, s, l));
}

/// A live walk that costs more than `--reconcile-budget` allows every
/// interval gives way to lookups of the sockets the engine follows and of
/// the flagged ones: a CLOSE_WAIT leak is still flagged with its process
/// and descriptor, and cleared once its socket closes.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn costly_walks_give_way_to_lookups_and_leaks_are_still_judged() {
    use std::os::fd::AsRawFd;
    let _ns = Netns::enter("lookups");
    let (l, port) = listener();
    // TIME_WAIT sockets the walks go through (a live one leaves them out
    // of its answer, not of the kernel's walk).
    client_closes_first(&l, port, 3000);
    // 0.01% of a core: three quarters of it for live dumps buys 37.5 µs
    // every 500 ms, less than any walk of those sockets costs.
    let agent = Agent::start(&[
        "--reconcile-interval",
        "500ms",
        "--reconcile-budget",
        "0.01%",
        "--close-wait-threshold",
        "1s",
    ]);
    let lookups = "tracer_reconcile_lookups_total";
    // The budget spaces live walks by their cost (~4 s apart here, more
    // on a loaded machine), and the first walk does not decide: lookups
    // start at the third live dump or so.
    assert!(
        wait_until(Duration::from_secs(60), || agent.metric(lookups) > 0.0),
        "live dumps look sockets up once a walk costs too much"
    );
    // The peer closes; this process never does.
    let c = TcpStream::connect((LO, port)).expect("connect");
    let (s, _) = l.accept().expect("accept");
    drop(c);
    let (pid, fd) = (u64::from(std::process::id()), s.as_raw_fd() as u64);
    let leaks = || agent.json(&format!("/api/v1/leaks?state=close-wait&port={port}"));
    let named = |v: &serde_json::Value| {
        let sockets = v["leaks"].as_array().into_iter().flatten();
        let flags = sockets.flat_map(|g| g["sockets"].as_array().into_iter().flatten());
        let mut owners = flags.flat_map(|f| f["owners"].as_array().into_iter().flatten());
        owners.any(|o| o["pid"] == pid && o["fd"] == fd)
    };
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            last = leaks();
            named(&last)
        }),
        "the CLOSE_WAIT leak, named with pid {pid} and fd {fd}: {last:#}"
    );
    drop(s);
    assert!(
        wait_until(Duration::from_secs(30), || leaks()["leak_count"] == 0),
        "the flag clears once the socket closes: {:#}",
        leaks()
    );
    drop(l);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn bad_config_and_taken_port_are_one_line_errors() {
    common::require_root();
    let taken = TcpListener::bind((LO, 0)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["run", "--listen", &taken.local_addr().unwrap().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot listen on") && err.contains("--listen"),
        "{err}"
    );
    // It names who listens there: this test.
    assert!(
        err.contains(&format!("; pid {} ", std::process::id())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let tmp = common::scratch("tracer-agent-cfg-");
    let dir = tmp.path();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "reconcile-intervl = \"1s\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown field `reconcile-intervl`") && err.contains("bad.toml"),
        "{err}"
    );
}

/// A SIGTERM that comes while the agent is still starting (loading its
/// programs, adopting sockets) stops it as cleanly as one that comes later.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn sigterm_during_start_exits_0() {
    let _ns = Netns::enter("earlyterm");
    // SIGINT and SIGTERM: bits 1 and 14 of /proc's masks.
    let takes_them = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().any(|l| {
            let mask = |key| {
                l.strip_prefix(key)
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            };
            mask("SigBlk:")
                .or(mask("SigCgt:"))
                .is_some_and(|m| m & 0x4002 == 0x4002)
        })
    };
    for delay_ms in [0, 20, 50, 100] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(["run", "--listen", "127.0.0.1:0", "--netns", "host"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn tracer");
        // Past the dynamic loader: main holds the signals from its first line.
        assert!(
            wait_until(Duration::from_secs(5), || takes_them(child.id())),
            "tracer never held or caught SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().expect("wait");
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM {delay_ms} ms after start: {status}"
        );
    }
}

/// The agent's log reader goes away (`tracer run 2>&1 | head`, a log
/// shipper restarting): the agent goes on serving, and stops cleanly.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_closed_stderr_does_not_stop_the_agent() {
    let _ns = Netns::enter("deaflog");
    let (mut child, addr) = Agent::spawn(
        &[],
        &["--log-level", "debug", "--reconcile-interval", "100ms"],
        std::process::Stdio::piped(),
    );
    // Read the first line, then hang up: every later line fails with EPIPE.
    let mut first = String::new();
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    std::io::BufRead::read_line(&mut err, &mut first).expect("a first log line");
    drop(err);
    assert!(
        common::wait_healthy(&mut child, addr, common::STARTUP),
        "the agent did not become healthy with its stderr closed: {:?} (first line: {first})",
        child.try_wait()
    );
    // Debug lines come at every reconcile (100 ms): a second of them.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the agent exited when its stderr closed: {:?}",
        child.try_wait()
    );
    assert!(common::answers_healthz(addr), "the agent stopped answering");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// `--netns pid:N` follows a process's namespace. Once nothing holds that
/// namespace (the process exited, a container restarted), the agent says
/// so in one line and exits 2, rather than follow nothing with a healthy
/// /healthz.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_agent_whose_namespace_is_gone_says_so_and_exits() {
    use std::io::Read as _;
    let _ns = Netns::enter("nsgone");
    let mut holder = std::process::Command::new("unshare")
        .args(["-n", "sleep", "120"])
        .spawn()
        .expect("unshare -n sleep");
    let pid = holder.id();
    let ns_of = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
    assert!(
        wait_until(Duration::from_secs(5), || ns_of(&pid.to_string())
            != ns_of("thread-self")),
        "unshare never entered a namespace of its own"
    );
    let netns = format!("pid:{pid}");
    let (mut agent, addr) = Agent::spawn(
        &[],
        &[
            "--netns",
            &netns,
            "--reconcile-interval",
            "100ms",
            "--time-wait-interval",
            "1s",
        ],
        std::process::Stdio::piped(),
    );
    assert!(
        common::wait_healthy(&mut agent, addr, common::STARTUP),
        "the agent did not start"
    );
    let inode = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino())
    };
    let _ = holder.kill();
    let _ = holder.wait();
    // Gone for three seconds of dumps, then the end. Meanwhile new
    // namespaces are made, as other containers' would be: the kernel
    // hands a freed namespace's inode to the next one made, and the agent
    // must not take that one for the namespace it followed.
    let mut others = Vec::new();
    let ended = wait_until(Duration::from_secs(20), || {
        let done = !matches!(agent.try_wait(), Ok(None));
        if !done && others.len() < 40 {
            others.push(common::NamedNetns::new(
                &format!("nsgone{}", others.len()),
                &[],
            ));
        }
        done
    });
    let reused = others.iter().any(|o| inode.as_ref().ok() == Some(&o.inode));
    if !ended {
        let _ = agent.kill();
    }
    let status = agent.wait().expect("wait");
    let mut err = String::new();
    let _ = agent
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert!(
        ended,
        "the agent still ran 20 s after its namespace was gone (its inode handed to a new \
         namespace: {reused}): {err}"
    );
    assert_eq!(status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tracer: error: the network namespace followed (")
            && last.contains(") is gone"),
        "{err}"
    );
}

/// `?pid=` and `?comm=` keep a server's listener and the sockets it
/// accepted and never closed (they name no owner of their own yet: they
/// count as their listener's process), and leave out everyone else's.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn sockets_by_pid_include_what_a_server_accepted() {
    const CONNS: usize = 3;
    let _ns = Netns::enter("bypid");
    let agent = Agent::start(&[]);
    let mut server = common::LeakyServer::start(None);
    server.leak(CONNS);
    common::wait_close_wait(server.port, CONNS);
    let of = |query: &str| -> Vec<String> {
        let mut v: Vec<String> = agent
            .json(&format!("/api/v1/sockets?{query}"))
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
            .collect();
        v.sort();
        v
    };
    let want = ["close_wait", "close_wait", "close_wait", "listen"];
    let mut last = Vec::new();
    let listed = wait_until(Duration::from_secs(5), || {
        last = of(&format!("pid={}", server.pid()));
        last == want
    });
    assert!(listed, "{last:?}");
    assert_eq!(of(&format!("comm=python3&port={}", server.port)), want);
    // The clients (this test's connects, closed) are not the server's.
    let theirs = of(&format!("pid={}&state=fin_wait2", server.pid()));
    assert!(theirs.is_empty(), "{theirs:?}");
}
