//! The .deb on Ubuntu 22.04: installed with dpkg into a minimal jammy root
//! filesystem ([`crate::ubuntu::root`]), whose glibc (2.35) is older than
//! the build machine's, then run there with the host's `/proc` and `/sys`:
//! `tracer --version`, and `tracer events`, which loads the kernel
//! programs. A package whose `Depends` or binary asks for a newer glibc
//! fails here. The root is left as it was (the package purged, `/proc` and
//! `/sys` unmounted), also when a step fails.
use std::path::PathBuf;

use anyhow::{Context as _, ensure};

use super::{Dist, path_str};
use crate::cmd;

/// The Ubuntu release tried.
const SUITE: &str = "jammy";

/// Where the .deb is copied, as the chroot sees it.
const DEB_INSIDE: &str = "/tmp/tracer.deb";

/// Install, run, purge.
pub fn check(d: &Dist) -> anyhow::Result<()> {
    let chroot = Chroot::enter(crate::ubuntu::root(SUITE)?, &d.deb)?;
    chroot.run(&["dpkg", "-i", DEB_INSIDE])?;
    let version = chroot.output(&["tracer", "--version"])?;
    ensure!(
        version.starts_with("tracer "),
        "tracer --version printed {version:?} on Ubuntu {SUITE}"
    );
    let glibc = chroot.output(&["ldd", "--version"])?;
    chroot.run(&["tracer", "events", "--duration", "1"])?;
    eprintln!(
        "xtask: ubuntu {SUITE}: the .deb installs and runs ({}, {})",
        version.trim(),
        glibc.lines().next().unwrap_or_default()
    );
    Ok(())
}

/// A root filesystem with the host's `/proc` and `/sys` mounted in it;
/// dropped, it purges the package and unmounts them.
struct Chroot {
    root: PathBuf,
    mounted: Vec<PathBuf>,
    /// The .deb copied in, at [`DEB_INSIDE`].
    deb: PathBuf,
}

impl Chroot {
    /// Copy `deb` to [`DEB_INSIDE`] and mount /proc and /sys.
    fn enter(root: PathBuf, deb: &std::path::Path) -> anyhow::Result<Chroot> {
        let copy = root.join(DEB_INSIDE.trim_start_matches('/'));
        std::fs::copy(deb, &copy)
            .with_context(|| format!("copying {} into {}", deb.display(), root.display()))?;
        let mut c = Chroot {
            root,
            mounted: Vec::new(),
            deb: copy,
        };
        // Not --rbind: the host's submounts (cgroups, bpffs) stay out, so a
        // mount left behind by a killed run cannot expose them to `rm -rf
        // target`. tracer needs /sys/kernel/btf, which is sysfs itself.
        for dir in ["proc", "sys"] {
            let at = c.root.join(dir);
            // A killed run may have left it mounted.
            let _ = cmd::output("umount", &[path_str(&at)?]);
            cmd::run("mount", &["--bind", &format!("/{dir}"), path_str(&at)?])?;
            c.mounted.push(at);
        }
        Ok(c)
    }

    fn args<'a>(&'a self, argv: &[&'a str]) -> anyhow::Result<Vec<&'a str>> {
        let mut v = vec![path_str(&self.root)?];
        v.extend_from_slice(argv);
        Ok(v)
    }

    fn run(&self, argv: &[&str]) -> anyhow::Result<()> {
        cmd::run("chroot", &self.args(argv)?)
    }

    fn output(&self, argv: &[&str]) -> anyhow::Result<String> {
        cmd::output("chroot", &self.args(argv)?)
            .with_context(|| format!("`{}` failed in {}", argv.join(" "), self.root.display()))
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = cmd::output(
            "chroot",
            &[&self.root.to_string_lossy(), "dpkg", "--purge", "tracer"],
        );
        for at in self.mounted.iter().rev() {
            if let Err(e) = cmd::run("umount", &[&at.to_string_lossy()]) {
                eprintln!("xtask: {e:#}");
            }
        }
        let _ = std::fs::remove_file(&self.deb);
    }
}
