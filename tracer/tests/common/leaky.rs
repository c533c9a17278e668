//! The python3 server that leaks what it accepts (every client that hangs
//! up leaves one of its sockets in CLOSE_WAIT), a listener that never
//! accepts, the wait for those sockets in sock_diag, and `tracer leaks`
//! run as a user runs it.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer::{
    diag::{DumpOptions, Dumper},
    tcp::TcpState,
};

/// Accepts forever and closes nothing, with RLIMIT_NOFILE at argv[1] when
/// given; prints its port, then `FD PEER_PORT` for each connection it
/// holds, and `EMFILE` when accept() fails for want of descriptors.
const SERVER: &str = r#"
import resource, socket, sys, time
if len(sys.argv) > 1:
    n = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1024)
print(s.getsockname()[1], flush=True)
held = []
while True:
    try:
        c, peer = s.accept()
    except OSError as e:
        if e.errno == 24:
            print("EMFILE", flush=True)
            time.sleep(3600)
        raise
    held.append(c)
    print(c.fileno(), peer[1], flush=True)
"#;

/// The leaking server (its comm is `python3`); killed on drop.
pub struct LeakyServer {
    child: Child,
    lines: mpsc::Receiver<String>,
    emfile: Arc<Mutex<Option<Instant>>>,
    /// The loopback port it listens on.
    pub port: u16,
    /// fd -> client port of every connection it holds from [`LeakyServer::leak`].
    pub fds: HashMap<u32, u16>,
}

impl LeakyServer {
    /// Start it; with `nofile`, under that RLIMIT_NOFILE.
    pub fn start(nofile: Option<u32>) -> LeakyServer {
        let limit = nofile.map(|n| n.to_string());
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .args(limit.as_deref())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the leaking server");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let emfile = Arc::new(Mutex::new(None));
        let (tx, lines) = mpsc::channel();
        let seen = emfile.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if line.trim() == "EMFILE" {
                    seen.lock().unwrap().get_or_insert(Instant::now());
                } else if tx.send(line.trim().to_owned()).is_err() {
                    return;
                }
            }
        });
        let mut server = LeakyServer {
            child,
            lines,
            emfile,
            port: 0,
            fds: HashMap::new(),
        };
        server.port = server.line().parse().expect("port");
        server
    }

    /// The server's next line.
    fn line(&mut self) -> String {
        self.lines.recv().expect("the python3 server exited early")
    }

    /// Connect `n` clients, wait until the server holds each, and close
    /// them: `n` more server sockets in CLOSE_WAIT, added to `fds`.
    pub fn leak(&mut self, n: usize) {
        let clients: Vec<TcpStream> = (0..n)
            .map(|_| TcpStream::connect(("127.0.0.1", self.port)).expect("connect"))
            .collect();
        for _ in 0..n {
            self.accepted();
        }
        drop(clients);
    }

    /// Connect one client and wait until the server holds it: closing the
    /// client leaves the server's socket in CLOSE_WAIT.
    #[allow(dead_code)]
    pub fn connect(&mut self) -> TcpStream {
        let client = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        self.accepted();
        client
    }

    /// Wait for the server's next accept, and note it in `fds`.
    fn accepted(&mut self) {
        let l = self.line();
        let (fd, peer) = l.split_once(' ').expect("fd peer");
        self.fds
            .insert(fd.parse().expect("fd"), peer.parse().expect("peer port"));
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When accept() first failed for want of descriptors, if it has.
    pub fn emfile(&self) -> Option<Instant> {
        *self.emfile.lock().unwrap()
    }
}

impl Drop for LeakyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// `tracer leaks --json ARGS`: (exit status, report); panics with stdout
/// and stderr when stdout is not JSON.
pub fn tracer_leaks_json(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["leaks", "--json"])
        .args(args)
        .output()
        .expect("run tracer leaks");
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().expect("exit code"), report)
}

/// Every flag of a report: leaks (deduplicated across owner groups), then risks.
pub fn all_flags(report: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let groups = report["leaks"].as_array().expect("leaks array");
    for f in groups
        .iter()
        .flat_map(|g| g["sockets"].as_array().expect("sockets").iter())
    {
        if !out.iter().any(|o| {
            o["kind"] == f["kind"] && o["cookie"] == f["cookie"] && o["local"] == f["local"]
        }) {
            out.push(f.clone());
        }
    }
    out.extend(
        report["risks"]
            .as_array()
            .expect("risks array")
            .iter()
            .cloned(),
    );
    out
}

/// A listener with a backlog of 1 that this process never accepts from,
/// and clients that connect to it without waiting: two fill its accept
/// queue, and the kernel drops the others' SYNs (they wait in SYN_SENT).
pub struct NotAccepting {
    /// The listener, for its fd and to accept at last.
    pub listener: socket2::Socket,
    /// The clients, kept open.
    pub clients: Vec<socket2::Socket>,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

impl NotAccepting {
    /// Listen on `at` (port 0: any free one) and connect `clients` to it.
    pub fn start(at: std::net::SocketAddr, clients: usize) -> NotAccepting {
        use socket2::{Domain, Protocol, Socket, Type};
        let tcp = || Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        let listener = tcp();
        listener.bind(&at.into()).expect("bind");
        listener.listen(1).expect("listen");
        let addr = listener
            .local_addr()
            .expect("local")
            .as_socket()
            .expect("inet");
        let clients = (0..clients)
            .map(|_| {
                let c = tcp();
                c.set_nonblocking(true).expect("nonblocking");
                let _ = c.connect(&addr.into());
                c
            })
            .collect();
        NotAccepting {
            listener,
            clients,
            addr,
        }
    }
}
