//! The engine microbenchmarks in tracer/benches: build them once, run the
//! built executables, and read their results back (criterion's `new/estimates.json` and
//! `benchmark.json`, and the memory bench's `bytes_per_socket` line).
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// One criterion benchmark.
#[derive(Clone, Debug)]
pub struct Row {
    /// `group/function`.
    pub id: String,
    /// Median time of one iteration, ns.
    pub ns_per_iter: f64,
    /// Elements (events) per iteration, when the bench declares a throughput.
    pub elements: Option<u64>,
}

impl Row {
    /// Elements per second at the median.
    pub fn per_sec(&self) -> Option<f64> {
        self.elements
            .map(|e| e as f64 * 1e9 / self.ns_per_iter.max(1e-9))
    }
}

/// Everything the microbenchmarks measured.
#[derive(Clone, Debug, Default)]
pub struct Results {
    /// Timing benches.
    pub rows: Vec<Row>,
    /// Heap bytes per tracked socket (the worse population), and how many
    /// sockets were tracked.
    pub memory: Option<(f64, u64)>,
    /// Every `key: value` line of the memory bench.
    pub memory_detail: Vec<(String, f64)>,
    /// Run with short measurement times.
    pub quick: bool,
}

/// The compiled bench executables, by target name.
#[derive(Clone, Debug, Default)]
pub struct Executables {
    engine: PathBuf,
    engine_memory: PathBuf,
}

/// Compile the benches and return their executables, so the timing runs
/// measure this build even if the sources change meanwhile.
pub fn build() -> anyhow::Result<Executables> {
    let mut exe = Executables::default();
    for a in cmd::cargo_artifacts(&["bench", "-p", "tracer", "--no-run"])? {
        match a.name.as_str() {
            "engine" => exe.engine = a.executable,
            "engine_memory" => exe.engine_memory = a.executable,
            _ => {}
        }
    }
    anyhow::ensure!(
        exe.engine.is_file() && exe.engine_memory.is_file(),
        "cargo bench --no-run did not report the engine and engine_memory executables"
    );
    Ok(exe)
}

/// Run the benches.
pub fn run(exe: &Executables, quick: bool) -> anyhow::Result<Results> {
    let home = super::target_dir().join("bench/criterion");
    let _ = std::fs::remove_dir_all(&home);
    let mut args = vec!["--bench", "--noplot"];
    if quick {
        args.extend([
            "--warm-up-time",
            "0.5",
            "--measurement-time",
            "1",
            "--sample-size",
            "10",
        ]);
    }
    let engine = exe.engine.to_string_lossy();
    eprintln!("xtask: $ {engine} {}", args.join(" "));
    let status = Command::new(&exe.engine)
        .args(&args)
        .env("CRITERION_HOME", &home)
        .current_dir(cmd::workspace_root().join("tracer"))
        .status()
        .with_context(|| format!("starting {engine}"))?;
    if !status.success() {
        bail!("{engine} failed ({status})");
    }
    let rows = read_criterion(&home)?;
    let detail = memory(&exe.engine_memory)?;
    let get = |k: &str| detail.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
    let bytes =
        get("bytes_per_socket").context("engine_memory printed no bytes_per_socket line")?;
    let sockets = get("sockets").unwrap_or(0.0) as u64;
    Ok(Results {
        rows,
        memory: Some((bytes, sockets)),
        memory_detail: detail,
        quick,
    })
}

/// Run the memory bench: its `key: value` lines.
fn memory(exe: &Path) -> anyhow::Result<Vec<(String, f64)>> {
    eprintln!("xtask: $ {} --bench", exe.display());
    let out = Command::new(exe)
        .arg("--bench")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    if !out.status.success() {
        bail!("{} failed ({})", exe.display(), out.status);
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// Every `*/new/benchmark.json` under `home` with its `estimates.json`.
fn read_criterion(home: &Path) -> anyhow::Result<Vec<Row>> {
    let mut found = Vec::new();
    walk(home, &mut found);
    let mut rows = Vec::new();
    for bench_json in found {
        let dir = bench_json.parent().context("benchmark.json has a parent")?;
        let b = json(&bench_json)?;
        let e = json(&dir.join("estimates.json"))?;
        let id = b["full_id"].as_str().unwrap_or("?").to_string();
        let ns = e["median"]["point_estimate"]
            .as_f64()
            .with_context(|| format!("no median in {}", dir.display()))?;
        let elements = b["throughput"]["Elements"].as_u64();
        rows.push(Row {
            id,
            ns_per_iter: ns,
            elements,
        });
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    anyhow::ensure!(
        !rows.is_empty(),
        "criterion wrote no results under {}",
        home.display()
    );
    Ok(rows)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.file_name().is_some_and(|n| n == "benchmark.json")
            && p.parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == "new")
        {
            out.push(p);
        }
    }
}

fn json(p: &Path) -> anyhow::Result<serde_json::Value> {
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&s).with_context(|| format!("parsing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_output() {
        let dir = std::env::temp_dir().join(format!("xtask-micro-{}", std::process::id()));
        let new = dir.join("engine/decode/new");
        std::fs::create_dir_all(&new).expect("mkdir");
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"full_id":"engine/decode","throughput":{"Elements":1000}}"#,
        )
        .expect("write");
        std::fs::write(
            new.join("estimates.json"),
            r#"{"median":{"point_estimate":2000.0}}"#,
        )
        .expect("write");
        let rows = read_criterion(&dir).expect("rows");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "engine/decode");
        assert_eq!(rows[0].per_sec(), Some(5e8));
    }
}
