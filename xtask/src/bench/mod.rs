//! `cargo xtask bench`: what the tracer costs, measured side by side.
//!
//! A loopback connection-churn workload ([`churn`]) runs under each variant
//! ([`agent::Variant`]: no tracer, `tracer run`, `tracer events >/dev/null`,
//! the bpftrace peer, an empty bpftrace program as the floor) in interleaved
//! rounds ([`measure`]), with each variant's kernel programs timed by the
//! kernel's bpf_stats ([`kprog`]); then a sweep over open-loop target rates,
//! the engine microbenchmarks ([`micro`]), and a report ([`report`],
//! [`progcost`], [`targets`]) into BENCHMARKS.md with SVG plots ([`svg`]).
//! While each churn window runs, the kernel's TIME_WAIT count is sampled
//! beside `tracer run`'s gauge ([`truth`], [`sockdiag`]); a port-reuse
//! scenario (one source address) runs beside the main one.
//! `--soak` is the long run that shows RSS stays flat ([`soak`]);
//! `--netns-scale N` the agent beside N namespaces of idle sockets ([`netns_scale`]);
//! `--soak-faults` the agent under churn through one fault after another ([`faults`]).
mod agent;
mod args;
mod churn;
mod doc;
mod faults;
mod floor;
mod kprog;
mod machine;
mod measure;
mod micro;
mod netns_scale;
mod output;
mod procfs;
mod progcost;
mod report;
mod scrape;
mod soak;
mod sockdiag;
mod stats;
mod svg;
mod targets;
mod truth;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

use crate::cmd;
use agent::{Env, Variant};
pub use args::BenchArgs;
use churn::{ChurnConfig, Sources};

/// The rate of the running agent's measurement: issue 9's target rate.
const STEADY_RATE: u64 = 10_000;

