//! The workloads of the forecast tests: a python3 server that never closes
//! what it accepts, under a small RLIMIT_NOFILE; a private namespace with
//! a tiny ephemeral port range; threads that run inside it.
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

/// Accepts forever, closes nothing, with RLIMIT_NOFILE at argv[1]; prints
/// its port, then `EMFILE` when accept() fails for want of descriptors.
const SERVER: &str = r#"
import resource, socket, sys, time
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1024)
print(s.getsockname()[1], flush=True)
held = []
while True:
    try:
        c, _ = s.accept()
        held.append(c)
    except OSError as e:
        if e.errno == 24:
            print("EMFILE", flush=True)
            time.sleep(3600)
        raise
"#;

/// The leaking server: killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// When accept() first failed with EMFILE.
    pub emfile: Arc<Mutex<Option<Instant>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the server with RLIMIT_NOFILE `limit`.
pub fn leaking_server(limit: u32) -> Server {
    let mut child = Command::new("python3")
        .args(["-c", SERVER, &limit.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the leaking server");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut l = String::new();
    out.read_line(&mut l).expect("port line");
    let port: u16 = l.trim().parse().expect("port");
    let emfile = Arc::new(Mutex::new(None));
    let seen = emfile.clone();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if line.trim() == "EMFILE" {
                seen.lock().unwrap().get_or_insert(Instant::now());
            }
        }
    });
    Server {
        child,
        port,
        emfile,
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    /// `tr-<tag>-<pid>` with loopback up and `sysctls` (`key=value`) set inside.
    pub fn new(tag: &str, sysctls: &[&str]) -> NamedNetns {
        let name = format!("tr-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        crate::common::sh("ip", &["netns", "add", &name]);
        let ns = NamedNetns { name };
        crate::common::sh("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        for s in sysctls {
            crate::common::sh("ip", &["netns", "exec", &ns.name, "sysctl", "-qw", s]);
        }
        ns
    }

    /// The namespace's inode, as the agent labels it.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .expect("netns file")
            .ino()
    }

    /// Run `f` on a new thread inside the namespace, without waiting for it.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd as _;
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on this thread only, with a valid netns fd.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
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

/// The process forecast for `pid` in a leaks report.
pub fn fd_forecast(report: &Value, pid: u32) -> Option<Value> {
    report["forecasts"]["fd"]
        .as_array()?
        .iter()
        .find(|f| f["pid"] == pid)
        .cloned()
}

/// The endpoint forecast for `remote` in a leaks report.
pub fn port_forecast(report: &Value, remote: &str) -> Option<Value> {
    report["forecasts"]["ports"]
        .as_array()?
        .iter()
        .find(|f| f["remote"] == remote)
        .cloned()
}
