//! The image's smoke test: the agent run from the image exactly as the
//! DaemonSet runs it, then checked from the host. The container gets what
//! the pod gets ([`Pod::podman_flags`]: its user and fsGroup, its
//! capabilities and nothing else, no_new_privs, a read-only root, the
//! node's network and pids, its volumes and limits; never `--privileged`)
//! and the manifest's own args, with two changes: `--listen` on a port of
//! our own on 127.0.0.1, and `--close-wait-threshold 1s`. The Secret its
//! `--web-config` reads is made here ([`web`]), so the checks talk TLS with
//! basic auth, as Prometheus does.
//!
//! Checks: the binary's file capabilities, the process's ids,
//! capabilities, no_new_privs, seccomp and read-only root, its namespaces,
//! `/healthz` and `/metrics` (and a 401 without credentials), events flow
//! and a CLOSE_WAIT leak named by pid and fd ([`traffic`]). The container,
//! named after this process, and the leaking server are removed at the
//! end, failed or not.
use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    pod::{Pod, Source},
    podman::podman,
    process, traffic,
    web::{self, Client},
};
use crate::cmd;

/// podman's rlimits fail without CAP_SYS_RESOURCE: ask for what we have.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// Run `image` under the DaemonSet's security context and check it; prints
/// a pass/fail table and fails when any check does.
pub fn smoke(image: &str) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "the image smoke test runs podman as root: run it as root (sudo -E cargo xtask image)"
        );
    }
    let root = cmd::workspace_root();
    let work = root.join("target/image");
    let pod = Pod::read(&root.join("deploy/kubernetes/tracer.yaml"))?;
    let port = free_port()?;
    let agent = web_setup(&pod, port, &work.join("secrets"))?;
    let flags = pod.podman_flags(&work.join("hostpath"), &work.join("secrets"))?;
    let mut t = Table::default();

    t.check("image: file capabilities = the manifest's add", || {
        let caps = process::file_caps(image)?;
        process::same(&caps, &pod.caps, "the binary's file capabilities")?;
        Ok(format!("cap_{}=ep", caps.join(",cap_").to_lowercase()))
    });

    let container = Container {
        name: format!("tracer-image-smoke-{}", std::process::id()),
    };
    let mut args: Vec<String> = ["--runtime", "runc", "run", "--detach", "--name"]
        .map(str::to_owned)
        .into();
    args.push(container.name.clone());
    args.extend(ULIMITS.map(str::to_owned));
    args.extend(flags.iter().cloned());
    args.push(image.to_owned());
    args.extend(agent_args(&pod.args, port));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let _ = podman(&["rm", "--force", "--time", "0", &container.name]);
    let pid = cmd::run("podman", &argv).and_then(|()| container.wait_healthy(&agent));
    t.record("the agent starts as the pod runs it", &pid, |p| {
        format!(
            "pid {p}: {}; args {}",
            flags.join(" "),
            agent_args(&pod.args, port).join(" ")
        )
    });
    let Ok(pid) = pid else {
        return t.finish(&container);
    };

    t.check("runs as the pod's user, group and fsGroup", || {
        let status = process::proc_status(pid)?;
        let (uid, gid) = (
            process::field(&status, "Uid")?,
            process::field(&status, "Gid")?,
        );
        let groups = process::field(&status, "Groups")?;
        let all = |ids: &str, want: u32| ids.split_whitespace().all(|i| i == want.to_string());
        let fs_group_ok = pod
            .fs_group
            .is_none_or(|g| groups.split_whitespace().any(|i| i == g.to_string()));
        if !all(&uid, pod.user) || !all(&gid, pod.group) || !fs_group_ok {
            bail!("Uid {uid}, Gid {gid}, Groups {groups}");
        }
        Ok(format!(
            "uid {}, gid {}, groups {groups}",
            pod.user, pod.group
        ))
    });
    t.check("holds exactly the manifest's capabilities", || {
        let status = process::proc_status(pid)?;
        let eff = process::cap_names(&process::field(&status, "CapEff")?)?;
        let bnd = process::cap_names(&process::field(&status, "CapBnd")?)?;
        process::same(&eff, &pod.caps, "CapEff")?;
        process::same(&bnd, &pod.caps, "CapBnd")?;
        // exec of a file with file capabilities clears the ambient set: 0
        // here means they came from the binary, as in a pod (Kubernetes
        // sets no ambient capabilities; podman does for a non-root user).
        let amb = process::field(&status, "CapAmb")?;
        if !process::cap_names(&amb)?.is_empty() {
            bail!("CapAmb {amb}: the capabilities are not the binary's file capabilities");
        }
        Ok(format!("CapEff = CapBnd = {}; CapAmb 0", eff.join(",")))
    });
    t.check("no_new_privs; seccomp as the manifest says", || {
        let status = process::proc_status(pid)?;
        let nnp = process::field(&status, "NoNewPrivs")?;
        let seccomp = process::field(&status, "Seccomp")?;
        let want_nnp = if pod.no_new_privs { "1" } else { "0" };
        let want_seccomp = if pod.seccomp == "Unconfined" {
            "0"
        } else {
            "2"
        };
        if nnp != want_nnp || seccomp != want_seccomp {
            bail!("NoNewPrivs {nnp}, Seccomp {seccomp}");
        }
        Ok(format!(
            "NoNewPrivs {nnp}, Seccomp {seccomp} (seccompProfile {})",
            pod.seccomp
        ))
    });
    t.check("root filesystem read-only", || {
        let ro = process::root_read_only(pid)?;
        if ro != pod.read_only_root {
            bail!(
                "/ mounted read-only: {ro}, readOnlyRootFilesystem: {}",
                pod.read_only_root
            );
        }
        Ok(format!("/ mounted {}", if ro { "ro" } else { "rw" }))
    });
    t.check("the node's network and pid namespaces", || {
        for ns in ["net", "pid"] {
            let own = std::fs::read_link(format!("/proc/self/ns/{ns}"))?;
            let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))?;
            if own != its {
                bail!(
                    "its {ns} namespace is {}, the host's {}",
                    its.display(),
                    own.display()
                );
            }
        }
        Ok("the host's net and pid namespaces".to_owned())
    });
    t.check("/healthz and /metrics answer", || {
        let metrics = agent.get("/metrics")?;
        let families = metrics
            .lines()
            .filter(|l| l.starts_with("# TYPE tracer_"))
            .count();
        if families == 0 {
            bail!("no tracer_ metric in /metrics");
        }
        let how = if agent.is_tls() {
            "over TLS with basic auth"
        } else {
            "over plain HTTP"
        };
        Ok(format!(
            "200 and 200 {how}: {families} tracer_ metric families"
        ))
    });
    if agent.is_tls() {
        t.check("without credentials: 401", || {
            match agent.status_without_credentials("/metrics")? {
                401 => Ok("GET /metrics with no credentials: 401".to_owned()),
                other => bail!("GET /metrics with no credentials: {other}"),
            }
        });
    }
    t.check("events flow", || traffic::events_flow(&agent));
    t.check("a CLOSE_WAIT leak is named: pid and fds", || {
        traffic::leak_named(&agent)
    });
    t.finish(&container)
}

