//! Network namespaces that clean up after themselves: a private one the
//! test's thread enters, a named one it runs code in, a veth-joined pair,
//! and running code inside one.

use std::{collections::BTreeMap, process::Command};

use super::{require_root, sh};

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

    /// The veth ends: in `a`, in `b`.
    #[allow(dead_code)]
    pub fn devices(&self) -> (String, String) {
        let pid = std::process::id() % 100000;
        (format!("v{pid}a"), format!("v{pid}b"))
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

/// A plain `ip netns add` namespace with loopback up, which the test's
/// thread does not enter; deleted on drop, even when the test fails.
pub struct NamedNetns {
    /// `tr-<tag>-<pid>`.
    pub name: String,
    /// The namespace's inode, as the agent labels it.
    pub inode: u64,
}

impl NamedNetns {
    /// Make `tr-<tag>-<pid>`, with loopback up and `sysctls` (`key=value`)
    /// set inside.
    pub fn new(tag: &str, sysctls: &[&str]) -> NamedNetns {
        require_root();
        use std::os::unix::fs::MetadataExt as _;
        let name = format!("tr-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh("ip", &["netns", "add", &name]);
        let ns = NamedNetns {
            inode: std::fs::metadata(format!("/run/netns/{name}"))
                .expect("netns mount")
                .ino(),
            name,
        };
        sh("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        for s in sysctls {
            sh("ip", &["netns", "exec", &ns.name, "sysctl", "-qw", s]);
        }
        ns
    }

    /// A namespace born with what `f` makes in it, as a pod's with its
    /// first connections: a new thread unshares a network namespace,
    /// brings loopback up and runs `f` there, unseen (no process holds it
    /// and it has no name); only then is it named `tr-<tag>-<pid>`
    /// (bind-mounted under /run/netns, as `ip netns add` does), where an
    /// agent's discovery finds it. Deleted on drop, as any other.
    pub fn born_with<T: Send + 'static>(
        tag: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> (NamedNetns, T) {
        require_root();
        use std::os::unix::fs::MetadataExt as _;
        let name = format!("tr-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let path = format!("/run/netns/{name}");
        let made = std::thread::spawn(move || {
            // SAFETY: unshare(2) of this thread's network namespace only.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            loopback_up();
            let out = f();
            std::fs::create_dir_all("/run/netns").expect("/run/netns");
            std::fs::File::create(&path).expect("the mount point");
            let c = |s: &str| std::ffi::CString::new(s).expect("path");
            let (from, to) = (c("/proc/thread-self/ns/net"), c(&path));
            // SAFETY: a bind mount of this thread's namespace file onto
            // the empty file just made; both are valid C strings.
            let rc = unsafe {
                libc::mount(
                    from.as_ptr(),
                    to.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            assert_eq!(rc, 0, "bind mount: {}", std::io::Error::last_os_error());
            out
        });
        let out = made.join().expect("namespace thread");
        let inode = std::fs::metadata(format!("/run/netns/{name}"))
            .expect("netns mount")
            .ino();
        (NamedNetns { name, inode }, out)
    }

    /// Run `f` inside the namespace, and wait for it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        NetnsPair::in_ns(&self.name, f)
    }

    /// Run `f` on a new thread inside the namespace, without waiting for it.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || enter_netns_file(&path, f))
    }

    /// `ss -tan` inside: live sockets per state, named as the API names them.
    pub fn ss_states(&self) -> BTreeMap<String, usize> {
        super::ss_states(Command::new("ip").args(["netns", "exec", &self.name, "ss", "-tanH"]))
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Bring `lo` up in this thread's network namespace, without a process
/// (one in the namespace would show it to discovery).
fn loopback_up() {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: socket(2) with constant arguments; owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor just opened, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid; the name fits with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write `req` only.
    unsafe {
        assert_eq!(
            libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req),
            0
        );
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req),
            0,
            "lo up: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Run `f` on a thread that has entered the network namespace of the file
/// at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`); sockets made there
/// stay in that namespace.
pub fn in_netns_file<T: Send + 'static>(path: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || enter_netns_file(&path, f))
        .join()
        .expect("namespace thread")
}

/// Enter the network namespace of the file at `path` on this thread, for
/// good, and run `f`.
fn enter_netns_file<T>(path: &str, f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on this thread only, with a valid netns fd.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    f()
}
