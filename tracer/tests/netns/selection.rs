//! `--netns`: which namespaces a command follows, and how events name them.
use super::*;

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn netns_host_follows_only_the_agents_own_namespace() {
    let agent = Agent::start(&[
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "250ms",
        "--netns",
        "host",
    ]);
    let url = format!("http://{}", agent.addr);
    let ns = NamedNetns::new("nshost", &[]);
    let (port, held) = leak_close_wait(&ns, 2);
    std::thread::sleep(Duration::from_secs(2));
    let (_, report) = tracer_leaks_json(&["--agent", &url]);
    assert!(flags_on(&report, ns.inode, port).is_empty(), "{report:#}");
    // The port number alone may be in use in the host's namespace too.
    let listed = agent.json(&format!("/api/v1/sockets?port={port}&netns={}", ns.inode));
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed:#}");
    assert_eq!(agent.metric("tracer_netns_tracked"), 1.0);
    assert!(agent.metric("tracer_events_other_netns_total") > 0.0);
    drop(held);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn tracer_events_names_the_namespace_and_netns_selects_one() {
    let (a, b) = (NamedNetns::new("eva", &[]), NamedNetns::new("evb", &[]));
    let all = common::Events::start(&["--no-leaks", "--netns", "all"]);
    let only_a = common::Events::start(&["--no-leaks", "--netns", &a.name]);
    let connect = |ns: &NamedNetns| {
        ns.run(|| {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = l.local_addr().expect("addr").port();
            let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let client = c.local_addr().expect("addr").port();
            let s = l.accept().expect("accept").0;
            drop((c, s));
            (port, client)
        })
    };
    let (port_a, port_b) = (connect(&a), connect(&b));
    std::thread::sleep(Duration::from_millis(300));
    let (all, only_a) = (all.stop(), only_a.stop());
    // Both ends: a port number alone may be in use in another namespace.
    let on = |events: &[Value], (port, client): (u16, u16)| -> Vec<Value> {
        events
            .iter()
            .filter(|e| {
                (e["sport"] == port && e["dport"] == client)
                    || (e["sport"] == client && e["dport"] == port)
            })
            .cloned()
            .collect()
    };
    for (port, ns) in [(port_a, &a), (port_b, &b)] {
        let evs = on(&all.events, port);
        assert!(!evs.is_empty(), "no events between {port:?}");
        assert!(evs.iter().all(|e| e["netns"] == ns.inode), "{evs:#?}");
    }
    assert!(!on(&only_a.events, port_a).is_empty());
    assert!(
        on(&only_a.events, port_b).is_empty(),
        "{:#?}",
        only_a.events
    );
    // Events the kernel could not place (a RST answering a segment that
    // matched no socket, from any other traffic on the host) carry netns 0
    // and are kept: they may be this namespace's.
    assert!(
        only_a
            .events
            .iter()
            .all(|e| e["netns"] == a.inode || e["netns"] == 0),
        "--netns {} printed another namespace's events",
        a.name
    );
}
