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

/// How each flag on local port `port` that `report` lists as recently
/// cleared ended (`cleared_how`).
pub fn cleared_on_port(report: &Value, port: u16) -> Vec<String> {
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
