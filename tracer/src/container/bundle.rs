//! What the runtimes record about a container on the host, read once per
//! container:
//!
//! | runtime | OCI bundle `config.json` | name |
//! |---|---|---|
//! | containerd (Kubernetes, docker) | `/run/containerd/io.containerd.runtime.v2.task/<ns>/<id>/` | pod annotations; docker: `/var/lib/docker/containers/<id>/config.v2.json` |
//! | CRI-O | `/run/containers/storage/overlay-containers/<id>/userdata/` | `io.kubernetes.cri-o.Name` |
//! | podman | `/var/lib/containers/storage/overlay-containers/<id>/userdata/` | `/var/lib/containers/storage/overlay-containers/containers.json` |
//!
//! The pod comes from the CRI annotations containerd writes
//! (`io.kubernetes.cri.sandbox-name`, `-namespace`, `container-name`) or
//! CRI-O's (`io.kubernetes.pod.name`, `.namespace`, `io.kubernetes.container.name`).
//! All paths are under a root (`/`, or a test's directory).
use std::path::Path;

use serde_json::{Map, Value};

use super::{Container, Pod, Runtime};

/// Where OCI bundles live, relative to the root, with the runtime each
/// place implies (containerd's `moby` namespace is docker's).
const TASK_DIRS: [&str; 2] = [
    "run/containerd/io.containerd.runtime.v2.task",
    "run/containerd/io.containerd.runtime.v1.linux",
];
/// containers/storage: CRI-O keeps bundles under the run root, podman
/// under the graph root.
const STORAGE_ROOTS: [&str; 3] = [
    "run/containers/storage/overlay-containers",
    "var/run/containers/storage/overlay-containers",
    "var/lib/containers/storage/overlay-containers",
];
const STORAGE_INDEX: &str = "var/lib/containers/storage/overlay-containers/containers.json";
const DOCKER_CONFIG: &str = "var/lib/docker/containers";

/// A container found, and whether it is a pod's sandbox (`pause`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// What was found.
    pub container: Container,
    /// The CRI sandbox: a pod's infrastructure container, not an application.
    pub sandbox: bool,
}

/// Name the container `id` from what its runtime recorded under `root`.
/// `hint`: the runtime the cgroup path named. Never fails: what cannot be
/// read stays unnamed.
pub fn find(root: &Path, id: &str, hint: Option<Runtime>) -> Found {
    let mut runtime = hint;
    let mut annotations = Map::new();
    let storage_first = matches!(hint, Some(Runtime::Podman | Runtime::CriO));
    let mut places: Vec<(std::path::PathBuf, Option<Runtime>)> = Vec::new();
    let storage = STORAGE_ROOTS
        .iter()
        .map(|d| (root.join(d).join(id).join("userdata/config.json"), None));
    let tasks = TASK_DIRS.iter().flat_map(|d| {
        let dir = root.join(d);
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(move |ns| {
                let rt = if ns.file_name() == "moby" {
                    Runtime::Docker
                } else {
                    Runtime::Containerd
                };
                (ns.path().join(id).join("config.json"), Some(rt))
            })
    });
    if storage_first {
        places.extend(storage);
    } else {
        places.extend(tasks.collect::<Vec<_>>());
        places.extend(storage);
    }
    for (path, rt) in places {
        if let Some(a) = read_annotations(&path) {
            annotations = a;
            runtime = runtime
                .or(rt)
                .or_else(|| Some(storage_runtime(&annotations)));
            break;
        }
    }
    let mut found = from_annotations(id, runtime, &annotations);
    if found.container.name.is_none() {
        found.container.name = match runtime {
            Some(Runtime::Docker) => docker_name(root, id),
            Some(Runtime::Podman | Runtime::CriO) => storage_name(root, id),
            _ => None,
        };
    }
    found
}

/// The container named by its bundle's annotations (pure).
pub fn from_annotations(id: &str, runtime: Option<Runtime>, a: &Map<String, Value>) -> Found {
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| a.get(*k).and_then(Value::as_str))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let pod_name = get(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]);
    let pod_ns = get(&[
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.pod.namespace",
    ]);
    let kind = get(&[
        "io.kubernetes.cri.container-type",
        "io.kubernetes.cri-o.ContainerType",
    ]);
    let sandbox = kind.as_deref() == Some("sandbox");
    let pod_container = get(&[
        "io.kubernetes.cri.container-name",
        "io.kubernetes.container.name",
    ])
    .filter(|c| !sandbox && c != "POD");
    let pod = pod_name.map(|name| Pod {
        namespace: pod_ns.unwrap_or_default(),
        name,
        container: pod_container,
    });
    // CRI-O and podman record a name of their own.
    let name = get(&["io.kubernetes.cri-o.Name", "io.podman.annotations.name"]);
    let runtime = match runtime {
        None if a.contains_key("io.kubernetes.cri.container-type") => Some(Runtime::Containerd),
        r => r,
    };
    Found {
        container: Container {
            id: id.to_owned(),
            runtime,
            name,
            pod,
        },
        sandbox,
    }
}

