//! The one way the image's build check and smoke test run podman: with
//! runc (crun refuses this host's cgroup v1), failing with podman's own
//! words.
use std::process::Command;

use anyhow::{Context as _, bail};

/// `podman --runtime runc ARGS`, its stdout.
pub fn podman(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .context("starting podman")?;
    if !out.status.success() {
        bail!(
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
