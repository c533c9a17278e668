//! Which container, and which Kubernetes pod, a network namespace belongs
//! to: the name every socket, leak and event carries beside its `netns`.
//!
//! A namespace is attributed through one of its processes: its cgroup path
//! names the container id and the runtime ([`crate::diag::cgroup`]), and
//! the runtime's OCI bundle (`config.json`) and its own metadata name the
//! rest ([`bundle`]). [`Resolver`] does that once per container, off the
//! event path (on the dump thread, after namespace discovery), and keeps a
//! bounded cache.
//!
//! A pod's containers share one namespace: its sockets are attributed to
//! the pod and to the first application container found in it (the
//! sandbox's `pause` process only when nothing else runs there). Leak flags
//! are named after their owner's own container
//! ([`ContainerMap::owning`]).
pub mod bundle;
mod resolve;

use std::{borrow::Cow, collections::HashMap, path::Path, sync::Arc};

use serde::{Deserialize, Serialize};

pub use self::resolve::{CACHE_CAP, Resolver, ResolverStats};

/// The container runtime that made a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// Docker (`docker-<id>.scope`, `/docker/<id>`).
    Docker,
    /// containerd, as Kubernetes' CRI runtime (`cri-containerd-<id>.scope`).
    Containerd,
    /// CRI-O (`crio-<id>.scope`).
    CriO,
    /// podman (`libpod-<id>`).
    Podman,
}

impl Runtime {
    /// The runtime's name as printed and serialized.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
        }
    }

    /// The runtime named by the cgroup path component that holds a
    /// container id (`libpod-<id>.scope` -> podman); `None` when the path
    /// does not say (Kubernetes' cgroupfs driver: `/kubepods/.../<id>`).
    pub fn from_cgroup(path: &str, id: &str) -> Option<Runtime> {
        let component = path.rsplit('/').find(|c| c.contains(id))?;
        let prefix = component.split(id).next().unwrap_or("");
        match prefix {
            "docker-" => Some(Runtime::Docker),
            "cri-containerd-" => Some(Runtime::Containerd),
            "crio-" => Some(Runtime::CriO),
            "libpod-" => Some(Runtime::Podman),
            "" if path.contains("/docker/") => Some(Runtime::Docker),
            _ => None,
        }
    }
}

/// A Kubernetes pod, as the CRI runtime recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pod {
    /// The pod's namespace (`io.kubernetes.cri.sandbox-namespace`).
    pub namespace: String,
    /// The pod's name (`io.kubernetes.cri.sandbox-name`).
    pub name: String,
    /// The container's name in the pod spec (`io.kubernetes.cri.container-name`);
    /// `None` when only the sandbox was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A container, as its runtime recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    /// The 64-hex container id.
    pub id: String,
    /// The runtime, when the cgroup path or the bundle's place says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The container's name (`podman --name`, `docker --name`), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Kubernetes pod, when the runtime recorded its annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

impl Container {
    /// A short form for tables: `pod-ns/pod/container`, else the name, else
    /// the id's first 12 digits; with the runtime.
    pub fn short(&self) -> String {
        let who = match (&self.pod, &self.name) {
            (Some(p), _) => match &p.container {
                Some(c) => format!("{}/{}/{c}", p.namespace, p.name),
                None => format!("{}/{}", p.namespace, p.name),
            },
            (None, Some(n)) => n.clone(),
            (None, None) => self.id.get(..12).unwrap_or(&self.id).to_owned(),
        };
        match self.runtime {
            Some(r) => format!("{}:{who}", r.name()),
            None => who,
        }
    }
}

/// Namespace inode -> the container found in it, as of the last discovery.
/// Shared read-only: a new map replaces the old one when anything changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMap(HashMap<u32, Arc<Container>>);

/// [`ContainerMap::owning`] for the flags of one dump or one report: a
/// process met before is not read again (its `/proc/<pid>/cgroup`, and for
/// a container on the host's network its runtime's record), so a process
/// with thousands of leaks costs one read, not one per leak.
pub struct Namer<'a> {
    map: &'a ContainerMap,
    root: &'a Path,
    /// (namespace, first owner's pid or 0) -> the container named.
    seen: HashMap<(u32, u32), Option<Container>>,
}

