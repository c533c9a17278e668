//! What the capability tests share: the agent run with a given grant of
//! capabilities, a CLOSE_WAIT leak owned by this (root) process, and the
//! assertions on whether the agent named its owner.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::{free_addr, http_get, metric_value, wait_until};
use serde_json::Value;

/// What the manifest adds and the image's setcap grants, in setpriv's names.
pub(crate) const CAPS: [&str; 5] = [
    "bpf",
    "perfmon",
    "sys_ptrace",
    "dac_read_search",
    "sys_admin",
];
/// The manifest's runAsUser and runAsGroup.
pub(crate) const NOBODY: &str = "65534";
/// Leaks flagged after 1 s, owners looked for 4 times a second.
pub(crate) const AGENT_ARGS: [&str; 4] = [
    "--close-wait-threshold",
    "1s",
    "--reconcile-interval",
    "250ms",
];
/// The agent's own namespace only: each test runs in its own, and the
/// leaks of the others (held by this same process) would count too.
pub(crate) const OWN_NETNS: [&str; 2] = ["--netns", "host"];

pub(crate) fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Capability numbers (include/uapi/linux/capability.h) of the names used here.
pub(crate) fn cap_number(name: &str) -> u32 {
    match name {
        "dac_read_search" => 2,
        "sys_ptrace" => 19,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("capability {other} is not in this test's table"),
    }
}

pub(crate) fn mask(caps: &[&str]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1 << cap_number(c)))
}

pub(crate) fn without(cap: &str) -> Vec<&'static str> {
    CAPS.into_iter().filter(|c| *c != cap).collect()
}

pub(crate) fn sorted(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().collect();
    v.sort();
    v
}

/// How the agent, uid/gid 65534, comes to hold its capabilities.
pub(crate) enum Grant<'a> {
    /// Inheritable + ambient (`setpriv --ambient-caps`).
    Ambient(Vec<&'a str>),
    /// File capabilities on `bin`, a bounding set, and no_new_privs: a pod.
    File {
        bin: &'a Path,
        bounding: Vec<&'a str>,
    },
}

/// A `tracer run` started through setpriv; killed on drop.
pub(crate) struct CapAgent {
    child: Child,
    addr: SocketAddr,
    stderr: Option<JoinHandle<String>>,
}

impl CapAgent {
    /// Spawn `tracer run` on a free loopback port of this thread's
    /// namespace, following that namespace only.
    pub(crate) fn spawn(grant: &Grant) -> CapAgent {
        CapAgent::spawn_with(grant, &OWN_NETNS)
    }

