//! `cargo xtask setup`: the eBPF toolchain and a kernel check. Idempotent:
//! each step says whether it did something or found it done.
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::cmd;

/// Debian packages the tests need: nft, a Prometheus server and promtool,
/// ip and ss, sysctl, python3 (the leaking server of the leak tests), and
/// bpftool (the guards on the loaded programs' shape), curl and openssl
/// (the HTTPS endpoint), systemd-analyze (the unit), tmux (the live view).
/// (`cargo xtask bench` installs its own: [`BENCH_PACKAGES`].)
pub const TEST_PACKAGES: [(&str, &str); 15] = [
    ("bpftool", "bpftool"),
    ("nft", "nftables"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("sysctl", "procps"),
    ("python3", "python3"),
    // tests/containers.rs: real containers, image from a static busybox
    ("podman", "podman"),
    ("runc", "runc"),
    ("busybox", "busybox-static"),
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("systemd-analyze", "systemd"),
    ("tmux", "tmux"),
];

/// Debian packages `cargo xtask bench` measures with: bpftrace (the
/// bpftrace peer and the empty program, the floor) and bpftool (each
/// program's ns per event from bpf_stats).
pub const BENCH_PACKAGES: [(&str, &str); 2] = [("bpftrace", "bpftrace"), ("bpftool", "bpftool")];

/// Full setup, printing every step.
pub fn setup() -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    kernel_check();
    eprintln!("xtask: setup complete");
    Ok(())
}

/// Setup, quietly skipped when everything is already in place.
pub fn ensure() -> anyhow::Result<()> {
    if rust_src_installed() && bpf_linker_matches().unwrap_or(false) {
        return Ok(());
    }
    setup()
}

/// Nightly components: rust-src (to build `core` for the BPF target) and
/// clippy (to lint the kernel programs).
const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

fn rust_src_installed() -> bool {
    cmd::output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .is_some_and(|s| {
        NIGHTLY_COMPONENTS
            .iter()
            .all(|c| s.lines().any(|l| l.starts_with(c)))
    })
}

fn rust_src() -> anyhow::Result<()> {
    if rust_src_installed() {
        eprintln!(
            "xtask: nightly {}: already installed",
            NIGHTLY_COMPONENTS.join(", ")
        );
        return Ok(());
    }
    let mut args = vec!["component", "add"];
    args.extend(NIGHTLY_COMPONENTS);
    args.extend(["--toolchain", "nightly"]);
    cmd::run("rustup", &args)?;
    eprintln!(
        "xtask: nightly {}: installed",
        NIGHTLY_COMPONENTS.join(", ")
    );
    Ok(())
}

/// The nightly toolchain's libLLVM: its file, its versioned name, its major.
struct NightlyLlvm {
    file: PathBuf,
    name: String,
    major: String,
}

fn nightly_llvm() -> anyhow::Result<NightlyLlvm> {
    let vv = cmd::output("rustc", &["+nightly", "-vV"]).context(
        "the nightly toolchain is missing; install it with `rustup toolchain install nightly`",
    )?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?
        .trim()
        .to_string();
    let major = version.split('.').next().unwrap_or_default().to_string();
    let sysroot = cmd::output("rustc", &["+nightly", "--print", "sysroot"])
        .context("asking nightly rustc for its sysroot")?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let name = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("libLLVM.so.{major}")))
        .with_context(|| format!("no libLLVM.so.{major}* in {}", lib.display()))?;
    Ok(NightlyLlvm {
        file: lib.join(&name),
        name,
        major,
    })
}

fn bpf_linker_path() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin/bpf-linker")
}

/// True when bpf-linker runs and links the nightly's own libLLVM.
fn bpf_linker_matches() -> anyhow::Result<bool> {
    let llvm = nightly_llvm()?;
    let path = bpf_linker_path();
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(false);
    };
    let links_it = bytes
        .windows(llvm.name.len())
        .any(|w| w == llvm.name.as_bytes());
    let runs = cmd::output(&path.to_string_lossy(), &["--version"]).is_some();
    Ok(links_it && runs)
}

fn bpf_linker() -> anyhow::Result<()> {
    let llvm = nightly_llvm()?;
    if bpf_linker_matches()? {
        eprintln!("xtask: bpf-linker: already built against {}", llvm.name);
        return Ok(());
    }
    // bpf-linker must use the nightly's LLVM: point LLVM_PREFIX at a folder
    // whose lib/ holds that very library under both names it is looked up by.
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let prefix = home.join(".cache/tracer/llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link in ["libLLVM.so".to_string(), llvm.name.clone()] {
        let dst = lib.join(&link);
        let _ = std::fs::remove_file(&dst);
        std::os::unix::fs::symlink(&llvm.file, &dst)
            .with_context(|| format!("linking {} to {}", dst.display(), llvm.file.display()))?;
    }
    eprintln!(
        "xtask: bpf-linker: building against {} (LLVM {}); this takes about a minute",
        llvm.name, llvm.major
    );
    let prefix_s = prefix.to_string_lossy().into_owned();
    let feature = format!("llvm-{}", llvm.major);
    cmd::run_env(
        "cargo",
        &[
            "+nightly",
            "install",
            "bpf-linker",
            "--version",
            "0.13.0",
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            &feature,
        ],
        &[("LLVM_PREFIX", &prefix_s)],
    )?;
    if !bpf_linker_matches()? {
        bail!(
            "bpf-linker was built but does not run against {}",
            llvm.name
        );
    }
    eprintln!("xtask: bpf-linker: installed");
    Ok(())
}

/// Report what the kernel offers; nothing here is fatal for setup itself.
fn kernel_check() {
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    eprintln!(
        "xtask: kernel BTF (/sys/kernel/btf/vmlinux): {}",
        if btf {
            "present"
        } else {
            "MISSING: tracer needs CONFIG_DEBUG_INFO_BTF=y"
        }
    );
    let bpf = std::path::Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists();
    eprintln!(
        "xtask: bpf() syscall: {}",
        if bpf {
            "available"
        } else {
            "MISSING: tracer needs CONFIG_BPF_SYSCALL=y"
        }
    );
    let tracefs = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("tracefs"))
        })
        .unwrap_or(false);
    eprintln!(
        "xtask: tracefs: {} (tracer's BTF tracepoints do not need it)",
        if tracefs { "mounted" } else { "not mounted" }
    );
    if let Some(r) = cmd::output("uname", &["-r"]) {
        eprintln!("xtask: kernel {} (tracer needs 5.12 or later)", r.trim());
    }
}

/// Install the Debian packages the tests need, when any is missing.
pub fn test_packages() -> anyhow::Result<()> {
    apt_install("test packages", "the tests", &TEST_PACKAGES)
}

/// Install each Debian package whose binary is missing: `(binary that
/// shows it is installed, package)`. `what` names the set in messages;
/// `who` says what needs them.
pub fn apt_install(what: &str, who: &str, wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut pkgs: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| cmd::output("sh", &["-c", &format!("command -v {bin}")]).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    if pkgs.is_empty() {
        eprintln!("xtask: {what}: already installed");
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "{who} need these Debian packages: {}; run as root so xtask can install them",
            pkgs.join(" ")
        );
    }
    cmd::run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(pkgs.iter().copied());
    cmd::run_env("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])?;
    eprintln!("xtask: {what}: installed {}", pkgs.join(" "));
    Ok(())
}
