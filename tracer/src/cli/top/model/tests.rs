//! The model from synthetic API answers: rates between two samples,
//! TIME_WAIT aggregation, sorting and filtering.
use serde_json::{Value, json};

use super::*;

/// A `/api/v1/summary` answer at `now_s` seconds.
pub(crate) fn summary(now_s: u64, counts: &[(&str, u64)]) -> Summary {
    let sockets: serde_json::Map<String, Value> = counts
        .iter()
        .map(|(k, v)| ((*k).into(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "now_ns": now_s * 1_000_000_000,
        "now": "2026-11-30T05:42:20.617148759Z",
        "started_ns": 1,
        "started": "2026-11-30T05:00:00Z",
        "tracked_sockets": 42,
        "sockets": sockets,
        "dwell_seconds": {
            "time_wait": {"count": 9, "window": 9, "p50": 60.0, "p90": 60.2, "p99": 61.0, "max": 61.5},
            "syn_sent": {"count": 3, "window": 3, "p50": 0.0004, "p90": 0.002, "p99": 0.25, "max": 1.0},
        },
        "dwell_window": 4096,
        "handshakes": {
            "established": {"client": now_s * 10, "server": 5},
            "failed": {"client": {"refused": 1, "timed_out": 0}, "server": {"reset": 0}},
            "latency_seconds": {},
        },
    }))
    .expect("summary JSON")
}

/// One CLOSE_WAIT flag held by (pid, comm, fd).
fn flag(cookie: u64, lport: u16, rport: u16, age: f64, owners: &[(u32, &str, u32)]) -> Value {
    let owners: Vec<Value> = owners
        .iter()
        .map(|(pid, comm, fd)| {
            json!({"pid": pid, "comm": comm, "cmdline": "", "fd": fd, "cgroup": "", "container_id": null})
        })
        .collect();
    // Read to EOF: cookie 12 yes, 11 no; 13 from an agent too old to say.
    let read_to_end = match cookie {
        11 => json!(false),
        12 => json!(true),
        _ => Value::Null,
    };
    json!({
        "kind": "close_wait", "reason": null, "cookie": cookie, "read_to_end": read_to_end,
        "local": format!("127.0.0.1:{lport}"), "remote": format!("127.0.0.1:{rport}"),
        "state": "close_wait", "inode": cookie, "netns": 0, "raised_at_ns": 1,
        "age_seconds": age, "age_is_lower_bound": false, "unread_bytes": 0,
        "evidence": "in CLOSE_WAIT", "count": null, "owners": owners,
        "cleared_at_ns": null, "cleared_how": null,
    })
}

/// A `/api/v1/leaks` answer: python3 (pid 4242) holds two leaks on 8080,
/// java (pid 77) one on 9090, growing.
pub(crate) fn report() -> Report {
    let group = |pid: u32, comm: &str, growth: Option<f64>, sockets: Vec<Value>| {
        json!({
            "pid": pid, "comm": comm, "cmdline": "", "cgroup": "", "container_id": null,
            "close_wait": sockets.len(), "oldest_age_seconds": sockets[0]["age_seconds"],
            "oldest_is_lower_bound": false, "growth_per_minute": growth, "sockets": sockets,
        })
    };
    serde_json::from_value(json!({
        "source": "agent", "note": null, "now_ns": 5, "thresholds": null, "leak_count": 3,
        "leaks": [
            group(4242, "python3", None, vec![
                flag(11, 8080, 50001, 725.0, &[(4242, "python3", 7)]),
                flag(12, 8080, 50002, 30.5, &[(4242, "python3", 9), (4243, "python3", 9)]),
            ]),
            group(77, "java", Some(3.0), vec![flag(13, 9090, 50003, 90.0, &[(77, "java", 3)])]),
        ],
        "risks": [], "recently_cleared": [],
    }))
    .expect("report JSON")
}

