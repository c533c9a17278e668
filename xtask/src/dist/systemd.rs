//! The unit under a real systemd: the .deb installed and `tracer.service`
//! started by systemd as PID 1, so that every sandboxing line of the unit
//! (the dynamic user, capabilities, mount namespace, seccomp filters,
//! RestrictNamespaces=, IP filtering) applies, and the agent must still do
//! its whole job inside it.
//!
//! This machine need not boot with systemd: the check boots the host's own
//! systemd (`/lib/systemd/systemd`) as PID 1 of a privileged podman
//! container whose root is an overlay of the host's `/` (writes stay in
//! the overlay), with a network namespace of its own so that port 9077 is
//! free. In it ([`SCRIPT`]): `dpkg -i`, `systemctl start tracer`, /metrics
//! answers; the service holds exactly the five capabilities as a non-root
//! user, with no_new_privs and seccomp; a CLOSE_WAIT leak held by another
//! user's process is flagged with that process as its owner (ptrace and
//! DAC_READ_SEARCH at work); a listener in an `ip netns` namespace that
//! predates the agent is adopted, which takes a sock_diag dump from inside
//! that namespace (setns(CLONE_NEWNET), which RestrictNamespaces= must
//! allow), and no namespace is unreachable; `systemctl stop` ends it
//! cleanly; `dpkg --purge`. With `RestrictNamespaces=yes` instead, the
//! adoption step fails: the check sees what the sandbox forbids.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{Dist, path_str};
use crate::cmd;

/// The container's name.
const NAME: &str = "tracer-dist-check";

/// How long systemd may take to boot in the container.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Boot systemd in a container and run [`SCRIPT`] in it. Skipped, with the
/// reason, when podman or systemd is not installed.
pub fn check(d: &Dist) -> anyhow::Result<()> {
    for (what, path) in [
        ("podman", "/usr/bin/podman"),
        ("systemd", "/lib/systemd/systemd"),
    ] {
        if !Path::new(path).exists() {
            eprintln!(
                "xtask: dist check: SKIPPED the unit under systemd: no {what} ({path}); \
                 cargo xtask test installs it"
            );
            return Ok(());
        }
    }
    let dist = d.deb.parent().context("the .deb has no folder")?;
    let deb = d.deb.file_name().context("the .deb has no name")?;
    let deb = Path::new("/dist").join(deb);
    let _ = podman(&["rm", "--force", NAME]);
    let container = Container;
    let volume = format!("{}:/dist:ro", path_str(dist)?);
    cmd::run(
        "podman",
        &[
            "--runtime",
            "runc",
            "run",
            "--detach",
            "--name",
            NAME,
            "--privileged",
            "--systemd=always",
            // podman's default rlimits need CAP_SYS_RESOURCE: ask for less.
            "--ulimit",
            "nofile=1024:4096",
            "--ulimit",
            "nproc=4096:4096",
            // No copy of the host's /tmp and /run (target/ may live there).
            "--tmpfs",
            "/tmp:rw,notmpcopyup",
            "--tmpfs",
            "/run:rw,notmpcopyup",
            // A network namespace with loopback only. podman's default
            // network installs NAT rules machine-wide, and with them
            // connection tracking of every connection on the host, whose
            // table then fills under churn and drops packets.
            "--network",
            "none",
            "--volume",
            &volume,
            "--rootfs",
            "/:O",
            "/lib/systemd/systemd",
        ],
    )?;
    wait_for_boot()?;
    let out = Command::new("podman")
        .args(["exec", NAME, "sh", "-ec", SCRIPT, "check", path_str(&deb)?])
        .output()
        .context("starting podman exec")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        eprintln!("xtask: systemd: {line}");
    }
    if !out.status.success() {
        let journal =
            podman(&["exec", NAME, "journalctl", "-u", "tracer", "--no-pager"]).unwrap_or_default();
        bail!(
            "tracer.service under systemd: {}\n{journal}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    drop(container);
    Ok(())
}

/// Removes the container when dropped, whatever happened.
struct Container;

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", NAME]);
    }
}

/// `podman ARGS`'s stdout, or None when it failed.
fn podman(args: &[&str]) -> Option<String> {
    let mut all = vec!["--runtime", "runc"];
    all.extend(args);
    cmd::output("podman", &all)
}

