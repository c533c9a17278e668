//! The machine a benchmark ran on, described for BENCHMARKS.md: CPU (lscpu),
//! kernel (uname), memory, the TCP sysctls that shape churn, tool versions,
//! and which commit of the tracer was measured.
use std::fmt::Write as _;

use crate::cmd;

/// The current time, UTC, to the minute.
pub fn now_utc() -> String {
    cmd::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        .map_or_else(|| "(unknown date)".into(), |s| s.trim().to_string())
}

fn lscpu(key: &str) -> Option<String> {
    let out = cmd::output("lscpu", &[])?;
    out.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')
            .map(|v| v.trim().to_string())
    })
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The work tree's commit, and whether it has uncommitted changes.
pub fn commit() -> String {
    let root = cmd::workspace_root();
    let root = root.to_string_lossy();
    let head = cmd::output("git", &["-C", &root, "rev-parse", "--short", "HEAD"])
        .map(|s| s.trim().to_string());
    let dirty = cmd::output(
        "git",
        &["-C", &root, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_some_and(|s| !s.trim().is_empty());
    match head {
        Some(h) if dirty => format!("{h} + uncommitted changes"),
        Some(h) => h,
        None => "unknown".into(),
    }
}

/// A Markdown table describing this machine; `binary` is the tracer binary
/// measured when it was not built from this tree.
pub fn describe_md(binary: Option<&str>) -> String {
    let unknown = || "?".to_string();
    let mem_gib = read("/proc/meminfo")
        .and_then(|m| {
            let kib: f64 = m
                .split("MemTotal:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(unknown);
    let rows = [
        ("CPU", lscpu("Model name").unwrap_or_else(unknown)),
        (
            "CPUs",
            format!(
                "{} ({} thread(s) per core; hypervisor: {})",
                lscpu("CPU(s)").unwrap_or_else(unknown),
                lscpu("Thread(s) per core").unwrap_or_else(unknown),
                lscpu("Hypervisor vendor").unwrap_or_else(|| "none reported".into())
            ),
        ),
        ("Memory", mem_gib),
        (
            "Kernel",
            cmd::output("uname", &["-srm"]).map_or_else(unknown, |s| s.trim().to_string()),
        ),
        (
            "TCP sysctls",
            format!(
                "ip_local_port_range {}, tcp_tw_reuse {}, tcp_max_tw_buckets {}, somaxconn {}",
                read("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_else(unknown),
                read("/proc/sys/net/ipv4/tcp_tw_reuse").unwrap_or_else(unknown),
                read("/proc/sys/net/ipv4/tcp_max_tw_buckets").unwrap_or_else(unknown),
                read("/proc/sys/net/core/somaxconn").unwrap_or_else(unknown)
            ),
        ),
        (
            "rustc",
            cmd::output("rustc", &["--version"]).map_or_else(unknown, |s| s.trim().to_string()),
        ),
        (
            "bpftrace",
            cmd::output("bpftrace", &["--version"])
                .map_or_else(|| "not installed".into(), |s| s.trim().to_string()),
        ),
        (
            "tracer measured",
            match binary {
                Some(b) => format!(
                    "{b} ({})",
                    cmd::output(b, &["--version"]).map_or_else(unknown, |s| s.trim().to_string())
                ),
                None => "built from the work tree (commit in each section's note)".into(),
            },
        ),
    ];
    let mut s = String::from("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}
