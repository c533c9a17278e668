//! A real Prometheus (Debian package) scraping one agent every second as
//! job `tracer`, with deploy/prometheus/tracer-rules.yml loaded, asked
//! through its HTTP API the way Grafana asks it: instant queries, label
//! values, and the rules' health. Killed, and its data removed, on drop.

use std::net::SocketAddr;

use serde_json::Value;

use crate::common::{Prometheus, http_get, percent_encode};

/// A running Prometheus of this test alone.
pub struct LivePrometheus(Prometheus);

/// One sample of an instant query: its labels (as JSON) and value.
pub struct Sample {
    pub labels: Value,
    pub value: f64,
}

impl LivePrometheus {
    /// Start it on a free loopback port, scraping `target`, with the rule
    /// file `rules` loaded; waits until it answers.
    pub fn start(target: SocketAddr, rules: &std::path::Path) -> LivePrometheus {
        let dir = crate::common::scratch("tracer-dashboards-prom-");
        let prom = Prometheus::launch(dir, &Prometheus::config(target, rules));
        prom.wait_ready();
        LivePrometheus(prom)
    }

    /// GET an API path; the `data` of a `success` answer, or Err with the
    /// status and body.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (code, body) =
            http_get(self.0.addr(), path).ok_or_else(|| format!("GET {path}: no answer"))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
        if code != 200 || v["status"] != "success" {
            return Err(format!("{code}: {body}"));
        }
        Ok(v["data"].clone())
    }

    /// An instant query now: every sample of a vector or scalar result.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)))?;
        let value = |v: &Value| -> f64 {
            v[1].as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN)
        };
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    labels: s["metric"].clone(),
                    value: value(&s["value"]),
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample {
                labels: Value::Null,
                value: value(&data["result"]),
            }]),
            other => Err(format!("{promql}: result type {other:?}")),
        }
    }

    /// Values of `label` on series matching `selector`, as Grafana's
    /// `label_values(selector, label)` asks for them.
    pub fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>, String> {
        let data = self.api(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            percent_encode(selector)
        ))?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect())
    }

    /// Every loaded rule: name, query, health, last error, evaluated yet.
    pub fn rules(&self) -> Vec<Value> {
        let data = self.api("/api/v1/rules").unwrap_or_default();
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}
