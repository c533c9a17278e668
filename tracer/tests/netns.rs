//! Privileged tests of every network namespace, followed by default: plain
//! `ip netns` namespaces made by each test (named `tr-<tag>-<pid>`, deleted
//! on drop even when the test fails), sockets made inside them by a thread
//! that entered them, and an agent in the host's namespace that names each
//! socket's namespace. Each test looks only at its own namespaces.
mod common;
#[path = "netns/lifetime.rs"]
mod lifetime;
#[path = "netns/selection.rs"]
mod selection;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::Command,
    time::Duration,
};

use common::{Agent, Events, NO_AGENT, NamedNetns, tracer_leaks_json, wait_until};
use serde_json::Value;

/// `n` connections to a listener inside `ns`, closed by their clients: the
/// server ends sit in CLOSE_WAIT, held by this process. Returns the port
/// and the server ends.
fn leak_close_wait(ns: &NamedNetns, n: usize) -> (u16, Vec<TcpStream>) {
    ns.run(move || {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let mut held = Vec::new();
        for _ in 0..n {
            let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            held.push(l.accept().expect("accept").0);
            drop(c);
        }
        (port, held)
    })
}

/// Flags of a report on local port `port` in namespace `inode`: the port
/// alone may be another namespace's, as tests run side by side.
fn flags_on(report: &Value, inode: u64, port: u16) -> Vec<Value> {
    let suffix = format!(":{port}");
    common::all_flags(report)
        .into_iter()
        .filter(|f| {
            f["netns"] == inode && f["local"].as_str().is_some_and(|l| l.ends_with(&suffix))
        })
        .collect()
}

/// Each flag names the namespace, this process and one of `fds`.
fn assert_named(flags: &[Value], inode: u64, fds: &[i32]) {
    for f in flags {
        assert_eq!(f["netns"], inode, "{f:#}");
        let me = std::process::id();
        let owner = f["owners"]
            .as_array()
            .expect("owners")
            .iter()
            .find(|o| o["pid"] == me)
            .unwrap_or_else(|| panic!("owner {me} not named: {f:#}"));
        let fd = owner["fd"].as_i64().expect("fd") as i32;
        assert!(fds.contains(&fd), "fd {fd} not one of {fds:?}");
    }
}