/// The manifest's args with `--listen 127.0.0.1:PORT` and a 1 s
/// CLOSE_WAIT threshold.
fn agent_args(manifest: &[String], port: u16) -> Vec<String> {
    let mut args = Vec::new();
    let mut it = manifest.iter();
    while let Some(a) = it.next() {
        args.push(a.clone());
        if a == "--listen" {
            it.next();
            args.push(format!("127.0.0.1:{port}"));
        }
    }
    if !args.iter().any(|a| a == "--listen") {
        args.extend(["--listen".to_owned(), format!("127.0.0.1:{port}")]);
    }
    args.extend(["--close-wait-threshold", "1s"].map(str::to_owned));
    args
}

/// With `--web-config` in the args, fill the Secret mounted where it
/// points (under `secrets/NAME`) and talk TLS with basic auth; else plain.
fn web_setup(pod: &Pod, port: u16, secrets: &Path) -> anyhow::Result<Client> {
    let Some(at) = pod.args.iter().position(|a| a == "--web-config") else {
        return Ok(Client::plain(port));
    };
    let config = pod
        .args
        .get(at + 1)
        .context("--web-config without a file")?;
    let config = Path::new(config);
    let (dir, file) = (config.parent(), config.file_name());
    let (Some(dir), Some(file)) = (dir, file.and_then(|f| f.to_str())) else {
        bail!(
            "--web-config {}: not a file in a directory",
            config.display()
        );
    };
    let secret = pod.mounts.iter().find_map(|m| match &m.source {
        Source::Secret { name, mode } if Path::new(&m.mount_path) == dir => Some((name, *mode)),
        _ => None,
    });
    let Some((name, mode)) = secret else {
        bail!(
            "--web-config {}: no Secret is mounted at {}",
            config.display(),
            dir.display()
        );
    };
    let ca = web::make_secret(&secrets.join(name), file, mode, pod.fs_group)?;
    Ok(Client::tls(port, &ca))
}

