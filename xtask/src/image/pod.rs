//! What the DaemonSet gives its container, read from
//! deploy/kubernetes/tracer.yaml, and the `podman run` flags that give the
//! same to a container here.
//!
//! A small reader for this one manifest's shape (keys by indentation, block
//! and flow lists), not a YAML parser: a key it cannot find is an error
//! naming the key, so a reshaped manifest fails loudly rather than being
//! smoke-tested with less than the pod gets.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

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

    /// The DaemonSet's pod, from the manifest's text.
    pub fn parse(text: &str) -> anyhow::Result<Pod> {
        let lines: Vec<&str> = text.lines().filter(|l| !is_comment(l)).collect();
        if value(&lines, "privileged").is_some_and(|v| v == "true") {
            bail!("the manifest asks for a privileged container");
        }
        let caps = block(&lines, "capabilities").context("no capabilities block")?;
        let volumes = block(&lines, "volumes").context("no volumes")?;
        let mounts = block(&lines, "volumeMounts").context("no volumeMounts")?;
        let limits = block(&lines, "limits").context("no resources.limits")?;
        let mut pod = Pod {
            user: number(&lines, "runAsUser")?,
            group: number(&lines, "runAsGroup")?,
            caps: list(&caps, "add").context("no capabilities.add")?,
            no_new_privs: flag(&lines, "allowPrivilegeEscalation")? == "false",
            read_only_root: flag(&lines, "readOnlyRootFilesystem")? == "true",
            host_network: flag(&lines, "hostNetwork")? == "true",
            host_pid: flag(&lines, "hostPID")? == "true",
            seccomp: flag(&block(&lines, "seccompProfile").unwrap_or_default(), "type")?,
            apparmor: flag(
                &block(&lines, "appArmorProfile").unwrap_or_default(),
                "type",
            )?,
            fs_group: value(&lines, "fsGroup")
                .map(|g| g.parse().with_context(|| format!("fsGroup: {g:?}")))
                .transpose()?,
            args: list(&lines, "args").context("no args")?,
            mounts: Vec::new(),
            memory_limit: flag(&limits, "memory")?,
            cpu_limit: flag(&limits, "cpu")?,
        };
        if list(&caps, "drop").as_deref() != Some(&["ALL".to_owned()][..]) {
            bail!("capabilities.drop is not [ALL]");
        }
        let mut sources = Vec::new();
        for v in items(&volumes) {
            let name = value(&v, "name").context("a volume without a name")?;
            let source = if let Some(path) = value(&v, "path") {
                Source::HostPath(path)
            } else if let Some(secret) = value(&v, "secretName") {
                let mode = value(&v, "defaultMode").unwrap_or_else(|| "0644".to_owned());
                Source::Secret {
                    name: secret,
                    mode: u32::from_str_radix(&mode, 8)
                        .with_context(|| format!("volume {name}: defaultMode {mode}"))?,
                }
            } else {
                bail!("volume {name}: the smoke test knows hostPath and secret volumes");
            };
            sources.push((name, source));
        }
        for m in items(&mounts) {
            let name = value(&m, "name").context("a volumeMount without a name")?;
            let at = sources
                .iter()
                .position(|(n, _)| *n == name)
                .with_context(|| format!("volumeMount {name} names no volume"))?;
            pod.mounts.push(Mount {
                source: sources.remove(at).1,
                mount_path: value(&m, "mountPath")
                    .with_context(|| format!("volumeMount {name} has no mountPath"))?,
                read_only: value(&m, "readOnly").is_some_and(|v| v == "true"),
            });
        }
        Ok(pod)
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

fn is_comment(l: &str) -> bool {
    let t = l.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start_matches([' ', '-']).len()
}

/// `key: value` on a line, without a trailing comment.
fn key_value<'a>(l: &'a str, key: &str) -> Option<&'a str> {
    let rest = l.trim_start_matches([' ', '-']).strip_prefix(key)?;
    let v = rest.strip_prefix(':')?;
    Some(v.split(" #").next().unwrap_or("").trim().trim_matches('"'))
}

/// The first `key: value` among `lines`.
fn value(lines: &[&str], key: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| key_value(l, key))
        .map(str::to_owned)
}

fn flag(lines: &[&str], key: &str) -> anyhow::Result<String> {
    value(lines, key).with_context(|| format!("no {key}"))
}

fn number(lines: &[&str], key: &str) -> anyhow::Result<u32> {
    let v = flag(lines, key)?;
    v.parse().with_context(|| format!("{key}: {v:?}"))
}

/// The lines under the first `key:` line, indented deeper than it.
fn block<'a>(lines: &[&'a str], key: &str) -> Option<Vec<&'a str>> {
    let at = lines
        .iter()
        .position(|l| key_value(l, key).is_some_and(str::is_empty))?;
    let depth = indent(lines[at]);
    Some(
        lines[at + 1..]
            .iter()
            .take_while(|l| indent(l) > depth)
            .copied()
            .collect(),
    )
}

/// `key: [a, b]` or `key:` followed by `- a` lines.
fn list(lines: &[&str], key: &str) -> Option<Vec<String>> {
    let at = lines.iter().position(|l| key_value(l, key).is_some())?;
    let inline = key_value(lines[at], key)?;
    if let Some(flow) = inline.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return Some(
            flow.split(',')
                .map(|s| s.trim().trim_matches('"').to_owned())
                .collect(),
        );
    }
    Some(
        lines[at + 1..]
            .iter()
            .take_while(|l| l.trim_start().starts_with("- "))
            .map(|l| {
                l.trim_start()[2..]
                    .split(" #")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .collect(),
    )
}

/// The items of a block list of mappings, each its own lines.
fn items<'a>(lines: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    for &l in lines {
        if l.trim_start().starts_with("- ") || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(item) = out.last_mut() {
            item.push(l);
        }
    }
    out
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
    fn flow_and_block_lists_and_limits() {
        let text = "a:\n  capabilities:\n    drop: [ALL]\n    add:\n      - BPF   # why\n      - PERFMON\n  other: 1\n";
        let lines: Vec<&str> = text.lines().collect();
        let caps = block(&lines, "capabilities").unwrap();
        assert_eq!(list(&caps, "add").unwrap(), ["BPF", "PERFMON"]);
        assert_eq!(list(&caps, "drop").unwrap(), ["ALL"]);
        assert_eq!(podman_memory("1Gi").unwrap(), "1g");
        assert_eq!(podman_cpus("250m").unwrap(), "0.25");
        assert_eq!(podman_cpus("2").unwrap(), "2");
        assert!(podman_memory("512M").is_err());
    }
}
