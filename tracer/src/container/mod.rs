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
//! sandbox's `pause` process only when nothing else runs there).
pub mod bundle;
mod resolve;

use std::{collections::HashMap, sync::Arc};

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

impl ContainerMap {
    /// The container of namespace `netns`, if one was found.
    pub fn get(&self, netns: u32) -> Option<&Arc<Container>> {
        if netns == 0 {
            return None;
        }
        self.0.get(&netns)
    }

    /// The container behind a socket of namespace `netns` owned by `pids`.
    pub fn owning(
        &self,
        netns: u32,
        _pids: impl Iterator<Item = u32>,
    ) -> Option<&Arc<Container>> {
        self.get(netns)
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
