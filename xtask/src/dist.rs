//! `cargo xtask dist`: what a user installs, in `target/dist/`.
//!
//! One release build of tracer (the kernel object is inside the binary),
//! then one staged tree of everything shipped ([`Staged`]): the binary, the
//! systemd unit and its config example (deploy/systemd/), completions for
//! bash, zsh and fish and the man page (written by the built binary itself,
//! `tracer completions SHELL` and `tracer man`), the Grafana dashboards and
//! Prometheus rules (whatever deploy/grafana/ and deploy/prometheus/ hold),
//! the README. From it: `tracer-<version>-<arch>-linux.tar.gz` and a .deb
//! ([`deb`]). `--check` then verifies the unit and installs, runs and
//! removes the .deb on this machine ([`check`]), and runs the unit under a
//! real systemd in a container ([`systemd`]). docs/install.md has the
//! layout and what the check proves.
mod check;
mod deb;
mod systemd;
mod ubuntu;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::cmd::{self, path_str};

/// Flags of `cargo xtask dist`.
#[derive(Debug, clap::Args)]
pub struct DistArgs {
    /// Then check the packages on this machine (as root): `systemd-analyze
    /// verify` and `security` on the unit, install the .deb, run the
    /// installed agent, purge it.
    #[arg(long)]
    pub check: bool,
}

/// What `cargo xtask dist` wrote.
#[derive(Debug)]
pub struct Dist {
    /// The tracer version, as `tracer --version` prints it.
    pub version: String,
    /// The staged tree the tarball holds (its top folder).
    pub staged: Staged,
    /// The tarball.
    pub tarball: PathBuf,
    /// The .deb.
    pub deb: PathBuf,
}

/// The files shipped, staged under one folder, the tarball's layout:
/// `bin/tracer`, `systemd/`, `completions/`, `man/`, `grafana/`,
/// `prometheus/`, `README.md`.
#[derive(Debug)]
pub struct Staged {
    /// The top folder, `tracer-<version>-<arch>-linux`.
    pub root: PathBuf,
}

impl Staged {
    /// The staged binary.
    pub fn binary(&self) -> PathBuf {
        self.root.join("bin/tracer")
    }
    /// The systemd unit.
    pub fn unit(&self) -> PathBuf {
        self.root.join("systemd/tracer.service")
    }
    /// The commented config example, /etc/tracer/tracer.toml in the .deb.
    pub fn config(&self) -> PathBuf {
        self.root.join("systemd/tracer.toml")
    }
    /// The completion script of `shell`, under the name its shell loads.
    pub fn completion(&self, shell: &str) -> PathBuf {
        self.root.join("completions").join(completion_file(shell))
    }
    /// The man page, roff.
    pub fn man(&self) -> PathBuf {
        self.root.join("man/tracer.1")
    }
}

/// The shells `tracer completions` knows.
pub const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

/// The file name each shell looks a command's completions up by.
pub fn completion_file(shell: &str) -> String {
    match shell {
        "zsh" => "_tracer".into(),
        "fish" => "tracer.fish".into(),
        _ => "tracer".into(),
    }
}

/// Folders of deploy/ shipped whole when they exist (the dashboards and the
/// alerting rules), with the file kinds taken from each.
pub const EXTRAS: [(&str, &[&str]); 2] = [("grafana", &["json"]), ("prometheus", &["yml", "yaml"])];

/// Build everything, then check it when asked.
pub fn dist(args: DistArgs) -> anyhow::Result<()> {
    if args.check && !cmd::is_root() {
        bail!("the dist check installs a .deb: run it as root (sudo -E cargo xtask dist --check)");
    }
    let d = build()?;
    eprintln!("xtask: wrote {}", d.tarball.display());
    eprintln!("xtask: wrote {}", d.deb.display());
    if args.check {
        check::check(&d)?;
    }
    Ok(())
}

/// Build tracer in release mode and write the tarball and the .deb.
pub fn build() -> anyhow::Result<Dist> {
    crate::setup::ensure()?;
    cmd::run("cargo", &["build", "--release", "-p", "tracer"])?;
    let root = cmd::workspace_root();
    let built = root.join("target/release/tracer");
    let version = version_of(&built)?;
    let out = root.join("target/dist");
    let name = format!("tracer-{version}-{}-linux", std::env::consts::ARCH);
    let stage_dir = out.join("stage");
    remove_dir(&stage_dir)?;
    let staged = stage(&root, &built, &stage_dir.join(&name))?;
    let tarball = out.join(format!("{name}.tar.gz"));
    cmd::run(
        "tar",
        &[
            "--create",
            "--gzip",
            "--file",
            path_str(&tarball)?,
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--directory",
            path_str(&stage_dir)?,
            &name,
        ],
    )?;
    let deb = deb::build(&staged, &version, &out)?;
    Ok(Dist {
        version,
        staged,
        tarball,
        deb,
    })
}

