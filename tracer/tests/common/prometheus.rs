//! A real Prometheus server scraping the agent, for alert and query tests.

use std::process::{Child, Command, Stdio};

pub use tracer::export::http::percent_encode;

use super::http_get;

/// A real Prometheus server (Debian package) scraping one target every
/// second, with optional rules; killed and its data removed on drop.
pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
}

impl Prometheus {
    /// Start it on a free loopback port; `rules` is a rule file's YAML (or empty).
    pub fn start(target: std::net::SocketAddr, rules: &str) -> Prometheus {
        let dir = super::scratch("tracer-prom-");
        let rule_file = dir.path().join("rules.yml");
        std::fs::write(
            &rule_file,
            if rules.is_empty() {
                "groups: []\n"
            } else {
                rules
            },
        )
        .unwrap();
        Prometheus::launch(dir, &Prometheus::config(target, &rule_file))
    }

    /// A prometheus.yml that scrapes `target` as job `tracer` and evaluates
    /// the rule file `rules`, both every second.
    pub fn config(target: std::net::SocketAddr, rules: &std::path::Path) -> String {
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        )
    }

    /// Write `config` (a whole prometheus.yml) into `dir` and start
    /// Prometheus with it on a free loopback port, its data in `dir`;
    /// both are removed on drop.
    pub fn launch(dir: tempfile::TempDir, config: &str) -> Prometheus {
        let addr = super::free_addr();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (Debian package `prometheus`; cargo xtask test installs it)");
        Prometheus { child, dir, addr }
    }

    /// Wait until it answers /-/ready; panics after 30 s.
    pub fn wait_ready(&self) {
        let ready = super::wait_until(std::time::Duration::from_secs(30), || {
            http_get(self.addr, "/-/ready").is_some_and(|(c, _)| c == 200)
        });
        assert!(ready, "prometheus on {} did not become ready", self.addr);
    }

    /// Where it serves its HTTP API.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The first sample of an instant query.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let q = percent_encode(promql);
        let (code, body) = http_get(self.addr, &format!("/api/v1/query?query={q}"))?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Prometheus {
    /// Names of alerts that are firing now.
    pub fn firing(&self) -> Vec<String> {
        let Some((200, body)) = http_get(self.addr, "/api/v1/alerts") else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["state"] == "firing")
                    .filter_map(|x| x["labels"]["alertname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Start it on a free loopback port, scraping `target` every second
    /// with `job` added to the `tracer` job's settings: YAML lines indented
    /// by four spaces, e.g. `scheme: https`, `tls_config:` and
    /// `basic_auth:`. Each one gets a directory of its own.
    pub fn start_job(target: std::net::SocketAddr, job: &str) -> Prometheus {
        let dir = super::scratch("tracer-prom-job-");
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tracer\n{job}    static_configs:\n      - targets: ['{target}']\n"
        );
        Prometheus::launch(dir, &config)
    }

    /// The `lastError` Prometheus reports for its first target, if any.
    pub fn target_error(&self) -> Option<String> {
        let (_, body) = http_get(self.addr, "/api/v1/targets")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["activeTargets"][0]["lastError"]
            .as_str()
            .map(String::from)
    }
}
