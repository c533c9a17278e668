//! The test kit for the privileged integration tests: the one privilege
//! check, the real `tracer` binary run as `events`, `run` or `leaks`,
//! network namespaces that clean up after themselves, the python3 server
//! that leaks CLOSE_WAIT sockets, `ss` as an independent oracle, the one
//! HTTP client and exposition reader (the `tracer-testkit` crate, which
//! `cargo xtask` uses too), a real Prometheus, and the counting allocator
//! (also the memory bench's).
//!
//! Tiers: a test that needs root carries
//! `#[ignore = "privileged: cargo xtask test runs it as root"]`, so plain
//! `cargo test` passes as any user; `cargo xtask test` runs every tier
//! with `--include-ignored` as root.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(unused_imports, reason = "each test binary uses a different subset")]

mod agent;
pub mod counting;
mod events;
mod leaky;
mod netns;
mod prometheus;
mod ss;

use std::{
    process::Command,
    time::{Duration, Instant},
};

pub use agent::{Agent, answers_healthz, wait_healthy};
pub use events::{Events, Output};
pub use leaky::{
    LeakyServer, NotAccepting, all_flags, tracer_leaks, tracer_leaks_json, wait_close_wait,
};
pub use netns::{NamedNetns, Netns, NetnsPair, in_netns_file};
pub use prometheus::{Prometheus, percent_encode};
pub use ss::{listens, ss_cookies, ss_count, ss_recv_q, ss_states, ss_time_wait};
pub use tracer_testkit::{
    exposition::{gauge, metric_lines, metric_sum, metric_value},
    http::Reply,
};

/// GET `path` with extra request headers, waiting at most `timeout` for
/// the whole answer; None when nothing (complete) answers in time.
pub fn http_get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Option<Reply> {
    tracer_testkit::http::fetch(addr, path, headers, timeout).ok()
}

/// GET `path`: (status, body), or None when nothing answers in 10 s.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    tracer_testkit::http::get(addr, path).ok()
}

/// How long a tracer process may take to load its programs and say it is
/// ready. Loading takes well under a second on the host, but 14 s or more in
/// the vmtest VMs (qemu without KVM), more on a busy CI machine: a start that
/// is slow is not a failure, one that never comes is.
pub const STARTUP: Duration = Duration::from_secs(90);

/// The `--netns` a started tracer gets unless `args` choose one: `host`,
/// the namespace it starts in. Most tests run in a namespace of their own,
/// away from whatever else the host (or another test) runs.
pub fn netns_unless_chosen(args: &[&str]) -> &'static [&'static str] {
    if args.contains(&"--netns") {
        &[]
    } else {
        &["--netns", "host"]
    }
}

/// An agent URL that nobody answers: commands read the kernel themselves.
pub const NO_AGENT: &str = "http://127.0.0.1:1";

/// True when the running kernel is at least `major.minor`
/// (`/proc/sys/kernel/osrelease`), for tests of what older kernels lack.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

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

/// Set the `IPPROTO_TCP` option `opt` (`TCP_FASTOPEN`, `TCP_SYNCNT`,
/// `TCP_DEFER_ACCEPT`: ones `socket2` has no setter for) to `value`;
/// panics with the kernel's error.
pub fn set_tcp_int(socket: &impl std::os::fd::AsRawFd, opt: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt on a valid descriptor with an int option of its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            opt,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt IPPROTO_TCP {opt} = {value}: {}",
        std::io::Error::last_os_error()
    );
}

/// A loopback address with a port that was free a moment ago, for a
/// server the test starts.
pub fn free_addr() -> std::net::SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
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

/// A fresh directory under the system's temporary directory, named
/// `prefix` and a random tail, removed with everything in it on drop.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a scratch directory")
}
