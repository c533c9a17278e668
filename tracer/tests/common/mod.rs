//! Helpers for the privileged integration tests: running the real `tracer`
//! binary, network namespaces that clean up after themselves, and `ss` as an
//! independent oracle for socket cookies.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Fail loudly, with the fix, when not root: these tests load kernel programs.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid0 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false);
    assert!(
        uid0,
        "privileged test: run it as root (`cargo xtask test` does)"
    );
}

/// A running `tracer events` process.
pub struct Events {
    child: Child,
    stdout: Option<JoinHandle<Vec<Value>>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a stopped `tracer events` printed.
pub struct Output {
    pub events: Vec<Value>,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

impl Events {
    /// Start `tracer events ARGS` and wait until its programs are attached.
    pub fn start(args: &[&str]) -> Events {
        Events::start_as(&[], args)
    }

    /// Like [`Events::start`], run through `wrapper` (e.g. setpriv ...).
    pub fn start_as(wrapper: &[&str], args: &[&str]) -> Events {
        require_root();
        let bin = env!("CARGO_BIN_EXE_tracer");
        let (program, pre): (&str, &[&str]) = match wrapper.split_first() {
            Some((p, rest)) => (p, rest),
            None => (bin, &[]),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre);
        if !wrapper.is_empty() {
            cmd.arg(bin);
        }
        let mut child = cmd
            .arg("events")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer events");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("tracing TCP events") {
                    let _ = ready_tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let stdout = std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .map(|l| {
                    serde_json::from_str(&l)
                        .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
                })
                .collect()
        });
        let mut ev = Events {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = ev.child.kill();
            let out = ev.finish();
            panic!("tracer events did not start: {}", out.stderr);
        }
        ev
    }

    /// The process id of the running `tracer events`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then collect everything it printed.
    pub fn stop(self) -> Output {
        // Let events already in the ring buffer be read before stopping.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    fn finish(mut self) -> Output {
        let status = self.child.wait().expect("wait for tracer");
        Output {
            events: self
                .stdout
                .take()
                .map(|h| h.join().expect("stdout reader"))
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|h| h.join().expect("stderr reader"))
                .unwrap_or_default(),
            status,
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.try_wait();
    }
}

impl Output {
    /// The number of events the summary line says were lost in the kernel.
    pub fn lost(&self) -> u64 {
        let line = self
            .stderr
            .lines()
            .find(|l| l.contains("lost in the kernel"))
            .unwrap_or_else(|| panic!("no summary on stderr: {}", self.stderr));
        let before = line.split(" lost in the kernel").next().unwrap_or_default();
        before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse summary: {line}"))
    }

    /// `from->to` transitions per cookie, in arrival order. Accepts the
    /// kernel announced before naming the new socket are left out: see
    /// [`Output::unnamed_accepts`].
    pub fn paths(&self) -> BTreeMap<u64, Vec<String>> {
        let mut m: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for e in self.events.iter().filter(|e| e["kind"] == "state") {
            let cookie = e["cookie"].as_u64().expect("cookie");
            if cookie == 0 {
                continue;
            }
            m.entry(cookie).or_default().push(format!(
                "{}->{}",
                e["old_state"].as_str().expect("old_state"),
                e["new_state"].as_str().expect("new_state")
            ));
        }
        m
    }

    /// How many `listen->syn_recv` events carried cookie 0. Kernels up to
    /// 6.12 (Debian's 6.1 and 6.12) announce a new server socket before it
    /// has its own cookie or peer (docs/events.md); there the socket's path
    /// starts at `syn_recv->established`. On 6.18 this is 0.
    pub fn unnamed_accepts(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                e["kind"] == "state"
                    && e["cookie"] == 0
                    && e["old_state"] == "listen"
                    && e["new_state"] == "syn_recv"
            })
            .count()
    }

    /// A server socket's expected path: the whole of `full`, or without its
    /// first step where the kernel announced the accept unnamed.
    pub fn server_path<'a>(&self, full: &'a [&'a str]) -> &'a [&'a str] {
        if self.unnamed_accepts() > 0 {
            &full[1..]
        } else {
            full
        }
    }

    /// Events of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }
}