/// TIME_WAIT sockets: three to 10.0.0.1:443 from ephemeral ports, two on
/// local port 8080 to two peers.
pub(crate) fn time_wait() -> Vec<TwSocket> {
    serde_json::from_value(json!([
        {"cookie": 1, "saddr": "10.0.0.9", "sport": 40001, "daddr": "10.0.0.1", "dport": 443},
        {"cookie": 2, "saddr": "10.0.0.9", "sport": 40002, "daddr": "10.0.0.1", "dport": 443},
        {"cookie": 3, "saddr": "10.0.0.9", "sport": 40003, "daddr": "10.0.0.1", "dport": 443},
        {"cookie": 4, "saddr": "10.0.0.9", "sport": 8080, "daddr": "10.0.0.2", "dport": 5000, "pid": 9, "comm": "nginx"},
        {"cookie": 5, "saddr": "::1", "sport": 8080, "daddr": "::1", "dport": 5001},
    ]))
    .expect("sockets JSON")
}

pub(crate) fn sample(now_s: u64, counts: &[(&str, u64)]) -> Sample {
    Sample {
        summary: summary(now_s, counts),
        leaks: report(),
        time_wait: time_wait(),
        time_wait_sampled: false,
    }
}

fn cells<'a>(m: &'a Model, p: Panel, sort: usize, filter: &str) -> Vec<Vec<&'a str>> {
    m.rows(p, sort, filter)
        .iter()
        .map(|r| r.cells.iter().map(String::as_str).collect())
        .collect()
}

fn column<'a>(m: &'a Model, p: Panel, sort: usize, filter: &str, col: usize) -> Vec<&'a str> {
    cells(m, p, sort, filter)
        .into_iter()
        .map(|r| r[col])
        .collect()
}

#[test]
fn change_per_second_comes_from_two_samples() {
    let first = sample(100, &[("established", 10), ("time_wait", 50)]);
    let m1 = Model::build(&first, None);
    assert_eq!(m1.now, "2026-11-30T05:42:20Z");
    assert_eq!(m1.tracked, 42);
    let est = &cells(&m1, Panel::States, 0, "established")[0];
    assert_eq!(
        est,
        &["established", "10", "-"],
        "no rate before a second sample"
    );
    let second = sample(
        102,
        &[("established", 16), ("time_wait", 20), ("close_wait", 1)],
    );
    let m2 = Model::build(&second, Some(&first.summary));
    let rows = cells(&m2, Panel::States, 0, "");
    assert_eq!(rows.len(), TcpState::ALL.len(), "every state, zeros too");
    let row = |name: &str| rows.iter().find(|r| r[0] == name).expect(name).clone();
    assert_eq!(row("established"), ["established", "16", "+3.0"]);
    assert_eq!(row("time_wait"), ["time_wait", "20", "-15"]);
    assert_eq!(row("close_wait"), ["close_wait", "1", "+0.5"]);
    assert_eq!(row("listen"), ["listen", "0", "0"]);
    // Handshakes: 10 more per second by the client; failures flat.
    let h = m2.handshakes.expect("handshakes");
    assert_eq!((h.ok, h.failed), (1025, 1));
    assert_eq!(h.rates, Some((10.0, 0.0)));
    // Sorted by change, biggest first.
    assert_eq!(
        column(&m2, Panel::States, 2, "", 0)[..3],
        ["established", "close_wait", "syn_sent"]
    );
}

#[test]
fn connects_with_no_local_port_are_counted_apart() {
    let mut s = sample(102, &[("established", 1)]);
    let h = s.summary.handshakes.as_mut().expect("handshakes");
    h.failed
        .entry("client".into())
        .or_default()
        .insert("no_local_port".into(), 7);
    let h = Model::build(&s, None).handshakes.expect("handshakes");
    assert_eq!((h.failed, h.no_local_port), (8, 7));
}

#[test]
fn a_sample_no_later_than_the_last_gives_no_rate() {
    let s = sample(100, &[("established", 10)]);
    let m = Model::build(&s, Some(&s.summary));
    assert_eq!(cells(&m, Panel::States, 0, "estab")[0][2], "-");
}

