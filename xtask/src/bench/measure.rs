//! Interleaved measurement: for each round, every variant once (the order
//! rotated each round), each with a fresh agent and server, so slow drifts in
//! machine load hit every variant alike. Per-round ratios to the baseline of
//! the same round cancel the rest.
use std::time::{Duration, Instant};

use super::{
    agent::{Agent, AgentStats, Env, Variant},
    churn::{self, ChurnConfig, ChurnResult},
    kprog::{self, ProgCost},
    procfs,
    stats::Summary,
    truth::{self, Worst},
};

/// One variant measured once.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Which variant.
    pub variant: Variant,
    /// Which round (0-based).
    pub round: usize,
    /// What the workload achieved.
    pub churn: ChurnResult,
    /// What the agent did (`None` for the baseline).
    pub agent: Option<AgentStats>,
    /// Whole-machine busy time during the window, % of all CPUs.
    pub machine_busy_pct: f64,
    /// Busy time not spent by the workload or the agent, % of one core:
    /// other processes on the machine (and interrupts).
    pub other_pct: f64,
    /// What each of the agent's kernel programs did during the window
    /// (empty without bpf_stats or an agent).
    pub progs: Vec<ProgCost>,
    /// Kernel TIME_WAIT counts (and the agent's gauge) sampled during the
    /// window (empty with `--no-truth`).
    pub truth: Vec<truth::Point>,
}

impl Sample {
    /// Agent CPU in % of one core.
    pub fn cpu_pct(&self) -> Option<f64> {
        self.agent
            .as_ref()
            .map(|a| 100.0 * a.cpu_secs / self.secs())
    }

    /// Agent events per second.
    pub fn events_per_sec(&self) -> Option<f64> {
        self.agent.as_ref()?.events.map(|e| e / self.secs())
    }

    /// Agent context switches per second.
    pub fn ctx_per_sec(&self) -> Option<f64> {
        self.agent.as_ref()?.ctx_switches.map(|c| c / self.secs())
    }

    /// Agent CPU (user + system) per event it handled, in ns.
    pub fn agent_ns_per_event(&self) -> Option<f64> {
        self.agent_per_event(|a| Some(a.cpu_secs))
    }

    /// Of [`Sample::agent_ns_per_event`], the sock_diag dumps' share: their
    /// CPU, which `--reconcile-budget` caps, over the same events.
    pub fn agent_dump_ns_per_event(&self) -> Option<f64> {
        self.agent_per_event(|a| a.dump_cpu_secs)
    }

    /// The agent's CPU seconds that `secs` picks, in ns per event it handled.
    fn agent_per_event(&self, secs: impl Fn(&AgentStats) -> Option<f64>) -> Option<f64> {
        let a = self.agent.as_ref()?;
        let events = a.events.filter(|&e| e > 0.0)?;
        Some(secs(a)? * 1e9 / events)
    }

    /// The largest kernel TIME_WAIT count sampled.
    pub fn tw_peak(&self) -> Option<u64> {
        self.truth.iter().map(|p| p.ss_before.max(p.ss_after)).max()
    }