/// Cookies `ss` reports right now for sockets on `port`, keyed by
/// (local, remote) address. `ss` is iproute2's sock_diag client; the tests
/// use it as an oracle independent of tracer's own code.
pub fn ss_cookies(port: u16) -> BTreeMap<(SocketAddr, SocketAddr), u64> {
    let out = Command::new("ss")
        .args(["-tanHe", &format!("( sport = :{port} or dport = :{port} )")])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let parse = |s: &str| -> Option<SocketAddr> {
            let s = s.replace(['[', ']'], "");
            let (ip, port) = s.rsplit_once(':')?;
            let ip = ip.split('%').next()?;
            let ip: std::net::IpAddr = if ip == "*" {
                "0.0.0.0".parse().ok()?
            } else {
                ip.parse().ok()?
            };
            Some(SocketAddr::new(
                ip,
                if port == "*" { 0 } else { port.parse().ok()? },
            ))
        };
        let cookie = f
            .iter()
            .find_map(|t| t.strip_prefix("sk:"))
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        if let (Some(l), Some(r), Some(c)) = (parse(f[3]), parse(f[4]), cookie) {
            m.insert((l, r), c);
        }
    }
    m
}

/// Local addresses of TIME_WAIT sockets on `port`, per `ss`.
pub fn ss_time_wait(port: u16) -> Vec<SocketAddr> {
    let out = Command::new("ss")
        .args([
            "-tanH",
            "state",
            "time-wait",
            &format!("( sport = :{port} or dport = :{port} )"),
        ])
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2)?.parse().ok()
        })
        .collect()
}

/// Poll `f` until it returns true or the timeout passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Run a command and panic with its output when it fails.
pub fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth pair, addressed from
/// 198.18.0.0/15 (the range set aside for network tests). Deleted on drop,
/// even when the test fails.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub addr_a: String,
    pub addr_b: String,
}

