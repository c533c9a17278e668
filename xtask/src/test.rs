//! `cargo xtask test`: everything, from nothing.
//!
//! Unit tests and clippy run as any user; the integration tests in
//! tracer/tests load the real kernel programs and need root, so they run
//! directly when we are root and through `sudo -E` otherwise.
use crate::{cmd, setup};

pub fn test(filter: Option<&str>) -> anyhow::Result<()> {
    setup::ensure()?;
    setup::test_packages()?;
    cmd::run("cargo", &["fmt", "--all", "--", "--check"])?;
    cmd::run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--exclude",
            "tracer-ebpf",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The kernel programs, linted for the target they run on.
    cmd::run(
        "cargo",
        &[
            "+nightly",
            "clippy",
            "-p",
            "tracer-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let mut args = vec!["test", "--workspace", "--exclude", "tracer-ebpf"];
    if let Some(f) = filter {
        args.push(f);
    }
    if cmd::is_root() {
        cmd::run("cargo", &args)
    } else {
        eprintln!("xtask: the integration tests load kernel programs; running them through sudo");
        let mut sudo = vec!["-E", "cargo"];
        sudo.extend(args);
        cmd::run("sudo", &sudo)
    }
}
