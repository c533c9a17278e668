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
#[path = "caps/support.rs"]
mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Netns;
use support::*;

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn with_the_manifests_capabilities_nobody_names_roots_leak() {
    let _ns = Netns::enter("capsamb");
    let mut agent = CapAgent::start(&Grant::Ambient(CAPS.to_vec()));
    agent.assert_runs_as_nobody_with(&CAPS);
    assert_owner_named(&agent, &close_wait_leak());
    let (_, stderr) = agent.exit(Duration::ZERO);
    assert!(!stderr.contains("cannot be named"), "{stderr}");
}

/// The negative control: one owner-naming capability less.
fn owner_unnamed_without(cap: &str, tag: &str) {
    let _ns = Netns::enter(tag);
    let caps = without(cap);
    let mut agent = CapAgent::start(&Grant::Ambient(caps.clone()));
    agent.assert_runs_as_nobody_with(&caps);
    assert_owner_unnamed(&agent, &close_wait_leak());
    // It said so, once, naming the capability.
    let (_, stderr) = agent.exit(Duration::ZERO);
    let said = said_once(&stderr, "cannot be named");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("leak flagged") && l.contains("owner_unknown=true")),
        "{stderr}"
    );
    assert!(
        said.contains(&format!("without CAP_{}", cap.to_uppercase())),
        "{stderr}"
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn without_cap_sys_ptrace_the_leak_is_flagged_but_its_owner_unnamed() {
    owner_unnamed_without("sys_ptrace", "capsnoptr");
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn without_cap_dac_read_search_the_leak_is_flagged_but_its_owner_unnamed() {
    owner_unnamed_without("dac_read_search", "capsnodac");
}

/// Another `ip netns` namespace, deleted on drop.
struct OtherNs(String);

impl OtherNs {
    fn new(tag: &str) -> OtherNs {
        let name = format!("tr-{tag}-{}", std::process::id());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        common::sh("ip", &["netns", "add", &name]);
        common::sh("ip", &["-n", &name, "link", "set", "lo", "up"]);
        OtherNs(name)
    }

    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", self.0))
            .expect("netns")
            .ino()
    }
}

impl Drop for OtherNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

/// With the manifest's capabilities (SYS_ADMIN among them) the agent
/// follows every namespace: a leak in another one is named, with its
/// namespace.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn with_the_manifests_capabilities_a_leak_in_another_namespace_is_named() {
    let _ns = Netns::enter("capsallns");
    let other = OtherNs::new("capsallnsx");
    let leak = common::NetnsPair::in_ns(&other.0, close_wait_leak);
    let agent = CapAgent::start_with(&Grant::Ambient(CAPS.to_vec()), &[]);
    agent.assert_runs_as_nobody_with(&CAPS);
    let pid = std::process::id();
    let mut last = None;
    let named = common::wait_until(Duration::from_secs(10), || {
        last = flag_on(&agent, &leak);
        last.as_ref().is_some_and(|(f, _)| {
            f["owners"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["pid"] == pid && o["fd"] == leak.fd))
        })
    });
    assert!(named, "no flag naming pid {pid} fd {}: {last:?}", leak.fd);
    let (flag, _) = last.expect("flag");
    assert_eq!(flag["netns"], other.inode(), "{flag}");
    assert_eq!(
        metric(
            &agent,
            "tracer_netns_unreachable{reason=\"no_cap_sys_admin\"}"
        ),
        Some(0.0)
    );
}

/// Without CAP_SYS_ADMIN the agent cannot enter other namespaces: it says
/// so once, in one sentence, counts them, and goes on with its own.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn without_cap_sys_admin_other_namespaces_are_unreachable_and_the_rest_goes_on() {
    let _ns = Netns::enter("capsnoadm");
    // Another namespace for sure, besides the host's.
    let _other = OtherNs::new("capsnoadmx");
    let caps = without("sys_admin");
    let mut agent = CapAgent::start_with(&Grant::Ambient(caps.clone()), &[]);
    agent.assert_runs_as_nobody_with(&caps);
    let leak = close_wait_leak();
    let pid = std::process::id();
    let named = common::wait_until(Duration::from_secs(10), || {
        flag_on(&agent, &leak).is_some_and(|(f, _)| {
            f["owners"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["pid"] == pid && o["fd"] == leak.fd))
        })
    });
    assert!(
        named,
        "the leak in the agent's own namespace is still named"
    );
    let series = "tracer_netns_unreachable{reason=\"no_cap_sys_admin\"}";
    assert!(
        common::wait_until(Duration::from_secs(5), || metric(&agent, series)
            .is_some_and(|n| n >= 1.0)),
        "{series}: {:?}",
        metric(&agent, series)
    );
    assert_eq!(metric(&agent, "tracer_netns_tracked"), Some(1.0));
    // Who reads the report, not the agent's log, learns it is partial.
    let report: serde_json::Value =
        serde_json::from_str(&agent.get("/api/v1/leaks")).expect("JSON");
    assert!(
        report["unfollowed_netns"].as_u64().is_some_and(|n| n >= 1),
        "{report:#}"
    );
    let note = report["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("network namespace(s) are not followed")
            && note.contains("cannot be entered without CAP_SYS_ADMIN"),
        "{note}"
    );
    let (_, stderr) = agent.exit(Duration::ZERO);
    let said = said_once(&stderr, "CAP_SYS_ADMIN");
    assert!(
        said.contains("cannot be followed")
            && said.contains("leak detection")
            && said.contains("event=\"netns_refused\""),
        "{said}"
    );
    // With CAP_SYS_PTRACE every process's namespace can be found.
    assert!(!stderr.contains("cannot be found"), "{stderr}");
}

/// Without CAP_SYS_PTRACE, an agent of every namespace cannot find those
/// only root's processes hold (the host's own, here, seen from the test's
/// namespace), and says so once.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn without_cap_sys_ptrace_an_agent_of_every_namespace_says_what_it_cannot_find() {
    let _ns = Netns::enter("capsnofind");
    let caps = without("sys_ptrace");
    let mut agent = CapAgent::start_with(&Grant::Ambient(caps.clone()), &[]);
    agent.assert_runs_as_nobody_with(&caps);
    let (_, stderr) = agent.exit(Duration::ZERO);
    let said = said_once(&stderr, "cannot be found");
    assert!(
        said.contains("without CAP_SYS_PTRACE, a network namespace that only other users'")
            && said.contains("tracer_netns_unreachable{reason=\"unnamed\"}"),
        "{said}"
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn without_cap_bpf_or_cap_perfmon_the_agent_does_not_start() {
    let _ns = Netns::enter("capsnobpf");
    for missing in ["bpf", "perfmon"] {
        // CAP_SYS_ADMIN would stand in for either (bpf_capable() and
        // perfmon_capable() accept it): leave it out too.
        let caps: Vec<&str> = without(missing)
            .into_iter()
            .filter(|c| *c != "sys_admin")
            .collect();
        let mut agent = CapAgent::spawn(&Grant::Ambient(caps));
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
        assert!(
            stderr.contains(&format!("(it lacks CAP_{};", missing.to_uppercase())),
            "the missing one is named: {stderr}"
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
#[ignore = "privileged: cargo xtask test runs it as root"]
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
#[ignore = "privileged: cargo xtask test runs it as root"]
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
