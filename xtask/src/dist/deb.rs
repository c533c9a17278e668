//! The .deb: the staged files at the paths Debian expects, a
//! `DEBIAN/control` written here, and `dpkg-deb --build`.
//!
//! Why not cargo-deb: it would be one more cargo subcommand to build and
//! keep in step with the toolchain on every machine that runs
//! `cargo xtask dist`, for what is a dozen files and a control file;
//! `dpkg-deb` is on every Debian-based machine, and this module is the
//! whole recipe. `--root-owner-group` makes every file root's without
//! fakeroot.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{EXTRAS, SHELLS, Staged, copy, path_str, remove_dir, set_mode, write};
use crate::cmd;

/// Where each staged file goes in the installed system, the .deb's layout.
pub const UNIT: &str = "lib/systemd/system/tracer.service";
/// The conffile: dpkg keeps a user's edits across upgrades.
pub const CONFIG: &str = "etc/tracer/tracer.toml";
/// The man page, gzipped.
pub const MAN: &str = "usr/share/man/man1/tracer.1.gz";
/// Where the dashboards and rules go, one folder each.
pub const SHARE: &str = "usr/share/tracer";

/// The installed path of `shell`'s completions (its package's vendor folder).
pub fn completion_path(shell: &str) -> &'static str {
    match shell {
        "zsh" => "usr/share/zsh/vendor-completions/_tracer",
        "fish" => "usr/share/fish/vendor_completions.d/tracer.fish",
        _ => "usr/share/bash-completion/completions/tracer",
    }
}

/// The package's maintainer, as the control file needs one.
const MAINTAINER: &str = "tracer maintainers <maintainers@users.noreply.github.com>";

/// Lay the staged files out under `out/deb/`, write the control files and
/// build `out/tracer_<version>_<debarch>.deb`.
pub fn build(staged: &Staged, version: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let arch = debian_arch(std::env::consts::ARCH).with_context(|| {
        format!(
            "no Debian architecture known for {}",
            std::env::consts::ARCH
        )
    })?;
    let tree = out.join("deb");
    remove_dir(&tree)?;
    copy(&staged.binary(), &tree.join("usr/bin/tracer"), 0o755)?;
    copy(&staged.unit(), &tree.join(UNIT), 0o644)?;
    copy(&staged.config(), &tree.join(CONFIG), 0o644)?;
    for shell in SHELLS {
        copy(
            &staged.completion(shell),
            &tree.join(completion_path(shell)),
            0o644,
        )?;
    }
    let man = tree.join(MAN);
    copy(&staged.man(), &man.with_extension(""), 0o644)?;
    // -n: no name or time in the header, so equal pages give equal bytes.
    cmd::run("gzip", &["-9nf", path_str(&man.with_extension(""))?])?;
    for (folder, _) in EXTRAS {
        let from = staged.root.join(folder);
        for file in super::extras(&from, &["json", "yml", "yaml"])? {
            let name = file.file_name().context("a file without a name")?;
            copy(&file, &tree.join(SHARE).join(folder).join(name), 0o644)?;
        }
    }
    let doc = tree.join("usr/share/doc/tracer");
    if staged.root.join("README.md").is_file() {
        copy(
            &staged.root.join("README.md"),
            &doc.join("README.md"),
            0o644,
        )?;
    }
    write(&doc.join("copyright"), copyright().as_bytes())?;

    let control = Control {
        version: version.to_string(),
        arch: arch.to_string(),
        libc: libc_version()?,
        installed_kib: kib(&tree)?,
    };
    let debian = tree.join("DEBIAN");
    write(&debian.join("control"), control.text().as_bytes())?;
    write(&debian.join("conffiles"), format!("/{CONFIG}\n").as_bytes())?;
    for (name, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        write(&debian.join(name), text.as_bytes())?;
        set_mode(&debian.join(name), 0o755)?;
    }
    let deb = out.join(format!("tracer_{version}_{arch}.deb"));
    cmd::run(
        "dpkg-deb",
        &[
            "--build",
            "--root-owner-group",
            path_str(&tree)?,
            path_str(&deb)?,
        ],
    )?;
    Ok(deb)
}

/// Debian's name for a Rust target architecture (`std::env::consts::ARCH`).
pub fn debian_arch(rust: &str) -> Option<&'static str> {
    Some(match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        _ => return None,
    })
}

/// The fields of `DEBIAN/control` that vary. The binary links glibc and
/// libgcc_s (Rust's unwinder); nothing else (`ldd target/release/tracer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The package version (the crate's).
    pub version: String,
    /// The Debian architecture.
    pub arch: String,
    /// The glibc the binary was built against: the oldest it may need.
    pub libc: String,
    /// The installed size in KiB.
    pub installed_kib: u64,
}

impl Control {
    /// The control file.
    pub fn text(&self) -> String {
        format!(
            "Package: tracer
Version: {version}
Architecture: {arch}
Maintainer: {MAINTAINER}
Installed-Size: {kib}
Depends: libc6 (>= {libc}), libgcc-s1
Section: net
Priority: optional
Homepage: https://github.com/tracer-rs/tracer
Description: eBPF TCP connection lifecycle tracer
 tracer follows every TCP connection on a Linux host through its life with
 eBPF, measures how long sockets sit in TIME_WAIT and CLOSE_WAIT, flags
 leaked sockets with their process, fd and container, and exports it all as
 Prometheus metrics, a JSON API and a JSON event stream.
 .
 Needs Linux 5.12 or later with BTF. The systemd unit tracer.service is
 installed but not enabled: systemctl enable --now tracer.
",
            version = self.version,
            arch = self.arch,
            kib = self.installed_kib,
            libc = self.libc,
        )
    }
}

