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

use anyhow::{Context as _, bail};

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

    let depends = shlib_depends(&tree.join("usr/bin/tracer"))?;
    if let Some(needs) = glibc_needed(&depends)
        && cmd::natural_cmp(needs, OLDEST_GLIBC).is_gt()
    {
        bail!(
            "the binary needs glibc {needs} ({depends}), newer than {OLDEST_GLIBC}, the oldest \
             of the distributions tracer is tested on (Ubuntu 22.04 has 2.35, RHEL 9 2.34); \
             build on an older distribution"
        );
    }
    let control = Control {
        version: version.to_string(),
        arch: arch.to_string(),
        depends,
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
    /// The shared libraries the binary needs, as `dpkg-shlibdeps` words
    /// them from the symbol versions it uses: `libc6 (>= 2.34), libgcc-s1
    /// (>= 4.2)`, not the build machine's own glibc.
    pub depends: String,
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
Depends: {depends}
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
            depends = self.depends,
        )
    }
}

/// The oldest glibc the binary may ask for: Ubuntu 22.04's (2.35), the
/// oldest glibc among the distributions whose kernels tracer is tested on
/// that load it (docs/vmtest.md). RHEL 9 has 2.34; today's builds need 2.34.
const OLDEST_GLIBC: &str = "2.35";

/// The `Depends` of `binary`, from `dpkg-shlibdeps` (Debian's own tool for
/// it, in dpkg-dev): the lowest version of each library that has every
/// symbol version the binary uses. It wants a `debian/control`; a
/// throwaway one beside nothing else is enough.
fn shlib_depends(binary: &Path) -> anyhow::Result<String> {
    crate::setup::apt_install(
        "packaging tools",
        "cargo xtask dist",
        &[("dpkg-shlibdeps", "dpkg-dev")],
    )?;
    let dir = std::env::temp_dir().join(format!("tracer-shlibdeps-{}", std::process::id()));
    remove_dir(&dir)?;
    write(
        &dir.join("debian/control"),
        b"Source: tracer\n\nPackage: tracer\nArchitecture: any\n",
    )?;
    let out = std::process::Command::new("dpkg-shlibdeps")
        .args(["-O", "-e"])
        .arg(binary)
        .current_dir(&dir)
        .output()
        .context("starting dpkg-shlibdeps")?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    match shlibs_line(&text) {
        Some(d) if out.status.success() => Ok(d.to_string()),
        _ => bail!(
            "dpkg-shlibdeps -O -e {} failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// `libc6 (>= 2.34), libgcc-s1 (>= 4.2)` of dpkg-shlibdeps' output line
/// `shlibs:Depends=libc6 (>= 2.34), libgcc-s1 (>= 4.2)`.
fn shlibs_line(out: &str) -> Option<&str> {
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::trim)
        .filter(|d| !d.is_empty())
}

/// The glibc version a `Depends` asks for: `2.34` of `libc6 (>= 2.34), ...`.
fn glibc_needed(depends: &str) -> Option<&str> {
    depends
        .split(',')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("libc6 (>= "))
        .and_then(|v| v.strip_suffix(')'))
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
            depends: "libc6 (>= 2.34), libgcc-s1 (>= 4.2)".into(),
            installed_kib: 12345,
        };
        let text = c.text();
        for field in [
            "Package: tracer\n",
            "Version: 0.1.0\n",
            "Architecture: amd64\n",
            "Installed-Size: 12345\n",
            "Depends: libc6 (>= 2.34), libgcc-s1 (>= 4.2)\n",
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
    fn depends_and_glibc_are_read_from_dpkg_shlibdeps() {
        let out = "shlibs:Depends=libc6 (>= 2.34), libgcc-s1 (>= 4.2)\n";
        let d = shlibs_line(out).unwrap();
        assert_eq!(d, "libc6 (>= 2.34), libgcc-s1 (>= 4.2)");
        assert_eq!(glibc_needed(d), Some("2.34"));
        assert_eq!(glibc_needed("libgcc-s1 (>= 4.2)"), None);
        assert_eq!(shlibs_line("shlibs:Depends=\n"), None);
        assert_eq!(shlibs_line("warning: something\n"), None);
        let newer = |v: &str| cmd::natural_cmp(v, OLDEST_GLIBC).is_gt();
        assert!(!newer("2.34"));
        assert!(!newer("2.35"));
        assert!(newer("2.36"));
        assert!(
            cmd::natural_cmp("2.100", "2.35").is_gt(),
            "numbers, not text"
        );
        assert!(cmd::natural_cmp("2.4", "2.35").is_lt());
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
