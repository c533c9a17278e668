//! The test binaries and the `tracer` binary, built once on the host.
//!
//! `cargo test --no-run --message-format=json` prints one JSON line per
//! artifact; an integration test target `tracer/tests/events.rs` is the
//! executable `target/debug/deps/events-<hash>`. The guest sees the host's
//! filesystem, so it runs these very files.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cmd;

/// What the suite runs.
#[derive(Debug)]
pub struct Binaries {
    /// Integration test target name -> its executable.
    pub tests: BTreeMap<String, PathBuf>,
    /// The `tracer` executable the tests run (their `CARGO_BIN_EXE_tracer`).
    pub tracer: PathBuf,
}

impl Binaries {
    /// The executable of test target `name`.
    pub fn test(&self, name: &str) -> anyhow::Result<&PathBuf> {
        self.tests
            .get(name)
            .with_context(|| format!("cargo built no test binary `{name}`"))
    }
}

/// Build the workspace's tests (not run) and return their executables.
pub fn build() -> anyhow::Result<Binaries> {
    let args = [
        "test",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ];
    eprintln!("xtask: $ cargo {}", args.join(" "));
    let out = Command::new("cargo")
        .args(args)
        .current_dir(cmd::workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo")?;
    if !out.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), out.status);
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Pick the artifacts out of cargo's JSON messages.
fn parse(json_lines: &str) -> anyhow::Result<Binaries> {
    let mut tests = BTreeMap::new();
    let mut tracer = None;
    for line in json_lines.lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let target = &msg["target"];
        let name = target["name"].as_str().unwrap_or_default().to_string();
        let kinds: Vec<&str> = target["kind"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let is_test = msg["profile"]["test"].as_bool().unwrap_or(false);
        if is_test && kinds.contains(&"test") {
            tests.insert(name, PathBuf::from(exe));
        } else if !is_test && kinds.contains(&"bin") && name == "tracer" {
            tracer = Some(PathBuf::from(exe));
        }
    }
    let tracer = tracer.context("cargo reported no `tracer` executable")?;
    Ok(Binaries { tests, tracer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_integration_tests_and_the_tracer_binary() {
        let lines = [
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"events"},"profile":{"test":true},"executable":"/w/target/debug/deps/events-1a2b"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"tracer"},"profile":{"test":true},"executable":"/w/target/debug/deps/tracer-99"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"tracer"},"profile":{"test":false},"executable":"/w/target/debug/tracer"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"anyhow"},"profile":{"test":false},"executable":null}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        let b = parse(&lines).unwrap();
        assert_eq!(
            b.test("events").unwrap(),
            &PathBuf::from("/w/target/debug/deps/events-1a2b")
        );
        assert!(
            b.test("tracer").is_err(),
            "unit tests are not integration tests"
        );
        assert_eq!(b.tracer, PathBuf::from("/w/target/debug/tracer"));
    }
}
