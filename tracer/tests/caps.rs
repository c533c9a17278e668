//! Privileged tests of the capabilities deploy/kubernetes/tracer.yaml grants:
//! `tracer run` as uid/gid 65534 holding exactly those names the process and
//! fd behind a CLOSE_WAIT leak of another user (root: this test); without
//! either owner-naming capability it still flags the leak but names nobody;
//! without CAP_BPF or CAP_PERFMON it does not start.
//!
//! The agent gets its capabilities the two ways a non-root process can:
//! ambient capabilities (setpriv), and the image's way, file capabilities on
//! the binary (deploy/Dockerfile) within the pod's bounding set and under
//! no_new_privs (`allowPrivilegeEscalation: false`). Each test runs in its
//! own network namespace with its own agent and looks only at its own port.
mod common;

use std::ffi::CString;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Netns, http_get, metric_value, wait_until};
use serde_json::Value;

/// What the manifest adds and the image's setcap grants, in setpriv's names.
const CAPS: [&str; 4] = ["bpf", "perfmon", "sys_ptrace", "dac_read_search"];
/// The manifest's runAsUser and runAsGroup.
const NOBODY: &str = "65534";
/// Leaks flagged after 1 s, owners looked for 4 times a second.
const AGENT_ARGS: [&str; 4] = [
    "--close-wait-threshold",
    "1s",
    "--reconcile-interval",
    "250ms",
];

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Capability numbers (include/uapi/linux/capability.h) of the names used here.
fn cap_number(name: &str) -> u32 {
    match name {
        "dac_read_search" => 2,
        "sys_ptrace" => 19,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("capability {other} is not in this test's table"),
    }
}

fn mask(caps: &[&str]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1 << cap_number(c)))
}

fn without(cap: &str) -> Vec<&'static str> {
    CAPS.into_iter().filter(|c| *c != cap).collect()
}

fn sorted(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().collect();
    v.sort();
    v
}

/// How the agent, uid/gid 65534, comes to hold its capabilities.
enum Grant<'a> {
    /// Inheritable + ambient (`setpriv --ambient-caps`).
    Ambient(Vec<&'a str>),
    /// File capabilities on `bin`, a bounding set, and no_new_privs: a pod.
    File {
        bin: &'a Path,
        bounding: Vec<&'a str>,
    },
}

/// A `tracer run` started through setpriv; killed on drop.
struct CapAgent {
    child: Child,
    addr: SocketAddr,
    stderr: Option<JoinHandle<String>>,
}