/// The smoke test's container, removed on drop.
struct Container {
    name: String,
}

impl Container {
    /// Its pid once `/healthz` answers; its logs when it exits instead.
    fn wait_healthy(&self, agent: &Client) -> anyhow::Result<u32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = podman(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.Pid}}",
                &self.name,
            ])?;
            let (status, pid) = state.trim().split_once(' ').unwrap_or((state.trim(), "0"));
            if status != "running" {
                bail!("the container is {status}: {}", self.logs());
            }
            if agent.get("/healthz").is_ok() {
                return pid
                    .parse()
                    .with_context(|| format!("podman inspect: {state:?}"));
            }
            if Instant::now() > deadline {
                bail!("/healthz did not answer within 60 s: {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn logs(&self) -> String {
        let out = Command::new("podman").args(["logs", &self.name]).output();
        out.map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_owned()
        })
        .unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// The pass/fail table.
#[derive(Default)]
struct Table {
    rows: Vec<(String, bool, String)>,
}

impl Table {
    fn check(&mut self, what: &str, f: impl FnOnce() -> anyhow::Result<String>) {
        let r = f();
        self.record(what, &r, String::clone);
    }

    fn record<T>(&mut self, what: &str, r: &anyhow::Result<T>, ok: impl FnOnce(&T) -> String) {
        let (pass, detail) = match r {
            Ok(v) => (true, ok(v)),
            Err(e) => (false, format!("{e:#}")),
        };
        eprintln!(
            "xtask: image smoke: {} {what}",
            if pass { "PASS" } else { "FAIL" }
        );
        self.rows.push((what.to_owned(), pass, detail));
    }

    /// Print the table, remove the container, fail if a check failed.
    fn finish(self, container: &Container) -> anyhow::Result<()> {
        let logs = container.logs();
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        println!("\n{:width$}  result  detail", "check");
        for (what, pass, detail) in &self.rows {
            let result = if *pass { "PASS" } else { "FAIL" };
            println!("{what:width$}  {result:6}  {detail}");
        }
        let failed = self.rows.iter().filter(|r| !r.1).count();
        if failed > 0 {
            println!("\nthe agent's output:\n{logs}");
            bail!(
                "image smoke test: {failed} of {} checks failed",
                self.rows.len()
            );
        }
        println!("\nimage smoke test: all {} checks passed", self.rows.len());
        Ok(())
    }
}

/// A port nothing listens on now, for the agent.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifests_args_with_our_port_and_threshold() {
        let manifest =
            ["run", "--listen", "0.0.0.0:9077", "--web-config", "/w.yml"].map(str::to_owned);
        assert_eq!(
            agent_args(&manifest, 4242).join(" "),
            "run --listen 127.0.0.1:4242 --web-config /w.yml --close-wait-threshold 1s"
        );
        assert_eq!(
            agent_args(&["run".to_owned()], 4242).join(" "),
            "run --listen 127.0.0.1:4242 --close-wait-threshold 1s"
        );
    }
}
