//! The traffic the smoke test makes and what the agent must make of it:
//! loopback connections to a port of our own, which the agent must track
//! from birth while `tracer_events_total` grows; and a python3 server that
//! leaks CLOSE_WAIT sockets, which the agent must name by pid and fd.
//! Each check filters by its own port and never assumes the host is quiet.
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::web::Client;

/// Connections the leaking server holds, and the event check makes.
const CONNS: usize = 3;

/// A python3 server that accepts `CONNS` connections and never closes them:
/// once the clients close theirs, its sockets sit in CLOSE_WAIT. It prints
/// its port, then the fd and peer port of each connection.
const LEAKING_SERVER: &str = r#"
import socket, sys, time
n = int(sys.argv[1])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
held = []
for _ in range(n):
    c, peer = s.accept()
    held.append(c)
    print(c.fileno(), peer[1], flush=True)
time.sleep(600)
"#;

/// watches: it tracks them from birth, and `tracer_events_total` grows.
pub fn events_flow(agent: &Client) -> anyhow::Result<String> {
    let before = events_total(&agent.get("/metrics")?);
    let listener =
        TcpListener::bind("127.0.0.1:0").context("binding a port for the event check")?;
    let port = listener.local_addr()?.port();
    let clients: Vec<TcpStream> = (0..CONNS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)))
        .collect::<Result<_, _>>()
        .context("connecting to our own port")?;
    let servers: Vec<TcpStream> = (0..CONNS)
        .map(|_| listener.accept().map(|(s, _)| s))
        .collect::<Result<_, _>>()?;
    let path = format!("/api/v1/sockets?state=established&port={port}");
    let mut born = 0;
    wait(Duration::from_secs(10), || {
        born = sockets(&agent.get(&path)?)?
            .iter()
            .filter(|s| !s["created_ns"].is_null())
            .count();
        Ok(born >= 2 * CONNS)
    })
    .with_context(|| {
        format!(
            "{path}: {born} sockets born while the agent ran, expected {}",
            2 * CONNS
        )
    })?;
    drop((clients, servers, listener));
    let mut after = before;
    wait(Duration::from_secs(10), || {
        after = events_total(&agent.get("/metrics")?);
        Ok(after >= before + (4 * CONNS) as f64)
    })
    .with_context(|| format!("tracer_events_total went from {before} to {after}"))?;
    Ok(format!(
        "{} sockets on port {port} tracked from birth; tracer_events_total {before} -> {after}",
        2 * CONNS
    ))
}

/// The python3 server holds `CONNS` sockets in CLOSE_WAIT; the agent
/// (threshold 1 s) must name its pid and exactly its fds.
pub fn leak_named(agent: &Client) -> anyhow::Result<String> {
    let mut server = Server::start()?;
    let port = server.port;
    let clients: Vec<TcpStream> = (0..CONNS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)))
        .collect::<Result<_, _>>()
        .context("connecting to the leaking server")?;
    let mut want = BTreeSet::new();
    for _ in 0..CONNS {
        let l = server.line()?;
        let fd = l
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok());
        want.insert(fd.with_context(|| format!("the server printed {l:?}"))?);
    }
    drop(clients);
    let pid = u64::from(server.child.id());
    let mut named = BTreeSet::new();
    let mut flagged = 0;
    wait(Duration::from_secs(15), || {
        let report: Value = serde_json::from_str(&agent.get("/api/v1/leaks")?)?;
        let flags = flags_on_port(&report, port);
        flagged = flags.len();
        named = flags
            .iter()
            .flat_map(|f| f["owners"].as_array().cloned().unwrap_or_default())
            .filter(|o| o["pid"] == pid)
            .filter_map(|o| o["fd"].as_u64())
            .collect();
        Ok(named == want)
    })
    .with_context(|| {
        format!("/api/v1/leaks: {flagged} close_wait flags on port {port}, naming pid {pid} fds {named:?}, expected fds {want:?}")
    })?;
    let fds: Vec<String> = want.iter().map(u64::to_string).collect();
    Ok(format!(
        "port {port}: pid {pid} (python3), fds {}",
        fds.join(",")
    ))
}

/// Every close_wait flag in a leak report whose local port is `port`.
fn flags_on_port(report: &Value, port: u16) -> Vec<Value> {
    let suffix = format!(":{port}");
    report["leaks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["sockets"].as_array().cloned().unwrap_or_default())
        .filter(|f| {
            f["kind"] == "close_wait" && f["local"].as_str().is_some_and(|l| l.ends_with(&suffix))
        })
        .collect()
}

/// The sum of `tracer_events_total` over its kinds.
fn events_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("tracer_events_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sockets of a `/api/v1/sockets` page.
fn sockets(body: &str) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_str(body).context("/api/v1/sockets is not JSON")?;
    match v {
        Value::Array(a) => Ok(a),
        Value::Object(mut o) => match o.remove("sockets") {
            Some(Value::Array(a)) => Ok(a),
            _ => bail!("/api/v1/sockets: no sockets array"),
        },
        _ => bail!("/api/v1/sockets: neither an array nor an object"),
    }
}

/// The leaking server, killed on drop.
struct Server {
    child: Child,
    out: BufReader<ChildStdout>,
    port: u16,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let mut child = Command::new("python3")
            .args(["-c", LEAKING_SERVER, &CONNS.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("python3 is needed for the leaking server")?;
        let out = BufReader::new(child.stdout.take().context("python3's stdout")?);
        let mut server = Server {
            child,
            out,
            port: 0,
        };
        let l = server.line()?;
        server.port = l
            .parse()
            .with_context(|| format!("the server printed {l:?}"))?;
        Ok(server)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut l = String::new();
        self.out
            .read_line(&mut l)
            .context("reading the python3 server")?;
        if l.is_empty() {
            bail!("the python3 server exited early");
        }
        Ok(l.trim().to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it says true, or fail after `limit`.
fn wait(limit: Duration, mut f: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let r = f();
        if matches!(r, Ok(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return r.and_then(|_| bail!("not within {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_events_and_picks_flags_by_port() {
        let m = "# TYPE tracer_events_total counter\ntracer_events_total{kind=\"state\"} 4\ntracer_events_total{kind=\"retransmit\"} 1\n";
        assert_eq!(events_total(m), 5.0);
        let r: Value = serde_json::from_str(
            r#"{"leaks":[{"pid":7,"sockets":[{"kind":"close_wait","local":"127.0.0.1:4000","owners":[{"pid":7,"fd":3}]},{"kind":"close_wait","local":"127.0.0.1:40001"}]}]}"#,
        )
        .unwrap();
        assert_eq!(flags_on_port(&r, 4000).len(), 1);
    }
}