impl Namer<'_> {
    /// The container behind a socket of `netns` owned by `pids`.
    pub fn owning(&mut self, netns: u32, pids: impl Iterator<Item = u32>) -> Option<Container> {
        let mut pids = pids.peekable();
        let first = pids.peek().copied().unwrap_or(0);
        let (map, root) = (self.map, self.root);
        self.seen
            .entry((netns, first))
            .or_insert_with(|| map.owning_under(root, netns, pids).map(|c| (**c).clone()))
            .clone()
    }
}

impl ContainerMap {
    /// The container of namespace `netns`, if one was found.
    pub fn get(&self, netns: u32) -> Option<&Arc<Container>> {
        if netns == 0 {
            return None;
        }
        self.0.get(&netns)
    }

    /// The container behind a socket of namespace `netns` owned by `pids`.
    ///
    /// A pod's containers share one namespace, which [`ContainerMap::get`]
    /// names after its first application container. The owner's own cgroup
    /// says which of them holds the socket: a sidecar's leak is the
    /// sidecar's. A container on the host's network (`--network host`,
    /// `hostNetwork: true`) has a namespace no container holds, so its
    /// owner's cgroup alone names it. Reads `/proc/<pid>/cgroup` (and, for
    /// a container not met yet, its runtime's record) once per call: for
    /// leak flags, which are named once each, not for every socket of a
    /// listing. Borrowed when it is the namespace's container, owned when
    /// read for this owner.
    pub fn owning(
        &self,
        netns: u32,
        pids: impl Iterator<Item = u32>,
    ) -> Option<Cow<'_, Arc<Container>>> {
        self.owning_under(Path::new("/"), netns, pids)
    }

    fn owning_under(
        &self,
        root: &Path,
        netns: u32,
        mut pids: impl Iterator<Item = u32>,
    ) -> Option<Cow<'_, Arc<Container>>> {
        let first = self.get(netns);
        let Some((id, hint)) = pids.find_map(|pid| resolve::container_of_pid(root, pid)) else {
            return first.map(Cow::Borrowed);
        };
        if let Some(first) = first.filter(|c| c.id == id) {
            return Some(Cow::Borrowed(first));
        }
        let found = bundle::find(root, &id, hint);
        if found.sandbox {
            return first.map(Cow::Borrowed);
        }
        Some(Cow::Owned(Arc::new(found.container)))
    }

    /// A namer for many flags at once (see [`Namer`]).
    pub fn namer(&self) -> Namer<'_> {
        Namer {
            map: self,
            root: Path::new("/"),
            seen: HashMap::new(),
        }
    }

    /// How many namespaces have a container.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no namespace has a container.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every (namespace, container).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Arc<Container>)> {
        self.0.iter().map(|(&n, c)| (n, c))
    }
}

