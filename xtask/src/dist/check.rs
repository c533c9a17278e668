//! `cargo xtask dist --check`: the packages, tried on this machine.
//!
//! 1. `systemd-analyze verify` on the unit (a copy whose ExecStart is the
//!    staged binary, so it resolves before anything is installed), and
//!    `systemd-analyze security --offline=yes`, whose exposure score must
//!    stay at or below [`MAX_EXPOSURE`];
//! 2. `dpkg -i` the .deb (refused when a tracer package is already
//!    installed: this check must not replace a real one);
//! 3. the installed files: `tracer --version`, each shell's completions,
//!    the gzipped man page, the conffile, and `verify` on the installed
//!    unit, man page included;
//! 4. the installed agent, run as the unit runs it (an unprivileged user,
//!    the unit's capabilities as bounding and ambient set, no_new_privs)
//!    with every key of the config example set, answers /metrics (curl);
//! 5. `dpkg --purge tracer`, also when a step failed;
//! 6. the unit under a real systemd, in a container ([`super::systemd`]):
//!    the sandboxing that only systemd applies (mount namespaces, seccomp
//!    filters), with the agent doing its whole job inside it;
//! 7. the .deb on Ubuntu 22.04 ([`super::ubuntu`]): installed into a
//!    minimal jammy root, whose glibc is older than the build machine's,
//!    and run there.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{Dist, SHELLS, deb, path_str, write};
use crate::cmd;

/// The highest `systemd-analyze security` exposure accepted, of 10: the
/// unit's is 2.4 with systemd 252 (docs/install.md); a change that loosens
/// it fails here.
pub const MAX_EXPOSURE: f64 = 2.4;

/// How long the installed agent may take to answer /metrics.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The unprivileged user the agent runs as in step 4, like DynamicUser=.
const NOBODY: &str = "65534";

/// Run every step; the package is purged whatever happens.
pub fn check(d: &Dist) -> anyhow::Result<()> {
    let started = Instant::now();
    let work = cmd::workspace_root().join("target/dist/check");
    super::remove_dir(&work)?;
    let unit_text = std::fs::read_to_string(d.staged.unit())
        .with_context(|| format!("reading {}", d.staged.unit().display()))?;
    let caps = capabilities(&unit_text)?;

    // 1. The unit, before anything is installed.
    let unit = work.join("tracer.service");
    let bin = d.staged.binary();
    write(&unit, staged_unit(&unit_text, path_str(&bin)?).as_bytes())?;
    cmd::run("systemd-analyze", &["verify", "--man=no", path_str(&unit)?])?;
    let exposure = exposure(&unit)?;
    eprintln!("xtask: systemd-analyze security: exposure {exposure} of 10");
    ensure!(
        exposure <= MAX_EXPOSURE,
        "the unit's exposure is {exposure}, above the {MAX_EXPOSURE} it had: \
         a change loosened its sandbox (systemd-analyze security --offline=yes {})",
        unit.display()
    );

    // 2-5. Installed, tried, purged.
    if cmd::output("dpkg-query", &["-W", "-f=${Status}", "tracer"])
        .is_some_and(|s| s.contains("installed") && !s.contains("not-installed"))
    {
        bail!(
            "a tracer package is already installed on this machine; the check installs and \
             purges its own: remove it first (dpkg --purge tracer)"
        );
    }
    let installed = Installed;
    cmd::run("dpkg", &["-i", path_str(&d.deb)?])?;
    installed_files(d)?;
    agent_answers(&work, d, &caps)?;
    drop(installed);
    ensure!(
        !Path::new("/usr/bin/tracer").exists(),
        "/usr/bin/tracer is still there after dpkg --purge tracer"
    );
    super::systemd::check(d)?;
    super::ubuntu::check(d)?;
    eprintln!(
        "xtask: dist check: passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Purges the package when dropped, so that a failed step leaves the
/// machine as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if let Err(e) = cmd::run("dpkg", &["--purge", "tracer"]) {
            eprintln!("xtask: {e:#}");
        }
    }
}