impl CapAgent {
    /// Spawn `tracer run` on a free loopback port of this thread's namespace.
    fn spawn(grant: &Grant) -> CapAgent {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
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
    fn start(grant: &Grant) -> CapAgent {
        let mut agent = CapAgent::spawn(grant);
        let addr = agent.addr;
        let mut exited = false;
        let up = wait_until(Duration::from_secs(30), || {
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
    fn exit(&mut self, timeout: Duration) -> (Option<ExitStatus>, String) {
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

    fn get(&self, path: &str) -> String {
        match http_get(self.addr, path) {
            Some((200, body)) => body,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    /// A line of the agent's /proc/<pid>/status (setpriv execs it in place).
    fn status_line(&self, key: &str) -> String {
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
    fn assert_runs_as_nobody_with(&self, caps: &[&str]) {
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
struct Leak {
    _server: TcpStream,
    port: u16,
    fd: u32,
    inode: u64,
}

fn close_wait_leak() -> Leak {
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

/// The agent's close_wait flag on `port`, and the pid of its process group.
fn flag_on(agent: &CapAgent, port: u16) -> Option<(Value, Value)> {
    let report: Value = serde_json::from_str(&agent.get("/api/v1/leaks")).expect("JSON");
    let suffix = format!(":{port}");
    report["leaks"].as_array()?.iter().find_map(|group| {
        let flag = group["sockets"].as_array()?.iter().find(|f| {
            f["kind"] == "close_wait" && f["local"].as_str().is_some_and(|l| l.ends_with(&suffix))
        })?;
        Some((flag.clone(), group["pid"].clone()))
    })
}

fn metric(agent: &CapAgent, series: &str) -> Option<f64> {
    metric_value(&agent.get("/metrics"), series)
}

/// This process's name as /proc shows it to the agent.
fn my_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .expect("comm")
        .trim_end()
        .to_owned()
}

/// The agent flags the leak and names this process and the fd.
fn assert_owner_named(agent: &CapAgent, leak: &Leak) {
    let pid = std::process::id();
    let mut last = None;
    let named = wait_until(Duration::from_secs(10), || {
        last = flag_on(agent, leak.port);
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
fn assert_owner_unnamed(agent: &CapAgent, leak: &Leak) {
    let flagged = wait_until(Duration::from_secs(10), || {
        flag_on(agent, leak.port).is_some()
    });
    assert!(flagged, "the leak on port {} was not flagged", leak.port);
    std::thread::sleep(Duration::from_millis(1500)); // 6 more reconciles
    let (flag, group_pid) = flag_on(agent, leak.port).expect("still flagged");
    assert_eq!(flag["inode"], leak.inode, "the inode to look for is known");
    assert_eq!(flag["owners"], Value::Array(vec![]), "no owner: {flag}");
    assert!(group_pid.is_null(), "grouped under no process: {group_pid}");
    assert_eq!(metric(agent, "tracer_close_wait_leaks"), Some(1.0));
    assert_eq!(
        metric(agent, "tracer_close_wait_leaks_by_process{comm=\"other\"}"),
        Some(1.0)
    );
}

#[test]
fn with_the_manifests_capabilities_nobody_names_roots_leak() {
    let _ns = Netns::enter("capsamb");
    let agent = CapAgent::start(&Grant::Ambient(CAPS.to_vec()));
    agent.assert_runs_as_nobody_with(&CAPS);
    assert_owner_named(&agent, &close_wait_leak());
}

/// The negative control: one owner-naming capability less.
fn owner_unnamed_without(cap: &str, tag: &str) {
    let _ns = Netns::enter(tag);
    let caps = without(cap);
    let agent = CapAgent::start(&Grant::Ambient(caps.clone()));
    agent.assert_runs_as_nobody_with(&caps);
    assert_owner_unnamed(&agent, &close_wait_leak());
}

#[test]
fn without_cap_sys_ptrace_the_leak_is_flagged_but_its_owner_unnamed() {
    owner_unnamed_without("sys_ptrace", "capsnoptr");
}

#[test]
fn without_cap_dac_read_search_the_leak_is_flagged_but_its_owner_unnamed() {
    owner_unnamed_without("dac_read_search", "capsnodac");
}

#[test]
fn without_cap_bpf_or_cap_perfmon_the_agent_does_not_start() {
    let _ns = Netns::enter("capsnobpf");
    for missing in ["bpf", "perfmon"] {
        let mut agent = CapAgent::spawn(&Grant::Ambient(without(missing)));
        let (status, stderr) = agent.exit(Duration::from_secs(20));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "without {missing}: {stderr}"
        );
        assert!(
            stderr.contains("CAP_BPF and CAP_PERFMON"),
            "without {missing}: {stderr}"
        );
    }
}

/// A copy of the tracer binary with file capabilities, as the image has it;
/// removed on drop.
struct CappedCopy {
    dir: PathBuf,
    bin: PathBuf,
}

impl CappedCopy {
    /// With the capabilities of deploy/Dockerfile's setcap line.
    fn new(tag: &str) -> CappedCopy {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("caps-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let copy = CappedCopy {
            bin: dir.join("tracer"),
            dir,
        };
        std::fs::copy(env!("CARGO_BIN_EXE_tracer"), &copy.bin).expect("copy tracer");
        for p in [&copy.dir, &copy.bin] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let path = CString::new(copy.bin.as_os_str().as_bytes()).expect("path");
        // SAFETY: statvfs into a zeroed struct, with a valid C path.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut vfs) }, 0);
        assert_eq!(
            vfs.f_flag & libc::ST_NOSUID,
            0,
            "{} is on a nosuid mount, where file capabilities are ignored",
            copy.dir.display()
        );
        // struct vfs_cap_data, revision 2, effective bit set: what `setcap
        // <caps>=ep` writes (include/uapi/linux/capability.h).
        let image = dockerfile_setcap();
        let m = mask(&image.iter().map(String::as_str).collect::<Vec<_>>());
        let mut xattr = Vec::with_capacity(20);
        for word in [0x0200_0001, m as u32, 0, (m >> 32) as u32, 0u32] {
            xattr.extend(word.to_le_bytes());
        }
        // SAFETY: setxattr with valid C strings and a buffer of the given length.
        let rc = unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"security.capability".as_ptr(),
                xattr.as_ptr().cast(),
                xattr.len(),
                0,
            )
        };
        assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
        copy
    }
}

impl Drop for CappedCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn as_in_the_pod_file_capabilities_under_no_new_privs_name_roots_leak() {
    let copy = CappedCopy::new("ok");
    let _ns = Netns::enter("capsfile");
    let agent = CapAgent::start(&Grant::File {
        bin: &copy.bin,
        bounding: CAPS.to_vec(),
    });
    assert_eq!(agent.status_line("NoNewPrivs:"), "1");
    agent.assert_runs_as_nobody_with(&CAPS);
    assert_owner_named(&agent, &close_wait_leak());
}

#[test]
fn a_pod_lacking_one_of_the_images_capabilities_cannot_exec_it() {
    let copy = CappedCopy::new("bnd");
    let _ns = Netns::enter("capsfilebnd");
    let mut agent = CapAgent::spawn(&Grant::File {
        bin: &copy.bin,
        bounding: without("sys_ptrace"),
    });
    let (status, stderr) = agent.exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
}

/// Items of the YAML block list (or `[a, b]` flow list) under `key:`, the
/// first `key:` after a line `parent:`. Enough YAML for our own manifest.
fn yaml_list(text: &str, parent: &str, key: &str) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim_end())
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("{parent}:"))
        .unwrap_or_else(|| panic!("no `{parent}:`"));
    let at = indent(lines[start]);
    let block: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| indent(l) > at)
        .copied()
        .collect();
    let k = block
        .iter()
        .position(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no `{key}:` under `{parent}:`"));
    let inline = block[k].trim_start()[key.len() + 1..].trim();
    if let Some(flow) = inline.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return flow.split(',').map(|s| s.trim().to_owned()).collect();
    }
    block[k + 1..]
        .iter()
        .take_while(|l| indent(l) >= indent(block[k]) && l.trim_start().starts_with("- "))
        .map(|l| l.trim_start()[2..].trim().to_owned())
        .collect()
}

/// Every value of `key:` in the text.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(&format!("{key}:")))
        .map(|v| v.split(" #").next().unwrap_or("").trim().to_owned())
        .collect()
}

/// The capabilities deploy/Dockerfile's `setcap <caps>=ep` grants.
fn dockerfile_setcap() -> Vec<String> {
    let text = repo_file("deploy/Dockerfile");
    let arg = text
        .split_whitespace()
        .find(|w| w.ends_with("=ep"))
        .expect("a `setcap <caps>=ep` in deploy/Dockerfile");
    arg.trim_end_matches("=ep")
        .split(',')
        .map(|c| c.strip_prefix("cap_").unwrap_or(c).to_owned())
        .collect()
}

/// What the tests above grant is what the manifest and the image grant.
#[test]
fn the_manifest_and_the_image_grant_exactly_the_tested_capabilities() {
    let manifest = repo_file("deploy/kubernetes/tracer.yaml");
    let blocks = manifest.lines().filter(|l| l.trim() == "capabilities:");
    assert_eq!(blocks.count(), 1, "one container, one capabilities block");
    assert_eq!(
        sorted(yaml_list(&manifest, "capabilities", "add")),
        sorted(CAPS.map(str::to_uppercase)),
        "the manifest's capabilities.add"
    );
    assert_eq!(yaml_list(&manifest, "capabilities", "drop"), ["ALL"]);
    for key in ["runAsUser", "runAsGroup"] {
        assert_eq!(yaml_values(&manifest, key), [NOBODY], "{key}");
    }
    assert_eq!(yaml_values(&manifest, "runAsNonRoot"), ["true"]);
    assert_eq!(
        yaml_values(&manifest, "allowPrivilegeEscalation"),
        ["false"]
    );
    assert_eq!(yaml_values(&manifest, "privileged"), Vec::<String>::new());

    assert_eq!(
        sorted(dockerfile_setcap()),
        sorted(CAPS.map(str::to_owned)),
        "deploy/Dockerfile's setcap"
    );
    let user = format!("USER {NOBODY}:{NOBODY}");
    let dockerfile = repo_file("deploy/Dockerfile");
    assert!(dockerfile.lines().any(|l| l.trim() == user), "no {user}");
}
