//! The scenario's pieces for tests/port.rs: the python3 server, the
//! crash, a real bind() attempt, and the tracer run as `tracer port`.
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use socket2::{Domain, Socket, Type};

use crate::common::{self, wait_until};

/// The dual-stack wildcard, `tracer port`'s default address.
pub const ANY: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
/// The IPv4 wildcard.
pub const ANY4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The server: listens on 0.0.0.0:PORT (SO_REUSEADDR if asked), holds
/// every connection it accepts (saying `accepted`), and reports a failed bind by errno. With
/// a third argument N it closes its listener after N connections, as a
/// worker that outlives its server does, and says `closed`.
const SERVER: &str = r#"
import socket, sys
port, reuse = int(sys.argv[1]), sys.argv[2] == "1"
close_after = int(sys.argv[3]) if len(sys.argv) > 3 else 0
s = socket.socket()
if reuse:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", port))
    s.listen(16)
except OSError as e:
    print("errno", e.errno, flush=True)
    sys.exit(3)
print("listening", flush=True)
held = []
while True:
    held.append(s.accept()[0])
    print("accepted", flush=True)
    if len(held) == close_after:
        s.close()
        print("closed", flush=True)
        input()
"#;

/// A python3 server process; killed on drop.
pub struct Server {
    child: Child,
    /// Listening, or the errno of its failed bind()/listen().
    pub outcome: Result<(), i32>,
    out: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// Start it in this thread's namespace and wait for its first line.
    pub fn start(port: u16, reuse: bool) -> Server {
        Server::start_with(port, reuse, &[])
    }

    /// Start it with extra arguments (the connections after which it
    /// closes its listener); its later lines are read with [`Server::line`].
    pub fn start_with(port: u16, reuse: bool, extra: &[&str]) -> Server {
        let mut child = Command::new("python3")
            .args([
                "-c",
                SERVER,
                &port.to_string(),
                if reuse { "1" } else { "0" },
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("read the server's first line");
        let outcome = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["listening"] => Ok(()),
            ["errno", n] => Err(n.parse().expect("errno")),
            _ => panic!("python3 server said {line:?}"),
        };
        Server {
            child,
            outcome,
            out,
        }
    }

    /// The server's next line.
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("read from the server");
        l.trim().to_owned()
    }

    /// Wait until it has accepted `n` more connections.
    pub fn accepted(&mut self, n: usize) {
        for _ in 0..n {
            assert_eq!(self.line(), "accepted");
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, with its connections open.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seed's scenario: a server on PORT with three clients, killed with
/// the connections open; two clients then close theirs (the server's side
/// goes to TIME_WAIT), one does not (FIN_WAIT2). Returns the open client.
pub fn crash(port: u16, reuse: bool) -> TcpStream {
    let mut server = Server::start(port, reuse);
    assert_eq!(server.outcome, Ok(()), "the first server must listen");
    let mut clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // Accepted (a connection still in the accept queue would be reset
    // when the listener dies): the server's side of each is ESTABLISHED.
    server.accepted(3);
    server.kill();
    // Its FINs reach the clients: their side is CLOSE_WAIT, ours FIN_WAIT2.
    assert!(wait_until(Duration::from_secs(5), || {
        common::ss_count("fin-wait-2", &format!("sport = :{port}")) == 3
    }));
    let open = clients.pop().expect("a client");
    drop(clients);
    assert!(wait_until(Duration::from_secs(5), || {
        common::ss_count("time-wait", &format!("sport = :{port}")) == 2
    }));
    open
}

/// A real bind() + listen() on ADDR:PORT (IPv6 dual-stack), with or
/// without SO_REUSEADDR: Ok, or the errno. The socket is closed at once.
pub fn try_listen(addr: IpAddr, port: u16, reuse: bool) -> Result<(), i32> {
    let s = Socket::new(
        Domain::for_address(SocketAddr::new(addr, port)),
        Type::STREAM,
        None,
    )
    .expect("socket");
    s.set_reuse_address(reuse).expect("SO_REUSEADDR");
    if addr.is_ipv6() {
        s.set_only_v6(false).expect("IPV6_V6ONLY");
    }
    s.bind(&SocketAddr::new(addr, port).into())
        .and_then(|()| s.listen(1))
        .map_err(|e| e.raw_os_error().expect("errno"))
}

/// Run the tracer binary in this thread's namespace.
pub fn tracer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .output()
        .expect("run tracer")
}

/// `tracer port PORT --json --netns host ARGS`: exit status and JSON.
pub fn port_json(port: u16, args: &[&str]) -> (i32, Value) {
    let p = port.to_string();
    let mut all = vec!["port", &p, "--json", "--netns", "host"];
    all.extend_from_slice(args);
    let out = tracer(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "tracer port: {e}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit status"), v)
}

/// `tracer port PORT --netns host ARGS`, as text.
pub fn port_text(port: u16, args: &[&str]) -> String {
    let p = port.to_string();
    let mut all = vec!["port", &p, "--netns", "host"];
    all.extend_from_slice(args);
    let out = tracer(&all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    text
}

/// The one namespace of a report (the test's own).
pub fn only_namespace(r: &Value) -> &Value {
    let ns = r["namespaces"].as_array().expect("namespaces");
    assert_eq!(ns.len(), 1, "{r:#}");
    &ns[0]
}

/// The states of a namespace's non-listening sockets, in report order.
pub fn states(ns: &Value) -> Vec<String> {
    ns["sockets"]
        .as_array()
        .expect("sockets")
        .iter()
        .map(|s| s["state"].as_str().expect("state").to_owned())
        .collect()
}

/// A network namespace made with `ip netns add`, deleted on drop; this
/// thread does not enter it.
pub struct OtherNetns(pub String);

impl OtherNetns {
    /// `ip netns add tr-<tag>-<pid>`, loopback up.
    pub fn new(tag: &str) -> OtherNetns {
        let name = format!("tr-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        common::sh("ip", &["netns", "add", &name]);
        common::sh("ip", &["-n", &name, "link", "set", "lo", "up"]);
        OtherNetns(name)
    }

    /// Run `f` on a thread inside it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        common::in_netns_file(format!("/run/netns/{}", self.0), f)
    }
}

impl Drop for OtherNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The namespaces of a `--json` report whose `/run/netns` name starts
/// with `prefix`: a test's own, on a machine it shares.
pub fn named<'a>(r: &'a Value, prefix: &str) -> Vec<&'a Value> {
    r["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter(|n| n["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}
