//! promtool (Debian package `prometheus`): found on PATH or the test skips
//! with a message, run on the deploy files and on the dashboard's queries
//! written out as recording rules (`promtool check rules` parses each).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// deploy/prometheus, where the rules and their unit tests live.
pub const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");

/// The alerting rules file.
pub fn rules_file() -> PathBuf {
    Path::new(RULES_DIR).join("tracer-rules.yml")
}

/// True when promtool is on PATH; otherwise says why the test skips.
pub fn available(test: &str) -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "{test}: skipped: promtool is not installed (Debian package `prometheus`; `cargo xtask test` installs it)"
        );
    }
    found
}

/// `promtool ARGS` in `dir`; panics with its output unless it succeeds.
pub fn run(dir: &Path, args: &[&str]) -> String {
    let out: Output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

/// A rule file with one recording rule per `(record, expr)`; JSON strings
/// are YAML double-quoted scalars, so any expression is quoted safely.
pub fn recording_rules(rules: &[(String, String)]) -> String {
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (record, expr) in rules {
        let quoted = serde_json::to_string(expr).expect("JSON string");
        yaml.push_str(&format!(
            "      - record: {record}\n        expr: {quoted}\n"
        ));
    }
    yaml
}

/// `promtool check rules` on `yaml`, written to a file of its own;
/// Err holds promtool's complaint.
pub fn check_rules_text(yaml: &str, tag: &str) -> Result<String, String> {
    let file = tempfile::Builder::new()
        .prefix(&format!("tracer-dashboards-{tag}-"))
        .suffix(".yml")
        .tempfile()
        .expect("a rule file");
    std::fs::write(file.path(), yaml).expect("write rule file");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(file.path())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
