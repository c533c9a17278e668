//! The leaking python3 server of the leak tests, and how they ask
//! `tracer leaks` and read its report.
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use tracer::diag::{DumpOptions, Dumper};
use tracer::tcp::TcpState;

use serde_json::Value;

pub const CONNS: usize = 3;

/// The tests run one at a time: each one's CLOSE_WAIT sockets would be
/// "foreign" to the other's exit-status check.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
pub const NO_AGENT: &str = "http://127.0.0.1:1";

const SERVER: &str = r#"
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
time.sleep(3600)
"#;

/// The leaking server: killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// fd -> client port, as the server printed them.
    pub fds: HashMap<u32, u16>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut l = String::new();
    out.read_line(&mut l).expect("read from the python3 server");
    assert!(!l.is_empty(), "the python3 server exited early");
    l.trim().to_owned()
}

/// Start the server, connect `CONNS` clients, then close them.
pub fn leaking_server() -> Server {
    let mut child = Command::new("python3")
        .args(["-c", SERVER, &CONNS.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the leaking server");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let port: u16 = line(&mut out).parse().expect("port");
    let mut server = Server {
        child,
        port,
        fds: HashMap::new(),
    };
    let clients: Vec<TcpStream> = (0..CONNS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    for _ in 0..CONNS {
        let l = line(&mut out);
        let (fd, peer) = l.split_once(' ').expect("fd peer");
        server
            .fds
            .insert(fd.parse().expect("fd"), peer.parse().expect("peer port"));
    }
    drop(clients);
    server
}

/// Server-side sockets on `port` in CLOSE_WAIT, by polling sock_diag.
pub fn wait_close_wait(port: u16, want: usize) {
    let mut dumper = Dumper::new(DumpOptions::default()).expect("sock_diag");
    let mut dump = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        dumper.dump_into(&mut dump).expect("dump");
        let n = dump
            .iter()
            .filter(|d| d.sport == port && d.state == TcpState::CloseWait)
            .count();
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sockets in CLOSE_WAIT on port {port}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tracer leaks ARGS`: (exit status, stdout).
pub fn tracer_leaks(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("leaks")
        .args(args)
        .output()
        .expect("run tracer leaks");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Every flagged socket in a JSON report whose local port is `port`.
pub fn flags_on_port(report: &Value, port: u16) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for group in report["leaks"].as_array().expect("leaks array") {
        for f in group["sockets"].as_array().expect("sockets") {
            let local = f["local"].as_str().unwrap_or("");
            if local.ends_with(&format!(":{port}"))
                && seen.insert((f["kind"].to_string(), f["cookie"].to_string()))
            {
                out.push(f.clone());
            }
        }
    }
    out
}

/// True when `ss` sees CLOSE_WAIT sockets that are not on `port`.
pub fn foreign_close_wait(port: u16) -> bool {
    let out = Command::new("ss")
        .args(["-Htn", "state", "close-wait"])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().any(|l| {
        l.split_whitespace()
            .nth(2)
            .is_some_and(|local| !local.ends_with(&format!(":{port}")))
    })
}