    /// Seconds the workload ran.
    pub fn secs(&self) -> f64 {
        self.churn.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Measure `variants` for `rounds` rounds of `cfg`.
pub fn interleaved(
    env: &Env,
    cfg: &ChurnConfig,
    variants: &[Variant],
    rounds: usize,
    label: &str,
) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for round in 0..rounds {
        for i in 0..variants.len() {
            let v = variants[(i + round) % variants.len()];
            let s = once(env, cfg, v, round, label)?;
            say(label, rounds, &s);
            out.push(s);
        }
    }
    Ok(out)
}

/// How long [`steady`] lets churn run before its first window: past the
/// adoption of the TIME_WAIT sockets already there, the first full dump
/// the budget paces, the table's filling up to `tcp_max_tw_buckets`
/// (13 s at 10,000 conn/s), and the agent's first huge-page pass, one
/// TIME_WAIT lifetime after its start (a one-off copy of its tables,
/// which the fresh agents' figures include).
pub const STEADY_WARMUP: Duration = Duration::from_secs(75);

/// `tracer run` as it runs for days: one agent of `variant` beside churn
/// at `cfg`, `warmup` of it unmeasured, then `windows` windows of
/// `cfg.duration` in a row, each a sample (its `round` the window's index).
pub fn steady(
    env: &Env,
    cfg: &ChurnConfig,
    variant: Variant,
    warmup: Duration,
    windows: usize,
    label: &str,
) -> anyhow::Result<Vec<Sample>> {
    let server = churn::Server::start(cfg)?;
    let mut agent = Agent::start(variant, env, label)?;
    let warm = ChurnConfig {
        duration: warmup,
        ..cfg.clone()
    };
    churn::run_clients(&server, &warm)?;
    let mut out = Vec::new();
    for round in 0..windows {
        let last = round + 1 == windows;
        let s = window(env, cfg, &server, &mut agent, variant, round, last)?;
        say(label, windows, &s);
        out.push(s);
    }
    Ok(out)
}

/// Run `cfg` once under `variant`, with a fresh server and agent.
pub fn once(
    env: &Env,
    cfg: &ChurnConfig,
    variant: Variant,
    round: usize,
    label: &str,
) -> anyhow::Result<Sample> {
    let server = churn::Server::start(cfg)?;
    let mut agent = Agent::start(variant, env, &format!("{label}-r{round}"))?;
    window(env, cfg, &server, &mut agent, variant, round, true)
}

/// One measured window of `cfg` against `server`, beside `agent` (none for
/// the baseline). `stop`: stop the agent at the end (it prints its own
/// summary then); otherwise it runs on for the next window.
fn window(
    env: &Env,
    cfg: &ChurnConfig,
    server: &churn::Server,
    agent: &mut Option<Agent>,
    variant: Variant,
    round: usize,
    stop: bool,
) -> anyhow::Result<Sample> {
    if let Some(a) = agent.as_mut() {
        a.begin()?;
    }
    let progs0 = match agent.as_ref().filter(|_| env.bpf_stats) {
        Some(a) => Some(kprog::Snapshot::take(a.pid())?),
        None => None,
    };
    let errors0 = server.errors();
    let m0 = procfs::MachineCpu::now()?;
    let self0 = procfs::self_cpu_secs()?;
    let sampler = match env.truth_every {
        // Only `tracer run`'s gauge is the kernel's count: the reading-only
        // agent follows an empty namespace.
        Some(every) => Some(truth::Sampler::start(
            agent
                .as_ref()
                .filter(|_| variant == Variant::Run)
                .and_then(|a| a.http()),
            every,
        )?),
        None => None,
    };
    let t0 = Instant::now();
    let mut result = churn::run_clients(server, cfg)?;
    let wall = t0.elapsed().as_secs_f64().max(1e-9);
    let truth = match sampler {
        Some(s) => s.finish()?,
        None => Vec::new(),
    };
    let self1 = procfs::self_cpu_secs()?;
    let m1 = procfs::MachineCpu::now()?;
    let progs = match (&progs0, agent.as_ref()) {
        (Some(p0), Some(a)) => kprog::Snapshot::take(a.pid())?.since(p0),
        _ => Vec::new(),
    };
    let stats = match agent.take() {
        Some(a) if stop => Some(a.finish()?),
        Some(mut a) => {
            let s = a.window_stats()?;
            *agent = Some(a);
            Some(s)
        }
        None => None,
    };
    result.errors += server.errors() - errors0;
    let busy = m1.busy - m0.busy;
    let agent_cpu = stats.as_ref().map_or(0.0, |a| a.cpu_secs);
    Ok(Sample {
        variant,
        round,
        churn: result,
        machine_busy_pct: 100.0 * busy / (m1.total - m0.total).max(1e-9),
        other_pct: (100.0 * (busy - (self1 - self0) - agent_cpu) / wall).max(0.0),
        agent: stats,
        progs,
        truth,
    })
}

/// One line on the terminal for a sample just taken.
fn say(label: &str, rounds: usize, s: &Sample) {
    eprintln!(
        "xtask: bench {label} round {}/{rounds} {:<28} {:>8.0} conn/s{}{}{}{}",
        s.round + 1,
        s.variant.name(),
        s.churn.rate(),
        s.cpu_pct()
            .map_or(String::new(), |c| format!("  agent {c:.1}% cpu")),
        s.events_per_sec()
            .map_or(String::new(), |e| format!("  {e:.0} ev/s")),
        kprog::busiest(&s.progs)
            .and_then(|p| Some(format!("  {} {:.0} ns/run", p.name, p.ns_per_event()?)))
            .unwrap_or_default(),
        Worst::of(&s.truth)
            .map(|w| format!("  TIME_WAIT gauge-ss worst {}", w.fmt()))
            .unwrap_or_default(),
    );
}

/// Per-variant summaries of one scenario.
#[derive(Clone, Debug)]
pub struct VariantSummary {
    /// Which variant.
    pub variant: Variant,
    /// Connections per second.
    pub conn_rate: Summary,
    /// Per-round ratio to the same round's baseline.
    pub ratio: Option<Summary>,
    /// Agent events per second.
    pub events_rate: Option<Summary>,
    /// Kernel-lost events, summed over rounds.
    pub lost: Option<f64>,
    /// Reconcile corrections, summed over rounds, per reason.
    pub corrections: Option<Vec<(String, f64)>>,
    /// Agent CPU, % of one core.
    pub cpu_pct: Option<Summary>,
    /// Agent context switches per second.
    pub ctx_rate: Option<Summary>,
    /// Agent peak RSS, MiB.
    pub hwm_mib: Option<Summary>,
    /// Load from other processes, % of one core.
    pub other_pct: Summary,
    /// Failed connections, summed over rounds.
    pub errors: u64,
    /// The largest kernel TIME_WAIT count sampled in any round.
    pub tw_peak: Option<u64>,
    /// The agent's worst TIME_WAIT gauge deviation from the kernel's count
    /// over every sample of every round (`tracer run` only).
    pub tw_worst: Option<Worst>,
}

/// Summarise samples per variant, in `variants` order.
pub fn summarise(samples: &[Sample], variants: &[Variant]) -> Vec<VariantSummary> {
    let base = |round: usize| {
        samples
            .iter()
            .find(|s| s.variant == Variant::Baseline && s.round == round)
            .map(|s| s.churn.rate())
    };
    variants
        .iter()
        .filter_map(|&v| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.variant == v).collect();
            let agents: Vec<&AgentStats> = mine.iter().filter_map(|s| s.agent.as_ref()).collect();
            let sum_opt = |f: &dyn Fn(&AgentStats) -> Option<f64>| -> Option<f64> {
                let v: Vec<f64> = agents.iter().filter_map(|a| f(a)).collect();
                (!v.is_empty()).then(|| v.iter().sum())
            };
            let corrections = {
                let mut acc: Vec<(String, f64)> = Vec::new();
                let mut any = false;
                for c in agents.iter().filter_map(|a| a.corrections.as_ref()) {
                    any = true;
                    for (r, n) in c {
                        match acc.iter_mut().find(|(k, _)| k == r) {
                            Some((_, t)) => *t += n,
                            None => acc.push((r.clone(), *n)),
                        }
                    }
                }
                any.then_some(acc)
            };
            Some(VariantSummary {
                variant: v,
                conn_rate: Summary::of(mine.iter().map(|s| s.churn.rate()))?,
                ratio: Summary::of(
                    mine.iter()
                        .filter_map(|s| Some(s.churn.rate() / base(s.round)?)),
                ),
                events_rate: Summary::of(mine.iter().filter_map(|s| s.events_per_sec())),
                lost: sum_opt(&|a| a.lost),
                corrections,
                cpu_pct: Summary::of(mine.iter().filter_map(|s| s.cpu_pct())),
                ctx_rate: Summary::of(mine.iter().filter_map(|s| s.ctx_per_sec())),
                hwm_mib: Summary::of(
                    agents
                        .iter()
                        .filter_map(|a| a.hwm_kib.map(|k| k as f64 / 1024.0)),
                ),
                other_pct: Summary::of(mine.iter().map(|s| s.other_pct))?,
                errors: mine.iter().map(|s| s.churn.errors).sum(),
                tw_peak: mine.iter().filter_map(|s| s.tw_peak()).max(),
                tw_worst: Worst::of(mine.iter().flat_map(|s| &s.truth)),
            })
        })
        .collect()
}

