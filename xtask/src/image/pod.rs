//! What the DaemonSet gives its container, read from
//! deploy/kubernetes/tracer.yaml, and the `podman run` flags that give the
//! same to a container here.
//!
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize as _;

mod k8s;

/// The pod's security context and host access.
#[derive(Debug, PartialEq, Eq)]
pub struct Pod {
    /// `runAsUser`.
    pub user: u32,
    /// `runAsGroup`.
    pub group: u32,
    /// `capabilities.add`, as written (`BPF`, `SYS_ADMIN`).
    pub caps: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem: true`.
    pub read_only_root: bool,
    /// `hostNetwork: true`.
    pub host_network: bool,
    /// `hostPID: true`.
    pub host_pid: bool,
    /// `seccompProfile.type`.
    pub seccomp: String,
    /// `appArmorProfile.type`.
    pub apparmor: String,
    /// `fsGroup`: a supplementary group, owner of the Secrets' files.
    pub fs_group: Option<u32>,
    /// The container's `args`.
    pub args: Vec<String>,
    /// Each volume mounted into the container.
    pub mounts: Vec<Mount>,
    /// `resources.limits.memory`, as written (`512Mi`).
    pub memory_limit: String,
    /// `resources.limits.cpu`, as written (`500m`).
    pub cpu_limit: String,
}

/// One volume, mounted.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted.
    pub source: Source,
    /// Where the container sees it.
    pub mount_path: String,
    /// `readOnly: true`.
    pub read_only: bool,
}

impl Pod {
    /// Read the manifest at `path`.
    pub fn read(path: &Path) -> anyhow::Result<Pod> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Pod::parse(&text).with_context(|| format!("reading the DaemonSet in {}", path.display()))
    }

    /// The DaemonSet's pod, from the manifest's text (its first
    /// `kind: DaemonSet` document, read with a YAML parser). A field the
    /// smoke test needs and the manifest lacks is an error naming it, so a
    /// reshaped manifest fails loudly rather than being smoke-tested with
    /// less than the pod gets.
    pub fn parse(text: &str) -> anyhow::Result<Pod> {
        let mut found = None;
        for doc in serde_norway::Deserializer::from_str(text) {
            let value =
                serde_norway::Value::deserialize(doc).context("the manifest is not YAML")?;
            if value.get("kind").and_then(|k| k.as_str()) == Some("DaemonSet") {
                found = Some(value);
                break;
            }
        }
        let ds: k8s::DaemonSet = serde_norway::from_value(found.context("no kind: DaemonSet")?)
            .context("the DaemonSet's spec")?;
        let spec = ds.spec.template.spec;
        let [c] = &spec.containers[..] else {
            bail!("the smoke test expects one container in the pod");
        };
        let (pod_sc, sc) = (&spec.security_context, &c.security_context);
        if sc.privileged == Some(true) {
            bail!("the manifest asks for a privileged container");
        }
        let caps = sc.capabilities.as_ref().context("no capabilities block")?;
        if caps.drop.as_deref() != Some(&["ALL".to_owned()][..]) {
            bail!("capabilities.drop is not [ALL]");
        }
        // A container's own setting wins over the pod's, as in Kubernetes.
        let profile = |own: &Option<k8s::Profile>, pod: &Option<k8s::Profile>, what: &str| {
            own.as_ref()
                .or(pod.as_ref())
                .map(|p| p.kind.clone())
                .with_context(|| format!("no {what}.type"))
        };
        let limits = c.resources.limits.as_ref().context("no resources.limits")?;
        let mut sources: Vec<(String, Source)> = Vec::new();
        for v in &spec.volumes {
            let source = match (&v.host_path, &v.secret) {
                (Some(h), _) => Source::HostPath(h.path.clone()),
                (None, Some(s)) => {
                    let mode = s.default_mode.as_deref().unwrap_or("0644");
                    Source::Secret {
                        name: s.secret_name.clone(),
                        mode: u32::from_str_radix(mode, 8)
                            .with_context(|| format!("volume {}: defaultMode {mode}", v.name))?,
                    }
                }
                (None, None) => bail!(
                    "volume {}: the smoke test knows hostPath and secret volumes",
                    v.name
                ),
            };
            sources.push((v.name.clone(), source));
        }
        let mut mounts = Vec::new();
        for m in &c.volume_mounts {
            let at = sources
                .iter()
                .position(|(n, _)| *n == m.name)
                .with_context(|| format!("volumeMount {} names no volume", m.name))?;
            mounts.push(Mount {
                source: sources.remove(at).1,
                mount_path: m.mount_path.clone(),
                read_only: m.read_only,
            });
        }
        Ok(Pod {
            user: sc
                .run_as_user
                .or(pod_sc.run_as_user)
                .context("no runAsUser")?,
            group: sc
                .run_as_group
                .or(pod_sc.run_as_group)
                .context("no runAsGroup")?,
            caps: caps.add.clone().context("no capabilities.add")?,
            no_new_privs: !sc
                .allow_privilege_escalation
                .context("no allowPrivilegeEscalation")?,
            read_only_root: sc
                .read_only_root_filesystem
                .context("no readOnlyRootFilesystem")?,
            host_network: spec.host_network,
            host_pid: spec.host_pid,
            seccomp: profile(
                &sc.seccomp_profile,
                &pod_sc.seccomp_profile,
                "seccompProfile",
            )?,
            apparmor: profile(
                &sc.app_armor_profile,
                &pod_sc.app_armor_profile,
                "appArmorProfile",
            )?,
            fs_group: pod_sc.fs_group,
            args: c.args.clone().context("no args")?,
            mounts,
            memory_limit: limits
                .memory
                .clone()
                .context("no resources.limits.memory")?,
            cpu_limit: limits.cpu.clone().context("no resources.limits.cpu")?,
        })
    }

    /// `podman run` flags for this pod's container (not its args).
    /// `volume_dir` holds the empty directories that stand in for hostPaths
    /// this machine lacks (the kubelet would create them:
    /// `DirectoryOrCreate`); `secrets/NAME` must hold Secret NAME's files.
    pub fn podman_flags(&self, volume_dir: &Path, secrets: &Path) -> anyhow::Result<Vec<String>> {
        if !self.host_network {
            // The smoke test never uses podman's default network (NAT rules
            // for the whole machine), and the agent is meant for the node's.
            bail!("the DaemonSet is not hostNetwork: the image smoke test expects it");
        }
        let mut f: Vec<String> = [
            "--network",
            "host",
            "--user",
            &format!("{}:{}", self.user, self.group),
            "--cap-drop",
            "ALL",
        ]
        .map(str::to_owned)
        .into();
        for c in &self.caps {
            f.extend(["--cap-add".to_owned(), c.clone()]);
        }
        if self.host_pid {
            f.extend(["--pid".to_owned(), "host".to_owned()]);
        }
        if self.no_new_privs {
            f.extend(["--security-opt".to_owned(), "no-new-privileges".to_owned()]);
        }
        if self.read_only_root {
            // Kubernetes mounts no tmpfs on a read-only root; podman would.
            f.extend(["--read-only", "--read-only-tmpfs=false"].map(str::to_owned));
        }
        for (opt, profile) in [("seccomp", &self.seccomp), ("apparmor", &self.apparmor)] {
            match profile.as_str() {
                "Unconfined" => {
                    f.extend(["--security-opt".to_owned(), format!("{opt}=unconfined")])
                }
                "RuntimeDefault" => {}
                other => bail!(
                    "{opt} profile {other}: the smoke test knows Unconfined and RuntimeDefault"
                ),
            }
        }
        f.extend(["--memory".to_owned(), podman_memory(&self.memory_limit)?]);
        f.extend(["--cpus".to_owned(), podman_cpus(&self.cpu_limit)?]);
        if let Some(g) = self.fs_group {
            f.extend(["--group-add".to_owned(), g.to_string()]);
        }
        for m in &self.mounts {
            let source = match &m.source {
                Source::HostPath(p) if Path::new(p).is_dir() => PathBuf::from(p),
                Source::HostPath(p) => {
                    let empty = volume_dir.join(p.trim_start_matches('/').replace('/', "_"));
                    std::fs::create_dir_all(&empty)
                        .with_context(|| format!("creating {}", empty.display()))?;
                    empty
                }
                Source::Secret { name, .. } => {
                    let dir = secrets.join(name);
                    if !dir.is_dir() {
                        bail!(
                            "the smoke test has no files for Secret {name} ({})",
                            dir.display()
                        );
                    }
                    dir
                }
            };
            let ro = if m.read_only { ":ro" } else { "" };
            f.extend([
                "--volume".to_owned(),
                format!("{}:{}{ro}", source.display(), m.mount_path),
            ]);
        }
        Ok(f)
    }
}

/// Where a volume's files come from.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// A path of the node (`hostPath`).
    HostPath(String),
    /// A Secret, its files with mode `mode` (`defaultMode`).
    Secret {
        /// `secretName`.
        name: String,
        /// `defaultMode`.
        mode: u32,
    },
}

/// `512Mi` -> `512m` (podman's m is MiB).
fn podman_memory(k8s: &str) -> anyhow::Result<String> {
    for (suffix, unit) in [("Gi", "g"), ("Mi", "m"), ("Ki", "k")] {
        if let Some(n) = k8s
            .strip_suffix(suffix)
            .filter(|n| n.parse::<u64>().is_ok())
        {
            return Ok(format!("{n}{unit}"));
        }
    }
    bail!("memory limit {k8s:?}: expected Ki, Mi or Gi")
}

/// `500m` -> `0.5`, `2` -> `2`.
fn podman_cpus(k8s: &str) -> anyhow::Result<String> {
    if let Some(milli) = k8s.strip_suffix('m').and_then(|n| n.parse::<u32>().ok()) {
        return Ok(format!("{}", f64::from(milli) / 1000.0));
    }
    k8s.parse::<f64>()
        .map(|c| c.to_string())
        .with_context(|| format!("cpu limit {k8s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = include_str!("../../../deploy/kubernetes/tracer.yaml");

    #[test]
    fn reads_the_daemonsets_security_context() {
        let pod = Pod::parse(MANIFEST).unwrap();
        assert_eq!((pod.user, pod.group), (65534, 65534));
        assert!(pod.caps.contains(&"BPF".to_owned()), "{:?}", pod.caps);
        assert!(pod.caps.contains(&"PERFMON".to_owned()), "{:?}", pod.caps);
        assert!(pod.no_new_privs && pod.host_network && pod.host_pid);
        assert!(pod.read_only_root);
        assert!(pod.mounts.iter().any(|m| m.source
            == Source::HostPath("/run/containers/storage".to_owned())
            && m.mount_path == "/run/containers/storage"
            && m.read_only));
        assert!(
            pod.args.first().is_some_and(|a| a == "run"),
            "{:?}",
            pod.args
        );
        assert!(pod.args.contains(&"--listen".to_owned()), "{:?}", pod.args);
        // `defaultMode: 0440` is octal to Kubernetes.
        assert!(pod.mounts.iter().any(|m| m.source
            == Source::Secret {
                name: "tracer-web".to_owned(),
                mode: 0o440
            }));
        assert_eq!(pod.fs_group, Some(65534));
        assert_eq!(
            (pod.seccomp.as_str(), pod.apparmor.as_str()),
            ("Unconfined", "Unconfined")
        );
    }

    #[test]
    fn turns_a_pod_into_podman_flags() {
        let pod = Pod::parse(MANIFEST).unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-pod-{}", std::process::id()));
        for m in &pod.mounts {
            if let Source::Secret { name, .. } = &m.source {
                std::fs::create_dir_all(dir.join(name)).unwrap();
            }
        }
        let f = pod.podman_flags(&dir, &dir).unwrap().join(" ");
        let _ = std::fs::remove_dir_all(&dir);
        for want in [
            "--network host",
            "--pid host",
            "--user 65534:65534",
            "--cap-drop ALL",
            "--cap-add BPF",
            "--security-opt no-new-privileges",
            "--read-only --read-only-tmpfs=false",
            "--memory 512m",
            "--cpus 0.5",
        ] {
            assert!(f.contains(want), "{want} in {f}");
        }
        assert!(!f.contains("privileged"), "{f}");
    }

    #[test]
    fn limits_and_a_reshaped_manifest() {
        assert_eq!(podman_memory("1Gi").unwrap(), "1g");
        assert_eq!(podman_cpus("250m").unwrap(), "0.25");
        assert_eq!(podman_cpus("2").unwrap(), "2");
        assert!(podman_memory("512M").is_err());
        let privileged = MANIFEST.replace(
            "allowPrivilegeEscalation: false",
            "allowPrivilegeEscalation: false\n            privileged: true",
        );
        let e = format!("{:#}", Pod::parse(&privileged).unwrap_err());
        assert!(e.contains("privileged"), "{e}");
        let no_limits = MANIFEST.replace("limits:", "limitz:");
        let e = format!("{:#}", Pod::parse(&no_limits).unwrap_err());
        assert!(e.contains("resources.limits"), "{e}");
    }
}
