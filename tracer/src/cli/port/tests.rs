//! The report and its text, built from sockets made up here: what each
//! case says, and the exit status.
use std::net::IpAddr;

use super::{
    gather::{AgentSocket, Found, Held},
    probe::SockOptions,
    report::{Report, build},
    text::render,
};
use crate::{
    snapshot::{FdOwner, SocketSnapshot, TimerKind},
    tcp::{Family, TcpState},
};

const NS: u32 = 4026532177;

fn snap(state: TcpState, local: &str, peer: &str, cookie: u64) -> SocketSnapshot {
    let (l, p): (std::net::SocketAddr, std::net::SocketAddr) =
        (local.parse().expect("local"), peer.parse().expect("peer"));
    let timewait = matches!(state, TcpState::TimeWait | TcpState::FinWait2);
    SocketSnapshot {
        ifindex: 0,
        cookie,
        family: if l.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        },
        state,
        timewait,
        saddr: l.ip(),
        sport: l.port(),
        daddr: p.ip(),
        dport: p.port(),
        inode: if timewait { 0 } else { 1000 + cookie },
        uid: 0,
        timer: if timewait {
            TimerKind::TimeWait
        } else {
            TimerKind::None
        },
        expires_ms: if timewait { 43_200 } else { 0 },
        timer_retrans: 0,
        rqueue: 0,
        // A listener's backlog.
        wqueue: if state == TcpState::Listen { 128 } else { 0 },
        info: None,
        netns: NS,
    }
}

fn held(s: SocketSnapshot) -> Held {
    Held {
        snap: s,
        owners: Vec::new(),
        owner_unknown: None,
        agent: None,
        options: None,
    }
}

fn found(sockets: Vec<Held>) -> Found {
    let mut f = Found::default();
    f.names.insert(NS, "web".into());
    f.by_netns.insert(NS, sockets);
    f
}

fn any() -> IpAddr {
    "::".parse().expect("::")
}

fn text(r: &Report) -> String {
    let mut out = Vec::new();
    render(r, &mut out).expect("render");
    String::from_utf8(out).expect("utf-8")
}

/// The seed: a killed server's TIME_WAIT and orphaned FIN_WAIT2 sockets.
fn seed() -> Found {
    found(vec![
        held(snap(
            TcpState::FinWait2,
            "127.0.0.1:8080",
            "127.0.0.1:50001",
            3,
        )),
        held(snap(
            TcpState::TimeWait,
            "127.0.0.1:8080",
            "127.0.0.1:50002",
            1,
        )),
        held(snap(
            TcpState::TimeWait,
            "127.0.0.1:8080",
            "127.0.0.1:50003",
            2,
        )),
    ])
}

#[test]
fn the_seed_without_an_agent() {
    let r = build(8080, any(), false, &seed(), "snapshot".into(), |netns| {
        assert_eq!(netns, NS);
        Some(true)
    });
    assert_eq!(r.exit_code(), 1);
    assert!(!r.free);
    assert_eq!(r.free_with_reuseaddr, Some(true));
    let ns = &r.namespaces[0];
    assert_eq!(ns.without_reuseaddr.outcome, "busy");
    assert_eq!(ns.without_reuseaddr.blockers, 3);
    assert_eq!(ns.with_reuseaddr.outcome, "free");
    assert!(ns.with_reuseaddr.test_bind);
    let tw = ns.time_wait.as_ref().expect("time_wait");
    assert_eq!((tw.count, tw.free_then, tw.fin_wait2), (3, true, 1));
    assert_eq!(tw.last_expires_in_seconds, 43.2);
    // TIME_WAIT's age from its timer; FIN_WAIT2's is unknown.
    let ages: Vec<Option<f64>> = ns.sockets.iter().map(|s| s.age_seconds).collect();
    assert_eq!(ages, [None, Some(16.8), Some(16.8)]);
    let t = text(&r);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        "port 8080 (any address) is BUSY for a new listener without SO_REUSEADDR; FREE with SO_REUSEADDR"
    );
    assert_eq!(lines[3], "netns 4026532177 (web)");
    assert!(
        lines[4].starts_with("  without SO_REUSEADDR: BUSY: 3 sockets bound"),
        "{t}"
    );
    assert!(
        lines[5].starts_with("  with SO_REUSEADDR:    FREE: a test bind()"),
        "{t}"
    );
    assert_eq!(lines[6], "  listeners: none");
    assert_eq!(lines[7], "  FIN_WAIT2 (1):");
    assert!(lines[8].contains("age unknown"), "{t}");
    assert!(lines[8].contains("closed first: local"), "{t}");
    assert!(lines[8].ends_with("no process holds it"), "{t}");
    assert_eq!(lines[9], "  TIME_WAIT (2):");
    assert!(lines[10].contains("age 16.8s"), "{t}");
    // The orphaned FIN_WAIT2 socket's timer ends too, unless its peer
    // closes first: then TIME_WAIT holds the port for 60 s more.
    assert!(
        lines[12].starts_with("  last TIME_WAIT or FIN_WAIT2 timer ends in 43.2s (at "),
        "{t}"
    );
    assert!(
        lines[12].ends_with(
            "): a plain bind succeeds then, unless a peer closes first: 1 FIN_WAIT2 socket \
             still waits for its peer's FIN, and each that gets it holds the port 60 s more in \
             TIME_WAIT"
        ),
        "{t}"
    );
}

