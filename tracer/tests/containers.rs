//! Privileged tests with real containers (podman + runc, a busybox image
//! made on the machine): the agent, `tracer leaks` and `tracer events` name
//! the container (and the pod, from CRI annotations) behind each socket,
//! from the host, without configuration, and count each container's sockets
//! as `ss -tan` inside it does; a leak in a pod's sidecar names the
//! sidecar. Each test looks only at its own
//! containers (`tr-<tag>-<pid>`, removed on drop) and namespaces.
mod common;
#[path = "containers/podman.rs"]
mod podman;
#[path = "containers/scenario.rs"]
mod scenario;

use std::{
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use common::{Agent, Events, NO_AGENT, NamedNetns, wait_until};
use podman::{Container, image, pids_in};
use scenario::{
    LEAKY_SERVER, connect_inside, leak_flags, leak_flags_on, metric, names, sockets, ss_states,
};
use serde_json::Value;

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_leak_in_a_container_started_after_the_agent_is_named_from_the_host() {
    let Some(_) = image() else { return };
    let agent = Agent::start_every_netns();
    let url = format!("http://{}", agent.addr);
    let ns = NamedNetns::new("ctleak", &[]);
    let c = Container::run(
        "ctleak",
        &["--network", &format!("ns:/run/netns/{}", ns.name)],
        LEAKY_SERVER,
    );
    assert_eq!(
        c.netns, ns.inode,
        "the container joined the test's namespace"
    );
    // Three clients, from the test's thread inside the namespace, connect
    // and close: the container's sleeps hold three CLOSE_WAIT sockets.
    let up = wait_until(Duration::from_secs(10), || c.listening(8080));
    assert!(up, "the server in {} never listened", c.name);
    let closed = ns.run(|| {
        for _ in 0..3 {
            let s = TcpStream::connect("127.0.0.1:8080").expect("connect");
            std::thread::sleep(Duration::from_millis(100));
            drop(s);
        }
        Instant::now()
    });
    // The 3 connections, held by sleeps in the container.
    let leakers = {
        let mut p = Vec::new();
        wait_until(Duration::from_secs(5), || {
            p = pids_in(&c.id, "sleep");
            p.len() == 3
        });
        p
    };
    assert_eq!(
        leakers.len(),
        3,
        "sleeps holding the connections: {leakers:?}"
    );

    // The API names the container beside the namespace.
    let listed = wait_until(Duration::from_secs(5), || {
        let cw: Vec<Value> = sockets(&agent, ns.inode)
            .into_iter()
            .filter(|s| s["state"] == "close_wait")
            .collect();
        cw.len() == 3 && cw.iter().all(|s| names(s, &c))
    });
    assert!(listed, "{:#?}", sockets(&agent, ns.inode));

    // The agent's report: pid, fd, exact age, netns and container.
    let mut flags = Vec::new();
    let flagged = wait_until(Duration::from_secs(8), || {
        flags = leak_flags(&["--agent", &url], ns.inode);
        flags.len() == 3
    });
    assert!(flagged, "{flags:#?}");
    let since_close = closed.elapsed().as_secs_f64();
    for f in &flags {
        assert!(names(f, &c), "{f:#}");
        assert_eq!(f["kind"], "close_wait", "{f:#}");
        let owner = &f["owners"][0];
        let pid = owner["pid"].as_u64().expect("pid") as u32;
        assert!(
            leakers.contains(&pid),
            "owner {pid} not in {leakers:?}: {f:#}"
        );
        assert!(owner["fd"].as_u64().is_some_and(|fd| fd <= 2), "{f:#}");
        assert_eq!(f["age_is_lower_bound"], false, "{f:#}");
        let age = f["age_seconds"].as_f64().expect("age");
        assert!(
            age >= 1.0 && age <= since_close + 1.0,
            "age {age} s, closed {since_close} s ago: {f:#}"
        );
    }

    // Without an agent: the snapshot names the container too.
    let snap = leak_flags(&["--agent", NO_AGENT], ns.inode);
    assert_eq!(snap.len(), 3, "{snap:#?}");
    assert!(snap.iter().all(|f| names(f, &c)), "{snap:#?}");
    let table = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["leaks", "--agent", &url])
        .output()
        .expect("tracer leaks");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&format!("podman:{}", c.name)), "{table}");

    // Per-workload metrics, by container name.
    let series = |m: &str, label: &str| {
        format!(
            "tracer_{m}{{pod_namespace=\"\",pod=\"\",container=\"{}\",netns=\"\",{label}}}",
            c.name
        )
    };
    let counted = wait_until(Duration::from_secs(3), || {
        metric(&agent, &series("workload_sockets", "state=\"close_wait\"")) == 3.0
            && metric(&agent, &series("workload_leaks", "kind=\"close_wait\"")) == 3.0
    });
    assert!(counted, "{}", agent.get("/metrics"));
    assert!(metric(&agent, "tracer_containers") >= 1.0);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_container_that_stops_ends_its_sockets_and_its_series() {
    let Some(_) = image() else { return };
    let agent = Agent::start_every_netns();
    let events = Events::start(&["--port", "8080", "--netns", "all"]);
    let c = Container::run("ctstop", &["--network", "none"], LEAKY_SERVER);
    // The kernel reuses a destroyed namespace's inode, and tests run side by
    // side: events in this inode from before our namespace existed (a
    // container another test stopped meanwhile) or after it was gone are
    // another's. Ours: from here to its removal.
    let born_ns = tracer::pipeline::monotonic_ns();
    let client = connect_inside(&c);
    let netns = c.netns;
    let attributed = wait_until(Duration::from_secs(10), || {
        let s = sockets(&agent, netns);
        s.len() == 3 && s.iter().all(|s| names(s, &c))
    });
    assert!(attributed, "{:#?}", sockets(&agent, netns));
    let name = c.name.clone();
    let id = c.id.clone();
    let workload = format!(
        "tracer_workload_sockets{{pod_namespace=\"\",pod=\"\",container=\"{name}\",netns=\"\",state=\"established\"}}"
    );
    assert!(wait_until(Duration::from_secs(3), || metric(
        &agent, &workload
    ) == 2.0));
    // Let `tracer events` discover the namespace too (one dump a second).
    std::thread::sleep(Duration::from_millis(2500));
    // The client's socket would keep the namespace, and its CLOSE_WAIT
    // end, alive after the container stops: close it first.
    drop(client);
    c.remove();
    let removed_ns = tracer::pipeline::monotonic_ns();
    let ended = wait_until(Duration::from_secs(10), || {
        sockets(&agent, netns).is_empty()
    });
    assert!(ended, "{:#?}", sockets(&agent, netns));
    let gone = wait_until(Duration::from_secs(5), || {
        !agent
            .get("/metrics")
            .contains(&format!("container=\"{name}\""))
    });
    assert!(gone, "the stopped container's series stay");

    let out = events.stop();
    let mine: Vec<&Value> = out
        .events
        .iter()
        .filter(|e| {
            e["netns"] == netns
                && e["ts_ns"]
                    .as_u64()
                    .is_some_and(|t| (born_ns..=removed_ns).contains(&t))
        })
        .collect();
    let closes: Vec<&&Value> = mine
        .iter()
        .filter(|e| e["new_state"] == "close" || e["new_state"] == "fin_wait1")
        .collect();
    assert!(!closes.is_empty(), "{mine:#?}");
    for e in closes {
        assert_eq!(e["container"]["id"], id.as_str(), "{e:#}");
        assert_eq!(e["container"]["name"], name.as_str(), "{e:#}");
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn the_same_four_tuple_in_two_containers_is_kept_apart() {
    let Some(_) = image() else { return };
    let agent = Agent::start_every_netns();
    let a = Container::run("cttuplea", &["--network", "none"], LEAKY_SERVER);
    let b = Container::run("cttupleb", &["--network", "none"], LEAKY_SERVER);
    let _clients = (connect_inside(&a), connect_inside(&b));
    assert_ne!(a.netns, b.netns);
    let both = wait_until(Duration::from_secs(10), || {
        let (sa, sb) = (sockets(&agent, a.netns), sockets(&agent, b.netns));
        sa.len() == 3
            && sb.len() == 3
            && sa.iter().all(|s| names(s, &a))
            && sb.iter().all(|s| names(s, &b))
    });
    assert!(
        both,
        "a: {:#?}\nb: {:#?}",
        sockets(&agent, a.netns),
        sockets(&agent, b.netns)
    );
    let tuples = |c: &Container| -> Vec<(String, String)> {
        let mut t: Vec<(String, String)> = sockets(&agent, c.netns)
            .iter()
            .filter(|s| s["state"] == "established")
            .map(|s| {
                (
                    format!("{}:{}", s["saddr"], s["sport"]),
                    format!("{}:{}", s["daddr"], s["dport"]),
                )
            })
            .collect();
        t.sort();
        t
    };
    assert_eq!(tuples(&a), tuples(&b), "the same 4-tuples in both");
    assert_eq!(tuples(&a).len(), 2);
    let mut cookies: Vec<u64> = [&a, &b]
        .iter()
        .flat_map(|c| sockets(&agent, c.netns))
        .map(|s| s["cookie"].as_u64().expect("cookie"))
        .collect();
    cookies.sort_unstable();
    cookies.dedup();
    assert_eq!(cookies.len(), 6, "six sockets, six cookies");

    // Per-state counts agree with `ss -tan` run inside each (nsenter).
    for c in [&a, &b] {
        agent.assert_states_agree(c.netns, &c.name, || ss_states(c.pid));
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_container_with_cri_annotations_is_attributed_to_its_pod() {
    let Some(_) = image() else { return };
    let agent = Agent::start_every_netns();
    let pod = format!("cart-{}", std::process::id());
    let annotations = [
        "io.kubernetes.cri.container-type=container".to_owned(),
        format!("io.kubernetes.cri.sandbox-name={pod}"),
        "io.kubernetes.cri.sandbox-namespace=shop".to_owned(),
        "io.kubernetes.cri.container-name=app".to_owned(),
    ];
    let mut extra = vec!["--network", "none"];
    for a in &annotations {
        extra.extend(["--annotation", a.as_str()]);
    }
    let c = Container::run("ctpod", &extra, LEAKY_SERVER);
    let _client = connect_inside(&c);
    let in_pod = |s: &Value| {
        let p = &s["container"]["pod"];
        s["container"]["id"] == c.id.as_str()
            && p["namespace"] == "shop"
            && p["name"] == pod.as_str()
            && p["container"] == "app"
    };
    let attributed = wait_until(Duration::from_secs(10), || {
        let s = sockets(&agent, c.netns);
        s.len() == 3 && s.iter().all(in_pod)
    });
    assert!(attributed, "{:#?}", sockets(&agent, c.netns));
    let series = format!(
        "tracer_workload_sockets{{pod_namespace=\"shop\",pod=\"{pod}\",container=\"app\",netns=\"\",state=\"established\"}}"
    );
    let counted = wait_until(Duration::from_secs(3), || metric(&agent, &series) == 2.0);
    assert!(counted, "{}", agent.get("/metrics"));
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_sidecars_leak_is_named_after_the_sidecar_not_its_pods_first_container() {
    let Some(_) = image() else { return };
    let agent = Agent::start_every_netns();
    let url = format!("http://{}", agent.addr);
    // A pod's shape: an application container, and a sidecar that joins
    // its network namespace and leaks.
    let app = Container::run("ctapp", &["--network", "none"], "exec sleep 100000");
    let joined = format!("container:{}", app.name);
    let side = Container::run("ctside", &["--network", &joined], LEAKY_SERVER);
    assert_eq!(app.netns, side.netns, "one namespace, as in a pod");
    let up = wait_until(Duration::from_secs(10), || side.listening(8080));
    assert!(up, "the sidecar's server never listened");
    side.inside(|| {
        for _ in 0..3 {
            let s = TcpStream::connect("127.0.0.1:8080").expect("connect");
            std::thread::sleep(Duration::from_millis(100));
            drop(s);
        }
    });
    // The namespace, and so each socket listed, is named after the pod's
    // first application container.
    let listed = wait_until(Duration::from_secs(5), || {
        let cw: Vec<Value> = sockets(&agent, app.netns)
            .into_iter()
            .filter(|s| s["state"] == "close_wait")
            .collect();
        cw.len() == 3 && cw.iter().all(|s| names(s, &app))
    });
    assert!(listed, "{:#?}", sockets(&agent, app.netns));
    // A leak is named after the container of the process holding it.
    let mut flags = Vec::new();
    let flagged = wait_until(Duration::from_secs(8), || {
        flags = leak_flags(&["--agent", &url], side.netns);
        flags.len() == 3
    });
    assert!(flagged, "{flags:#?}");
    assert!(flags.iter().all(|f| names(f, &side)), "{flags:#?}");
    let snap = leak_flags(&["--agent", NO_AGENT], side.netns);
    assert_eq!(snap.len(), 3, "{snap:#?}");
    assert!(snap.iter().all(|f| names(f, &side)), "{snap:#?}");
}

/// A container on the host's network (`--network host`, Kubernetes'
/// `hostNetwork: true`) is in the host's namespace, which no container
/// names: its leak is named after the container its process's cgroup
/// names, by the agent and by a snapshot.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_leak_in_a_container_on_the_host_network_is_named_after_it() {
    let Some(_) = image() else { return };
    let agent = Agent::start_every_netns();
    let url = format!("http://{}", agent.addr);
    let port = common::free_addr().port();
    let server = format!("exec nc -ll -p {port} -e /bin/sleep 100000");
    let c = Container::run("cthost", &["--network", "host"], &server);
    let up = wait_until(Duration::from_secs(10), || c.listening(port));
    assert!(up, "the server never listened on {port}");
    for _ in 0..3 {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
    }
    let mut flags = Vec::new();
    let flagged = wait_until(Duration::from_secs(8), || {
        flags = leak_flags_on(&["--agent", &url], c.netns, port);
        flags.len() == 3
    });
    assert!(flagged, "{flags:#?}");
    assert!(flags.iter().all(|f| names(f, &c)), "{flags:#?}");
    let snap = leak_flags_on(&["--agent", NO_AGENT], c.netns, port);
    assert_eq!(snap.len(), 3, "{snap:#?}");
    assert!(snap.iter().all(|f| names(f, &c)), "{snap:#?}");
}