/// The build machine's glibc version (`2.36`), from dpkg or else `ldd`.
fn libc_version() -> anyhow::Result<String> {
    cmd::output("dpkg-query", &["-W", "-f=${Version}", "libc6"])
        .and_then(|v| upstream_version(&v))
        .or_else(|| cmd::output("ldd", &["--version"]).and_then(|v| ldd_version(&v)))
        .context(
            "cannot tell the glibc version: neither dpkg-query -W libc6 nor ldd --version answered",
        )
}

/// `2.36` of a Debian version `2.36-9+deb12u14`.
pub fn upstream_version(debian: &str) -> Option<String> {
    let v = debian.trim();
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    let v = v.rsplit_once('-').map_or(v, |(up, _)| up);
    v.starts_with(|c: char| c.is_ascii_digit())
        .then(|| v.to_string())
}

/// `2.36` of `ldd (Debian GLIBC 2.36-9+deb12u14) 2.36`, ldd's first line.
pub fn ldd_version(out: &str) -> Option<String> {
    let v = out.lines().next()?.split_whitespace().last()?;
    v.starts_with(|c: char| c.is_ascii_digit())
        .then(|| v.to_string())
}

/// The size of the files under `dir`, in KiB rounded up, as Installed-Size.
fn kib(dir: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                bytes += meta.len();
            }
        }
    }
    Ok(bytes.div_ceil(1024))
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tracer
Source: https://github.com/tracer-rs/tracer

Files: *
License: MIT or Apache-2.0
"
    .to_string()
}

/// After install or upgrade: systemd rereads its units when it runs (not
/// in a container or chroot), and a running agent is restarted on the new
/// binary. The service is never enabled or started here.
const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -n \"$2\" ]; then
        systemctl try-restart tracer.service || true
    fi
fi
";

/// Before removal: stop the agent, whose binary is about to go.
const PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop tracer.service || true
fi
";

/// After removal: systemd forgets the unit.
const POSTRM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] || [ \"$1\" = purge ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_architectures_map_to_debian_ones() {
        assert_eq!(debian_arch("x86_64"), Some("amd64"));
        assert_eq!(debian_arch("aarch64"), Some("arm64"));
        assert_eq!(debian_arch("powerpc64"), Some("ppc64el"));
        assert_eq!(debian_arch("sparc64"), None);
        assert!(debian_arch(std::env::consts::ARCH).is_some(), "this host");
    }

    #[test]
    fn the_control_file_has_every_required_field_once() {
        let c = Control {
            version: "0.1.0".into(),
            arch: "amd64".into(),
            libc: "2.36".into(),
            installed_kib: 12345,
        };
        let text = c.text();
        for field in [
            "Package: tracer\n",
            "Version: 0.1.0\n",
            "Architecture: amd64\n",
            "Installed-Size: 12345\n",
            "Depends: libc6 (>= 2.36), libgcc-s1\n",
            "Description: eBPF TCP connection lifecycle tracer\n",
        ] {
            assert_eq!(text.matches(field).count(), 1, "{field:?} in\n{text}");
        }
        assert!(text.contains("\nMaintainer: "), "{text}");
        // Every continuation line of the description starts with a space,
        // empty ones are " .", and the file ends with one newline.
        let desc = text.split_once("Description:").unwrap().1;
        for line in desc.lines().skip(1) {
            assert!(line.starts_with(' ') && line.trim() != "", "{line:?}");
        }
        assert!(text.ends_with(".\n") && !text.ends_with("\n\n"));
    }

    #[test]
    fn glibc_versions_from_dpkg_and_ldd() {
        assert_eq!(upstream_version("2.36-9+deb12u14").as_deref(), Some("2.36"));
        assert_eq!(upstream_version("1:2.39-0ubuntu8").as_deref(), Some("2.39"));
        assert_eq!(upstream_version("2.41").as_deref(), Some("2.41"));
        assert_eq!(upstream_version(""), None);
        assert_eq!(
            ldd_version("ldd (Debian GLIBC 2.36-9+deb12u14) 2.36\nCopyright").as_deref(),
            Some("2.36")
        );
        assert_eq!(ldd_version("musl libc (x86_64)\nVersion 1.2.5"), None);
    }

    #[test]
    fn maintainer_scripts_only_talk_to_a_running_systemd_and_never_enable() {
        for script in [POSTINST, PRERM, POSTRM] {
            assert!(script.starts_with("#!/bin/sh\nset -e\n"));
            assert!(script.contains("[ -d /run/systemd/system ]"));
            assert!(!script.contains("enable") && !script.contains(" start "));
        }
    }

    #[test]
    fn completions_go_where_each_shell_package_looks() {
        for shell in SHELLS {
            let path = completion_path(shell);
            assert!(
                path.ends_with(&super::super::completion_file(shell)),
                "{path}"
            );
        }
    }
}