#[test]
fn without_a_test_bind_the_reuseaddr_verdict_is_unknown() {
    let r = build(8080, any(), false, &seed(), "snapshot".into(), |_| None);
    assert_eq!(r.free_with_reuseaddr, None);
    let ns = &r.namespaces[0];
    assert_eq!(ns.with_reuseaddr.outcome, "unknown");
    assert_eq!(ns.with_reuseaddr.blockers, 3);
    assert!(
        ns.with_reuseaddr
            .why
            .starts_with("free if the 3 sockets below set SO_REUSEADDR")
    );
    assert!(
        ns.sockets
            .iter()
            .all(|s| s.blocks_with_reuseaddr == Some("reuseaddr_unknown"))
    );
    assert!(text(&r).starts_with(
        "port 8080 (any address) is BUSY for a new listener without SO_REUSEADDR; UNKNOWN with SO_REUSEADDR"
    ));
}

#[test]
fn a_listener_is_named_and_busy_both_ways_without_a_test_bind() {
    let mut f = seed();
    let mut l = held(snap(TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0", 9));
    l.owners = vec![FdOwner {
        pid: 4242,
        comm: "python3".into(),
        cmdline: "python3 -m http.server 8080".into(),
        fd: 3,
        cgroup: String::new(),
        container_id: None,
    }];
    l.options = Some(SockOptions {
        reuseaddr: true,
        v6only: None,
    });
    f.by_netns.get_mut(&NS).expect("ns").push(l);
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| {
        panic!("a listener blocks: no test bind")
    });
    assert_eq!(r.free_with_reuseaddr, Some(false));
    let ns = &r.namespaces[0];
    assert_eq!(ns.with_reuseaddr.blockers, 1);
    assert_eq!(
        ns.with_reuseaddr.why,
        "1 listener on an overlapping address (a listener keeps out any new one, SO_REUSEADDR or not); 3 more unless they set SO_REUSEADDR"
    );
    assert_eq!(ns.listeners[0].reuseaddr, Some(true));
    let t = text(&r);
    assert!(
        t.contains(
            "  listeners:\n    0.0.0.0:8080             accept queue 0/128 pid 4242 python3 fd 3\n"
        ),
        "{t}"
    );
    // The TIME_WAIT sockets go, the listener stays: no "succeeds then".
    assert!(!t.contains("succeeds then"), "{t}");
    // Another address: only the listener on 0.0.0.0 covers 127.0.0.2.
    let r = build(
        8080,
        "127.0.0.2".parse().expect("ip"),
        false,
        &f,
        String::new(),
        |_| None,
    );
    assert_eq!(r.namespaces[0].without_reuseaddr.blockers, 1);
    // An IPv6 one: nothing in the way.
    let r = build(
        8080,
        "::1".parse().expect("ip"),
        false,
        &f,
        String::new(),
        |_| None,
    );
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.free_with_reuseaddr, Some(true));
}

