//! Debian's and Ubuntu's kernels, fetched once and cached under
//! `target/vmtest/`.
//!
//! apt-get runs against a sources list, package lists, cache and dpkg status
//! of its own (`target/vmtest/apt/`), so the host's apt setup is never read
//! or changed. The newest `<prefix>*<flavour>` image package in the index
//! (with Ubuntu's, the `linux-modules-` package of the same release) is
//! downloaded, unpacked with `dpkg-deb -x` into `target/vmtest/kernels/<package>/`
//! and its modules indexed with `depmod`. Ubuntu's index is checked with
//! Ubuntu's archive key ([`crate::ubuntu::archive_key`]). virtme-ng finds
//! the modules next to the image (`lib/modules/<release>`, or
//! `usr/lib/modules/<release>` in trixie's packages) and links them into
//! the guest's `/lib/modules`, so nothing is installed into the host's own
//! `/lib/modules`. A second run finds `target/vmtest/kernels/<key>.package` and downloads nothing (not
//! even the index).
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::matrix::{Archive, KERNELS, Source};
use crate::cmd;

/// Debian's archive; security updates are not needed.
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// An unpacked kernel, ready to boot.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The image package it came from.
    pub package: String,
    /// Its release, as `uname -r` prints it in the guest.
    pub release: String,
    /// The bootable image (`boot/vmlinuz-<release>`).
    pub image: PathBuf,
}

/// Fetches kernels, updating the private package index at most once.
pub struct Fetcher {
    cache: PathBuf,
    apt: Option<Apt>,
}

impl Fetcher {
    /// Kernels are cached under `cache` (`target/vmtest`).
    pub fn new(cache: &Path) -> Fetcher {
        Fetcher {
            cache: cache.to_path_buf(),
            apt: None,
        }
    }

    /// The kernel for a package entry of the matrix, downloading it only
    /// when it is not cached yet.
    pub fn kernel(
        &mut self,
        key: &str,
        archive: Archive,
        prefix: &str,
    ) -> anyhow::Result<Unpacked> {
        let kernels = self.cache.join("kernels");
        let marker = kernels.join(format!("{key}.package"));
        if let Ok(package) = std::fs::read_to_string(&marker) {
            let package = package.trim().to_string();
            if let Ok(k) = unpacked(&kernels.join(&package), &package) {
                eprintln!("xtask: kernel {key}: {package} (cached)");
                return Ok(k);
            }
        }
        let apt = match self.apt.take() {
            Some(apt) => apt,
            None => {
                let apt = Apt::new(&self.cache.join("apt"))?;
                apt.update()?;
                apt
            }
        };
        let result = download(&apt, &kernels, archive, prefix);
        self.apt = Some(apt);
        let k = result?;
        eprintln!("xtask: kernel {key}: {} unpacked", k.package);
        std::fs::write(&marker, format!("{}\n", k.package))
            .with_context(|| format!("writing {}", marker.display()))?;
        Ok(k)
    }
}

