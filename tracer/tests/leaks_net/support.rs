//! What the tests share: entering namespaces, a third namespace on its own
//! veth, stop flags, asking `tracer leaks`, and reading its report.
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::common::all_flags;
use crate::common::{Agent, NetnsPair, http_get, sh};
use serde_json::Value;

/// The calling thread inside an existing named namespace, until dropped.
pub struct Inside {
    original: File,
}

impl Inside {
    pub fn enter(ns: &str) -> Inside {
        let original = File::open("/proc/thread-self/ns/net").expect("current netns");
        let target = File::open(format!("/run/netns/{ns}")).expect("open netns");
        // SAFETY: setns on this thread with a valid namespace fd.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
        Inside { original }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        // SAFETY: back to the namespace this thread started in.
        unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// A third namespace `far`, joined to an existing one by its own veth pair:
/// `198.18.<subnet>.1` on the near end, `.2` on the far end. Deleted on drop
/// (which removes the veth pair too).
pub struct Spur {
    pub far: String,
    pub addr_far: IpAddr,
}

impl Spur {
    pub fn new(near: &str, tag: &str, subnet: u8) -> Spur {
        let pid = std::process::id();
        let far = format!("tr-{tag}-{pid}-c");
        sh("ip", &["netns", "add", &far]);
        let spur = Spur {
            far,
            addr_far: format!("198.18.{subnet}.2").parse().expect("addr"),
        };
        let (vn, vf) = (format!("w{}n", pid % 100000), format!("w{}f", pid % 100000));
        sh(
            "ip",
            &[
                "link", "add", &vn, "netns", near, "type", "veth", "peer", "name", &vf, "netns",
                &spur.far,
            ],
        );
        for (ns, dev, host) in [(near, &vn, 1), (spur.far.as_str(), &vf, 2)] {
            sh(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("198.18.{subnet}.{host}/24"),
                    "dev",
                    dev,
                ],
            );
            sh("ip", &["-n", ns, "link", "set", dev, "up"]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        spur
    }
}

impl Drop for Spur {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.far])
            .output();
    }
}

/// Set on drop, so worker threads end even when the test panics.
#[derive(Default)]
pub struct Stop(pub Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// `tracer run` in the calling thread's namespace only (the kit's
/// default: a test's peers, and other tests, live in other namespaces),
/// dumping every 250 ms, with the thresholds `args` set.
pub fn start_agent(args: &[&str]) -> Agent {
    let mut all = vec!["--reconcile-interval", "250ms"];
    all.extend_from_slice(args);
    Agent::start(&all)
}

/// `tracer leaks --json --agent URL`: (exit status, report).
pub fn tracer_leaks(url: &str) -> (i32, Value) {
    crate::common::tracer_leaks_json(&["--agent", url])
}

/// Ask `tracer leaks` every 250 ms until `want` holds or `timeout` passes; the last answer.
pub fn poll(
    url: &str,
    timeout: Duration,
    mut want: impl FnMut(&Value) -> bool,
) -> (i32, Value, bool) {
    let start = Instant::now();
    loop {
        let (code, report) = tracer_leaks(url);
        if want(&report) || start.elapsed() > timeout {
            let ok = want(&report);
            return (code, report, ok);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The flag of `kind` on the socket (local, remote), if any.
pub fn flag_of(
    flags: &[Value],
    kind: &str,
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<Value> {
    flags
        .iter()
        .find(|f| {
            f["kind"] == kind
                && f["local"] == local.to_string()
                && f["remote"] == remote.to_string()
        })
        .cloned()
}

/// The first number after `after` in `text`.
pub fn number_after(text: &str, after: &str) -> Option<f64> {
    let rest = text.split_once(after)?.1;
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

/// This process holds the flagged socket as `fd`.
pub fn assert_owned_by_us(f: &Value, fd: i32) {
    let pid = std::process::id();
    assert!(
        f["owners"]
            .as_array()
            .expect("owners")
            .iter()
            .any(|o| o["pid"] == pid && o["fd"] == fd),
        "owner pid {pid} fd {fd}: {f:#}"
    );
}

/// GET a JSON path of an agent that runs in namespace `ns`.
pub fn json_in(ns: &str, addr: SocketAddr, path: &'static str) -> Value {
    let (code, body) = NetnsPair::in_ns(ns, move || http_get(addr, path)).expect("agent answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Echo whatever arrives on connections accepted by `listener` until `stop`.
pub fn echo_server(listener: TcpListener, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        while !stop.load(Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) if s.write_all(&buf[..n]).is_ok() => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                _ => return,
            }
        }
    })
}