#[test]
fn an_owner_that_could_not_be_read_is_unknown_not_absent() {
    let mut f = seed();
    let mut l = held(snap(TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0", 9));
    l.owner_unknown = crate::snapshot::OwnerScan {
        unreadable: 3,
        ..Default::default()
    }
    .unknown(77);
    f.by_netns.get_mut(&NS).expect("ns").push(l);
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| None);
    let ns = &r.namespaces[0];
    assert!(ns.listeners[0].owner_unknown);
    assert_eq!(
        ns.listeners[0].owner_hint,
        Some(crate::snapshot::HINT_UNREADABLE)
    );
    // TIME_WAIT sockets have no owner to find.
    assert!(ns.sockets.iter().all(|s| !s.owner_unknown));
    let t = text(&r);
    assert!(
        t.contains("  listeners:\n    0.0.0.0:8080             accept queue 0/128 owner unknown\n"),
        "{t}"
    );
    assert!(t.contains("no process holds it"), "{t}");
    assert!(
        t.ends_with(&format!(
            "\nowner unknown: {}\n",
            crate::snapshot::HINT_UNREADABLE
        )),
        "{t}"
    );
    let json = serde_json::to_value(&r).expect("json");
    let listener = &json["namespaces"][0]["listeners"][0];
    assert_eq!(listener["owner_unknown"], true, "{listener}");
    assert!(listener["owner_hint"].is_string(), "{listener}");
}

#[test]
fn the_agent_gives_ages_and_who_closed() {
    let mut f = seed();
    for h in f.by_netns.get_mut(&NS).expect("ns") {
        h.agent = Some(AgentSocket {
            cookie: h.snap.cookie,
            sport: 8080,
            age_seconds: 12.5,
            age_is_lower_bound: false,
            closed_by: Some("local".into()),
            pid: Some(77),
            comm: Some("server".into()),
            live: true,
            path: vec!["listen".into(), "syn_recv".into(), "established".into()],
        });
    }
    f.agent = true;
    let r = build(8080, any(), false, &f, "agent".into(), |_| Some(true));
    assert_eq!(r.source, "agent");
    let t = text(&r);
    assert!(!t.contains("age unknown"), "{t}");
    // The agent's age, except TIME_WAIT's: the kernel's timer says.
    assert!(t.contains("age 12.5s"), "{t}");
    assert!(t.contains("age 16.8s"), "{t}");
    assert!(t.contains("no process holds it (was pid 77 server)"), "{t}");
    let s = &r.namespaces[0].sockets[0];
    assert_eq!(s.age_seconds, Some(12.5));
    assert_eq!(s.age_source, Some("agent"));
    assert_eq!(r.namespaces[0].sockets[1].age_source, Some("kernel_timer"));
    assert_eq!(s.last_seen_process.as_ref().map(|p| p.pid), Some(77));
    // Accepted: the peer connected to us.
    assert_eq!(s.opened_by, Some("remote"));
    assert!(t.contains(" <- "), "{t}");
    // Without the agent, who connected is not known.
    let r = build(8080, any(), false, &seed(), "snapshot".into(), |_| {
        Some(true)
    });
    assert!(
        r.namespaces[0]
            .sockets
            .iter()
            .all(|s| s.opened_by.is_none())
    );
    assert!(!text(&r).contains(" <- "), "{}", text(&r));
}

#[test]
fn nothing_bound_is_free_and_says_so() {
    let nothing = Found {
        namespaces: 3,
        ..Found::default()
    };
    let r = build(8080, any(), false, &nothing, "snapshot".into(), |_| {
        panic!("nothing to test")
    });
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.free_with_reuseaddr, Some(true));
    assert!(
        text(&r).contains("\nnothing is bound to port 8080 in the 3 network namespaces scanned\n")
    );
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["namespaces"], serde_json::json!([]));
    assert_eq!(json["free"], true);
    assert_eq!(json["namespaces_scanned"], 3);
}