/// Every pod of a node serving 8080: a row each, named by its container
/// (the agent's own namespace is `host`), not one sum.
#[test]
fn time_wait_by_port_is_counted_in_each_namespace() {
    let mut sockets = time_wait();
    let pod: crate::container::Container = serde_json::from_value(json!({
        "id": "3f4e9a1c0b7d".repeat(5) + "abcd", "runtime": "podman", "name": "web"
    }))
    .expect("container");
    for (cookie, netns, container) in [(6, 7, Some(pod)), (7, 7, None), (8, 9, None)] {
        let mut s = sockets[3].clone();
        (s.cookie, s.netns, s.container) = (cookie, netns, container);
        sockets.push(s);
    }
    sockets[3].netns = 5;
    let (ports, _) = time_wait_rows(&sockets, Some(5));
    let m = Model {
        tables: [vec![], vec![], vec![], vec![], ports, vec![]],
        ..Model::default()
    };
    let on_8080: Vec<Vec<&str>> = cells(&m, Panel::TwPorts, 0, "")
        .into_iter()
        .filter(|r| r[0] == "8080")
        .collect();
    assert_eq!(
        on_8080,
        [
            vec!["8080", "2", "podman:web"],
            vec!["8080", "1", "?"],
            vec!["8080", "1", "host"],
            vec!["8080", "1", "netns 9"]
        ]
    );
}

#[test]
fn time_wait_is_counted_by_local_port_and_by_remote() {
    let (ports, remotes) = time_wait_rows(&time_wait(), None);
    let m = Model {
        tables: [vec![], vec![], vec![], vec![], ports, remotes],
        ..Model::default()
    };
    assert_eq!(
        cells(&m, Panel::TwPorts, 0, ""),
        [
            vec!["8080", "2", "?"],
            vec!["40001", "1", "?"],
            vec!["40002", "1", "?"],
            vec!["40003", "1", "?"]
        ]
    );
    assert_eq!(
        column(&m, Panel::TwPorts, 1, "", 0),
        ["8080", "40001", "40002", "40003"]
    );
    assert_eq!(
        cells(&m, Panel::TwRemotes, 0, ""),
        [
            vec!["10.0.0.1:443", "3"],
            vec!["10.0.0.2:5000", "1"],
            vec!["[::1]:5001", "1"]
        ]
    );
    // By address: IPv4 before IPv6, numerically.
    assert_eq!(
        column(&m, Panel::TwRemotes, 1, "", 0),
        ["10.0.0.1:443", "10.0.0.2:5000", "[::1]:5001"]
    );
}

#[test]
fn close_wait_rows_are_the_oldest_first_once_each() {
    let m = Model::build(&sample(100, &[]), None);
    assert_eq!(
        cells(&m, Panel::CloseWait, 0, ""),
        [
            vec![
                "12m05s",
                "4242",
                "python3",
                "7",
                "127.0.0.1:8080 -> 127.0.0.1:50001",
                "-",
                "no"
            ],
            vec![
                "90.0s",
                "77",
                "java",
                "3",
                "127.0.0.1:9090 -> 127.0.0.1:50003",
                "-",
                "-"
            ],
            vec![
                "30.5s",
                "4242",
                "python3 +1",
                "9",
                "127.0.0.1:8080 -> 127.0.0.1:50002",
                "-",
                "yes"
            ],
        ]
    );
    assert_eq!(
        column(&m, Panel::CloseWait, 1, "", 0),
        ["90.0s", "12m05s", "30.5s"],
        "by pid"
    );
    assert_eq!(
        column(&m, Panel::CloseWait, 2, "", 4),
        [
            "127.0.0.1:8080 -> 127.0.0.1:50001",
            "127.0.0.1:8080 -> 127.0.0.1:50002",
            "127.0.0.1:9090 -> 127.0.0.1:50003"
        ],
        "by port"
    );
    assert_eq!(m.leak_count, 3);
}

#[test]
fn processes_sort_by_count_growth_and_pid() {
    let m = Model::build(&sample(100, &[]), None);
    assert_eq!(
        cells(&m, Panel::Procs, 0, ""),
        [
            vec!["4242", "python3", "2", "2", "12m05s", "-"],
            vec!["77", "java", "1", "1", "90.0s", "+3.0"]
        ]
    );
    assert_eq!(column(&m, Panel::Procs, 1, "", 1), ["java", "python3"]);
    assert_eq!(column(&m, Panel::Procs, 2, "", 0), ["77", "4242"]);
}