/// Run the benchmarks the flags ask for.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.hold_floor_program {
        return floor::hold();
    }
    let root = cmd::workspace_root();
    if args.churn_only {
        let cfg = args.churn(args.rate, args.secs.unwrap_or(10.0));
        let r = churn::run(&cfg)?;
        println!(
            "{:.0} conn/s ({} completed, {} errors in {:.1} s; {} closes first, {} B payload, {} client threads)",
            r.rate(),
            r.completed,
            r.errors,
            r.elapsed.as_secs_f64(),
            cfg.closer.name(),
            cfg.payload,
            cfg.client_threads
        );
        return Ok(());
    }
    if !cmd::is_root() {
        bail!("the benchmark loads kernel programs: run it as root (sudo -E cargo xtask bench)");
    }
    crate::setup::ensure()?;
    ensure_tracefs()?;
    if args.tracer_bin.is_none() {
        cmd::run("cargo", &["build", "--release", "-p", "tracer"])?;
    }
    if let Some(n) = args.netns_scale {
        let tracer = args
            .tracer_bin
            .clone()
            .unwrap_or_else(|| target_dir().join("release/tracer"));
        return netns_scale::run(&tracer, n, args.netns_conns, args.secs.unwrap_or(30.0));
    }
    let micro = match !args.no_micro && !args.soak && !args.soak_faults {
        true => Some(micro::build()?),
        false => None,
    };
    let mut report = report::Report::new(&args);
    let t0 = std::time::Instant::now();
    if args.micro_only {
        let exe = micro
            .as_ref()
            .context("the microbenchmarks were not built")?;
        report.micro = Some(micro::run(exe, args.quick)?);
        return finish(&args, &report, &root, t0);
    }
    let mut env = Env {
        tracer: args
            .tracer_bin
            .clone()
            .unwrap_or_else(|| target_dir().join("release/tracer")),
        bpftrace_script: root.join("bench/tcpstates-dwell.bt"),
        scratch: target_dir().join("bench"),
        run_args: args.tracer_args.clone(),
        empty_netns: None,
        bpf_stats: false,
        truth_every: match args.no_truth {
            true => None,
            false => {
                anyhow::ensure!(args.truth_every > 0.0, "--truth-every must be positive");
                Some(Duration::from_secs_f64(args.truth_every))
            }
        },
    };
    std::fs::create_dir_all(&env.scratch)
        .with_context(|| format!("creating {}", env.scratch.display()))?;
    warn_if_traced();
    if args.soak {
        report.soak = Some(soak::run(
            &env,
            &args.churn(Some(args.soak_rate), args.soak_secs as f64),
        )?);
        return finish(&args, &report, &root, t0);
    }
    if args.soak_faults {
        let secs = args.secs.unwrap_or(25.0);
        anyhow::ensure!(secs >= 2.0, "--secs must be at least 2 with --soak-faults");
        let cfg = args.churn(Some(args.rate.unwrap_or(3_000)), secs);
        let results = faults::run(&env, &cfg, Duration::from_secs_f64(secs))?;
        let survived = results.survived();
        report.faults = Some(results);
        finish(&args, &report, &root, t0)?;
        if !survived {
            bail!("the agent did not survive every fault (see the table above)");
        }
        return Ok(());
    }
    if let Err(e) = crate::setup::apt_install(
        "bench packages",
        "the bpftrace peer, the empty program and the per-program figures",
        &crate::setup::BENCH_PACKAGES,
    ) {
        // Measured without them, as `variants` and `bpf_stats_guard` say.
        eprintln!("xtask: {e:#}");
    }
    let variants = variants(&args);
    // What the reading-only agent follows: nothing. Deleted on the way out.
    let empty_netns = match variants.contains(&Variant::Reading) {
        true => Some(agent::TempNetns::make(format!(
            "tracer-bench-empty-{}",
            std::process::id()
        ))?),
        false => None,
    };
    env.empty_netns = empty_netns.as_ref().map(|n| n.name().to_owned());
    let (rounds, secs) = match args.quick {
        true => (args.rounds.unwrap_or(3), args.secs.unwrap_or(3.0)),
        false => (args.rounds.unwrap_or(5), args.secs.unwrap_or(10.0)),
    };
    anyhow::ensure!(
        rounds >= 1 && secs > 0.0,
        "--rounds and --secs must be positive"
    );
    // On from the first round to the end of the sweep; off again when this
    // is dropped, also on an error or Ctrl-C.
    let stats_guard = match args.no_bpf_stats {
        true => None,
        false => bpf_stats_guard(),
    };
    env.bpf_stats = stats_guard.is_some();
    // Port reuse first: the main scenario fills the TIME_WAIT table
    // (`tcp_max_tw_buckets`) for the next 60 s, and reuse is to be measured
    // apart from that overflow.
    if !args.no_reuse && args.churn_sources == Sources::Many && variants.contains(&Variant::Run) {
        let cfg = ChurnConfig {
            sources: Sources::One,
            server_port: churn::free_port()?,
            ..args.churn(args.rate, secs)
        };
        let vs = [Variant::Baseline, Variant::Run];
        let samples = measure::interleaved(&env, &cfg, &vs, rounds, "reuse")?;
        report.reuse = Some(measure::Scenario {
            cfg,
            rounds,
            warmup: None,
            samples,
        });
    }
    // With one source, every window of the run talks to the same server port
    // (see `ChurnConfig::server_port`).
    let port = match args.churn_sources {
        Sources::One => churn::free_port()?,
        Sources::Many => 0,
    };
    let main_cfg = ChurnConfig {
        server_port: port,
        ..args.churn(args.rate, secs)
    };
    let samples = measure::interleaved(&env, &main_cfg, &variants, rounds, "main")?;
    report.main = Some(measure::Scenario {
        cfg: main_cfg,
        rounds,
        warmup: None,
        samples,
    });
    if !args.no_sweep {
        let (rates, sweep_rounds, sweep_secs) = match (args.quick, args.sweep.is_empty()) {
            (true, true) => (vec![5_000, 10_000], 1, 2.0),
            (true, false) => (args.sweep.clone(), 1, 2.0),
            // 10 s windows: long enough to include the agent's periodic
            // work (the TIME_WAIT dump runs every 10 s by default).
            (false, true) => (vec![1_000, 5_000, 10_000, 20_000], 3, 10.0),
            (false, false) => (args.sweep.clone(), 3, 10.0),
        };
        // The reading-only floor is measured at peak and beside the
        // running agent, the raw tracepoint floor at peak; across the sweep
        // they would only add minutes.
        let swept: Vec<Variant> = variants
            .iter()
            .copied()
            .filter(|&v| !matches!(v, Variant::Reading | Variant::EmptyRaw))
            .collect();
        for rate in rates {
            let cfg = ChurnConfig {
                server_port: port,
                ..args.churn(Some(rate), sweep_secs)
            };
            let samples =
                measure::interleaved(&env, &cfg, &swept, sweep_rounds, &format!("sweep{rate}"))?;
            report.sweep.push(measure::Scenario {
                cfg,
                rounds: sweep_rounds,
                warmup: None,
                samples,
            });
        }
    }
    if !args.no_steady && variants.contains(&Variant::Run) {
        // The sweep's agents are measured in their first seconds, beside
        // start-up work a running agent spreads over minutes.
        let (warmup, windows, secs) = match args.quick {
            true => (Duration::from_secs(10), 1, 5.0),
            // 30 s windows: together they hold two or three full dumps.
            false => (measure::STEADY_WARMUP, 3, 30.0),
        };
        let cfg = ChurnConfig {
            server_port: port,
            ..args.churn(Some(STEADY_RATE), secs)
        };
        let mut samples = measure::steady(&env, &cfg, Variant::Run, warmup, windows, "steady")?;
        if variants.contains(&Variant::Reading) {
            // Then the floor, on the same churn: the same windows after the
            // same warm-up, one agent at a time.
            let floor = measure::steady(&env, &cfg, Variant::Reading, warmup, windows, "steady")?;
            samples.extend(floor);
        }
        report.steady = Some(measure::Scenario {
            cfg,
            rounds: windows,
            warmup: Some(warmup),
            samples,
        });
    }
    drop(stats_guard);
    if let Some(exe) = &micro {
        report.micro = Some(micro::run(exe, args.quick)?);
    }
    finish(&args, &report, &root, t0)
}

