//! The flags of `cargo xtask bench`.
use std::{path::PathBuf, time::Duration};

use super::agent::Variant;
use super::churn::{ChurnConfig, Closer, Sources};

/// Flags of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Short run (about 2 minutes once built): 3 rounds of 3 s, a 2-rate
    /// sweep of 1 round, quick microbenchmarks. Its figures are rough.
    #[arg(long)]
    pub quick: bool,
    /// Rounds per variant (default 5, or 3 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds of churn per round (default 10, or 3 with --quick).
    #[arg(long, value_name = "SECS")]
    pub secs: Option<f64>,
    /// Client threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Server threads.
    #[arg(long, default_value_t = 4)]
    pub server_threads: usize,
    /// Which side closes first.
    #[arg(long, value_enum, default_value_t = Closer::Client)]
    pub closer: Closer,
    /// Bytes sent each way per connection.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub payload: usize,
    /// Open-loop target rate of the main scenario, connections/s (default: as fast as possible).
    #[arg(long, value_name = "CONN_PER_SEC")]
    pub rate: Option<u64>,
    /// Client source addresses to spread connections over (127.1.x.y) with
    /// `--churn-sources many`.
    #[arg(long, default_value_t = 1024)]
    pub source_addrs: u32,
    /// Where the clients of the main scenario, the sweep and the soak
    /// connect from: `many` rotates over --source-addrs addresses so no port
    /// is reused; `one` connects from 127.0.0.1 only, so the kernel reuses
    /// ports still in TIME_WAIT.
    #[arg(long, value_enum, default_value_t = Sources::Many)]
    pub churn_sources: Sources,
    /// Skip the port-reuse scenario (the main scenario from one source
    /// address, under the baseline and `tracer run`; it runs by default when
    /// the main scenario uses many sources and `tracer run` is selected).
    #[arg(long)]
    pub no_reuse: bool,
    /// Seconds between samples of the kernel's TIME_WAIT count and
    /// `tracer run`'s gauge during each churn window.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub truth_every: f64,
    /// Do not sample the kernel's TIME_WAIT count and the agent's gauge (no
    /// truth column).
    #[arg(long)]
    pub no_truth: bool,
    /// Variants to run (default: all; bpftrace and empty only when bpftrace is installed).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub variants: Vec<Variant>,
    /// Target rates of the sweep (default 1000,5000,10000,20000, or 5000,10000 with --quick).
    #[arg(long, value_delimiter = ',', value_name = "RATES")]
    pub sweep: Vec<u64>,
    /// Skip the rate sweep.
    #[arg(long)]
    pub no_sweep: bool,
    /// Skip the running agent's measurement: one `tracer run` at 10,000
    /// conn/s, 3 windows of 30 s after 75 s of churn (10 s and one window
    /// of 5 s with --quick).
    #[arg(long)]
    pub no_steady: bool,
    /// Skip the engine microbenchmarks.
    #[arg(long)]
    pub no_micro: bool,
    /// Only the engine microbenchmarks.
    #[arg(long, conflicts_with_all = ["no_micro", "soak", "churn_only"])]
    pub micro_only: bool,
    /// Only run the churn workload (no tracer) and print its rate.
    #[arg(long)]
    pub churn_only: bool,
    /// Internal: load an empty raw tracepoint program on the state
    /// program's tracepoint and hold it until signalled (the `empty-raw`
    /// variant's process; see `bench::floor`).
    #[arg(long, hide = true)]
    pub hold_floor_program: bool,
    /// Only the namespace scale run: `tracer run` beside this many network
    /// namespaces holding idle sockets; prints what reconciliation costs
    /// per namespace and per socket (window: --secs, default 30).
    #[arg(long, value_name = "NAMESPACES")]
    pub netns_scale: Option<usize>,
    /// Idle connections per namespace in the --netns-scale run.
    #[arg(long, value_name = "CONNS", default_value_t = 10)]
    pub netns_conns: usize,
    /// The long run: `tracer run` under churn at --soak-rate for --soak-secs,
    /// sampling its RSS (default 10 minutes at 10,000 conn/s).
    #[arg(long)]
    pub soak: bool,
    /// Length of the soak run.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub soak_secs: u64,
    /// Target rate of the soak run.
    #[arg(long, value_name = "CONN_PER_SEC", default_value_t = 10_000)]
    pub soak_rate: u64,
    /// Only the fault soak: `tracer run` under churn at --rate (default
    /// 3000 conn/s) through API clients, slow clients, a tiny ring buffer,
    /// kill -9 and namespaces coming and going, --secs (default 25) per
    /// fault; fails unless the gauges return to the kernel's counts after
    /// each (about 4 minutes).
    #[arg(long, conflicts_with_all = ["soak", "micro_only", "churn_only", "netns_scale"])]
    pub soak_faults: bool,
    /// Extra argument for `tracer run` (repeatable), e.g. `--tracer-arg=--ring-bytes=16777216`.
    #[arg(long = "tracer-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub tracer_args: Vec<String>,
    /// Use this tracer binary instead of building target/release/tracer.
    #[arg(long, value_name = "PATH")]
    pub tracer_bin: Option<PathBuf>,
    /// Do not turn on kernel.bpf_stats_enabled: no per-program ns/event
    /// (the kernel's accounting adds two clock reads to every program run).
    #[arg(long)]
    pub no_bpf_stats: bool,
    /// Do not rewrite BENCHMARKS.md and bench/*.svg.
    #[arg(long)]
    pub no_write: bool,
    /// A note for BENCHMARKS.md about the conditions of this run (e.g. "machine shared with builds").
    #[arg(long)]
    pub note: Option<String>,
}

impl BenchArgs {
    pub(super) fn churn(&self, rate: Option<u64>, secs: f64) -> ChurnConfig {
        ChurnConfig {
            client_threads: self.threads,
            server_threads: self.server_threads,
            closer: self.closer,
            payload: self.payload,
            rate,
            duration: Duration::from_secs_f64(secs),
            sources: self.churn_sources,
            server_port: 0,
            source_addrs: self.source_addrs,
        }
    }
}