/// The unit with ExecStart's binary replaced by `binary`.
pub fn staged_unit(unit: &str, binary: &str) -> String {
    unit.replace(
        "ExecStart=/usr/bin/tracer ",
        &format!("ExecStart={binary} "),
    )
}

/// The capabilities the unit grants, as setpriv names them (`bpf`), from
/// CapabilityBoundingSet=; AmbientCapabilities= must list the same.
pub fn capabilities(unit: &str) -> anyhow::Result<Vec<String>> {
    let list = |key: &str| -> anyhow::Result<Vec<String>> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("the unit has no {key}"))?;
        let mut caps: Vec<String> = line
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
            .collect();
        caps.sort();
        Ok(caps)
    };
    let bounding = list("CapabilityBoundingSet=")?;
    ensure!(
        bounding == list("AmbientCapabilities=")?,
        "the unit's CapabilityBoundingSet= and AmbientCapabilities= differ"
    );
    Ok(bounding)
}

/// The overall exposure `systemd-analyze security --offline=yes` gives.
fn exposure(unit: &Path) -> anyhow::Result<f64> {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", path_str(unit)?])
        .output()
        .context("starting systemd-analyze")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_exposure(&text).with_context(|| {
        format!(
            "systemd-analyze security printed no exposure level ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// `2.3` of `→ Overall exposure level for tracer.service: 2.3 OK 🙂`.
pub fn parse_exposure(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    line.rsplit_once(": ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the package installed is there and works.
fn installed_files(d: &Dist) -> anyhow::Result<()> {
    let version = cmd::output("/usr/bin/tracer", &["--version"])
        .context("the installed /usr/bin/tracer --version failed")?;
    ensure!(
        version.trim() == format!("tracer {}", d.version),
        "the installed tracer says {version:?}, not tracer {}",
        d.version
    );
    for shell in SHELLS {
        let path = Path::new("/").join(deb::completion_path(shell));
        let script = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the installed {}", path.display()))?;
        ensure!(
            script.contains("completions") && script.contains("leaks"),
            "{} does not complete tracer's commands",
            path.display()
        );
    }
    let man = Path::new("/").join(deb::MAN);
    let page = cmd::output("gzip", &["-dc", path_str(&man)?])
        .with_context(|| format!("{} is not gzip", man.display()))?;
    ensure!(
        page.contains(".TH tracer 1") && page.contains("TRACER RUN"),
        "{} is not tracer's man page",
        man.display()
    );
    if cmd::output("sh", &["-c", "command -v man"]).is_some() {
        let shown = cmd::output("man", &["-P", "cat", "-l", path_str(&man)?])
            .context("man -l cannot show the installed page")?;
        ensure!(shown.contains("tracer"), "man -l shows no tracer");
    }
    let conffiles = cmd::output("dpkg-query", &["-W", "-f=${Conffiles}", "tracer"])
        .context("dpkg-query -W tracer")?;
    ensure!(
        conffiles.contains(&format!("/{}", deb::CONFIG)),
        "/{} is not a conffile: {conffiles:?}",
        deb::CONFIG
    );
    // The installed unit as systemd would load it: its ExecStart and its
    // Documentation= man page now exist.
    cmd::run("systemd-analyze", &["verify", &format!("/{}", deb::UNIT)])?;
    Ok(())
}

/// Start the installed agent as the unit would, with every key of the
/// config example set, and wait for /metrics; then stop it with SIGTERM,
/// which must end it with status 0.
fn agent_answers(work: &Path, d: &Dist, caps: &[String]) -> anyhow::Result<()> {
    let example = std::fs::read_to_string(d.staged.config())?;
    let config = work.join("tracer.toml");
    write(&config, uncommented(&example).as_bytes())?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let set = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let args = [
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        &format!("--inh-caps={set}"),
        &format!("--ambient-caps={set}"),
        &format!("--bounding-set={set}"),
        "--no-new-privs",
        "--",
        "/usr/bin/tracer",
        "run",
        "--config",
        path_str(&config)?,
        "--listen",
        &listen,
    ];
    eprintln!("xtask: $ setpriv {}", args.join(" "));
    let child = Command::new("setpriv")
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .context("starting setpriv (util-linux)")?;
    let mut agent = Agent(child);
    let url = format!("http://{listen}/metrics");
    let deadline = Instant::now() + START_TIMEOUT;
    let metrics = loop {
        if let Some(status) = agent.0.try_wait()? {
            bail!("the installed agent exited before answering {url} ({status})");
        }
        if let Some(body) = cmd::output("curl", &["-sf", "--max-time", "5", &url]) {
            break body;
        }
        ensure!(
            Instant::now() < deadline,
            "the installed agent did not answer {url} within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        metrics.contains("tracer_tcp_sockets"),
        "{url} answered without tracer_tcp_sockets"
    );
    eprintln!("xtask: the installed agent answers {url}");
    agent.stop()
}

/// The agent of [`agent_answers`], killed if the check fails first.
struct Agent(Child);

impl Agent {
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.0.id()).context("pid out of range")?;
        // SAFETY: kill(2) of our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.0.try_wait()? {
                ensure!(status.success(), "the agent ended with {status} on SIGTERM");
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the agent ignored SIGTERM for 10 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The config example with each `#key = value` line made a setting:
/// every key it documents must be one `tracer run` accepts.
pub fn uncommented(example: &str) -> String {
    example
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A TCP port nothing listens on now, on loopback.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = include_str!("../../../deploy/systemd/tracer.service");
    const EXAMPLE: &str = include_str!("../../../deploy/systemd/tracer.toml");

    #[test]
    fn the_unit_grants_the_five_capabilities_of_the_image() {
        let caps = capabilities(UNIT).unwrap();
        assert_eq!(
            caps,
            [
                "bpf",
                "dac_read_search",
                "perfmon",
                "sys_admin",
                "sys_ptrace"
            ]
        );
        // The same list as the Dockerfile's setcap line (and so the
        // Kubernetes manifest's, which tracer/tests/caps.rs compares).
        let dockerfile =
            std::fs::read_to_string(cmd::workspace_root().join("deploy/Dockerfile")).unwrap();
        let setcap = dockerfile
            .lines()
            .find_map(|l| l.split_once("setcap cap_").map(|(_, r)| r))
            .expect("the Dockerfile's `setcap cap_...=ep` line");
        let setcap = format!("cap_{setcap}");
        let mut image: Vec<&str> = setcap
            .split_once('=')
            .unwrap()
            .0
            .split(',')
            .map(|c| c.trim_start_matches("cap_"))
            .collect();
        image.sort_unstable();
        assert_eq!(caps, image);
    }

    #[test]
    fn the_unit_runs_the_packaged_binary_with_the_packaged_config() {
        assert!(UNIT.contains(&format!(
            "\nExecStart=/usr/bin/tracer run --config /{}\n",
            deb::CONFIG
        )));
        let staged = staged_unit(UNIT, "/w/target/dist/stage/t/bin/tracer");
        assert!(staged.contains("\nExecStart=/w/target/dist/stage/t/bin/tracer run --config"));
        assert!(!staged.contains("/usr/bin/tracer"));
    }

    #[test]
    fn the_config_example_sets_nothing_until_uncommented() {
        let keys = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#') && l.contains(" = "))
                .count()
        };
        assert_eq!(keys(EXAMPLE), 0, "the example must change no default");
        let all = uncommented(EXAMPLE);
        assert_eq!(keys(&all), 16, "{all}");
        assert!(all.contains("\nlisten = \"127.0.0.1:9077\"\n"));
        assert!(all.contains("\n# HTTP address"), "prose stays commented");
    }

    #[test]
    fn the_exposure_is_read_from_the_last_line() {
        let out = "  NAME  DESCRIPTION  EXPOSURE\n✗ PrivateNetwork=  Service has access to the host's network  0.5\n\n\
                   → Overall exposure level for tracer.service: 2.3 OK 🙂\n";
        assert_eq!(parse_exposure(out), Some(2.3));
        assert_eq!(parse_exposure("nothing"), None);
    }
}
