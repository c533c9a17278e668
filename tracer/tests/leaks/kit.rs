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