impl FromIterator<(u32, Arc<Container>)> for ContainerMap {
    fn from_iter<I: IntoIterator<Item = (u32, Arc<Container>)>>(iter: I) -> ContainerMap {
        ContainerMap(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e9a1c0b7d2e8f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";

    #[test]
    fn runtimes_from_cgroup_paths() {
        for (path, want) in [
            (
                format!("/system.slice/docker-{ID}.scope"),
                Some(Runtime::Docker),
            ),
            (format!("/docker/{ID}"), Some(Runtime::Docker)),
            (
                format!("/kubepods.slice/x.slice/cri-containerd-{ID}.scope"),
                Some(Runtime::Containerd),
            ),
            (
                format!("/kubepods.slice/crio-{ID}.scope"),
                Some(Runtime::CriO),
            ),
            (format!("/libpod_parent/libpod-{ID}"), Some(Runtime::Podman)),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Some(Runtime::Podman),
            ),
            (format!("/kubepods/besteffort/podx/{ID}"), None),
        ] {
            assert_eq!(Runtime::from_cgroup(&path, ID), want, "{path}");
        }
    }

    /// A containerd pod on a fake root: its sandbox (pid 5), its `app`
    /// (pid 10) and a `sidecar` (pid 20), one namespace.
    fn pod_root() -> (tempfile::TempDir, [String; 3]) {
        let tmp = tempfile::Builder::new()
            .prefix("tracer-pod-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path();
        let ids = [1u8, 2, 3].map(|n| format!("{:064x}", u64::from(n) + 0xfeed));
        let kinds = [
            ("sandbox", "POD", 5),
            ("container", "app", 10),
            ("container", "sidecar", 20),
        ];
        for (id, (kind, name, pid)) in ids.iter().zip(kinds) {
            let task = root
                .join("run/containerd/io.containerd.runtime.v2.task/k8s.io")
                .join(id);
            std::fs::create_dir_all(&task).expect("mkdir");
            let a = format!(
                r#"{{"annotations":{{"io.kubernetes.cri.container-type":"{kind}",
                "io.kubernetes.cri.sandbox-name":"cart","io.kubernetes.cri.sandbox-namespace":"shop",
                "io.kubernetes.cri.container-name":"{name}"}}}}"#
            );
            std::fs::write(task.join("config.json"), a).expect("config.json");
            let proc = root.join("proc").join(pid.to_string());
            std::fs::create_dir_all(&proc).expect("mkdir");
            let cg = format!("0::/kubepods.slice/cri-containerd-{id}.scope\n");
            std::fs::write(proc.join("cgroup"), cg).expect("cgroup");
        }
        (tmp, ids)
    }

    #[test]
    fn a_pods_socket_is_named_after_the_container_of_its_owner() {
        let (tmp, ids) = pod_root();
        let root = tmp.path();
        let mut r = Resolver::new(root.to_path_buf(), 8);
        // Discovery saw the sandbox and the app: the namespace is the app's.
        let pids = std::collections::BTreeMap::from([(700, vec![5, 10])]);
        let map = r.update(&pids).expect("map");
        assert_eq!(map.get(700).expect("pod").id, ids[1]);
        let owned = |owners: &[u32]| {
            map.owning_under(root, 700, owners.iter().copied())
                .map(|c| {
                    (
                        c.id.clone(),
                        c.pod.as_ref().and_then(|p| p.container.clone()),
                    )
                })
        };
        let named = |i: usize, c: &str| Some((ids[i].clone(), Some(c.to_owned())));
        // The sidecar's socket is the sidecar's, though discovery never
        // listed its process.
        assert_eq!(owned(&[20]), named(2, "sidecar"));
        assert_eq!(owned(&[10]), named(1, "app"));
        // No owner, an owner gone, or the sandbox: the namespace's name.
        assert_eq!(owned(&[]), named(1, "app"));
        assert_eq!(owned(&[99]), named(1, "app"));
        assert_eq!(owned(&[5]), named(1, "app"));
        // A namespace no container holds (the host's): a container on the
        // host's network is named by its owner's cgroup; a host process, an
        // owner gone, or a sandbox leave it unnamed.
        let host = |owners: &[u32]| {
            map.owning_under(root, 800, owners.iter().copied())
                .map(|c| c.pod.as_ref().and_then(|p| p.container.clone()))
        };
        assert_eq!(host(&[20]), Some(Some("sidecar".into())));
        let sshd = root.join("proc/30");
        std::fs::create_dir_all(&sshd).expect("mkdir");
        std::fs::write(sshd.join("cgroup"), "0::/system.slice/ssh.service\n").expect("cgroup");
        for owners in [&[30][..], &[99], &[5], &[]] {
            assert_eq!(host(owners), None, "{owners:?}");
        }
        // Many flags of one process: its cgroup is read once.
        let mut namer = Namer {
            root,
            ..map.namer()
        };
        let side = namer.owning(800, [20].into_iter()).expect("sidecar");
        std::fs::remove_file(root.join("proc/20/cgroup")).expect("rm");
        assert_eq!(namer.owning(800, [20].into_iter()), Some(side));
        assert_eq!(map.owning_under(root, 800, [20].into_iter()), None);
    }

    #[test]
    fn short_names() {
        let mut c = Container {
            id: ID.into(),
            runtime: Some(Runtime::Podman),
            name: None,
            pod: None,
        };
        assert_eq!(c.short(), "podman:3f4e9a1c0b7d");
        c.name = Some("web".into());
        assert_eq!(c.short(), "podman:web");
        c.runtime = Some(Runtime::Containerd);
        c.pod = Some(Pod {
            namespace: "shop".into(),
            name: "cart-5d9".into(),
            container: Some("app".into()),
        });
        assert_eq!(c.short(), "containerd:shop/cart-5d9/app");
        let json = serde_json::to_value(&c).expect("json");
        assert_eq!(json["runtime"], "containerd");
        assert_eq!(json["pod"]["namespace"], "shop");
    }
}