/// Download the newest `<prefix>*<flavour>` (and, from Ubuntu, its modules'
/// package), unpack it into `kernels/<package>` and index its modules.
fn download(apt: &Apt, kernels: &Path, archive: Archive, prefix: &str) -> anyhow::Result<Unpacked> {
    let package = apt.newest(prefix, archive.flavour())?;
    let mut packages = vec![package.clone()];
    if archive == Archive::Ubuntu {
        let release = package
            .strip_prefix("linux-image-")
            .with_context(|| format!("{package} is not a linux-image- package"))?;
        packages.push(format!("linux-modules-{release}"));
    }
    let dir = kernels.join(&package);
    let tmp = kernels.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    apt.download(&packages, &tmp)?;
    let debs: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .with_context(|| format!("listing {}", tmp.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    if debs.len() != packages.len() {
        bail!(
            "apt-get download left {} .deb files in {}, not {}",
            debs.len(),
            tmp.display(),
            packages.len()
        );
    }
    let root = tmp.join("root");
    for deb in &debs {
        run(
            "dpkg-deb",
            &["-x", cmd::path_str(deb)?, cmd::path_str(&root)?],
        )?;
    }
    let (base, release) = modules_root(&root)?;
    // Debian makes the module index in postinst; dpkg-deb -x does not.
    run("depmod", &["-a", "-b", cmd::path_str(&base)?, &release])?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&root, &dir)
        .with_context(|| format!("moving {} to {}", root.display(), dir.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    unpacked(&dir, &package)
}

/// Find the image and module tree of an unpacked package; fails when the
/// module index (made by `depmod`) is missing.
fn unpacked(dir: &Path, package: &str) -> anyhow::Result<Unpacked> {
    let (mods, release) = modules_root(dir)?;
    let image = dir.join(format!("boot/vmlinuz-{release}"));
    if !image.is_file() {
        bail!("{} has no kernel image", dir.display());
    }
    if !mods
        .join("lib/modules")
        .join(&release)
        .join("modules.dep")
        .is_file()
    {
        bail!("{} has no modules.dep", dir.display());
    }
    Ok(Unpacked {
        package: package.to_string(),
        release,
        image,
    })
}

/// The directory `depmod -b` wants (the one holding `lib/modules`) and the
/// kernel release found there.
fn modules_root(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    for base in [dir.to_path_buf(), dir.join("usr")] {
        let Ok(entries) = std::fs::read_dir(base.join("lib/modules")) else {
            continue;
        };
        if let Some(release) = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
        {
            return Ok((base, release));
        }
    }
    bail!("no lib/modules/<release> in {}", dir.display())
}

/// apt-get and apt-cache with a private configuration.
struct Apt {
    dir: PathBuf,
    opts: Vec<String>,
}

impl Apt {
    fn new(dir: &Path) -> anyhow::Result<Apt> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let sources = dir.join("sources.list");
        let mut list = String::new();
        for k in KERNELS {
            let Source::Package { archive, suite, .. } = k.source else {
                continue;
            };
            match archive {
                Archive::Debian => list.push_str(&format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {DEBIAN_MIRROR} {suite} main\n"
                )),
                Archive::Ubuntu => {
                    // Fetched by the first; a file check after that.
                    let key = crate::ubuntu::archive_key()?;
                    for pocket in [suite.to_string(), format!("{suite}-updates")] {
                        list.push_str(&format!(
                            "deb [signed-by={}] {} {pocket} main\n",
                            key.display(),
                            crate::ubuntu::MIRROR
                        ));
                    }
                }
            }
        }
        std::fs::write(&sources, list).with_context(|| format!("writing {}", sources.display()))?;
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "").with_context(|| format!("writing {}", status.display()))?;
        }
        let p = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
        let opts = [
            format!("Dir::Etc::sourcelist={}", p("sources.list")),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={}", p("lists")),
            format!("Dir::Cache={}", p("cache")),
            format!("Dir::State::status={}", p("status")),
            // The lock files of a private state are ours alone.
            "Debug::NoLocking=1".to_string(),
            // Root downloads into a folder the _apt user cannot write.
            "APT::Sandbox::User=root".to_string(),
            "APT::Architectures=amd64".to_string(),
            "Acquire::Languages=none".to_string(),
            // Only the package lists: no AppStream metadata or icons.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_string(),
            "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false".to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        Ok(Apt {
            dir: dir.to_path_buf(),
            opts,
        })
    }

    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v: Vec<&str> = self.opts.iter().map(String::as_str).collect();
        v.extend_from_slice(rest);
        v
    }

    fn update(&self) -> anyhow::Result<()> {
        eprintln!(
            "xtask: updating the kernel package index in {}",
            self.dir.display()
        );
        run("apt-get", &self.args(&["-qq", "update"]))
    }

    /// The newest `<prefix><version><flavour>` image package in the index;
    /// the version part has no `-`, which leaves out Debian's `-cloud-amd64`
    /// and `-rt-amd64` and Ubuntu's `-lowlatency` flavours.
    fn newest(&self, prefix: &str, flavour: &str) -> anyhow::Result<String> {
        let names = cmd::output("apt-cache", &self.args(&["pkgnames", prefix]))
            .context("apt-cache pkgnames failed")?;
        names
            .lines()
            .map(str::trim)
            .filter(|n| {
                n.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix(flavour))
                    .is_some_and(|v| !v.is_empty() && !v.contains('-'))
            })
            .max_by(|a, b| cmd::natural_cmp(a, b))
            .map(str::to_string)
            .with_context(|| format!("no {prefix}*{flavour} package in the index"))
    }

    fn download(&self, packages: &[String], into: &Path) -> anyhow::Result<()> {
        let mut rest = vec!["-qq", "download"];
        rest.extend(packages.iter().map(String::as_str));
        let args = self.args(&rest);
        let package = packages.join(" ");
        eprintln!("xtask: downloading {package} into {}", into.display());
        let status = std::process::Command::new("apt-get")
            .args(&args)
            .current_dir(into)
            .status()
            .context("starting apt-get")?;
        if !status.success() {
            bail!("`apt-get download {package}` failed ({status})");
        }
        Ok(())
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
