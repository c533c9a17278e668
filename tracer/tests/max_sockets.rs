//! `--max-sockets` binding: the state gauges stay the kernel's counts, the
//! long-lived records stay, and `/healthz` says the agent is degraded.
//! Privileged: its own network namespace, so `ss` there counts only ours.
mod common;

use std::{
    net::{TcpListener, TcpStream},
    time::Duration,
};

use common::{Agent, Netns, http_get, ss_count, wait_until};

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn established_gauge_equals_ss_with_the_cap_far_below() {
    let _ns = Netns::enter("cap3000");
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    let mut conns = Vec::new();
    let open = |n: usize, conns: &mut Vec<(TcpStream, TcpStream)>| {
        for _ in 0..n {
            let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let (s, _) = l.accept().expect("accept");
            conns.push((c, s));
        }
    };
    let agent = Agent::start(&["--max-sockets", "100", "--reconcile-interval", "500ms"]);
    open(1_500, &mut conns); // 3,000 ESTABLISHED sockets, both ends
    let kernel = ss_count("established", "");
    assert!(kernel >= 3_000, "{kernel}");
    let series = "tracer_tcp_sockets{state=\"established\"}";
    // The scrape's own connection is in this namespace too: both its ends
    // are ESTABLISHED while the agent answers, and a scrape counts every
    // event written before it, so the gauge may hold those 2 more than
    // `ss` read around it.
    let matches = |ss: usize, gauge: usize| (ss..=ss + 2).contains(&gauge);
    let mut seen = Vec::new();
    let agrees = wait_until(Duration::from_secs(10), || {
        let before = ss_count("established", "");
        let gauge = agent.metric(series) as usize;
        let after = ss_count("established", "");
        seen.push((before, gauge, after));
        matches(before, gauge) || matches(after, gauge)
    });
    assert!(agrees, "(ss before, gauge, ss after): {seen:?}");
    assert_eq!(
        agent.metric("tracer_tracked_sockets"),
        100.0,
        "the cap holds"
    );
    // Degraded, in words.
    let (code, body) = http_get(agent.addr, "/healthz").expect("healthz");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("degraded") && body.contains("--max-sockets"),
        "{body}"
    );
    // Closing most of them: the gauge follows the kernel down, and the
    // cap stops binding.
    conns.truncate(20);
    let settled = wait_until(Duration::from_secs(10), || {
        let before = ss_count("established", "");
        let gauge = agent.metric(series) as usize;
        matches(before, gauge) && gauge < 100
    });
    assert!(
        settled,
        "{} vs ss {}",
        agent.metric(series),
        ss_count("established", "")
    );
    let healthy = wait_until(Duration::from_secs(10), || {
        http_get(agent.addr, "/healthz").is_some_and(|(_, b)| !b.contains("degraded"))
    });
    assert!(healthy, "no longer degraded once every socket fits");
    drop(conns);
    assert_eq!(agent.stop().code(), Some(0));
}
