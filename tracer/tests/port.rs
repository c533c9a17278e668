//! `tracer port` against the kernel: the seed's scenario for real. A
//! server (python3, a separate process) listening with clients connected
//! is killed with its connections open, so its side of each goes to
//! FIN_WAIT2 or TIME_WAIT; `tracer port` must then say "busy without
//! SO_REUSEADDR" (and, for a server that set it, "free with it"), and a
//! restart of the server both ways must agree: EADDRINUSE without
//! SO_REUSEADDR, listening with it.
//!
//! Each test runs in a network namespace of its own (`common::Netns`), so
//! it is alone on its port; the tracer and the agent run in it too.
mod common;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use common::{Agent, NO_AGENT, Netns, wait_until};

#[path = "port/kit.rs"]
mod kit;
use kit::*;

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_killed_server_with_reuseaddr_restarts_only_with_reuseaddr() {
    let _ns = Netns::enter("port-seed");
    let port = 8080;
    let clients = crash(port, true);
    let (code, r) = port_json(port, &["--agent", NO_AGENT]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["source"], "snapshot");
    assert_eq!(r["free"], false);
    assert_eq!(r["free_with_reuseaddr"], true, "{r:#}");
    let ns = only_namespace(&r);
    assert_eq!(ns["without_reuseaddr"]["outcome"], "busy");
    assert_eq!(ns["without_reuseaddr"]["blockers"], 3);
    assert_eq!(ns["with_reuseaddr"]["outcome"], "free");
    assert_eq!(ns["with_reuseaddr"]["test_bind"], true);
    assert_eq!(ns["listeners"].as_array().map(Vec::len), Some(0));
    let states = states(ns);
    assert_eq!(states, ["fin_wait2", "time_wait", "time_wait"], "{ns:#}");
    for s in ns["sockets"].as_array().expect("sockets") {
        assert_eq!(s["closed_first"], "local", "{s}");
        assert_eq!(s["owners"].as_array().map(Vec::len), Some(0), "{s}");
        assert_eq!(s["blocks_without_reuseaddr"], "bound", "{s}");
        assert_eq!(s["blocks_with_reuseaddr"], Value::Null, "{s}");
        let left = s["expires_in_seconds"].as_f64().expect("a kernel timer");
        // Counted from the dump's start: a few ms past 60 s at most.
        assert!(left > 50.0 && left <= 60.25, "{s}");
        // Without an agent, only TIME_WAIT's age is known (its timer says).
        if s["state"] == "time_wait" {
            let age = s["age_seconds"].as_f64().expect("TIME_WAIT age");
            assert!((0.0..10.0).contains(&age), "{s}");
        } else {
            assert_eq!(s["age_seconds"], Value::Null, "{s}");
            assert_eq!(s["age_source"], Value::Null, "{s}");
        }
    }
    let tw = &ns["time_wait"];
    assert_eq!(tw["count"], 3);
    assert_eq!(tw["free_then"], true);
    // The text says the same in words.
    let text = port_text(port, &["--agent", NO_AGENT]);
    assert!(
        text.starts_with(
            "port 8080 (any address) is BUSY for a new listener without SO_REUSEADDR; FREE with SO_REUSEADDR"
        ),
        "{text}"
    );
    assert!(text.contains("  TIME_WAIT (2):\n"), "{text}");
    assert!(text.contains("closed first: local"), "{text}");
    assert!(
        text.contains(
            "a plain bind succeeds then, unless a peer closes first: 1 FIN_WAIT2 socket still \
             waits for its peer's FIN"
        ),
        "{text}"
    );
    assert_eq!(tw["fin_wait2"], 1);
    // Reality agrees: plainly EADDRINUSE, with SO_REUSEADDR a listener.
    assert_eq!(try_listen(ANY, port, false), Err(libc::EADDRINUSE));
    assert_eq!(try_listen(ANY4, port, false), Err(libc::EADDRINUSE));
    let plain = Server::start(port, false);
    assert_eq!(plain.outcome, Err(libc::EADDRINUSE));
    let again = Server::start(port, true);
    assert_eq!(again.outcome, Ok(()));
    drop(clients);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_killed_server_without_reuseaddr_blocks_even_a_reuseaddr_restart() {
    // Linux shares a port only when both sockets set SO_REUSEADDR: the
    // TIME_WAIT sockets of a server that did not block a restart with it.
    let _ns = Netns::enter("port-noreuse");
    let port = 8081;
    let _clients = crash(port, false);
    let (code, r) = port_json(port, &["--agent", NO_AGENT]);
    assert_eq!(code, 1);
    assert_eq!(r["free_with_reuseaddr"], false, "{r:#}");
    let ns = only_namespace(&r);
    assert_eq!(ns["with_reuseaddr"]["outcome"], "busy");
    assert_eq!(ns["with_reuseaddr"]["test_bind"], true);
    assert_eq!(try_listen(ANY, port, true), Err(libc::EADDRINUSE));
    assert_eq!(Server::start(port, true).outcome, Err(libc::EADDRINUSE));
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn with_an_agent_every_age_is_exact() {
    let _ns = Netns::enter("port-agent");
    let agent = Agent::start(&[]);
    let url = format!("http://{}", agent.addr);
    let port = 8082;
    // Before the sockets are made: an exact age is at most this old.
    let start = std::time::Instant::now();
    let _clients = crash(port, true);
    // The agent follows the sockets through their events: wait until it
    // knows all three.
    let mut last = Value::Null;
    let known = wait_until(Duration::from_secs(10), || {
        let (_, r) = port_json(port, &["--agent", &url]);
        last = r;
        only_namespace(&last)["sockets"]
            .as_array()
            .is_some_and(|s| s.len() == 3 && s.iter().all(|s| s["age_seconds"].is_f64()))
    });
    assert!(known, "{last:#}");
    let (code, r) = port_json(port, &["--agent", &url]);
    assert_eq!(code, 1);
    assert_eq!(r["source"], "agent", "{r:#}");
    assert_eq!(r["free_with_reuseaddr"], true);
    let ns = only_namespace(&r);
    for s in ns["sockets"].as_array().expect("sockets") {
        assert_eq!(s["age_is_lower_bound"], false, "{s}");
        let want = if s["state"] == "time_wait" {
            "kernel_timer"
        } else {
            "agent"
        };
        assert_eq!(s["age_source"], want, "{s}");
        let age = s["age_seconds"].as_f64().expect("age");
        assert!(
            age >= 0.0 && age <= start.elapsed().as_secs_f64() + 1.0,
            "{s}"
        );
        assert_eq!(s["closed_first"], "local", "{s}");
    }
    let text = port_text(port, &["--agent", &url]);
    assert!(text.contains("source: agent at"), "{text}");
    assert!(!text.contains("age unknown"), "{text}");
    assert_eq!(try_listen(ANY, port, false), Err(libc::EADDRINUSE));
    assert_eq!(Server::start(port, true).outcome, Ok(()));
}

/// Asked about the agent's own port, `tracer port` lists its listener,
/// not the agent's end of the connection the question came on.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn the_agents_own_port_does_not_count_the_question() {
    let _ns = Netns::enter("port-self");
    let agent = Agent::start(&[]);
    let url = format!("http://{}", agent.addr);
    let (code, r) = port_json(agent.addr.port(), &["--agent", &url]);
    assert_eq!((code, &r["source"]), (1, &Value::from("agent")), "{r:#}");
    let ns = only_namespace(&r);
    let count = |key: &str| ns[key].as_array().map(Vec::len);
    assert_eq!(
        (count("listeners"), count("sockets")),
        (Some(1), Some(0)),
        "{r:#}"
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_live_listener_is_busy_both_ways_and_named() {
    let _ns = Netns::enter("port-live");
    let port = 8083;
    let mut server = Server::start(port, true);
    assert_eq!(server.outcome, Ok(()));
    let _c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    server.accepted(1);
    let (code, r) = port_json(port, &["--agent", NO_AGENT]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["free"], false);
    assert_eq!(r["free_with_reuseaddr"], false);
    let ns = only_namespace(&r);
    assert_eq!(ns["with_reuseaddr"]["outcome"], "busy");
    assert_eq!(ns["with_reuseaddr"]["test_bind"], false);
    let listeners = ns["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 1, "{ns:#}");
    // Read through the server's own descriptor: python3 set SO_REUSEADDR.
    assert_eq!(listeners[0]["reuseaddr"], true, "{ns:#}");
    let owner = &listeners[0]["owners"][0];
    assert_eq!(owner["pid"], server.pid());
    assert_eq!(owner["comm"], "python3");
    assert_eq!(listeners[0]["blocks_with_reuseaddr"], "listening");
    // The accepted connection: ESTABLISHED, held by the same process.
    assert_eq!(states(ns), ["established"]);
    assert_eq!(ns["sockets"][0]["owners"][0]["pid"], server.pid());
    // Reality: both ways EADDRINUSE.
    for reuse in [false, true] {
        assert_eq!(try_listen(ANY, port, reuse), Err(libc::EADDRINUSE));
        assert_eq!(try_listen(ANY4, port, reuse), Err(libc::EADDRINUSE));
    }
    // Another address: an IPv6-only listener on ::1 is not in the way of
    // 127.0.0.1's, and the verdict for --addr ::1 says so.
    let (code, r) = port_json(port, &["--agent", NO_AGENT, "--addr", "::1"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(try_listen("::1".parse().expect("::1"), port, false), Ok(()));
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_unused_port_is_free() {
    let _ns = Netns::enter("port-free");
    let (code, r) = port_json(8084, &["--agent", NO_AGENT]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["free"], true);
    assert_eq!(r["free_with_reuseaddr"], true);
    assert_eq!(r["namespaces"].as_array().map(Vec::len), Some(0));
    let text = port_text(8084, &["--agent", NO_AGENT]);
    assert!(text.contains("nothing is bound to port 8084"), "{text}");
    assert_eq!(try_listen(ANY, 8084, false), Ok(()));
}

#[test]
fn bad_flags_are_one_sentence_and_status_2() {
    for args in [
        &["port", "8080", "--bogus"][..],
        &["port", "http"],
        &["port", "0"],
        &["port", "8080", "--addr", "localhost"],
        &["port", "8080", "--netns", "a/b"],
        &["port"],
    ] {
        let out = tracer(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("tracer: error: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_live_connection_blocks_a_reuseaddr_restart_only_without_reuseaddr_of_its_own() {
    // A worker that outlives its server's listener keeps its accepted
    // connection ESTABLISHED. Linux lets a SO_REUSEADDR listener past it
    // when the connection has SO_REUSEADDR too (inherited from the
    // listener), and not otherwise; the options are read through the
    // worker's descriptor, so no test bind is needed.
    let _ns = Netns::enter("port-worker");
    for (port, reuse) in [(8085, true), (8086, false)] {
        let mut worker = Server::start_with(port, reuse, &["1"]);
        assert_eq!(worker.outcome, Ok(()));
        let _c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        worker.accepted(1);
        assert_eq!(worker.line(), "closed");
        let (code, r) = port_json(port, &["--agent", NO_AGENT]);
        assert_eq!(code, 1, "{r:#}");
        let ns = only_namespace(&r);
        assert_eq!(states(ns), ["established"], "{ns:#}");
        let s = &ns["sockets"][0];
        assert_eq!(s["owners"][0]["pid"], worker.pid(), "{s}");
        assert_eq!(s["reuseaddr"], reuse, "{s}");
        assert_eq!(s["closed_first"], Value::Null, "{s}");
        assert_eq!(ns["with_reuseaddr"]["test_bind"], false, "{ns:#}");
        assert_eq!(r["free_with_reuseaddr"], reuse, "{r:#}");
        if reuse {
            assert_eq!(s["blocks_with_reuseaddr"], Value::Null, "{s}");
        } else {
            assert_eq!(s["blocks_with_reuseaddr"], "no_reuseaddr", "{s}");
        }
        // Reality.
        assert_eq!(try_listen(ANY, port, false), Err(libc::EADDRINUSE));
        let restart = Server::start(port, true);
        let want = if reuse { Ok(()) } else { Err(libc::EADDRINUSE) };
        assert_eq!(restart.outcome, want, "reuse {reuse}");
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn each_namespace_holding_the_port_gets_its_own_answer() {
    let _ns = Netns::enter("port-ns-a");
    let other = OtherNetns::new("port-ns-b");
    let port = 8090;
    let here = Server::start(port, true);
    assert_eq!(here.outcome, Ok(()));
    let there = other.run(move || Server::start(port, false));
    assert_eq!(there.outcome, Ok(()));
    let p = port.to_string();
    let out = tracer(&["port", &p, "--json", "--agent", NO_AGENT]);
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ours = named(&r, "tr-port-ns-");
    assert_eq!(ours.len(), 2, "{r:#}");
    for n in &ours {
        assert_eq!(n["without_reuseaddr"]["outcome"], "busy");
        let l = &n["listeners"][0];
        let pid = if n["name"] == other.0 {
            there.pid()
        } else {
            here.pid()
        };
        assert_eq!(l["owners"][0]["pid"], pid, "{n:#}");
    }
    let text =
        String::from_utf8_lossy(&tracer(&["port", &p, "--agent", NO_AGENT]).stdout).into_owned();
    print!("{text}");
    assert!(text.contains(&format!("({}): BUSY", other.0)), "{text}");
    assert!(
        text.contains("where tracer port runs) among them"),
        "{text}"
    );
    // Busy only in the other namespace: free in the one we run in.
    drop(here);
    let text =
        String::from_utf8_lossy(&tracer(&["port", &p, "--agent", NO_AGENT]).stdout).into_owned();
    let line = text.lines().nth(1).unwrap_or_default();
    assert!(
        line.starts_with("busy in ")
            && line.contains(&format!("({})", other.0))
            && line.contains("; FREE in this one (netns "),
        "{text}"
    );
    // --netns picks one.
    let out = tracer(&[
        "port", &p, "--json", "--agent", NO_AGENT, "--netns", &other.0,
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(only_namespace(&r)["name"], other.0.as_str());
}

/// An agent started for another namespace cannot age our sockets, and
/// says so: `tracer port` in its note, `tracer leaks` by taking a
/// snapshot of ours instead of reporting "no leaks" from the agent's.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_agent_that_follows_another_namespace_is_not_taken_for_ours() {
    let _ns = Netns::enter("port-one-a");
    let other = OtherNetns::new("port-one-b");
    let agent = Agent::start(&["--netns", &other.0]);
    let url = format!("http://{}", agent.addr);
    let port = 8096;
    let here = Server::start(port, true);
    assert_eq!(here.outcome, Ok(()));
    let (_, r) = port_json(port, &["--agent", &url]);
    let note = r["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("the agent follows only network namespace")
            && note.contains("ages in the others are unknown"),
        "{r:#}"
    );
    let out = tracer(&["leaks", "--json", "--agent", &url, "--netns", "host"]);
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["source"], "snapshot", "{r:#}");
    let note = r["note"].as_str().unwrap_or_default();
    assert!(note.contains("follows only network namespace"), "{r:#}");
}

/// A listener that never accepts, with a backlog of 1: the kernel queues
/// two handshakes, then drops the rest. `tracer port` says its accept
/// queue is full, as `ss -lt` shows it (Recv-Q above Send-Q).
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_listener_that_does_not_accept_shows_a_full_queue() {
    let _ns = Netns::enter("port-queue");
    let port = 8098;
    let queue = common::NotAccepting::start(([127, 0, 0, 1], port).into(), 4);
    let mut last = Value::Null;
    let full = wait_until(Duration::from_secs(5), || {
        last = port_json(port, &["--agent", NO_AGENT]).1;
        only_namespace(&last)["listeners"][0]["accept_queue"]["full"] == true
    });
    assert!(full, "{last:#}");
    let q = &only_namespace(&last)["listeners"][0]["accept_queue"];
    assert_eq!(
        (q["waiting"].as_u64(), q["backlog"].as_u64()),
        (Some(2), Some(1)),
        "{q}"
    );
    let text = port_text(port, &["--agent", NO_AGENT]);
    assert!(
        text.contains("accept queue FULL (2 waiting, backlog 1)"),
        "{text}"
    );
    drop(queue);
}

/// A listener binds only an address its namespace has. `--addr` that no
/// interface of the namespace has is UNAVAILABLE, as `bind()` says
/// (EADDRNOTAVAIL), whatever holds the port; with `--netns all`, a
/// namespace without the address is left out of the verdict.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_address_the_namespace_does_not_have_is_unavailable() {
    let _ns = Netns::enter("port-addr-a");
    let other = OtherNetns::new("port-addr-b");
    let port = 8097;
    // TEST-NET-1 (RFC 5737): in neither namespace yet.
    let addr = "192.0.2.1";
    let ip: std::net::IpAddr = addr.parse().expect("address");
    let (code, r) = port_json(port, &["--agent", NO_AGENT, "--addr", addr]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["addr_available"], false, "{r:#}");
    assert_eq!(r["free"], false);
    assert_eq!(r["free_with_reuseaddr"], false);
    assert_eq!(try_listen(ip, port, false), Err(libc::EADDRNOTAVAIL));
    let text = port_text(port, &["--agent", NO_AGENT, "--addr", addr]);
    assert!(
        text.starts_with("port 8097 (192.0.2.1) is UNAVAILABLE: 192.0.2.1 is not an address in the network namespace scanned"),
        "{text}"
    );
    // Any address binds here, and the answer says so.
    let (code, r) = port_json(port, &["--agent", NO_AGENT, "--addr", "127.0.0.1"]);
    assert_eq!(
        (code, &r["addr_available"]),
        (0, &Value::Bool(true)),
        "{r:#}"
    );
    // The port held here on every address, the address only there.
    let here = Server::start(port, true);
    assert_eq!(here.outcome, Ok(()));
    common::sh(
        "ip",
        &["-n", &other.0, "addr", "add", "192.0.2.1/32", "dev", "lo"],
    );
    let p = port.to_string();
    let out = tracer(&["port", &p, "--json", "--agent", NO_AGENT, "--addr", addr]);
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["addr_available"], true, "{r:#}");
    assert!(r["namespaces_without_addr"].as_u64() >= Some(1), "{r:#}");
    assert_eq!(named(&r, "tr-port-addr-").len(), 0, "{r:#}");
    // --netns picks one; the kernel agrees in each.
    let (code, r) = port_json(port, &["--agent", NO_AGENT, "--addr", addr]);
    assert_eq!(
        (code, &r["namespaces_without_addr"]),
        (1, &Value::from(1)),
        "{r:#}"
    );
    let out = tracer(&[
        "port", &p, "--json", "--agent", NO_AGENT, "--addr", addr, "--netns", &other.0,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(other.run(move || try_listen(ip, port, false)), Ok(()));
    assert_eq!(try_listen(ip, port, false), Err(libc::EADDRNOTAVAIL));
}

/// Without CAP_SYS_ADMIN (root with it dropped from the bounding set, as a
/// container without it runs) `tracer port` cannot enter another
/// namespace. It answers for the namespaces it scanned, and says, in the
/// verdict's line and in the JSON, that others were not looked at: a
/// listener there is not reported, nor taken for nothing.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn without_cap_sys_admin_the_namespaces_not_entered_are_said() {
    let _ns = Netns::enter("port-nocap-a");
    let other = OtherNetns::new("port-nocap-b");
    let port = 8099;
    let there = other.run(move || Server::start(port, false));
    assert_eq!(there.outcome, Ok(()));
    let p = port.to_string();
    let bin = env!("CARGO_BIN_EXE_tracer");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", bin])
            .args(["port", &p, "--agent", NO_AGENT])
            .args(extra)
            .output()
            .expect("run setpriv");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.code(), stdout)
    };
    let (code, json) = run(&["--json"]);
    let r: Value = serde_json::from_str(&json).expect("JSON");
    // Our namespace holds nothing on the port: FREE there, exit 0.
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["free"], true, "{r:#}");
    // The other namespace was not entered, so its listener is not in the
    // answer, and the count says so (other tests' namespaces may add to
    // it on a shared machine).
    assert!(named(&r, "tr-port-nocap-").is_empty(), "{r:#}");
    let unseen = r["namespaces_not_entered"].as_u64().expect("count");
    assert!(unseen >= 1, "{r:#}");
    let (_, text) = run(&[]);
    assert!(
        text.contains("more could not be entered (that needs CAP_SYS_ADMIN)"),
        "{text}"
    );
    // With the capability, the same question finds the listener.
    let out = tracer(&[
        "port", &p, "--json", "--agent", NO_AGENT, "--netns", &other.0,
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["namespaces_not_entered"], 0, "{r:#}");
    assert_eq!(
        only_namespace(&r)["listeners"][0]["owners"][0]["pid"],
        there.pid()
    );
}

/// Clients that close first leave TIME_WAIT on their side: `tracer port`
/// on the server's port counts them (they hold the clients' ports), and
/// the port stays free of them.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn clients_time_wait_to_the_port_is_counted() {
    let _ns = Netns::enter("port-clients-tw");
    let port = 8097;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for _ in 0..3 {
        let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut s, _) = listener.accept().expect("accept");
        drop(c);
        // The server reads the client's FIN, then closes: the client
        // closed first, so TIME_WAIT is on its side.
        let _ = std::io::Read::read(&mut s, &mut [0u8; 1]);
    }
    let (_, r) = port_json(port, &["--agent", NO_AGENT]);
    assert_eq!(r["clients_time_wait"], 3, "{r:#}");
    let text = port_text(port, &["--agent", NO_AGENT]);
    assert!(
        text.contains("3 connections to port 8097 wait in TIME_WAIT on the client side"),
        "{text}"
    );
}

/// The classic leaked listener: a server forks a helper that inherits its
/// listening socket, and exits; the helper keeps the port. `tracer port`
/// names the helper as the holder, and the server as the one that called
/// listen(), since when it listens.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_inherited_listener_names_who_called_listen() {
    let _ns = Netns::enter("port-fork");
    let agent = Agent::start(&[]);
    let url = format!("http://{}", agent.addr);
    let port = 8089;
    let script = format!(
        "import os, socket, sys\n\
         s = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen()\n\
         s.set_inheritable(True)\n\
         if os.fork() == 0:\n\
         \x20   null = os.open('/dev/null', os.O_WRONLY); os.dup2(null, 1); os.dup2(null, 2)\n\
         \x20   os.execvp('sleep', ['sleep', '60'])\n\
         print(os.getpid(), flush=True)\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let parent: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the server's pid");
    // The helper: the one sleep holding our port, found through the report.
    let mut last = Value::Null;
    let known = wait_until(Duration::from_secs(10), || {
        let (_, r) = port_json(port, &["--agent", &url]);
        last = r;
        last["namespaces"][0]["listeners"][0]["last_seen_process"]["pid"] == parent
    });
    let helper = last["namespaces"][0]["listeners"][0]["owners"][0]["pid"].as_u64();
    // Kill the helper whatever the outcome.
    let _kill = Kill(helper);
    assert!(known, "{last:#}");
    let listener = &only_namespace(&last)["listeners"][0];
    assert_eq!(listener["owners"][0]["comm"], "sleep", "{last:#}");
    assert_ne!(helper, Some(parent));
    let text = port_text(port, &["--agent", &url]);
    assert!(
        text.contains(&format!(
            "sleep fd 3 (listen() was by pid {parent} python3)"
        )),
        "{text}"
    );
    assert!(text.contains(" listening "), "{text}");
}

/// Kills a pid when dropped.
struct Kill(Option<u64>);

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) of the helper this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
