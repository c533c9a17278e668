//! A real Prometheus server (the Debian package) scrapes `tracer run` on
//! loopback; PromQL sees the expected TIME_WAIT count, and promtool finds
//! nothing wrong with the exposition. Privileged.
mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use common::{Agent, Netns, Prometheus, wait_until};

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
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
    let prom = Prometheus::start(agent.addr, "");
    let promql = format!("tracer_tcp_time_wait_sockets{{job=\"tracer\",port=\"{port}\"}}");
    let ok = wait_until(Duration::from_secs(30), || {
        prom.query(&promql) == Some(12.0)
    });
    assert!(ok, "PromQL {promql} = {:?}", prom.query(&promql));
    let up = prom.query("up{job=\"tracer\"}");
    assert_eq!(up, Some(1.0));
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