impl NetnsPair {
    /// Make `tracer-<tag>-<pid>-a/b`, with `198.18.<n>.1/2` on the veth ends.
    pub fn new(tag: &str, subnet: u8) -> NetnsPair {
        let pid = std::process::id();
        let a = format!("tr-{tag}-{pid}-a");
        let b = format!("tr-{tag}-{pid}-b");
        let pair = NetnsPair {
            a: a.clone(),
            b: b.clone(),
            addr_a: format!("198.18.{subnet}.1"),
            addr_b: format!("198.18.{subnet}.2"),
        };
        let va = format!("v{}a", pid % 100000);
        let vb = format!("v{}b", pid % 100000);
        sh("ip", &["netns", "add", &a]);
        sh("ip", &["netns", "add", &b]);
        sh(
            "ip",
            &[
                "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
            ],
        );
        for (ns, dev, addr) in [(&a, &va, &pair.addr_a), (&b, &vb, &pair.addr_b)] {
            sh(
                "ip",
                &["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev],
            );
            sh("ip", &["-n", ns, "link", "set", dev, "up"]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Run `f` on a thread that has entered namespace `ns`; sockets made
    /// there stay in that namespace.
    pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns_file(format!("/run/netns/{ns}"), f)
    }

    /// Drop every packet arriving in namespace `ns` (the peer vanishes).
    pub fn blackhole(ns: &str) {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "nft",
                "add table inet tracer_test; add chain inet tracer_test in { type filter hook input priority 0; policy drop; }",
            ],
        );
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A running `tracer run` agent on a free loopback port.
pub struct Agent {
    child: Child,
    /// `127.0.0.1:<port>` it serves on.
    pub addr: SocketAddr,
}

impl Agent {
    /// Start `tracer run --listen 127.0.0.1:<free> ARGS` and wait for
    /// /healthz. Unless ARGS say otherwise (`--netns all`), the agent follows
    /// only the namespace it starts in (`--netns host`): most tests run it in
    /// a namespace of their own, away from whatever else the host runs.
    pub fn start(args: &[&str]) -> Agent {
        require_root();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .arg("run")
            .args(["--listen", &addr.to_string()])
            .args(if args.contains(&"--netns") {
                &[][..]
            } else {
                &["--netns", "host"][..]
            })
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tracer run");
        let mut agent = Agent { child, addr };
        let up = wait_until(Duration::from_secs(30), || {
            matches!(agent.child.try_wait(), Ok(None))
                && http_get(addr, "/healthz").is_some_and(|(c, _)| c == 200)
        });
        assert!(up, "tracer run did not become healthy on {addr}");
        agent
    }

    /// GET a path; panics unless it answers 200.
    pub fn get(&self, path: &str) -> String {
        let (code, body) =
            http_get(self.addr, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// GET a JSON path.
    pub fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path)).expect("JSON body")
    }

    /// The value of one exposition line, e.g. `tracer_tcp_sockets{state="listen"}`.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.get("/metrics"), series).unwrap_or_else(|| panic!("no series {series}"))
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a frozen agent reads nothing,
    /// so the kernel's ring buffer fills and events are lost.
    #[allow(dead_code)]
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for tracer run")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` (name plus exact label set) in an exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The sample lines of an exposition whose names start with one of
/// `prefixes`: context for a failed assertion.
pub fn metric_lines(text: &str, prefixes: &[&str]) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#') && prefixes.iter().any(|p| l.starts_with(p)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A bare HTTP/1.1 GET: (status, body), or None when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Count of sockets `ss` shows in `state` (ss's name, e.g. `time-wait`) on `port`.
pub fn ss_count(state: &str, filter: &str) -> usize {
    let mut cmd = Command::new("ss");
    cmd.args(["-tanH", "state", state]);
    if !filter.is_empty() {
        cmd.arg(filter);
    }
    let out = cmd.output().expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// A private network namespace that the calling thread (one test) enters:
/// sockets, child processes (the agent, ss, prometheus) and loopback are
/// then its own, untouched by whatever else runs on the host, including a
/// host-wide TIME_WAIT table that is full (`tcp_max_tw_buckets` is per
/// namespace). Leaves and deletes the namespace on drop.
pub struct Netns {
    name: String,
    original: std::fs::File,
}

impl Netns {
    /// Create `tr-<tag>-<pid>`, bring up its loopback, and enter it.
    pub fn enter(tag: &str) -> Netns {
        require_root();
        use std::os::fd::AsRawFd as _;
        let name = format!("tr-{tag}-{}", std::process::id());
        let original = std::fs::File::open("/proc/thread-self/ns/net").expect("current netns");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh("ip", &["netns", "add", &name]);
        let ns = Netns { name, original };
        sh("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        let file = std::fs::File::open(format!("/run/netns/{}", ns.name)).expect("open netns");
        // SAFETY: setns on this thread with a valid namespace fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: back to the namespace this thread started in.
        unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A real Prometheus server (Debian package) scraping one target every
/// second, with optional rules; killed and its data removed on drop.
pub struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
    addr: std::net::SocketAddr,
}

impl Prometheus {
    /// Start it on a free loopback port; `rules` is a rule file's YAML (or empty).
    pub fn start(target: std::net::SocketAddr, rules: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("tracer-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let cfg = dir.join("prometheus.yml");
        let rule_file = dir.join("rules.yml");
        std::fs::write(
            &rule_file,
            if rules.is_empty() {
                "groups: []\n"
            } else {
                rules
            },
        )
        .unwrap();
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n",
                rule_file.display()
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (Debian package `prometheus`; cargo xtask test installs it)");
        Prometheus { child, dir, addr }
    }

    /// The first sample of an instant query.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `f` on a thread that has entered the network namespace of the file
/// at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`); sockets made there
/// stay in that namespace.
pub fn in_netns_file<T: Send + 'static>(path: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a valid netns fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// `ss -tanH` run by `cmd` (inside some namespace): live sockets per
/// state, named as the API names them.
pub fn ss_states(cmd: &mut Command) -> BTreeMap<String, usize> {
    let out = cmd.output().expect("ss");
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(state) = line.split_whitespace().next() else {
            continue;
        };
        let name = match state {
            "ESTAB" => "established".to_owned(),
            "FIN-WAIT-1" => "fin_wait1".to_owned(),
            "FIN-WAIT-2" => "fin_wait2".to_owned(),
            s => s.to_ascii_lowercase().replace('-', "_"),
        };
        *m.entry(name).or_default() += 1;
    }
    m
}

impl Agent {
    /// The process id of the running agent (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// An HTTP answer with its head, for tests that read headers or bytes.
pub struct Reply {
    pub code: u16,
    /// Status line and headers.
    pub head: String,
    /// The body as sent (not decompressed).
    pub body: Vec<u8>,
}

impl Reply {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// GET `path` with extra request headers, waiting at most `timeout`
/// for the whole answer; None when nothing (complete) answers in time.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Option<Reply> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reply {
        code,
        head,
        body: raw[split + 4..].to_vec(),
    })
}

impl Agent {
    /// Like [`Agent::start`], run through `wrapper` (e.g. `prlimit
    /// --nofile=1024:1024`), with stderr collected into the returned log.
    pub fn start_logged(
        wrapper: &[&str],
        args: &[&str],
    ) -> (Agent, std::sync::Arc<std::sync::Mutex<String>>) {
        require_root();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let bin = env!("CARGO_BIN_EXE_tracer");
        let mut cmd = match wrapper.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("run")
            .args(["--listen", &addr.to_string()])
            .args(if args.contains(&"--netns") {
                &[][..]
            } else {
                &["--netns", "host"][..]
            })
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer run");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut agent = Agent { child, addr };
        let up = wait_until(Duration::from_secs(60), || {
            matches!(agent.child.try_wait(), Ok(None))
                && http_get(addr, "/healthz").is_some_and(|(c, _)| c == 200)
        });
        assert!(
            up,
            "tracer run did not become healthy on {addr}: {}",
            log.lock().unwrap()
        );
        (agent, log)
    }
}

/// The sum of every sample of metric `name` (over all its label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