/// The version `tracer --version` prints (`tracer 0.1.0`).
fn version_of(binary: &Path) -> anyhow::Result<String> {
    let out = cmd::output(path_str(binary)?, &["--version"])
        .with_context(|| format!("running {} --version", binary.display()))?;
    parse_version(&out).with_context(|| format!("`tracer --version` printed {out:?}"))
}

fn parse_version(out: &str) -> Option<String> {
    let v = out.trim().strip_prefix("tracer ")?;
    (!v.is_empty() && !v.contains(char::is_whitespace)).then(|| v.to_string())
}

/// Copy what is shipped under `dir` and have the built binary write its
/// completions and man page there.
fn stage(root: &Path, built: &Path, dir: &Path) -> anyhow::Result<Staged> {
    let staged = Staged {
        root: dir.to_path_buf(),
    };
    copy(built, &staged.binary(), 0o755)?;
    copy(
        &root.join("deploy/systemd/tracer.service"),
        &staged.unit(),
        0o644,
    )?;
    copy(
        &root.join("deploy/systemd/tracer.toml"),
        &staged.config(),
        0o644,
    )?;
    let bin = staged.binary();
    let example = std::fs::read_to_string(staged.config())?;
    let help = String::from_utf8_lossy(&captured(&bin, &["run", "--help"])?).into_owned();
    let missing = undocumented(&help, &example);
    if !missing.is_empty() {
        bail!(
            "deploy/systemd/tracer.toml does not show these keys of `tracer run`: {}; \
             add a commented `#key = default` line for each",
            missing.join(", ")
        );
    }
    for shell in SHELLS {
        let script = captured(&bin, &["completions", shell])?;
        write(&staged.completion(shell), &script)?;
    }
    write(&staged.man(), &captured(&bin, &["man"])?)?;
    for (folder, kinds) in EXTRAS {
        for file in extras(&root.join("deploy").join(folder), kinds)? {
            let name = file.file_name().context("a file without a name")?;
            copy(&file, &dir.join(folder).join(name), 0o644)?;
        }
    }
    for doc in ["README.md", "LICENSE", "LICENSE-MIT", "LICENSE-APACHE"] {
        let src = root.join(doc);
        if src.is_file() {
            copy(&src, &dir.join(doc), 0o644)?;
        }
    }
    Ok(staged)
}

/// The flags of `tracer run --help` (its config file's keys) that the
/// config example shows no `#key = ` line for.
pub fn undocumented(help: &str, example: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        // The log's flags belong to every command, not to the file.
        .filter(|flag| !["config", "help", "version", "log-level", "log-format"].contains(flag))
        .filter(|flag| !example.contains(&format!("\n#{flag} = ")))
        .map(str::to_string)
        .collect()
}

/// The files of `dir` whose extension is one of `kinds`, sorted; none when
/// `dir` does not exist (it is another change's to create).
pub fn extras(dir: &Path, kinds: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let kind = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_file() && kinds.contains(&kind) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Run `binary args` and return its stdout, which must not be empty.
fn captured(binary: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = std::process::Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("starting {}", binary.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "`tracer {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Copy a file, creating its folder, with `mode`.
pub fn copy(src: &Path, dst: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    write(dst, &bytes)?;
    set_mode(dst, mode)
}

/// Write a file (mode 0644), creating its folder.
pub fn write(dst: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(dst, bytes).with_context(|| format!("writing {}", dst.display()))?;
    set_mode(dst, 0o644)
}

/// Set a file's permission bits (the umask must not decide what ships).
pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Remove a folder and what it holds, if it exists.
pub fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_what_clap_prints() {
        assert_eq!(parse_version("tracer 0.1.0\n").as_deref(), Some("0.1.0"));
        assert_eq!(parse_version("tracer\n"), None);
        assert_eq!(parse_version("other 1.0"), None);
    }

    #[test]
    fn the_config_example_must_show_every_key() {
        let help = "Usage: tracer run [OPTIONS]\n\nOptions:\n      --config <FILE>\n          TOML\n      \
                    --listen <ADDR:PORT>\n          Address\n      --max-sockets <N>\n          Cap \
                    [default: 1000000]\n  -h, --help\n          Print help\n";
        assert_eq!(
            undocumented(help, "# x\n#listen = \"127.0.0.1:9077\"\n"),
            ["max-sockets"]
        );
        assert!(undocumented(help, "\n#listen = 1\n#max-sockets = 2\n").is_empty());
    }

    #[test]
    fn each_shell_finds_its_completions_by_name() {
        let files: Vec<String> = SHELLS.iter().map(|s| completion_file(s)).collect();
        assert_eq!(files, ["tracer", "_tracer", "tracer.fish"]);
    }

    #[test]
    fn extras_are_the_files_of_their_kinds_and_none_when_absent() {
        let dir = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(extras(&dir, &["json"]).unwrap().is_empty());
        std::fs::create_dir_all(dir.join("sub.json")).unwrap();
        for f in ["b.json", "a.json", "notes.md"] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
        let found = extras(&dir, &["json"]).unwrap();
        assert_eq!(found, [dir.join("a.json"), dir.join("b.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
