//! The leak tests' server with its clients gone, and how they read
//! `tracer leaks`' report.

use serde_json::Value;

use crate::common::LeakyServer;

pub const CONNS: usize = 3;

/// The tests run one at a time: each one's CLOSE_WAIT sockets would be
/// "foreign" to the other's exit-status check.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The leaking server with `CONNS` clients connected, then closed.
pub fn leaking_server() -> LeakyServer {
    let mut server = LeakyServer::start(None);
    server.leak(CONNS);
    server
}

/// Every flagged socket in a JSON report whose local port is `port`.
pub fn flags_on_port(report: &Value, port: u16) -> Vec<Value> {
    let suffix = format!(":{port}");
    crate::common::all_flags(report)
        .into_iter()
        .filter(|f| f["local"].as_str().is_some_and(|l| l.ends_with(&suffix)))
        .collect()
}

/// The agent's leak report.
fn report(agent: &crate::common::Agent) -> Value {
    serde_json::from_str(&agent.get("/api/v1/leaks")).expect("JSON")
}

/// Wait until `agent` flags `n` sockets on local port `port`; panics with
/// its report otherwise.
pub fn wait_flagged(agent: &crate::common::Agent, port: u16, n: usize) {
    let flagged = crate::common::wait_until(std::time::Duration::from_secs(10), || {
        flags_on_port(&report(agent), port).len() == n
    });
    assert!(flagged, "{:#}", report(agent));
}

/// Wait until `n` flags on local port `port` have cleared, each in a way
/// `how` accepts; panics with how they cleared otherwise.
pub fn wait_cleared(agent: &crate::common::Agent, port: u16, n: usize, how: impl Fn(&str) -> bool) {
    let said = crate::common::wait_until(std::time::Duration::from_secs(10), || {
        let cleared = cleared_on_port(&report(agent), port);
        cleared.len() == n && cleared.iter().all(|h| how(h))
    });
    let r = report(agent);
    assert!(said, "{:?}\n{r:#}", cleared_on_port(&r, port));
}

/// How each flag on local port `port` that `report` lists as recently
/// cleared ended (`cleared_how`).
fn cleared_on_port(report: &Value, port: u16) -> Vec<String> {
    let suffix = format!(":{port}");
    report["recently_cleared"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["local"].as_str().is_some_and(|l| l.ends_with(&suffix)))
        .filter_map(|f| f["cleared_how"].as_str().map(str::to_owned))
        .collect()
}

/// An agent of this thread's namespace that flags CLOSE_WAIT after 1 s,
/// with dumps every 250 ms.
pub fn close_wait_agent() -> crate::common::Agent {
    crate::common::Agent::start(&[
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "250ms",
    ])
}
