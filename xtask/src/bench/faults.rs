//! `cargo xtask bench --soak-faults` (issue 12): `tracer run` under steady
//! churn while faults come one after another: API clients in a loop, slow
//! clients holding half a request, a tiny ring buffer, kill -9 and restart,
//! network namespaces appearing and vanishing. After each fault the agent
//! must be alive and healthy, answer `/metrics` within a second, and its
//! TIME_WAIT and ESTABLISHED gauges must return to the kernel's counts
//! ([`probe`]) within 10 s.
//!
//! Everything runs in a network namespace made for the run (`trf-<pid>`),
//! the agent with `--netns host` there, so the kernel's counts are of the
//! churn and the faults only. The namespaces, processes and connections are
//! stopped and deleted on the way out, whatever happens ([`load`]).
mod load;
mod probe;
mod runner;

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    agent::Env,
    churn::{ChurnConfig, ChurnResult},
    truth::{Worst, fmt_worst},
};
use probe::{Gauges, RECOVERY_LIMIT};
use runner::{Lost, Runner};

/// Parallel API clients in the API phase.
const API_CLIENTS: usize = 8;
/// Connections holding half a request in the slow-client phase.
const SLOW_CLIENTS: usize = 300;
/// The smallest ring buffer `tracer run` accepts.
const TINY_RING: &str = "4096";
/// Namespaces made (and deleted) per cycle in the namespace phase.
const NETNS_PER_CYCLE: usize = 20;
/// How long each cycle's namespaces live: longer than the agent's live
/// dump interval when `--reconcile-budget` stretches it (to ~10 s beside
/// 100,000s of TIME_WAIT sockets), so it can follow them and see them go.
const NETNS_HOLD: Duration = Duration::from_secs(12);

/// One phase: what was done, and whether the agent came through.
#[derive(Clone, Debug)]
pub struct Row {
    /// `1 baseline`, `2 API clients`, ...
    pub phase: &'static str,
    /// The fault, in words.
    pub fault: String,
    /// Alive throughout, and recovered within the limit.
    pub survived: bool,
    /// From the end of the fault to the gauges agreeing again.
    pub recovery: Option<Duration>,
    /// `tracer_events_lost_total` over the phase (every agent in it).
    pub lost: f64,
    /// Worst (TIME_WAIT, ESTABLISHED) deviations while the fault lasted.
    pub during: (Option<Worst>, Option<Worst>),
    /// The same over the looks that made the recovery (or all, without one).
    pub after: (Option<Worst>, Option<Worst>),
    /// What else was seen.
    pub notes: Vec<String>,
}

/// The whole run.
#[derive(Clone, Debug)]
pub struct Results {
    /// The churn that ran throughout.
    pub cfg: ChurnConfig,
    /// What it achieved.
    pub churn: ChurnResult,
    /// Length of each phase's fault.
    pub phase: Duration,
    /// One per phase.
    pub rows: Vec<Row>,
}

impl Results {
    /// Every phase survived.
    pub fn survived(&self) -> bool {
        self.rows.iter().all(|r| r.survived)
    }

    /// The BENCHMARKS.md section.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "### Fault soak: churn at {} conn/s target throughout ({}, {} closes first), {:.0} s per fault\n\n\
             Churn achieved {:.0} conn/s ({} errors). A fault is survived when the agent stayed alive and, \
             within {} s of the fault's end, {} looks in a row 0.5 s apart found `/healthz` 200, `/metrics` \
             answering within {:.0} s, and the TIME_WAIT and ESTABLISHED gauges within 1 % or 20 sockets \
             of the kernel's counts (sock_diag right before and after the scrape). Deviations are gauge \
             minus kernel: TIME_WAIT in sockets / %, ESTABLISHED (a few dozen sockets) in sockets.\n\n\
             | phase | fault | survived | recovery | events lost | worst deviation during (TIME_WAIT; ESTABLISHED) | after | notes |\n\
             |---|---|---|---:|---:|---|---|---|\n",
            self.cfg.rate.unwrap_or(0),
            self.cfg.describe_sources(),
            self.cfg.closer.name(),
            self.phase.as_secs_f64(),
            self.churn.rate(),
            self.churn.errors,
            RECOVERY_LIMIT.as_secs(),
            probe::CONFIRM,
            probe::METRICS_LIMIT.as_secs_f64(),
        );
        let pair = |(tw, est): (Option<Worst>, Option<Worst>)| {
            let est = est.map_or("–".into(), |w| format!("{:+.0}", w.abs));
            format!("{}; {est}", fmt_worst(tw))
        };
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                r.phase,
                r.fault,
                if r.survived { "yes" } else { "**no**" },
                r.recovery
                    .map_or("–".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                r.lost,
                pair(r.during),
                pair(r.after),
                r.notes.join("; "),
            );
        }
        s
    }
}

