//! Ubuntu's archive, for what tracer is tried on beside Debian: its LTS
//! kernels in VMs (`vmtest`) and its userland for the .deb (`dist --check`).
//!
//! Debian does not ship Ubuntu's archive key, so it comes from the
//! `ubuntu-keyring` package of a pinned version, fetched with
//! `apt-helper download-file`, which refuses it unless its SHA-256 is the
//! pinned one. Everything is kept under `target/ubuntu/`.
use std::path::PathBuf;

use anyhow::Context as _;

use crate::cmd;

/// Ubuntu's archive, for x86-64.
pub const MIRROR: &str = "http://archive.ubuntu.com/ubuntu";

/// The package that holds the archive key, pinned by its SHA-256 (the one
/// in jammy's index), and the key's path inside it.
const KEYRING_DEB: &str = "pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb";
const KEYRING_SHA256: &str = "0d0e7ed6b112f5d03eabf3c7eb01ebdacf9c57714b279e90495cfc58c8c4520f";
const KEYRING_PATH: &str = "usr/share/keyrings/ubuntu-archive-keyring.gpg";

/// Where this module keeps what it fetches.
fn cache() -> PathBuf {
    cmd::workspace_root().join("target/ubuntu")
}

/// Ubuntu's archive keyring, fetched once.
pub fn archive_key() -> anyhow::Result<PathBuf> {
    let dir = cache();
    let key = dir.join("ubuntu-archive-keyring.gpg");
    if key.is_file() {
        return Ok(key);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let deb = dir.join("ubuntu-keyring.deb");
    let unpacked = dir.join("ubuntu-keyring");
    eprintln!("xtask: fetching Ubuntu's archive key ({KEYRING_DEB})");
    cmd::run(
        "/usr/lib/apt/apt-helper",
        &[
            "download-file",
            &format!("{MIRROR}/{KEYRING_DEB}"),
            cmd::path_str(&deb)?,
            &format!("SHA256:{KEYRING_SHA256}"),
        ],
    )
    .context("fetching Ubuntu's archive keyring")?;
    let _ = std::fs::remove_dir_all(&unpacked);
    cmd::run(
        "dpkg-deb",
        &["-x", cmd::path_str(&deb)?, cmd::path_str(&unpacked)?],
    )?;
    std::fs::copy(unpacked.join(KEYRING_PATH), &key)
        .with_context(|| format!("{KEYRING_PATH} is not in {}", deb.display()))?;
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_file(&deb);
    Ok(key)
}

/// A minimal root filesystem of Ubuntu `suite` (`debootstrap --variant=minbase`,
/// about 130 MB and 20 s), made once and kept.
pub fn root(suite: &str) -> anyhow::Result<PathBuf> {
    let root = cache().join(suite);
    if root.join("usr/bin/dpkg").is_file() {
        return Ok(root);
    }
    crate::setup::apt_install(
        "Ubuntu root packages",
        "an Ubuntu root filesystem",
        &[("debootstrap", "debootstrap")],
    )?;
    let key = archive_key()?;
    let partial = cache().join(format!("{suite}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    cmd::run(
        "debootstrap",
        &[
            "--variant=minbase",
            &format!("--keyring={}", key.display()),
            suite,
            cmd::path_str(&partial)?,
            MIRROR,
        ],
    )
    .with_context(|| format!("making an Ubuntu {suite} root filesystem"))?;
    std::fs::rename(&partial, &root)
        .with_context(|| format!("moving {} to {}", partial.display(), root.display()))?;
    Ok(root)
}
