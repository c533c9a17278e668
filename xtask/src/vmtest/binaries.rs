//! The test binaries and the `tracer` binary, built once on the host.
//!
//! `cargo test --no-run --message-format=json` prints one JSON line per
//! artifact; an integration test target `tracer/tests/events.rs` is the
//! executable `target/debug/deps/events-<hash>`. The guest sees the host's
//! filesystem, so it runs these very files.
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context as _;

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
    pick(cmd::cargo_artifacts(&[
        "test",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--no-run",
    ])?)
}

/// The integration tests and the `tracer` binary among cargo's artifacts.
fn pick(artifacts: Vec<cmd::Artifact>) -> anyhow::Result<Binaries> {
    let mut tests = BTreeMap::new();
    let mut tracer = None;
    for a in artifacts {
        let kind = |k: &str| a.kinds.iter().any(|x| x == k);
        if a.test && kind("test") {
            tests.insert(a.name, a.executable);
        } else if !a.test && kind("bin") && a.name == "tracer" {
            tracer = Some(a.executable);
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
        let b = pick(cmd::artifacts(&lines)).unwrap();
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
