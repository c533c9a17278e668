//! What `cargo xtask vmtest` needs on the host, installed idempotently:
//! Debian's qemu, kmod and busybox, virtme-ng from PyPI, and the packages
//! the tests themselves drive ([`setup::test_packages`]).
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

/// Debian packages that boot a kernel the way virtme-ng does: (a binary
/// that shows it is installed, the package). qemu runs the VM; depmod
/// (kmod) indexes the kernel's modules and modprobe loads them in the
/// guest; busybox builds virtme-ng's initramfs; `file` tells virtme-ng the
/// kernel's version; dpkg-deb unpacks kernel packages.
const VM_PACKAGES: [(&str, &str); 6] = [
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("depmod", "kmod"),
    ("modprobe", "kmod"),
    ("busybox", "busybox-static"),
    ("file", "file"),
    ("dpkg-deb", "dpkg"),
];

/// The virtme-ng release this runner was written and measured with.
const VIRTME_NG: &str = "1.42";

/// Install everything; return the `vng` to run.
pub fn ensure() -> anyhow::Result<PathBuf> {
    setup::test_packages()?;
    vm_packages()?;
    virtme_ng()
}

fn vm_packages() -> anyhow::Result<()> {
    setup::apt_install("VM packages", "vmtest's VMs", &VM_PACKAGES)
}

/// Where `python3 -m pip` puts console scripts (pyenv's or /usr/local/bin).
fn scripts_dir() -> anyhow::Result<PathBuf> {
    let out = cmd::output(
        "python3",
        &[
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ],
    )
    .context("python3 is needed to install virtme-ng (Debian package python3)")?;
    Ok(PathBuf::from(out.trim()))
}

fn vng_version(vng: &Path) -> Option<String> {
    cmd::output(&vng.to_string_lossy(), &["--version"]).map(|s| s.trim().to_string())
}

fn virtme_ng() -> anyhow::Result<PathBuf> {
    let vng = scripts_dir()?.join("vng");
    let want = format!("virtme-ng {VIRTME_NG}");
    if vng_version(&vng).as_deref() == Some(want.as_str()) {
        eprintln!("xtask: {want}: already installed");
        return Ok(vng);
    }
    let spec = format!("virtme-ng=={VIRTME_NG}");
    cmd::run(
        "python3",
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            &spec,
        ],
    )
    .context("installing virtme-ng from PyPI with `python3 -m pip`")?;
    match vng_version(&vng) {
        Some(v) if v == want => {
            eprintln!("xtask: {want}: installed");
            Ok(vng)
        }
        other => bail!("installed {spec}, but {} reports {other:?}", vng.display()),
    }
}