/// A namespace born with its connections, as a pod that serves at once:
/// the agent finds it only after the sockets' events, which may still wait
/// in the lanes when its first dump is reconciled (the agent dumps every
/// 10 ms here, and drains every 200 ms or so). Each socket is still
/// followed from its first event: the server end's whole path, exact ages.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_namespace_born_with_its_connections_has_their_whole_history() {
    let agent = Agent::start(&[
        "--netns",
        "all",
        "--reconcile-interval",
        "10ms",
        "--reconcile-budget",
        "0",
    ]);
    for round in 0..5 {
        let (ns, (port, held)) = NamedNetns::born_with(&format!("born{round}"), || {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = l.local_addr().expect("addr").port();
            let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let (s, _) = l.accept().expect("accept");
            drop(c);
            (port, (l, s))
        });
        // No request meanwhile: one makes the agent read its lanes.
        std::thread::sleep(Duration::from_millis(300));
        let path = format!(
            "/api/v1/sockets?state=close_wait&port={port}&netns={}",
            ns.inode
        );
        let mut listed = Value::Null;
        let found = wait_until(Duration::from_secs(5), || {
            listed = agent.json(&path);
            listed.as_array().is_some_and(|a| a.len() == 1)
        });
        assert!(found, "round {round}: {listed:#}");
        let s = &listed[0];
        assert_eq!(
            s["path"],
            serde_json::json!(["listen", "syn_recv", "established", "close_wait"]),
            "round {round}: {s:#}"
        );
        assert_eq!(s["age_is_lower_bound"], false, "round {round}: {s:#}");
        drop((held, ns));
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_leak_in_a_namespace_made_after_the_agent_is_named_from_the_host() {
    let agent = Agent::start_every_netns();
    let url = format!("http://{}", agent.addr);
    let ns = NamedNetns::new("nsleak", &[]);
    // On the clock that stamps `raised_at_ns`; the leak begins after this.
    let began_ns = tracer::agent::monotonic_ns();
    let (port, held) = leak_close_wait(&ns, 3);
    let fds: Vec<i32> = held.iter().map(|s| s.as_raw_fd()).collect();

    // The API lists them, with their namespace.
    let listed = wait_until(Duration::from_secs(5), || {
        let v = agent.json(&format!(
            "/api/v1/sockets?state=close_wait&port={port}&netns={}",
            ns.inode
        ));
        v.as_array().expect("array").len() == 3
    });
    assert!(
        listed,
        "{}",
        agent.get(&format!("/api/v1/sockets?port={port}"))
    );

    // The agent's report names pid, fd, age and namespace. Flags come only
    // from dumps: raised 1 s (the threshold) after the leak began, plus at
    // most one reconcile interval (250 ms) and one dump (which walks every
    // namespace of a host that may be busy) once the namespace is dumped.
    // The agent's own stamp is judged, not when this poll saw it: in a VM
    // without KVM each `tracer leaks` takes a good part of a second.
    let mut report = Value::Null;
    let flagged = wait_until(Duration::from_secs(6), || {
        report = tracer_leaks_json(&["--agent", &url]).1;
        flags_on(&report, ns.inode, port).len() == 3
    });
    assert!(flagged, "{report:#}");
    let flags = flags_on(&report, ns.inode, port);
    for f in &flags {
        let raised = f["raised_at_ns"].as_u64().expect("raised_at_ns");
        let after = Duration::from_nanos(raised.saturating_sub(began_ns));
        assert!(
            after < Duration::from_millis(3000),
            "flagged {after:?} after the leak began: {f:#}"
        );
    }
    assert_named(&flags, ns.inode, &fds);
    // The API takes the namespace by its `ip netns` name too, as the
    // commands' --netns does; on /api/v1/leaks it keeps that one's flags.
    let by_name = agent.json(&format!(
        "/api/v1/sockets?state=close_wait&port={port}&netns={}",
        ns.name
    ));
    assert_eq!(by_name.as_array().map(Vec::len), Some(3), "{by_name:#}");
    let leaks = agent.json(&format!("/api/v1/leaks?netns={}", ns.name));
    let kept: Vec<u64> = leaks["leaks"]
        .as_array()
        .expect("leaks")
        .iter()
        .flat_map(|g| g["sockets"].as_array().expect("sockets"))
        .map(|f| f["netns"].as_u64().expect("netns"))
        .collect();
    assert!(
        kept.len() >= 3 && kept.iter().all(|&n| n == ns.inode),
        "{leaks:#}"
    );
    // An inode no namespace has is said, on both, not an empty answer; a
    // namespace with no socket on the port is an empty list.
    for path in ["/api/v1/sockets?netns=1", "/api/v1/leaks?netns=1"] {
        let (code, body) = common::http_get(agent.addr, path).expect("answer");
        assert_eq!(code, 400, "{path}: {body}");
        assert!(
            body.contains("no network namespace has inode 1"),
            "{path}: {body}"
        );
    }
    let none = agent.json(&format!("/api/v1/sockets?port=1&netns={}", ns.inode));
    assert_eq!(none.as_array().map(Vec::len), Some(0), "{none:#}");
    for f in &flags {
        assert!(f["age_seconds"].as_f64().is_some_and(|a| a >= 1.0), "{f:#}");
        assert_eq!(f["age_is_lower_bound"], false, "seen from its birth: {f:#}");
    }
    assert_eq!(
        report["agent_netns"].as_u64(),
        Some(u64::from(tracer::diag::own_netns())),
        "the agent names its own namespace"
    );
    // `tracer top` marks the namespace by its name: no container here.
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args([
            "top",
            "--once",
            "--agent",
            &url,
            "--port",
            &port.to_string(),
        ])
        .output()
        .expect("tracer top");
    let frame = String::from_utf8_lossy(&out.stdout);
    // `ns:tr-nsleak-<pid>`: whole, or cut to its end on a narrow frame.
    let marked = frame
        .lines()
        .filter(|l| l.contains(" ns:") && l.contains(&format!("leak-{}", std::process::id())))
        .count();
    assert_eq!(marked, 3, "{frame}");
    // Narrowed to the host's namespace, the agent's report has none of them.
    let (_, host_only) = tracer_leaks_json(&["--agent", &url, "--netns", "host"]);
    assert!(
        flags_on(&host_only, ns.inode, port).is_empty(),
        "{host_only:#}"
    );

    // Without an agent: a snapshot of every namespace names them too.
    let (code, snap) = tracer_leaks_json(&["--agent", NO_AGENT]);
    assert_eq!(code, 1);
    assert!(
        snap["now"].as_str().is_some_and(|t| t.ends_with('Z')),
        "a snapshot says when it was taken: {}",
        snap["now"]
    );
    let flags = flags_on(&snap, ns.inode, port);
    assert_eq!(flags.len(), 3, "{snap:#}");
    assert_named(&flags, ns.inode, &fds);
    let (_, by_name) = tracer_leaks_json(&["--agent", NO_AGENT, "--netns", &ns.name]);
    assert_eq!(flags_on(&by_name, ns.inode, port).len(), 3, "{by_name:#}");
    let (_, host) = tracer_leaks_json(&["--agent", NO_AGENT, "--netns", "host"]);
    assert!(flags_on(&host, ns.inode, port).is_empty(), "{host:#}");

    // The table shows the namespace.
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["leaks", "--agent", NO_AGENT, "--netns", &ns.name])
        .output()
        .expect("tracer leaks");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("{} ({})", ns.inode, ns.name)),
        "{table}"
    );

    // Per-state counts agree with `ss -tan` inside the namespace.
    agent.assert_states_agree(ns.inode, &ns.name, || ns.ss_states());
    drop(held);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn the_same_four_tuple_in_two_namespaces_is_kept_apart() {
    let agent = Agent::start_every_netns();
    let (a, b) = (
        NamedNetns::new("tuplea", &[]),
        NamedNetns::new("tupleb", &[]),
    );
    let pair = |ns: &NamedNetns| {
        ns.run(|| {
            let l = TcpListener::bind("127.0.0.1:8080").expect("bind 8080");
            let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            let from: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
            c.bind(&from.into()).expect("bind 40000");
            let to: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
            c.connect(&to.into()).expect("connect");
            let s = l.accept().expect("accept").0;
            (l, TcpStream::from(c), s)
        })
    };
    let (la, ca, sa) = pair(&a);
    let (_lb, _cb, _sb) = pair(&b);
    // Asked per namespace: port 8080 may be busy in many others, past
    // one page of the answer.
    let per_ns = |inode: u64| -> Vec<Value> {
        agent
            .json(&format!("/api/v1/sockets?port=8080&netns={inode}"))
            .as_array()
            .expect("array")
            .iter()
            .filter(|s| s["live"] == true)
            .cloned()
            .collect()
    };
    let both = wait_until(Duration::from_secs(5), || {
        per_ns(a.inode).len() == 3 && per_ns(b.inode).len() == 3
    });
    assert!(both, "a: {:#?}\nb: {:#?}", per_ns(a.inode), per_ns(b.inode));
    let mut cookies: Vec<u64> = per_ns(a.inode)
        .iter()
        .chain(&per_ns(b.inode))
        .map(|s| s["cookie"].as_u64().expect("cookie"))
        .collect();
    cookies.sort_unstable();
    cookies.dedup();
    assert_eq!(cookies.len(), 6, "six sockets, six cookies");

    // a's client closes first: TIME_WAIT in a; b's connection is untouched.
    drop(ca);
    std::thread::sleep(Duration::from_millis(50));
    drop(sa);
    drop(la);
    let apart = wait_until(Duration::from_secs(5), || {
        let a_tw = per_ns(a.inode)
            .iter()
            .filter(|s| s["state"] == "time_wait")
            .count();
        let b_est = per_ns(b.inode)
            .iter()
            .filter(|s| s["state"] == "established")
            .count();
        a_tw == 1 && b_est == 2
    });
    assert!(
        apart,
        "a: {:#?}\nb: {:#?}",
        per_ns(a.inode),
        per_ns(b.inode)
    );
    for ns in [&a, &b] {
        agent.assert_states_agree(ns.inode, &ns.name, || ns.ss_states());
    }
}