/// A bundle under containers/storage: podman's when it says so (podman
/// also writes some `io.kubernetes.cri-o.*` keys), else CRI-O's if it
/// says so, else podman's.
fn storage_runtime(a: &Map<String, Value>) -> Runtime {
    let podman = a.get("io.container.manager").and_then(Value::as_str) == Some("libpod");
    if !podman && a.keys().any(|k| k.starts_with("io.kubernetes.cri-o.")) {
        Runtime::CriO
    } else {
        Runtime::Podman
    }
}

/// The `annotations` object of an OCI bundle's `config.json`.
fn read_annotations(path: &Path) -> Option<Map<String, Value>> {
    let text = std::fs::read(path).ok()?;
    let mut v: Value = serde_json::from_slice(&text).ok()?;
    match v.get_mut("annotations").map(Value::take) {
        Some(Value::Object(m)) => Some(m),
        _ => Some(Map::new()),
    }
}

/// podman's and CRI-O's name for `id`: containers/storage's index,
/// `[{"id": ..., "names": [...]}, ...]`.
fn storage_name(root: &Path, id: &str) -> Option<String> {
    let text = std::fs::read(root.join(STORAGE_INDEX)).ok()?;
    let index: Vec<Value> = serde_json::from_slice(&text).ok()?;
    index
        .iter()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))?
        .get("names")?
        .get(0)?
        .as_str()
        .map(str::to_owned)
}

/// docker's name for `id` (`"Name": "/web"` in `config.v2.json`).
fn docker_name(root: &Path, id: &str) -> Option<String> {
    let path = root.join(DOCKER_CONFIG).join(id).join("config.v2.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let name = v.get("Name")?.as_str()?;
    Some(name.trim_start_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const ID: &str = "3f4e9a1c0b7d2e8f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";

    fn map(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect()
    }

    #[test]
    fn containerd_and_crio_annotations_name_the_pod() {
        let containerd = map(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.sandbox-name", "cart-5d9"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ("io.kubernetes.cri.container-name", "app"),
        ]);
        let f = from_annotations(ID, None, &containerd);
        assert!(!f.sandbox);
        assert_eq!(f.container.runtime, Some(Runtime::Containerd));
        let pod = f.container.pod.expect("pod");
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("shop", "cart-5d9")
        );
        assert_eq!(pod.container.as_deref(), Some("app"));

        let crio_sandbox = map(&[
            ("io.kubernetes.cri-o.ContainerType", "sandbox"),
            ("io.kubernetes.pod.name", "cart-5d9"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.container.name", "POD"),
            ("io.kubernetes.cri-o.Name", "k8s_POD_cart-5d9_shop_0"),
        ]);
        let f = from_annotations(ID, Some(Runtime::CriO), &crio_sandbox);
        assert!(f.sandbox);
        assert_eq!(f.container.pod.expect("pod").container, None);
        assert_eq!(f.container.name.as_deref(), Some("k8s_POD_cart-5d9_shop_0"));

        let none = from_annotations(ID, Some(Runtime::Podman), &Map::new());
        assert_eq!(none.container.pod, None);
        assert_eq!(none.container.name, None);
    }

    #[test]
    fn bundles_and_names_are_found_on_disk() {
        let tmp = tempfile::Builder::new()
            .prefix("tracer-bundle-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path();
        let user = root.join(STORAGE_ROOTS[2]).join(ID).join("userdata");
        std::fs::create_dir_all(&user).expect("mkdir");
        std::fs::write(
            user.join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.container.manager":"libpod",
               "io.kubernetes.cri-o.TTY":"false",
               "io.kubernetes.cri.sandbox-name":"p","io.kubernetes.cri.sandbox-namespace":"n",
               "io.kubernetes.cri.container-name":"c"}}"#,
        )
        .expect("config.json");
        let index = root.join(STORAGE_INDEX);
        std::fs::create_dir_all(index.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &index,
            format!(r#"[{{"id":"{ID}","names":["leaky"],"image":"x"}}]"#),
        )
        .expect("containers.json");
        let f = find(root, ID, None);
        assert_eq!(f.container.name.as_deref(), Some("leaky"));
        assert_eq!(f.container.runtime, Some(Runtime::Podman));
        assert_eq!(f.container.pod.expect("pod").name, "p");

        let docker = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let task = root.join(TASK_DIRS[0]).join("moby").join(docker);
        std::fs::create_dir_all(&task).expect("mkdir");
        std::fs::write(task.join("config.json"), r#"{"annotations":{}}"#).expect("bundle");
        let cfg = root.join(DOCKER_CONFIG).join(docker);
        std::fs::create_dir_all(&cfg).expect("mkdir");
        std::fs::write(cfg.join("config.v2.json"), r#"{"Name":"/web"}"#).expect("cfg");
        let f = find(root, docker, None);
        assert_eq!(f.container.runtime, Some(Runtime::Docker));
        assert_eq!(f.container.name.as_deref(), Some("web"));

        let nothing = find(root, &ID.replace('3', "4"), None);
        assert_eq!(nothing.container.runtime, None);
    }
}