#[test]
fn a_busy_port_lists_the_oldest_of_each_state() {
    let mut sockets: Vec<Held> = (0..30u16)
        .map(|i| {
            let mut s = snap(
                TcpState::TimeWait,
                "10.0.0.1:443",
                &format!("10.0.0.2:{}", 40000 + i),
                u64::from(i),
            );
            s.expires_ms = 30_000 + u32::from(i) * 100;
            held(s)
        })
        .collect();
    sockets.push(held(snap(TcpState::Listen, "0.0.0.0:443", "0.0.0.0:0", 99)));
    let r = build(443, any(), false, &found(sockets), String::new(), |_| None);
    let ns = &r.namespaces[0];
    assert_eq!(ns.sockets.len(), 30);
    // Oldest first: the least time left.
    assert_eq!(ns.sockets[0].peer.port(), 40000);
    assert_eq!(ns.sockets[29].peer.port(), 40029);
    let t = text(&r);
    assert!(t.contains("  TIME_WAIT (30):\n"), "{t}");
    assert_eq!(t.matches(" -- 10.0.0.2:").count(), 20, "{t}");
    assert!(
        t.contains("    ... and 10 more (--json lists them all)\n"),
        "{t}"
    );
    assert!(t.contains("last TIME_WAIT expires in 32.9s"), "{t}");
}

#[test]
fn a_silent_agent_is_an_error_within_the_timeout() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let args = super::PortArgs {
        port: 8080,
        addr: None,
        json: false,
        agent: crate::cli::leaks::AgentFlags {
            agent: Some(url.clone()),
            timeout: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
        netns: None,
    };
    let start = std::time::Instant::now();
    let e = super::run_to(&args, &mut Vec::new()).expect_err("silent agent");
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    assert!(
        format!("{e:#}").starts_with(&format!("asking {url} for /api/v1/sockets?port=8080")),
        "{e:#}"
    );
    drop(l);
}

#[test]
fn a_container_names_its_namespace() {
    let mut f = seed();
    f.names.clear();
    let c: crate::container::Container = serde_json::from_value(serde_json::json!({
        "id": "3f4e9a1c0b7d".repeat(5) + "abcd",
        "runtime": "podman",
        "name": "web"
    }))
    .expect("container");
    f.containers = [(NS, std::sync::Arc::new(c))].into_iter().collect();
    let r = build(8080, any(), false, &f, String::new(), |_| Some(true));
    let t = text(&r);
    assert!(
        t.contains("\nnetns 4026532177, container podman:web\n"),
        "{t}"
    );
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["namespaces"][0]["container"]["name"], "web");
    assert_eq!(json["namespaces"][0]["name"], serde_json::Value::Null);
    // Busy there among others: the line that says where names it too.
    f.namespaces = 3;
    let r = build(8080, any(), false, &f, String::new(), |_| Some(true));
    assert!(
        text(&r).contains(
            "busy in 1 of the 3 network namespaces scanned: netns 4026532177, container podman:web"
        ),
        "{}",
        text(&r)
    );
}