/// Every event names its own socket's namespace, also when many namespaces
/// take turns. The kernel programs keep namespace inodes in a per-CPU cache
/// of 64 slots keyed by each namespace's cookie (tracer-ebpf's `sock.rs`),
/// so with 70 namespaces taking turns slots change hands, and an event
/// labelled from a slot another namespace left behind would show here.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn every_event_names_its_namespace_when_seventy_take_turns() {
    const SPACES: u16 = 70;
    const ROUNDS: usize = 2;
    // Each namespace listens on a port of its own, so an event's port says
    // which namespace it came from: ports below 1024, which no
    // `ip_local_port_range` gives out (a host's, widened to 1024-65535,
    // included), so no client's own port, here or on the host, falls
    // among them.
    let base: u16 = 700;
    let spaces: Vec<NamedNetns> = (0..SPACES)
        .map(|i| NamedNetns::new(&format!("turn{i}"), &[]))
        .collect();
    let ports: Vec<String> = (0..SPACES).map(|i| (base + i).to_string()).collect();
    let mut args = vec!["--netns", "all", "--kind", "state"];
    for p in &ports {
        args.extend(["--port", p.as_str()]);
    }
    let tracer = Events::start(&args);
    let listeners: Vec<TcpListener> = spaces
        .iter()
        .zip(base..)
        .map(|(ns, port)| ns.run(move || TcpListener::bind(("127.0.0.1", port)).expect("bind")))
        .collect();
    for _ in 0..ROUNDS {
        for ((ns, l), port) in spaces.iter().zip(&listeners).zip(base..) {
            let c = ns.run(move || TcpStream::connect(("127.0.0.1", port)).expect("connect"));
            let s = l.accept().expect("accept").0;
            drop(c);
            drop(s);
        }
    }
    drop(listeners);
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    out.assert_none_dropped();

    let mut seen = vec![0usize; usize::from(SPACES)];
    for e in &out.events {
        let port = [&e["sport"], &e["dport"]]
            .iter()
            .filter_map(|p| p.as_u64())
            .find(|p| (u64::from(base)..u64::from(base + SPACES)).contains(p))
            .unwrap_or_else(|| panic!("an event off our ports: {e}"));
        let i = (port - u64::from(base)) as usize;
        assert_eq!(
            e["netns"], spaces[i].inode,
            "namespace {}: {e}",
            spaces[i].name
        );
        seen[i] += 1;
    }
    // Per round and namespace, the client's connect and the server's
    // established at least: every namespace had its turns.
    for (i, n) in seen.iter().enumerate() {
        assert!(*n >= 2 * ROUNDS, "namespace {i}: {n} events");
    }
}
