//! `cargo xtask image`: the agent's container image, built with podman from
//! the release binary and deploy/Dockerfile, then run under the
//! DaemonSet's own security context and smoke-tested ([`smoke()`]).
//!
//! No registry can be reached from the machines this project is tested on,
//! so the base image is made here ([`local_base`]): a root filesystem of the
//! host's own files (the binary's shared libraries as `ldd` lists them,
//! `/bin/sh`, `setcap` and its library, `/etc/passwd` and `/etc/group`
//! with nobody), imported with `podman import`. The Dockerfile takes it as
//! `--build-arg BASE=` and, with `--build-arg SETCAP=base`, runs its one
//! `setcap` line with the base's `setcap` instead of installing
//! libcap2-bin from Debian's archive. Everything after that (the binary,
//! its file capabilities, the user, the entry point) is the Dockerfile's.
//! With `--base debian:bookworm-slim` the image is built exactly as a user
//! with a registry builds it.
//!
//! podman runs with runc (crun refuses this host's cgroup v1), and never
//! with podman's default network, which installs NAT rules machine-wide:
//! the build has none (`--network none`; with `--base`, the host's, for
//! apt), the smoke test's container the host's, as the DaemonSet's pod.
mod pod;
mod podman;
mod process;
mod smoke;
mod traffic;
mod web;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::cmd::{self, path_str};
pub use smoke::smoke;

/// The base image made on this machine.
pub const LOCAL_BASE: &str = "localhost/tracer-base:local";

/// Debian packages the build and the smoke test run: podman with runc,
/// setcap and getcap (the base's `setcap`, the image's file capabilities),
/// and curl, openssl and python3 (the client, the Secret's certificate and
/// the leaking server).
const PACKAGES: [(&str, &str); 7] = [
    ("podman", "podman"),
    ("runc", "runc"),
    ("setcap", "libcap2-bin"),
    ("getcap", "libcap2-bin"),
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("python3", "python3"),
];

/// Flags of `cargo xtask image`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Build FROM this image (pulled from its registry; libcap2-bin comes
    /// from Debian's archive) instead of a base made on this machine.
    #[arg(long, value_name = "IMAGE")]
    pub base: Option<String>,
    /// Build the image only; do not smoke-test it.
    #[arg(long, conflicts_with = "image")]
    pub no_smoke: bool,
    /// Smoke-test this image (in podman's storage) instead of building one.
    #[arg(long, value_name = "IMAGE", conflicts_with = "base")]
    pub image: Option<String>,
}

/// Where the image's base comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// Made on this machine from the host's files ([`LOCAL_BASE`]).
    Local,
    /// An image from a registry, Debian-based (the Dockerfile's default is
    /// `debian:bookworm-slim`).
    Registry(String),
}

/// `cargo xtask image`: build, then smoke-test.
pub fn image(args: ImageArgs) -> anyhow::Result<()> {
    if let Some(image) = args.image {
        return smoke(&image);
    }
    let base = args.base.map_or(Base::Local, Base::Registry);
    let image = build(&base)?;
    eprintln!("xtask: built {image}");
    if !args.no_smoke {
        smoke(&image)?;
    }
    Ok(())
}

/// Build tracer in release mode and the image `localhost/tracer:<version>`
/// from it and deploy/Dockerfile; returns the image's name.
pub fn build(base: &Base) -> anyhow::Result<String> {
    if !cmd::is_root() {
        bail!("cargo xtask image runs podman as root: run it as root (sudo -E cargo xtask image)");
    }
    crate::setup::apt_install("image packages", "cargo xtask image", &PACKAGES)?;
    crate::setup::ensure()?;
    cmd::run("cargo", &["build", "--release", "-p", "tracer"])?;
    let root = cmd::workspace_root();
    let built = root.join("target/release/tracer");
    let version = version_of(&built)?;
    let work = root.join("target/image");

    // The build context holds the one file the Dockerfile copies, at the
    // path it names, so podman reads nothing else of the workspace.
    let context = work.join("context");
    remove_dir(&context)?;
    let in_context = context.join("target/release/tracer");
    create_dir(in_context.parent().unwrap_or(&context))?;
    std::fs::copy(&built, &in_context)
        .with_context(|| format!("copying {} into the build context", built.display()))?;

    let image = format!("localhost/tracer:{version}");
    // What this tag and the base's named before: removed (by id) once the
    // new ones exist, so that repeated builds do not pile up images.
    let old: Vec<String> = [image.as_str(), LOCAL_BASE]
        .into_iter()
        .filter_map(image_id)
        .collect();
    let (base_name, setcap, network) = match base {
        Base::Local => {
            local_base(&built, &work.join("rootfs"))?;
            (LOCAL_BASE.to_owned(), "base", "none")
        }
        Base::Registry(name) => (name.clone(), "apt", "host"),
    };
    let dockerfile = root.join("deploy/Dockerfile");
    let base_arg = format!("BASE={base_name}");
    let setcap_arg = format!("SETCAP={setcap}");
    // --layers=false: no intermediate image per step is kept.
    let mut args = vec![
        "--runtime",
        "runc",
        "build",
        "--layers=false",
        "--network",
        network,
    ];
    if *base == Base::Local {
        args.push("--pull=never");
    }
    args.extend([
        "--build-arg",
        &base_arg,
        "--build-arg",
        &setcap_arg,
        "--file",
        path_str(&dockerfile)?,
        "--tag",
        &image,
        path_str(&context)?,
    ]);
    cmd::run("podman", &args)?;
    remove_dir(&context)?;
    let now: Vec<String> = [image.as_str(), LOCAL_BASE]
        .into_iter()
        .filter_map(image_id)
        .collect();
    for id in old.iter().filter(|id| !now.contains(id)) {
        // Fails, harmlessly, while a container still uses it.
        let _ = cmd::output("podman", &["rmi", id]);
    }
    Ok(image)
}