/// A listener's accept queue, as `ss -lt` shows it: the text says when it
/// is full and the kernel drops new handshakes.
#[test]
fn a_listener_shows_its_accept_queue_and_says_when_it_is_full() {
    let with_queue = |waiting, backlog| {
        let mut l = snap(TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0", 1);
        (l.rqueue, l.wqueue) = (waiting, backlog);
        build(
            8080,
            any(),
            false,
            &found(vec![held(l)]),
            String::new(),
            |_| None,
        )
    };
    let r = with_queue(2, 1);
    let q = r.namespaces[0].listeners[0].accept_queue.expect("queue");
    assert_eq!((q.waiting, q.backlog, q.full), (2, 1, true));
    let t = text(&r);
    assert!(
        t.contains(
            "accept queue FULL (2 waiting, backlog 1): new handshakes are dropped until it \
             accepts; no process holds it\n"
        ),
        "{t}"
    );
    let t = text(&with_queue(0, 4096));
    assert!(t.contains("accept queue 0/4096 "), "{t}");
}

#[test]
fn an_address_no_namespace_has_is_unavailable_whatever_holds_the_port() {
    let addr: IpAddr = "192.0.2.1".parse().expect("addr");
    let mut f = seed();
    f.namespaces = 1;
    f.addr_in.insert(NS, Some(false));
    let r = build(8080, addr, false, &f, "snapshot".into(), |_| {
        panic!("no test bind where the address is missing")
    });
    assert_eq!(r.exit_code(), 1);
    assert!(!r.free);
    assert_eq!(r.free_with_reuseaddr, Some(false));
    assert_eq!(r.addr_available, Some(false));
    assert!(r.namespaces.is_empty());
    assert_eq!(r.namespaces_without_addr, 1);
    let t = text(&r);
    assert!(
        t.starts_with(
            "port 8080 (192.0.2.1) is UNAVAILABLE: 192.0.2.1 is not an address in the network namespace scanned, so bind() fails with EADDRNOTAVAIL"
        ),
        "{t}"
    );
    assert!(
        t.contains("\n1 network namespace without 192.0.2.1 holds port 8080 (not shown)"),
        "{t}"
    );
    assert!(!t.contains("nothing is bound"), "{t}");
    // Many namespaces, none with it.
    f.namespaces = 3;
    f.addr_in.insert(NS + 1, Some(false));
    let t = text(&build(8080, addr, false, &f, "snapshot".into(), |_| None));
    assert!(
        t.contains("192.0.2.1 is an address in none of the 3 network namespaces scanned"),
        "{t}"
    );
    let json =
        serde_json::to_value(build(8080, addr, false, &f, "s".into(), |_| None)).expect("json");
    assert_eq!(json["addr_available"], false);
    assert_eq!(json["namespaces_without_addr"], 1);
}

#[test]
fn a_namespace_without_the_address_is_left_out_of_the_verdict() {
    // The port is held (TIME_WAIT) in a namespace that does not have
    // the address; another namespace has it and nothing there holds the
    // port: a listener on it binds there.
    let addr: IpAddr = "10.0.0.5".parse().expect("addr");
    let mut f = seed();
    f.namespaces = 2;
    f.addr_in.insert(NS, Some(false));
    f.addr_in.insert(NS + 1, Some(true));
    let r = build(8080, addr, false, &f, "snapshot".into(), |_| {
        panic!("nothing in the way where the address is")
    });
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.free_with_reuseaddr, Some(true));
    assert_eq!(r.addr_available, Some(true));
    assert_eq!(r.namespaces_without_addr, 1);
    let t = text(&r);
    assert!(t.starts_with("port 8080 (10.0.0.5) is FREE"), "{t}");
    assert!(
        t.contains("\nnothing is bound to port 8080 in the namespaces that have 10.0.0.5\n"),
        "{t}"
    );
    // Where it could not be told, the namespace is judged as before: its
    // sockets on 127.0.0.1 are in the way of a plain bind there.
    f.addr_in.clear();
    f.addr_in.insert(NS, None);
    let lo: IpAddr = "127.0.0.1".parse().expect("addr");
    let r = build(8080, lo, false, &f, "snapshot".into(), |_| Some(true));
    assert_eq!(r.addr_available, None);
    assert_eq!(r.namespaces.len(), 1);
    assert_eq!(r.exit_code(), 1);
}

/// A connection the listener has not accepted yet has no process of its
/// own: it names the listener's, which should accept it.
#[test]
fn a_connection_not_accepted_names_the_listeners_process() {
    let mut l = held(snap(TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0", 1));
    l.owners = vec![FdOwner {
        pid: 4242,
        comm: "python3".into(),
        cmdline: String::new(),
        fd: 3,
        cgroup: String::new(),
        container_id: None,
    }];
    let mut queued = snap(TcpState::CloseWait, "127.0.0.1:8080", "127.0.0.1:50000", 2);
    queued.inode = 0;
    let mut orphan = snap(TcpState::LastAck, "127.0.0.1:8080", "127.0.0.1:50001", 3);
    orphan.inode = 0;
    let f = found(vec![l, held(queued), held(orphan)]);
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| None);
    let t = text(&r);
    let line = |peer: &str| t.lines().find(|l| l.contains(peer)).expect(peer).to_owned();
    assert!(
        line("127.0.0.1:50000")
            .ends_with("not accepted yet: waits in the accept queue of pid 4242 python3 fd 3"),
        "{t}"
    );
    assert!(
        line("127.0.0.1:50001").ends_with("no process holds it"),
        "{t}"
    );
    // The state's header counts them: oldest first may leave them out of
    // the rows shown.
    assert!(
        t.contains("\n  CLOSE_WAIT (1, 1 not accepted yet):\n"),
        "{t}"
    );
    assert!(t.contains("\n  LAST_ACK (1):\n"), "{t}");
    let json = serde_json::to_value(&r).expect("json");
    let sockets = json["namespaces"][0]["sockets"]
        .as_array()
        .expect("sockets");
    let queued = sockets.iter().find(|s| s["cookie"] == 2).expect("queued");
    assert_eq!(queued["not_accepted"], true);
    assert_eq!(queued["listener_owners"][0]["pid"], 4242);
    let orphan = sockets.iter().find(|s| s["cookie"] == 3).expect("orphan");
    assert_eq!(orphan["not_accepted"], false);
    assert!(orphan.get("listener_owners").is_none());
}

/// Processes whose namespace could not be read (no CAP_SYS_PTRACE) are
/// said beside the verdict: a namespace only they hold was not scanned.
#[test]
fn processes_not_read_are_said_beside_the_verdict() {
    let mut f = found(Vec::new());
    f.by_netns.clear();
    f.namespaces = 2;
    f.unread = 3;
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| None);
    let t = text(&r);
    assert!(
        t.lines().next().is_some_and(|l| l.ends_with(
            "FREE with SO_REUSEADDR in the 2 network namespaces scanned; 3 processes' network namespaces could not be read (that needs CAP_SYS_PTRACE), so a namespace only they hold was not looked at"
        )),
        "{t}"
    );
    assert_eq!(
        serde_json::to_value(&r).expect("json")["processes_not_read"],
        3
    );
    f.unread = 0;
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| None);
    assert!(!text(&r).contains("CAP_SYS_PTRACE"));
}

