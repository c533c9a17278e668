//! `cargo xtask test`: everything, from nothing.
//!
//! Unit tests, clippy and rustdoc's link checks run as any user. The privileged tier (tests in
//! tracer/tests that load the real kernel programs) is marked
//! `#[ignore = "privileged: ..."]` so that plain `cargo test` passes for a
//! normal user; here every tier runs, with `--include-ignored`, directly
//! when we are root and through `sudo -E` otherwise. Then the packages
//! (`cargo xtask dist --check`: the release build, the tarball and the
//! .deb, the systemd unit verified and scored, the .deb installed, its
//! agent run, and purged). Then the container image (`cargo xtask image`:
//! built with podman, run under the DaemonSet's security context, and
//! smoke-tested). Then the smoke suite on the distributions' kernels in VMs
//! (`cargo xtask vmtest`): Ubuntu 20.04's 5.4 and 5.13 and Debian's 5.10,
//! 6.1 and 6.12 (see [`VM_KERNELS`]); the host's kernel is the one the
//! whole suite just ran on. With
//! a filter, only the matching tests run: no packages, no image, no VMs.
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
    // The docs: a link to an item renamed or made private fails here.
    cmd::run(
        "cargo",
        &[
            "doc",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--no-deps",
            "--config",
            "build.rustdocflags=[\"-D\", \"warnings\"]",
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
    // Every test binary runs even when one fails: one CI run reports all.
    let mut args = vec![
        "test",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--no-fail-fast",
    ];
    if let Some(f) = filter {
        args.push(f);
    }
    args.extend(["--", "--include-ignored"]);
    if filter.is_none() {
        for slow in SLOW {
            args.extend(["--skip", *slow]);
        }
    }
    if cmd::is_root() {
        cmd::run("cargo", &args)?;
    } else {
        eprintln!("xtask: the integration tests load kernel programs; running them through sudo");
        let mut sudo = vec!["-E", "cargo"];
        sudo.extend(args);
        cmd::run("sudo", &sudo)?;
    }
    if filter.is_some() {
        return Ok(());
    }
    // The packages. vmtest runs the debug build of `cargo test`, so this
    // release build is the only one.
    if cmd::is_root() {
        crate::dist::dist(crate::dist::DistArgs { check: true })?;
    } else {
        eprintln!("xtask: the dist check installs a .deb; running it through sudo");
        cmd::run("sudo", &["-E", "cargo", "xtask", "dist", "--check"])?;
    }
    // The container image, built with podman from the same release binary
    // and run as the DaemonSet runs it.
    if cmd::is_root() {
        let image = crate::image::build(&crate::image::Base::Local)?;
        crate::image::smoke(&image)?;
    } else {
        eprintln!("xtask: the image check runs podman as root; running it through sudo");
        cmd::run("sudo", &["-E", "cargo", "xtask", "image"])?;
    }
    if !cmd::is_root() {
        eprintln!("xtask: vmtest boots VMs and installs packages; running it through sudo");
        return cmd::run(
            "sudo",
            &["-E", "cargo", "xtask", "vmtest", "--kernels", VM_KERNELS],
        );
    }
    crate::vmtest::vmtest(crate::vmtest::VmtestArgs {
        kernels: VM_KERNELS.split(',').map(str::to_string).collect(),
        checks: Vec::new(),
        fetch_only: false,
    })
}

/// The kernels `cargo xtask test` (and so CI) boots, to stay well within
/// CI's time: both refusals (Ubuntu 20.04's 5.4 before loading, Debian
/// 11's 5.10 at the load), the oldest that works (Ubuntu 20.04's HWE
/// 5.13), Debian's most deployed (6.1) and the newest distribution kernel
/// (6.12). About 13 minutes under TCG. `cargo xtask vmtest` also boots
/// Ubuntu's 5.15 and 6.8 (docs/vmtest.md).
const VM_KERNELS: &str = "5.4,5.10,5.13,6.1,6.12";

/// Ignored tests too slow for every run; a filter that names one runs it.
const SLOW: &[&str] = &["dump_100k_sockets_in_private_netns"];