fn finish(
    args: &BenchArgs,
    report: &report::Report,
    root: &std::path::Path,
    t0: std::time::Instant,
) -> anyhow::Result<()> {
    let took = t0.elapsed();
    print!("{}", report.terminal());
    eprintln!(
        "xtask: bench took {:.0} s (after the build)",
        took.as_secs_f64()
    );
    if !args.no_write {
        report.write(root, took)?;
    }
    Ok(())
}

/// Turn on the kernel's per-program accounting, or say why not.
fn bpf_stats_guard() -> Option<kprog::StatsGuard> {
    if !kprog::bpftool_available() {
        eprintln!(
            "xtask: bpftool is not installed (apt-get install -y bpftool); no per-program ns/event"
        );
        return None;
    }
    match kprog::StatsGuard::enable() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("xtask: cannot turn on bpf_stats ({e:#}); no per-program ns/event");
            None
        }
    }
}

/// The variants to run: as asked, or all; the bpftrace ones only when installed.
fn variants(args: &BenchArgs) -> Vec<Variant> {
    let mut v = if args.variants.is_empty() {
        Variant::ALL.to_vec()
    } else {
        args.variants.clone()
    };
    if !v.contains(&Variant::Baseline) {
        v.insert(0, Variant::Baseline);
    }
    let bpftrace = [Variant::Bpftrace, Variant::Empty];
    if v.iter().any(|x| bpftrace.contains(x)) && cmd::output("bpftrace", &["--version"]).is_none() {
        eprintln!(
            "xtask: bpftrace is not installed (apt-get install -y bpftrace); skipping the bpftrace peer and the empty program"
        );
        v.retain(|x| !bpftrace.contains(x));
    }
    v
}

/// Classic tracepoints (bpftrace) need tracefs mounted.
fn ensure_tracefs() -> anyhow::Result<()> {
    if std::path::Path::new("/sys/kernel/tracing/events/sock").exists() {
        return Ok(());
    }
    cmd::run("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .context("mounting tracefs for bpftrace")
}

/// Another tracer or bpftrace already running would be measured too.
fn warn_if_traced() {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let floor = cmdline
            .split(|&b| b == 0)
            .any(|a| a == b"--hold-floor-program");
        if matches!(comm.trim(), "tracer" | "bpftrace") || floor {
            eprintln!(
                "xtask: warning: {} (pid {}) is already running; its overhead lands on every variant",
                comm.trim(),
                e.file_name().to_string_lossy()
            );
        }
    }
}

/// The cargo target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| cmd::workspace_root().join("target"), PathBuf::from)
}