/// Namespaces that could not be entered are named in the verdict's line,
/// not only in the source line: a FREE there is for the others.
#[test]
fn a_namespace_not_entered_is_said_beside_the_verdict() {
    let mut f = found(Vec::new());
    f.by_netns.clear();
    f.namespaces = 1;
    f.refused = 2;
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| None);
    assert!(r.free);
    assert_eq!(r.exit_code(), 0);
    let t = text(&r);
    assert!(
        t.lines().next().is_some_and(|l| l.ends_with(
            "FREE with SO_REUSEADDR in the 1 network namespace scanned; 2 more could not be entered (that needs CAP_SYS_ADMIN), and what they hold is not known"
        )),
        "{t}"
    );
    assert_eq!(
        serde_json::to_value(&r).expect("json")["namespaces_not_entered"],
        2
    );
}

/// A CLOSE_WAIT socket's age is at least the time since the peer's last
/// ACK (its FIN was one), as `tracer leaks` reckons it: without an agent
/// that is its age, a lower bound; an agent's lower bound is raised to it;
/// an exact age from the agent stays.
#[test]
fn a_close_wait_age_is_at_least_since_the_peers_fin() {
    let mut s = snap(TcpState::CloseWait, "127.0.0.1:8080", "127.0.0.1:50009", 9);
    s.info = Some(crate::snapshot::TcpInfo {
        last_ack_recv_ms: 302_000,
        ..Default::default()
    });
    let one = |agent: Option<(f64, bool)>| {
        let mut h = held(s);
        h.agent = agent.map(|(age, lower)| AgentSocket {
            cookie: 9,
            sport: 8080,
            age_seconds: age,
            age_is_lower_bound: lower,
            closed_by: Some("remote".into()),
            pid: None,
            comm: None,
            live: true,
            path: Vec::new(),
        });
        let r = build(8080, any(), false, &found(vec![h]), "x".into(), |_| None);
        let s = &r.namespaces[0].sockets[0];
        (s.age_seconds, s.age_is_lower_bound, s.age_source, text(&r))
    };
    let (age, lower, source, t) = one(None);
    assert_eq!((age, lower, source), (Some(302.0), true, Some("last_ack")));
    assert!(t.contains("age >=5m02s"), "{t}");
    assert!(!t.contains("age unknown"), "{t}");
    let (age, lower, source, _) = one(Some((40.0, true)));
    assert_eq!((age, lower, source), (Some(302.0), true, Some("agent")));
    let (age, lower, _, _) = one(Some((40.0, false)));
    assert_eq!((age, lower), (Some(40.0), false));
}