/// The id of the image podman knows as `name`, if any.
fn image_id(name: &str) -> Option<String> {
    let id = cmd::output("podman", &["image", "inspect", "--format", "{{.Id}}", name])?;
    Some(id.trim().to_owned()).filter(|id| !id.is_empty())
}

/// Make [`LOCAL_BASE`] from this host's files: what `tracer` and the
/// Dockerfile's `RUN` need, and nothing else.
pub fn local_base(tracer: &Path, rootfs: &Path) -> anyhow::Result<()> {
    let setcap = ["/usr/sbin/setcap", "/sbin/setcap"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("setcap is not installed: apt-get install libcap2-bin")?;
    let sh = Path::new("/bin/sh");
    remove_dir(rootfs)?;
    let mut files: Vec<(PathBuf, PathBuf)> = vec![
        (sh.to_path_buf(), sh.to_path_buf()),
        (setcap.to_path_buf(), setcap.to_path_buf()),
    ];
    for binary in [tracer, sh, setcap] {
        for lib in shared_libraries(binary)? {
            files.push((lib.clone(), lib));
        }
    }
    for (from, to) in &files {
        // Copied as regular files at the paths the binaries ask for, so the
        // merged-/usr symlinks of the host do not matter.
        let dest = rootfs.join(to.strip_prefix("/").unwrap_or(to));
        create_dir(dest.parent().unwrap_or(rootfs))?;
        std::fs::copy(from, &dest)
            .with_context(|| format!("copying {} into the base image", from.display()))?;
    }
    create_dir(&rootfs.join("etc"))?;
    write(
        &rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    write(&rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let tar = rootfs.with_extension("tar");
    cmd::run(
        "tar",
        &[
            "--create",
            "--file",
            path_str(&tar)?,
            "--directory",
            path_str(rootfs)?,
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            ".",
        ],
    )?;
    cmd::run(
        "podman",
        &[
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--message",
            "tracer's base, made by cargo xtask image from this host's files",
            path_str(&tar)?,
            LOCAL_BASE,
        ],
    )?;
    let _ = std::fs::remove_file(&tar);
    remove_dir(rootfs)
}

/// The shared libraries `ldd` lists for `binary`, the loader included.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = cmd::output("ldd", &[path_str(binary)?])
        .with_context(|| format!("ldd {} failed", binary.display()))?;
    ldd_paths(&out).with_context(|| format!("ldd {}: {out}", binary.display()))
}

/// The paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x...)`
/// and `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has none.
fn ldd_paths(out: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("a shared library is missing: {line}");
        }
        let target = line.split_once("=> ").map_or(line, |(_, t)| t);
        if let Some(path) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            paths.push(PathBuf::from(path));
        }
    }
    if paths.is_empty() {
        bail!("no shared libraries listed (a static binary needs no base)");
    }
    Ok(paths)
}

/// `tracer --version` is `tracer 0.1.0`.
fn version_of(binary: &Path) -> anyhow::Result<String> {
    let out = cmd::output(path_str(binary)?, &["--version"])
        .with_context(|| format!("running {} --version", binary.display()))?;
    out.trim()
        .strip_prefix("tracer ")
        .filter(|v| !v.is_empty() && !v.contains(char::is_whitespace))
        .map(str::to_owned)
        .with_context(|| format!("`tracer --version` printed {out:?}"))
}

fn create_dir(p: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

fn remove_dir(p: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

fn write(p: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1b)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1a)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f1c)\n";
        assert_eq!(
            ldd_paths(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(ldd_paths("\tlibfoo.so.1 => not found\n").is_err());
        assert!(ldd_paths("\tnot a dynamic executable\n").is_err());
    }
}
