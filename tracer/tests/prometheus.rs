//! A real Prometheus server (the Debian package) scrapes `tracer run` on
//! loopback; PromQL sees the expected TIME_WAIT count, and promtool finds
//! nothing wrong with the exposition. Privileged.
mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Agent, Netns, http_get, wait_until};

struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
    addr: std::net::SocketAddr,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("tracer-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (Debian package `prometheus`; cargo xtask test installs it)");
        Prometheus { child, dir, addr }
    }

    fn query(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let (code, body) = http_get(self.addr, &format!("/api/v1/query?query={q}"))?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_the_time_wait_count() {
    let _ns = Netns::enter("prom");
    let agent = Agent::start(&["--reconcile-interval", "250ms"]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut clients = Vec::new();
    for _ in 0..12 {
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(s);
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap(), 0);
        clients.push(c);
    }
    drop(clients);
    let prom = Prometheus::start(agent.addr);
    let promql = format!("tracer_tcp_time_wait_sockets{{job=\"tracer\",port=\"{port}\"}}");
    let ok = wait_until(Duration::from_secs(30), || prom.query(&promql) == Some(12.0));
    assert!(ok, "PromQL {promql} = {:?}", prom.query(&promql));
    let up = prom.query("up{job=\"tracer\"}");
    assert_eq!(up, Some(1.0));
}

#[test]
fn promtool_accepts_the_exposition() {
    let agent = Agent::start(&[]);
    let text = agent.get("/metrics");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