/// Clients that closed first hold TIME_WAIT on their side, on their own
/// ephemeral ports: the answer counts them and says they do not hold this
/// port.
#[test]
fn clients_time_wait_is_counted_and_not_blamed_on_the_port() {
    let mut f = found(Vec::new());
    f.clients_time_wait = 3;
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| Some(true));
    assert!(r.free);
    assert_eq!(
        serde_json::to_value(&r).expect("json")["clients_time_wait"],
        3
    );
    assert!(
        text(&r).contains(
            "\n3 connections to port 8080 wait in TIME_WAIT on the client side (their clients \
             closed first): they hold the clients' ports, not this one"
        ),
        "{}",
        text(&r)
    );
    f.clients_time_wait = 0;
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| Some(true));
    assert!(!text(&r).contains("client side"), "{}", text(&r));
}

/// A listener inherited across fork(): held by the child, listen() by the
/// parent, gone since. The row says since when it listens, and who did.
#[test]
fn an_inherited_listener_names_who_called_listen() {
    let mut l = held(snap(TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0", 1));
    l.snap.inode = 5000;
    l.owners = vec![FdOwner {
        pid: 4300,
        comm: "sleep".into(),
        cmdline: String::new(),
        fd: 3,
        cgroup: String::new(),
        container_id: None,
    }];
    l.agent = Some(AgentSocket {
        cookie: 1,
        sport: 8080,
        age_seconds: 754.0,
        age_is_lower_bound: false,
        closed_by: None,
        pid: Some(4242),
        comm: Some("server".into()),
        live: true,
        path: vec!["close".into(), "listen".into()],
    });
    let mut f = found(vec![l.clone()]);
    f.agent = true;
    let r = build(8080, any(), false, &f, "agent".into(), |_| None);
    let t = text(&r);
    let row = t
        .lines()
        .find(|line| line.contains("0.0.0.0:8080"))
        .expect("listener row");
    assert!(row.contains(" listening 12m34s  accept queue "), "{t}");
    assert!(
        row.ends_with("pid 4300 sleep fd 3 (listen() was by pid 4242 server)"),
        "{t}"
    );
    // Held by the process that called listen(): nothing more to say.
    l.owners[0].pid = 4242;
    let mut f = found(vec![l]);
    f.agent = true;
    let t = text(&build(8080, any(), false, &f, "agent".into(), |_| None));
    assert!(!t.contains("listen() was by"), "{t}");
}

/// A process that shut its side down (shutdown(SHUT_WR)) and holds the
/// socket: FIN_WAIT2 with no timer, until the peer closes.
#[test]
fn a_half_closed_socket_held_by_a_process_has_no_timer() {
    let mut s = snap(TcpState::FinWait2, "127.0.0.1:8080", "127.0.0.1:50010", 5);
    (s.timewait, s.timer, s.expires_ms, s.inode) = (false, TimerKind::None, 0, 1005);
    let mut h = held(s);
    h.owners = vec![FdOwner {
        pid: 4242,
        comm: "client".into(),
        cmdline: String::new(),
        fd: 7,
        cgroup: String::new(),
        container_id: None,
    }];
    let r = build(
        8080,
        any(),
        false,
        &found(vec![h]),
        "snapshot".into(),
        |_| None,
    );
    let t = text(&r);
    let row = t.lines().find(|l| l.contains("50010")).expect("row");
    assert!(
        row.ends_with(
            "pid 4242 client fd 7; no timer while held: it stays until the peer closes its side"
        ),
        "{t}"
    );
    assert!(!row.contains("expires in"), "{t}");
}

/// Scanned across namespaces, a busy port says where it is busy, and
/// whether in the namespace `tracer port` ran in.
#[test]
fn a_port_busy_elsewhere_says_where_and_that_it_is_free_here() {
    let mut f = seed();
    f.namespaces = 12;
    let mut r = build(8080, any(), false, &f, "snapshot".into(), |_| Some(true));
    r.own_netns = 4026531840;
    let t = text(&r);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[1],
        "busy in 1 of the 12 network namespaces scanned: netns 4026532177 (web); FREE in this \
         one (netns 4026531840, where tracer port runs)",
        "{t}"
    );
    r.own_netns = NS;
    let t = text(&r);
    assert!(
        t.contains(
            "netns 4026532177 (web); this one (netns 4026532177, where tracer port runs) among them"
        ),
        "{t}"
    );
    // One namespace scanned: the headline is about it, nothing to add.
    f.namespaces = 1;
    let r = build(8080, any(), false, &f, "snapshot".into(), |_| Some(true));
    assert!(!text(&r).contains("busy in"), "{}", text(&r));
}