/// Wait until systemd in the container has booted (`running`, or
/// `degraded` when one of the host's own units fails there).
fn wait_for_boot() -> anyhow::Result<()> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let out = Command::new("podman")
            .args(["exec", NAME, "systemctl", "is-system-running"])
            .output()
            .context("starting podman exec")?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "running" || state == "degraded" {
            eprintln!("xtask: systemd booted in a container ({state})");
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "systemd did not boot in the container within {BOOT_TIMEOUT:?} (state {state:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Run in the container with the .deb's path as `$1`; fails (`sh -e`)
/// with a sentence on stderr at the first thing that is not as it should be.
pub const SCRIPT: &str = r#"
fail() { echo "$*" >&2; exit 1; }
until_ok() { # seconds, command...: retry a command for a while
    n=$(( $1 * 5 )); shift
    while [ $n -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; n=$((n - 1)); sleep 0.2; done
    return 1
}
dpkg -i "$1" >/dev/null
[ "$(systemctl is-enabled tracer)" = disabled ] || fail "the package enabled tracer.service"
# A listener in another network namespace, before the agent starts.
ip netns add tracer-dist
ip -n tracer-dist link set lo up
ip netns exec tracer-dist python3 -c 'import socket,time;s=socket.socket();s.bind(("127.0.0.1",47124));s.listen();time.sleep(300)' &
netns_listener=$!
sleep 0.5
# A leak is flagged after 1 s instead of 60: the conffile, as a user edits it.
echo 'close-wait-threshold = "1s"' > /etc/tracer/tracer.toml
systemctl start tracer
until_ok 60 curl -sf 127.0.0.1:9077/healthz || fail "tracer.service did not answer /healthz"
echo "tracer.service is $(systemctl is-active tracer) and answers 127.0.0.1:9077"
pid=$(systemctl show -p MainPID --value tracer)
st=/proc/$pid/status
uid=$(awk '/^Uid:/ {print $2}' $st)
[ "$uid" != 0 ] || fail "the agent runs as root"
grep -q '^CapEff:.*000000c000280004$' $st || fail "capabilities: $(grep ^CapEff $st)"
grep -q '^CapBnd:.*000000c000280004$' $st || fail "bounding set: $(grep ^CapBnd $st)"
grep -q '^NoNewPrivs:.*1$' $st || fail "no_new_privs is not set"
grep -q '^Seccomp:.*2$' $st || fail "no seccomp filter"
echo "uid $uid, CapEff = CapBnd = bpf perfmon sys_ptrace dac_read_search sys_admin, no_new_privs, seccomp"
# A CLOSE_WAIT socket held by uid 1000: flagged, with its owner's pid.
cat > /tmp/leak.py <<'PY'
import socket, time
srv = socket.socket(); srv.bind(("127.0.0.1", 47123)); srv.listen()
c = socket.create_connection(("127.0.0.1", 47123)); conn, _ = srv.accept()
c.close(); time.sleep(300)
PY
setpriv --reuid=1000 --regid=1000 --clear-groups python3 /tmp/leak.py &
leaker=$!
owned() { curl -sf 127.0.0.1:9077/api/v1/leaks | grep -Eq "\"pid\":$leaker[,}]"; }
until_ok 30 owned || fail "the CLOSE_WAIT leak of pid $leaker (uid 1000) was not flagged with its owner"
echo "a CLOSE_WAIT leak of uid 1000 is flagged with its owner, pid $leaker"
# The listener in the other namespace predates the agent: only a
# sock_diag dump made inside that namespace (setns) can adopt it.
seen() { curl -sf '127.0.0.1:9077/api/v1/sockets?port=47124' | grep -q '"state":"listen"'; }
until_ok 30 seen || fail "the listener in netns tracer-dist was not adopted (setns refused?)"
if curl -sf 127.0.0.1:9077/metrics | grep '^tracer_netns_unreachable' | grep -qv ' 0$'; then
    fail "namespaces unreachable: $(curl -sf 127.0.0.1:9077/metrics | grep '^tracer_netns_unreachable')"
fi
echo "a listener that predates it in another network namespace is adopted; none unreachable"
systemctl stop tracer
[ "$(systemctl show -p Result --value tracer)" = success ] || fail "tracer.service did not stop cleanly"
kill $leaker $netns_listener 2>/dev/null || true
ip netns del tracer-dist
dpkg --purge tracer >/dev/null
echo "stopped cleanly; purged"
"#;
