//! Real containers for the tests: podman with runc (crun refuses this
//! host's cgroup v1), an image imported from a static busybox (no registry),
//! and containers removed on drop even when a test fails.
//!
//! Never podman's default network: it installs NAT rules that switch on
//! connection tracking for the whole machine. Containers get
//! `--network none` or a namespace the test made (`--network ns:PATH`).
use std::{
    os::unix::fs::MetadataExt as _,
    process::{Command, Output},
    sync::Mutex,
};

/// The image every test container runs.
pub const IMAGE: &str = "localhost/tracer-test-busybox:1";

/// Where busybox-static installs itself.
const BUSYBOX: &str = "/bin/busybox";

/// podman's rlimits fail without CAP_SYS_RESOURCE: ask for what we have.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

static IMAGE_READY: Mutex<bool> = Mutex::new(false);

/// `podman --runtime runc ARGS`, its output.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman: {e} (cargo xtask test installs podman and runc)"))
}

/// `podman ARGS`, panicking with its stderr when it fails; its stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Make the busybox image once per test binary (and keep it: later runs
/// find it). `None`, with the reason printed, when podman is not installed.
pub fn image() -> Option<&'static str> {
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("SKIPPED: podman is not installed (cargo xtask test installs it)");
        return None;
    }
    let mut ready = IMAGE_READY.lock().unwrap_or_else(|p| p.into_inner());
    if *ready || podman(&["image", "exists", IMAGE]).status.success() {
        *ready = true;
        return Some(IMAGE);
    }
    let tmp = crate::common::scratch("tracer-bb-rootfs-");
    let root = tmp.path();
    std::fs::create_dir_all(root.join("bin")).expect("rootfs");
    std::fs::copy(BUSYBOX, root.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("{BUSYBOX}: {e} (package busybox-static)"));
    for applet in ["sh", "nc", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    let tar = Command::new("tar")
        .args(["-C", &root.to_string_lossy(), "-cf", "-", "."])
        .output()
        .expect("tar");
    assert!(tar.status.success(), "tar of the rootfs failed");
    let mut import = Command::new("podman")
        .args(["import", "-", IMAGE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("podman import");
    {
        use std::io::Write as _;
        let mut stdin = import.stdin.take().expect("stdin");
        stdin.write_all(&tar.stdout).expect("feed podman import");
    }
    assert!(
        import.wait().expect("podman import").success(),
        "podman import failed"
    );
    *ready = true;
    Some(IMAGE)
}

/// A running container, removed (killed) on drop.
pub struct Container {
    /// Its name: `tr-<tag>-<test pid>`.
    pub name: String,
    /// Its 64-hex id.
    pub id: String,
    /// Its first process, as the host sees it.
    pub pid: u32,
    /// Its network namespace's inode.
    pub netns: u64,
}

impl Container {
    /// `podman run -d --name tr-<tag>-<pid> EXTRA IMAGE sh -c SCRIPT`.
    /// `extra` must choose the network (`--network none`, `ns:PATH`, or
    /// `host`).
    pub fn run(tag: &str, extra: &[&str], script: &str) -> Container {
        assert!(
            extra.iter().any(|a| a.starts_with("--network")),
            "test containers choose their network (never podman's default)"
        );
        let image = image().expect("podman");
        let name = format!("tr-{tag}-{}", std::process::id());
        let _ = podman(&["rm", "-f", "-t", "0", &name]);
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend(ULIMITS);
        args.extend(extra);
        args.extend([image, "/bin/sh", "-c", script]);
        let id = podman_ok(&args);
        // From here on, drop removes it.
        let mut c = Container {
            name,
            id,
            pid: 0,
            netns: 0,
        };
        c.pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &c.name])
            .parse()
            .expect("pid");
        c.netns = std::fs::metadata(format!("/proc/{}/ns/net", c.pid))
            .expect("container netns")
            .ino();
        c
    }

    /// Run `f` on a thread that entered the container's network namespace:
    /// sockets it makes live there, held by the test.
    pub fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        crate::common::in_netns_file(format!("/proc/{}/ns/net", self.pid), f)
    }

    /// True once something listens on `port` in the container's namespace
    /// (its `/proc/<pid>/net/tcp6` or `tcp`, read from the host).
    pub fn listening(&self, port: u16) -> bool {
        let want = format!(":{port:04X} ");
        ["tcp", "tcp6"].iter().any(|f| {
            std::fs::read_to_string(format!("/proc/{}/net/{f}", self.pid))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() > 3 && format!("{} ", cols[1]).ends_with(&want) && cols[3] == "0A"
                })
        })
    }

    /// Stop and remove it now.
    pub fn remove(self) {}
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// Pids of processes in container `id` (by their cgroup) named `comm`.
pub fn pids_in(id: &str, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        let c = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if cg.contains(id) && c.trim() == comm {
            out.push(pid);
        }
    }
    out
}
