//! Container ids from cgroup paths: pure string work, no I/O.
//!
//! Runtimes name a container's cgroup after its 64-hex id, wrapped in a
//! runtime-specific way:
//!
//! | runtime / driver | path (innermost part) |
//! |---|---|
//! | docker, systemd driver | `/system.slice/docker-<id>.scope` |
//! | docker, cgroupfs driver | `/docker/<id>` |
//! | containerd (k8s), systemd | `/kubepods.slice/.../cri-containerd-<id>.scope` |
//! | containerd (k8s), cgroupfs | `/kubepods/burstable/pod<uid>/<id>` |
//! | cri-o | `/kubepods.slice/.../crio-<id>.scope` |
//! | podman | `/machine.slice/libpod-<id>.scope[/container]` |
//!
//! so the rule is: walk the path from the innermost component outwards, drop
//! a `.scope` suffix and anything up to the last `-`, and take the first
//! component that is exactly 64 lowercase hex digits. The runtimes' monitor
//! processes (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) run
//! outside the container and get no id.

/// What `/proc/<pid>/cgroup` says about a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo<'a> {
    /// The cgroup v2 path: the `0::<path>` line, if the unified hierarchy is mounted.
    pub unified: Option<&'a str>,
    /// The container id, from the v2 path or else from any v1 hierarchy's path.
    pub container_id: Option<&'a str>,
}

/// Parse the text of `/proc/<pid>/cgroup` (`hierarchy-id:controllers:path` lines).
pub fn parse_proc_cgroup(text: &str) -> CgroupInfo<'_> {
    let mut unified = None;
    let mut v1_id = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hierarchy == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if v1_id.is_none() {
            v1_id = container_id(path);
        }
    }
    CgroupInfo {
        unified,
        container_id: unified.and_then(container_id).or(v1_id),
    }
}

/// The container id named by a cgroup path, innermost first; `None` for a
/// host process (`/user.slice/user-1000.slice/session-2.scope`, `/init.scope`).
pub fn container_id(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|component| {
        let name = component.strip_suffix(".scope").unwrap_or(component);
        if name.contains("conmon") {
            return None;
        }
        let id = name.rsplit_once('-').map_or(name, |(_, id)| id);
        is_container_id(id).then_some(id)
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e9a1c0b7d2e8f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_from_realistic_paths() {
        let cases: &[(String, Option<&str>)] = &[
            // docker, systemd cgroup driver
            (format!("/system.slice/docker-{ID}.scope"), Some(ID)),
            // docker, cgroupfs driver
            (format!("/docker/{ID}"), Some(ID)),
            // docker in docker: the innermost container wins
            (format!("/docker/{ID2}/docker/{ID}"), Some(ID)),
            // rootless docker
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope"
                ),
                Some(ID),
            ),
            // kubernetes + containerd, systemd driver
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod\
                     8c2f4c1a_5b6e_4d3a_9f1e_2a7b8c9d0e1f.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
            ),
            // kubernetes + containerd, cgroupfs driver
            (
                format!("/kubepods/besteffort/pod8c2f4c1a-5b6e-4d3a-9f1e-2a7b8c9d0e1f/{ID}"),
                Some(ID),
            ),
            // cri-o
            (
                format!(
                    "/kubepods.slice/kubepods-pod8c2f4c1a_5b6e_4d3a_9f1e_2a7b8c9d0e1f.slice/crio-{ID}.scope"
                ),
                Some(ID),
            ),
            // cri-o's monitor is not in the container
            (
                format!("/kubepods.slice/kubepods-pod1.slice/crio-conmon-{ID}.scope"),
                None,
            ),
            // podman (root), plus its nested "container" cgroup
            (format!("/machine.slice/libpod-{ID}.scope"), Some(ID)),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Some(ID),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                Some(ID),
            ),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            // systemd inside a container, seen from the host
            (
                format!("/system.slice/docker-{ID}.scope/init.scope"),
                Some(ID),
            ),
            // host processes
            ("/user.slice/user-1000.slice/session-2.scope".into(), None),
            ("/system.slice/sshd.service".into(), None),
            ("/init.scope".into(), None),
            ("/".into(), None),
            ("".into(), None),
            // near misses: too short, upper case, a transient systemd unit
            (format!("/docker/{}", &ID[..63]), None),
            (format!("/docker/{}", ID.to_uppercase()), None),
            (
                "/system.slice/run-r3f4e9a1c0b7d2e8f6a5b4c3d2e1f0a9b.scope".into(),
                None,
            ),
            ("/process_api/f7b1084654db616e218d5e667153f00f".into(), None),
        ];
        for (path, want) in cases {
            assert_eq!(container_id(path), *want, "{path}");
        }
    }

    #[test]
    fn proc_cgroup_files() {
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            parse_proc_cgroup(&v2),
            CgroupInfo {
                unified: Some(&v2[3..v2.len() - 1]),
                container_id: Some(ID)
            }
        );
        // hybrid host: v2 path is "/", the id only shows in v1 hierarchies
        let hybrid = format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n");
        assert_eq!(
            parse_proc_cgroup(&hybrid),
            CgroupInfo {
                unified: Some("/"),
                container_id: Some(ID)
            }
        );
        // v1 only
        let v1 = format!("4:memory:/kubepods/burstable/podx/{ID}\n3:cpu,cpuacct:/\n");
        assert_eq!(
            parse_proc_cgroup(&v1),
            CgroupInfo {
                unified: None,
                container_id: Some(ID)
            }
        );
        // this VM's shape: hybrid, nothing container-like
        let here = "4:memory:/process_api/f7b1084654db616e218d5e667153f00f\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(here),
            CgroupInfo {
                unified: Some("/"),
                container_id: None
            }
        );
        assert_eq!(parse_proc_cgroup(""), CgroupInfo::default());
        // a path may contain ':'
        assert_eq!(parse_proc_cgroup("0::/a:b\n").unified, Some("/a:b"));
    }
}
