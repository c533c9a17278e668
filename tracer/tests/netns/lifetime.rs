//! Namespaces that go away while the agent follows them.
use super::*;

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_deleted_namespace_ends_cleanly() {
    deleted_namespace_ends_cleanly("0", "nsgone");
}

/// With a budget so small that dumps come minutes apart, namespaces are
/// still found and dropped within an interval: a survey of /proc runs
/// every interval, and a namespace no dump has seen gets one at once.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_namespace_comes_and_goes_between_dumps_the_budget_spaces_out() {
    deleted_namespace_ends_cleanly("0.0001", "nsbudget");
}

fn deleted_namespace_ends_cleanly(budget: &str, name: &str) {
    let agent = Agent::start(&[
        "--reconcile-interval",
        "250ms",
        "--time-wait-interval",
        "500ms",
        "--reconcile-budget",
        budget,
        "--netns",
        "all",
    ]);
    // Two dumps done: the second one set the pace.
    std::thread::sleep(Duration::from_millis(800));
    let ns = NamedNetns::new(name, &[]);
    let inode = ns.inode;
    // A connection its client closes first: a TIME_WAIT socket that lives
    // on after every process let go, until the namespace is destroyed.
    let port = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let s = l.accept().expect("accept").0;
        drop(c);
        std::thread::sleep(Duration::from_millis(50));
        drop(s);
        port
    });
    // Ours, by port: the kernel reuses namespace inodes, and the agents of
    // tests running beside this one follow every namespace too.
    let tw = || -> Vec<Value> {
        agent
            .json(&format!(
                "/api/v1/sockets?state=time_wait&netns={inode}&port={port}"
            ))
            .as_array()
            .expect("array")
            .iter()
            .filter(|s| s["netns"] == inode && s["dport"] == port)
            .cloned()
            .collect()
    };
    // Seen by the events and followed (with no budget, confirmed by a
    // full dump too).
    let confirmed = budget == "0";
    // The namespace itself is followed once a survey or a dump found it:
    // its workload has gauges.
    let followed = format!("netns=\"{inode}\"");
    assert!(
        wait_until(Duration::from_secs(5), || tw()
            .first()
            .is_some_and(|s| !confirmed || s["time_wait_confirmed"] == true)
            && agent.get("/metrics").contains(&followed)),
        "{:#?}",
        tw()
    );
    let cookie = tw()[0]["cookie"].as_u64().expect("cookie");
    let tracked = agent.metric("tracer_netns_tracked");
    drop(ns);
    let mut ended = Value::Null;
    let gone = wait_until(Duration::from_secs(5), || {
        let all = agent.json(&format!("/api/v1/sockets?netns={inode}"));
        let arr = all.as_array().expect("array");
        if let Some(s) = arr.iter().find(|s| s["cookie"] == cookie) {
            ended = s.clone();
        }
        // Our own socket: another test's namespace may have had this inode
        // before ours (the kernel reuses them), and every agent here
        // follows every namespace.
        ended["live"] == false
    });
    assert!(
        gone,
        "sockets of the deleted namespace still live: {:#?}",
        agent
            .json(&format!("/api/v1/sockets?netns={inode}"))
            .as_array()
            .map(|a| a
                .iter()
                .filter(|s| s["netns"] == inode)
                .cloned()
                .collect::<Vec<_>>())
    );
    assert_eq!(ended["time_wait_ended"], "reset", "{ended:#}");
    assert!(
        wait_until(Duration::from_secs(3), || agent
            .metric("tracer_netns_tracked")
            < tracked),
        "the namespace is still followed"
    );
}