/// Run every phase under churn `cfg`, each fault lasting `phase`.
pub fn run(env: &Env, cfg: &ChurnConfig, phase: Duration) -> anyhow::Result<Results> {
    let ns = load::Netns::add(format!("trf-{}", std::process::id()))?;
    eprintln!(
        "xtask: soak-faults: network namespace {}, churn at {} conn/s, {:.0} s per fault",
        ns.name(),
        cfg.rate.unwrap_or(0),
        phase.as_secs_f64()
    );
    let results = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("faults".into())
            .spawn_scoped(s, || {
                ns.enter()?;
                phases(env, cfg, phase)
            })
            .context("starting the fault-soak thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the fault-soak thread panicked"))?
    });
    drop(ns);
    results
}

/// Runs in the run's namespace.
fn phases(env: &Env, cfg: &ChurnConfig, phase: Duration) -> anyhow::Result<Results> {
    let churn = load::Churn::start(cfg)?;
    let mut r = Runner {
        env,
        agent: None,
        gauges: Gauges::Total,
        lost: Lost::default(),
        tracked_max: None,
    };
    r.start("host", &[], "faults-start")?;
    let mut rows = Vec::new();
    rows.push(r.phase("1 baseline", "none: churn only", |r, _| {
        Ok((r.watch(phase), Instant::now()))
    }));
    let fault = format!(
        "{API_CLIENTS} clients looping over {}",
        load::API_PATHS.join(", ")
    );
    rows.push(r.phase("2 API clients", &fault, |r, notes| {
        let clients = load::ApiClients::start(r.addr()?, API_CLIENTS)?;
        let during = r.watch(phase);
        let st = clients.finish()?;
        let slowest: Vec<String> = st
            .slowest
            .iter()
            .map(|(p, d)| {
                format!(
                    "`{}` {:.2} s",
                    p.split('?').next().unwrap_or(p),
                    d.as_secs_f64()
                )
            })
            .collect();
        notes.push(format!(
            "{} answers ({:.0} MB), {} failed; slowest {}",
            st.ok,
            st.bytes as f64 / 1e6,
            st.errors,
            slowest.join(", ")
        ));
        Ok((during, Instant::now()))
    }));
    let fault = format!("{SLOW_CLIENTS} connections holding half a request");
    rows.push(r.phase("3 slow clients", &fault, |r, notes| {
        let slow = load::SlowClients::open(r.addr()?, SLOW_CLIENTS);
        let during = r.watch(phase);
        notes.push(format!(
            "{} opened, {} still held open by the agent after {:.0} s",
            slow.opened(),
            slow.still_open(),
            phase.as_secs_f64()
        ));
        drop(slow);
        Ok((during, Instant::now()))
    }));
    let fault = format!("restart with `--ring-bytes {TINY_RING}`, then with the default");
    rows.push(r.phase("4 tiny ring buffer", &fault, |r, notes| {
        r.start("host", &["--ring-bytes", TINY_RING], "faults-tiny-ring")?;
        let during = r.watch(phase);
        notes.push(format!(
            "{:.0} events lost with the tiny ring",
            r.lost.total()
        ));
        let since = Instant::now();
        let took = r.start("host", &[], "faults-ring-restored")?;
        notes.push(format!("restart took {:.1} s", took.as_secs_f64()));
        Ok((during, since))
    }));
    rows.push(
        r.phase("5 kill -9", "SIGKILL, then start again", |r, notes| {
            let during = r.watch(phase / 2);
            r.kill9()?;
            let since = Instant::now();
            let took = r.start("host", &[], "faults-after-kill")?;
            notes.push(format!("restart took {:.1} s", took.as_secs_f64()));
            Ok((during, since))
        }),
    );
    let fault = format!(
        "`--netns all`; {NETNS_PER_CYCLE} namespaces with 3 connections each made, held {} s and deleted, in a loop",
        NETNS_HOLD.as_secs()
    );
    rows.push(r.phase("6 namespaces", &fault, |r, notes| {
        r.start("all", &[], "faults-netns-all")?;
        std::thread::sleep(Duration::from_secs(3));
        let base = r.look().netns_tracked.context("no tracer_netns_tracked")?;
        let prefix = format!("trf-{}-e", std::process::id());
        let cycler = load::NetnsChurn::start(prefix, NETNS_PER_CYCLE, 3, NETNS_HOLD)?;
        let during = r.watch(phase);
        let (cycles, made) = cycler.finish()?;
        let peak = during
            .iter()
            .filter_map(|l| l.netns_tracked)
            .fold(base, f64::max);
        let live = during
            .iter()
            .filter_map(|l| l.live_interval)
            .fold(0.0, f64::max);
        notes.push(format!(
            "{made} namespaces in {cycles} cycles; followed {base:.0} before, up to {peak:.0} during, \
             and must return to {base:.0}; live dump interval in force up to {live:.1} s; \
             gauges of the run's namespace (`tracer_workload_sockets{{netns=\"host\"}}`)"
        ));
        r.tracked_max = Some(base);
        Ok((during, Instant::now()))
    }));
    r.stop();
    let churn = churn.finish()?;
    Ok(Results {
        cfg: cfg.clone(),
        churn,
        phase,
        rows,
    })
}
