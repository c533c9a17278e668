//! How the forecast tests read a leaks report's forecasts.
use serde_json::Value;

/// The process forecast for `pid` in a leaks report.
pub fn fd_forecast(report: &Value, pid: u32) -> Option<Value> {
    report["forecasts"]["fd"]
        .as_array()?
        .iter()
        .find(|f| f["pid"] == pid)
        .cloned()
}

/// The endpoint forecast for `remote` in a leaks report.
pub fn port_forecast(report: &Value, remote: &str) -> Option<Value> {
    report["forecasts"]["ports"]
        .as_array()?
        .iter()
        .find(|f| f["remote"] == remote)
        .cloned()
}
