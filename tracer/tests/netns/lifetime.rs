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
    // Within 10 s: a limit on a busy host running these tests side by
    // side, not a target (the wait ends as soon as both hold).
    assert!(
        wait_until(Duration::from_secs(10), || tw()
            .first()
            .is_some_and(|s| !confirmed || s["time_wait_confirmed"] == true)
            && agent.get("/metrics").contains(&followed)),
        "{:#?}",
        tw()
    );
    let cookie = tw()[0]["cookie"].as_u64().expect("cookie");
    // The gauges above come from the events; the namespace is followed
    // once a survey (every interval) or a dump has seen it, and the agent
    // then holds it open. One that lives less than an interval is never
    // followed, and its TIME_WAIT ends only by its timer (a documented
    // limit): wait for ours to be followed before deleting it.
    let holds = || holds_netns(agent.pid(), inode);
    assert!(
        wait_until(Duration::from_secs(5), holds),
        "the agent never followed the namespace"
    );
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
        wait_until(Duration::from_secs(3), || !holds()),
        "the agent still holds the deleted namespace open"
    );
}

/// True when process `pid` holds network namespace `inode` open (as the
/// agent does each namespace it follows). Specific to one namespace,
/// unlike `tracer_netns_tracked`, which the namespaces of tests running
/// beside this one move too.
fn holds_netns(pid: u32, inode: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let nsfs = std::fs::metadata("/proc/self/ns/net")
        .expect("our namespace")
        .dev();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == nsfs && m.ino() == inode)
            })
        })
        .unwrap_or(false)
}

/// A namespace made with the host's defaults has no TCP hash table of its
/// own (`net.ipv4.tcp_child_ehash_entries` is 0), so a dump of it walks
/// every TCP socket of the host. When the budget stretches the dumps, the
/// agent says so once, with how many of the namespaces it follows share the
/// host's table and the setting that changes it.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn namespaces_sharing_the_host_table_are_named_once_when_dumps_stretch() {
    let ns = NamedNetns::new("shared", &[]);
    let entries = ns.run(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    });
    match entries {
        None => {
            eprintln!("skipped: no net.ipv4.tcp_ehash_entries before Linux 6.1");
            return;
        }
        Some(n) if n > 0 => {
            eprintln!("skipped: this host gives new namespaces a table of their own");
            return;
        }
        Some(_) => {}
    }
    let (agent, log) = Agent::start_logged(
        &[],
        &[
            "--reconcile-interval",
            "250ms",
            "--time-wait-interval",
            "500ms",
            "--reconcile-budget",
            "0.0001",
            "--netns",
            "all",
        ],
    );
    const HINT: &str = "share the host's TCP hash table";
    let said = || log.lock().unwrap().matches(HINT).count();
    assert!(
        wait_until(Duration::from_secs(10), || said() == 1),
        "{}",
        log.lock().unwrap()
    );
    let text = log.lock().unwrap().clone();
    let line = text.lines().find(|l| l.contains(HINT)).expect("the line");
    assert!(line.contains("instead of every"), "{line}");
    assert!(line.contains("net.ipv4.tcp_child_ehash_entries"), "{line}");
    // At least this test's namespace shares the table; the count is of the
    // namespaces the agent follows, which other tests' come and go among.
    let shared: usize = line
        .split(" of the ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(shared >= 1, "{line}");
    // The same count, as a gauge.
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .metric("tracer_netns_sharing_host_table")
            >= 1.0),
        "{}",
        agent.get("/metrics")
    );
    // Once: later dumps stretch the same way and say nothing more.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(said(), 1, "{}", log.lock().unwrap());
    drop(agent);
}