/// One workload measured under several variants.
pub struct Scenario {
    /// The workload.
    pub cfg: ChurnConfig,
    /// Rounds per variant.
    pub rounds: usize,
    /// `None`: a fresh agent per round, the variants interleaved.
    /// `Some(w)`: one `tracer run` ([`steady`]), its `rounds` windows in a
    /// row after `w` of the same churn.
    pub warmup: Option<Duration>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Scenario {
    /// Per-variant summaries, in report order.
    pub fn summaries(&self) -> Vec<VariantSummary> {
        let vs: Vec<Variant> = Variant::ALL
            .into_iter()
            .filter(|v| self.samples.iter().any(|s| s.variant == *v))
            .collect();
        summarise(&self.samples, &vs)
    }

    /// The summary of one variant, if it ran.
    pub fn summary(&self, v: Variant) -> Option<VariantSummary> {
        self.summaries().into_iter().find(|s| s.variant == v)
    }

    pub(super) fn describe(&self) -> String {
        let c = &self.cfg;
        let windows = match self.warmup {
            None => format!(
                "{} rounds × {:.0} s per variant, interleaved",
                self.rounds,
                c.duration.as_secs_f64()
            ),
            Some(w) => format!(
                "one agent per variant, measured in {} windows × {:.0} s in a row, after {:.0} s of the same churn",
                self.rounds,
                c.duration.as_secs_f64(),
                w.as_secs_f64()
            ),
        };
        format!(
            "{} closes first, {}, {} B each way, {} client + {} server threads, {windows}",
            c.closer.name(),
            c.describe_sources(),
            c.payload,
            c.client_threads,
            c.server_threads,
        )
    }
}
