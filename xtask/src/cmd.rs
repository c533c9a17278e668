//! Running commands and telling the user what is being run.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// True when running as uid 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Print and run a command in the workspace root; fail on a non-zero exit.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_env(program, args, &[])
}

/// Like [`run`], with extra environment variables.
pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// A path as the `&str` a command line takes; a path that is not UTF-8
/// is an error, never an empty or mangled argument.
pub fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Run a command and return its stdout, or None if it failed to start or exited non-zero.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replace this process with the command (so signals reach it directly).
pub fn exec(program: &str, args: &[&str]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let err = Command::new(program).args(args).exec();
    Err(err).with_context(|| format!("starting {program}"))
}

/// One executable cargo built, from its `compiler-artifact` JSON message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The target's name (`events` for tracer/tests/events.rs).
    pub name: String,
    /// The target's kinds (`test`, `bin`, `bench`, `lib`, ...).
    pub kinds: Vec<String>,
    /// Built with the test harness (`profile.test`).
    pub test: bool,
    /// The executable.
    pub executable: PathBuf,
}

/// Run `cargo ARGS --message-format=json-render-diagnostics` in the
/// workspace (ARGS a `--no-run` build) and return every executable it
/// reports; diagnostics go to stderr as usual.
pub fn cargo_artifacts(args: &[&str]) -> anyhow::Result<Vec<Artifact>> {
    let mut all = args.to_vec();
    all.push("--message-format=json-render-diagnostics");
    eprintln!("xtask: $ cargo {}", all.join(" "));
    let out = Command::new("cargo")
        .args(&all)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting cargo")?;
    if !out.status.success() {
        bail!("`cargo {}` failed ({})", all.join(" "), out.status);
    }
    Ok(artifacts(&String::from_utf8_lossy(&out.stdout)))
}

/// Pick the executables out of cargo's JSON messages.
pub fn artifacts(json_lines: &str) -> Vec<Artifact> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            Some(Artifact {
                name: m["target"]["name"].as_str()?.to_string(),
                kinds: m["target"]["kind"]
                    .as_array()?
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
                test: m["profile"]["test"].as_bool().unwrap_or(false),
                executable: PathBuf::from(m["executable"].as_str()?),
            })
        })
        .collect()
}

/// Compare names with their digit runs as numbers, so that
/// `linux-image-6.12.117` sorts after `linux-image-6.12.48` and glibc
/// `2.100` after `2.35`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut v: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match v.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => v.push((digit, c.to_string())),
            }
        }
        v
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, ra), (db, rb)) in ca.iter().zip(cb.iter()) {
        let ord = if *da && *db {
            let (ta, tb) = (ra.trim_start_matches('0'), rb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            ra.cmp(rb)
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_by_numbers_not_by_text() {
        let mut v = [
            "linux-image-6.12.117+deb13-amd64",
            "linux-image-6.12.48+deb13-amd64",
            "linux-image-6.12.107+deb13-amd64",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v[2], "linux-image-6.12.117+deb13-amd64");
        assert!(natural_cmp("linux-image-5.10.0-9-amd64", "linux-image-5.10.0-32-amd64").is_lt());
        assert!(
            natural_cmp(
                "linux-image-5.15.0-99-generic",
                "linux-image-5.15.0-204-generic"
            )
            .is_lt()
        );
    }
}