    /// Spawn `tracer run` with `extra` arguments.
    pub(crate) fn spawn_with(grant: &Grant, extra: &[&str]) -> CapAgent {
        let addr = free_addr();
        let plus = |caps: &[&str]| caps.iter().map(|c| format!(",+{c}")).collect::<String>();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ]);
        match grant {
            Grant::Ambient(caps) => {
                cmd.arg(format!("--inh-caps=-all{}", plus(caps)));
                cmd.arg(format!("--ambient-caps=-all{}", plus(caps)));
                cmd.arg(env!("CARGO_BIN_EXE_tracer"));
            }
            Grant::File { bin, bounding } => {
                cmd.args(["--inh-caps=-all", "--no-new-privs"]);
                cmd.arg(format!("--bounding-set=-all{}", plus(bounding)));
                cmd.arg(bin);
            }
        }
        let mut child = cmd
            .args(["run", "--listen", &addr.to_string()])
            .args(AGENT_ARGS)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn setpriv (util-linux)");
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let _ = err.read_to_string(&mut all);
            all
        });
        CapAgent {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Spawn and wait until /healthz answers 200.
    pub(crate) fn start(grant: &Grant) -> CapAgent {
        CapAgent::start_with(grant, &OWN_NETNS)
    }

    /// [`CapAgent::start`] with `extra` arguments instead of `--netns host`.
    pub(crate) fn start_with(grant: &Grant, extra: &[&str]) -> CapAgent {
        let mut agent = CapAgent::spawn_with(grant, extra);
        let addr = agent.addr;
        let mut exited = false;
        let up = wait_until(crate::common::STARTUP, || {
            exited = !matches!(agent.child.try_wait(), Ok(None));
            exited || http_get(addr, "/healthz").is_some_and(|(c, _)| c == 200)
        });
        if exited || !up {
            let (status, stderr) = agent.exit(Duration::ZERO);
            panic!("tracer run did not become healthy on {addr} ({status:?}): {stderr}");
        }
        agent
    }

    /// Wait up to `timeout` for the process to exit (then kill it): its
    /// status, `None` if it had to be killed, and its stderr.
    pub(crate) fn exit(&mut self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        (status, stderr.unwrap_or_default())
    }

    pub(crate) fn get(&self, path: &str) -> String {
        match http_get(self.addr, path) {
            Some((200, body)) => body,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    /// A line of the agent's /proc/<pid>/status (setpriv execs it in place).
    pub(crate) fn status_line(&self, key: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("agent's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {status}"))
            .trim()
            .to_owned()
    }

    /// The agent runs as uid and gid 65534 holding exactly `caps`, no more.
    pub(crate) fn assert_runs_as_nobody_with(&self, caps: &[&str]) {
        for key in ["Uid:", "Gid:"] {
            let ids = self.status_line(key);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            assert_eq!(ids, [NOBODY; 4], "{key} real, effective, saved, fs");
        }
        let eff = u64::from_str_radix(&self.status_line("CapEff:"), 16).expect("CapEff");
        assert_eq!(eff, mask(caps), "CapEff {eff:#x} is not exactly {caps:?}");
    }
}

impl Drop for CapAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server-side socket in CLOSE_WAIT held by this process (root): the
/// client closed, the server never will.
pub(crate) struct Leak {
    _server: TcpStream,
    pub(crate) port: u16,
    pub(crate) fd: u32,
    pub(crate) inode: u64,
}

pub(crate) fn close_wait_leak() -> Leak {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    drop(client);
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(server.read(&mut [0u8; 1]).expect("read the FIN"), 0);
    let fd = u32::try_from(server.as_raw_fd()).expect("fd");
    // The owner is there to be found: root reads the link the agent must read.
    let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", std::process::id()))
        .expect("read my own fd link");
    let inode = link
        .to_str()
        .and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .unwrap_or_else(|| panic!("fd {fd} is {link:?}"));
    Leak {
        _server: server,
        port,
        fd,
        inode,
    }
}

/// The agent's close_wait flag on `leak`, and the pid of its process
/// group. Matched by inode as well as port: other tests' leaks in other
/// namespaces may have the same port number.
pub(crate) fn flag_on(agent: &CapAgent, leak: &Leak) -> Option<(Value, Value)> {
    let report: Value = serde_json::from_str(&agent.get("/api/v1/leaks")).expect("JSON");
    let suffix = format!(":{}", leak.port);
    report["leaks"].as_array()?.iter().find_map(|group| {
        let flag = group["sockets"].as_array()?.iter().find(|f| {
            f["kind"] == "close_wait"
                && f["inode"] == leak.inode
                && f["local"].as_str().is_some_and(|l| l.ends_with(&suffix))
        })?;
        Some((flag.clone(), group["pid"].clone()))
    })
}

/// The one line of `stderr` that mentions `needle`; fails unless there is
/// exactly one (a sentence said once, not per dump).
pub(crate) fn said_once<'a>(stderr: &'a str, needle: &str) -> &'a str {
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(said.len(), 1, "one sentence with {needle:?}: {stderr}");
    said[0]
}

pub(crate) fn metric(agent: &CapAgent, series: &str) -> Option<f64> {
    metric_value(&agent.get("/metrics"), series)
}

/// This process's name as /proc shows it to the agent.
pub(crate) fn my_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .expect("comm")
        .trim_end()
        .to_owned()
}

/// The agent flags the leak and names this process and the fd.
pub(crate) fn assert_owner_named(agent: &CapAgent, leak: &Leak) {
    let pid = std::process::id();
    let mut last = None;
    let named = wait_until(Duration::from_secs(10), || {
        last = flag_on(agent, leak);
        last.as_ref().is_some_and(|(f, _)| {
            f["owners"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["pid"] == pid && o["fd"] == leak.fd))
        })
    });
    assert!(named, "no flag naming pid {pid} fd {}: {last:?}", leak.fd);
    let (flag, group_pid) = last.expect("flag");
    assert_eq!(flag["inode"], leak.inode, "{flag}");
    assert_eq!(group_pid, pid, "grouped under this process: {flag}");
    assert_eq!(flag["owners"][0]["comm"], my_comm());
    let series = format!(
        "tracer_close_wait_leaks_by_process{{comm=\"{}\"}}",
        my_comm()
    );
    let counted = wait_until(Duration::from_secs(5), || {
        metric(agent, &series) == Some(1.0)
    });
    assert!(counted, "{series}: {:?}", metric(agent, &series));
}

/// The agent flags the leak, with its inode, but names no process; it keeps
/// trying on every reconcile (ownerless flags are retried), and keeps failing.
pub(crate) fn assert_owner_unnamed(agent: &CapAgent, leak: &Leak) {
    let flagged = wait_until(Duration::from_secs(10), || flag_on(agent, leak).is_some());
    assert!(flagged, "the leak on port {} was not flagged", leak.port);
    std::thread::sleep(Duration::from_millis(1500)); // 6 more reconciles
    let (flag, group_pid) = flag_on(agent, leak).expect("still flagged");
    assert_eq!(flag["inode"], leak.inode, "the inode to look for is known");
    assert_eq!(flag["owners"], Value::Array(vec![]), "no owner: {flag}");
    assert!(group_pid.is_null(), "grouped under no process: {group_pid}");
    assert_eq!(metric(agent, "tracer_close_wait_leaks"), Some(1.0));
    assert_eq!(
        metric(agent, "tracer_close_wait_leaks_by_process{comm=\"other\"}"),
        Some(1.0)
    );
}