#[test]
fn the_filter_keeps_rows_with_the_text_in_any_cell() {
    let m = Model::build(&sample(100, &[("established", 3)]), None);
    assert_eq!(column(&m, Panel::CloseWait, 0, "JAVA", 1), ["77"]);
    assert_eq!(column(&m, Panel::CloseWait, 0, "8080", 1), ["4242", "4242"]);
    assert_eq!(column(&m, Panel::Procs, 0, "pyth", 0), ["4242"]);
    assert_eq!(column(&m, Panel::TwRemotes, 0, "443", 0), ["10.0.0.1:443"]);
    assert_eq!(column(&m, Panel::States, 0, "wait", 0).len(), 4);
    assert!(cells(&m, Panel::Procs, 0, "nothing-matches").is_empty());
}

#[test]
fn dwell_rows_in_state_order_with_units() {
    let m = Model::build(&sample(100, &[]), None);
    assert_eq!(
        cells(&m, Panel::Dwell, 0, ""),
        [
            vec!["syn_sent", "3", "400us", "2ms", "250ms", "1.0s"],
            vec!["time_wait", "9", "60.0s", "60.2s", "61.0s", "61.5s"]
        ]
    );
    assert_eq!(
        column(&m, Panel::Dwell, 1, "", 0),
        ["time_wait", "syn_sent"]
    );
}

#[test]
fn a_close_wait_outside_the_agents_namespace_and_any_container_names_its_namespace() {
    let mut s = sample(100, &[]);
    s.leaks.agent_netns = Some(4026531840);
    s.leaks.netns_names.insert(4026532174, "web".into());
    for f in s.leaks.leaks.iter_mut().flat_map(|g| &mut g.sockets) {
        f.netns = match f.cookie {
            Some(11) => 4026531840,
            Some(12) => 4026532174,
            _ => 4026532999,
        };
    }
    let m = Model::build(&s, None);
    assert_eq!(
        column(&m, Panel::CloseWait, 0, "", 5),
        ["-", "ns:4026532999", "ns:web"],
        "the agent's own namespace is the unmarked case; others are named, else numbered"
    );
}

#[test]
fn the_names_of_the_flags_namespaces_travel_with_the_report() {
    let mut r = report();
    for f in r.leaks.iter_mut().flat_map(|g| &mut g.sockets) {
        f.netns = 4026532174;
    }
    let names = [(4026532174, "web"), (4026532999, "unrelated")]
        .map(|(i, n)| (i, n.to_owned()))
        .into();
    r.name_namespaces(names);
    assert_eq!(r.netns_names.len(), 1, "only the flags' namespaces");
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["netns_names"]["4026532174"], "web");
    let back: Report = serde_json::from_value(json).expect("read back");
    assert_eq!(
        back.netns_names.get(&4026532174).map(String::as_str),
        Some("web")
    );
}

/// An IPv4 peer of a dual-stack socket shows as IPv4, so that both ends of
/// the connection fit the panel's column; a real IPv6 address stays.
#[test]
fn a_v4_mapped_connection_is_shown_as_ipv4() {
    let mut s = sample(5, &[("close_wait", 2)]);
    let socks = &mut s.leaks.leaks[0].sockets;
    socks[0].local = "[::ffff:127.0.0.1]:8080".parse().unwrap();
    socks[0].remote = Some("[::ffff:127.0.0.1]:50001".parse().unwrap());
    socks[1].local = "[2001:db8::1]:8080".parse().unwrap();
    socks[1].remote = Some("[2001:db8::2]:50002".parse().unwrap());
    let m = Model::build(&s, None);
    let shown: Vec<String> = cells(&m, Panel::CloseWait, 0, "")
        .iter()
        .map(|r| r[4].to_owned())
        .collect();
    assert!(
        shown.contains(&"127.0.0.1:8080 -> 127.0.0.1:50001".to_owned()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"[2001:db8::1]:8080 -> [2001:db8::2]:50002".to_owned()),
        "{shown:?}"
    );
}
