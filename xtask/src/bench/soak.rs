//! The long run: `tracer run` under steady churn (10,000 conn/s for 10
//! minutes by default), sampling the agent's RSS and CPU every few seconds,
//! to show that memory stays flat once the TIME_WAIT population is steady.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    agent::{Agent, AgentStats, Env, Variant},
    churn::{self, ChurnConfig, ChurnResult},
    procfs, scrape,
    stats::{Summary, fmt_opt},
    svg,
};

/// One sample of the agent.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// Seconds since the churn started.
    pub t: f64,
    /// VmRSS, MiB.
    pub rss_mib: f64,
    /// CPU since the previous sample, % of one core.
    pub cpu_pct: f64,
    /// Events per second since the previous sample (from /metrics).
    pub events_per_s: f64,
    /// Events lost in the kernel since the previous sample.
    pub lost: f64,
    /// `tracer_tracked_sockets` now.
    pub tracked: f64,
    /// Whole-machine busy time since the previous sample, % of all CPUs.
    pub machine_busy_pct: f64,
}

/// What the soak run saw.
#[derive(Clone, Debug)]
pub struct Results {
    /// The workload.
    pub cfg: ChurnConfig,
    /// What it achieved.
    pub churn: ChurnResult,
    /// The agent over the whole run.
    pub agent: AgentStats,
    /// RSS and CPU over time.
    pub points: Vec<Point>,
}

impl Results {
    /// The BENCHMARKS.md section.
    pub fn markdown(&self) -> String {
        let rss: Vec<f64> = self.points.iter().map(|p| p.rss_mib).collect();
        let cpu = Summary::of(self.points.iter().skip(1).map(|p| p.cpu_pct));
        let (lo, hi) = rss
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let c = &self.cfg;
        format!(
            "### Soak: `tracer run` at {} conn/s target for {:.0} s ({} closes first)\n\n\
             Achieved {:.0} conn/s ({} errors); {} events, {} lost in the kernel. RSS {lo:.1}–{hi:.1} MiB \
             over {} samples, growth after the first fifth {}; agent CPU per sample {} % of one core; \
             tracked sockets {}; samples with kernel losses: {} (machine busy in those: {}). \
             Every sample is in `bench/soak.csv`.\n\n\
             ![RSS over time](bench/soak-rss.svg)\n",
            c.rate.unwrap_or(0),
            c.duration.as_secs_f64(),
            c.closer.name(),
            self.churn.rate(),
            self.churn.errors,
            self.agent.events.map_or("–".into(), |e| format!("{e:.0}")),
            self.agent.lost.map_or("–".into(), |e| format!("{e:.0}")),
            rss.len(),
            self.rss_growth_after_warmup()
                .map_or("–".into(), |g| format!("{g:+.1} MiB")),
            fmt_opt(cpu, 1),
            fmt_opt(Summary::of(self.points.iter().map(|p| p.tracked)), 0),
            self.points.iter().filter(|p| p.lost > 0.0).count(),
            fmt_opt(
                Summary::of(
                    self.points
                        .iter()
                        .filter(|p| p.lost > 0.0)
                        .map(|p| p.machine_busy_pct)
                ),
                0
            ),
        )
    }

    /// RSS over time as an SVG chart.
    pub fn chart_svg(&self) -> String {
        svg::render(&svg::Chart {
            title: "tracer run: resident memory under steady churn",
            x_label: "seconds",
            y_label: "VmRSS (MiB)",
            series: vec![svg::Series {
                name: "tracer run RSS".into(),
                points: self.points.iter().map(|p| (p.t, p.rss_mib)).collect(),
                color: Variant::Run as usize,
            }],
            reference: None,
            y_include: &[0.0],
            x_categories: Vec::new(),
        })
    }

    /// RSS growth from the end of the first fifth of the run to the end, MiB.
    pub fn rss_growth_after_warmup(&self) -> Option<f64> {
        let end = self.points.last()?;
        let warm = self.points.iter().find(|p| p.t >= end.t / 5.0)?;
        Some(end.rss_mib - warm.rss_mib)
    }
}

/// Run the soak.
pub fn run(env: &Env, cfg: &ChurnConfig) -> anyhow::Result<Results> {
    let every = Duration::from_secs_f64((cfg.duration.as_secs_f64() / 120.0).clamp(1.0, 5.0));
    eprintln!(
        "xtask: soak: tracer run under {} conn/s for {:.0} s, sampling every {:.0} s",
        cfg.rate.map_or("max".to_string(), |r| r.to_string()),
        cfg.duration.as_secs_f64(),
        every.as_secs_f64()
    );
    let server = churn::Server::start(cfg)?;
    let mut agent = Agent::start(Variant::Run, env, "soak")?.context("tracer run did not start")?;
    agent.begin()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pid, http) = (Arc::clone(&stop), agent.pid(), agent.http());
        thread::Builder::new()
            .name("soak-sampler".into())
            .spawn(move || sample(pid, http, every, &stop))
            .context("starting the RSS sampler")?
    };
    let mut churn = churn::run_clients(&server, cfg)?;
    stop.store(true, Ordering::Relaxed);
    let points = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))?;
    churn.errors += server.errors();
    let agent = agent.finish()?;
    Ok(Results {
        cfg: cfg.clone(),
        churn,
        agent,
        points,
    })
}

fn metrics(http: Option<SocketAddr>) -> scrape::Counters {
    http.and_then(|a| scrape::get(a, "/metrics").ok())
        .map(|(_, body)| scrape::Counters::parse(&body))
        .unwrap_or_default()
}

fn sample(pid: u32, http: Option<SocketAddr>, every: Duration, stop: &AtomicBool) -> Vec<Point> {
    let t0 = Instant::now();
    let mut points = Vec::new();
    let mut last_t = 0.0;
    let mut last_cpu = procfs::cpu_secs(pid).unwrap_or(0.0);
    let mut last_m = metrics(http);
    let mut last_machine = procfs::MachineCpu::now().unwrap_or_default();
    let mut next = t0;
    while !stop.load(Ordering::Relaxed) {
        next += every;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return points;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let t = t0.elapsed().as_secs_f64();
        let (Some(rss), Ok(cpu)) = (procfs::status_kib(pid, "VmRSS"), procfs::cpu_secs(pid)) else {
            break;
        };
        let m = metrics(http);
        let machine = procfs::MachineCpu::now().unwrap_or_default();
        let dt = (t - last_t).max(1e-9);
        let p = Point {
            t,
            rss_mib: rss as f64 / 1024.0,
            cpu_pct: 100.0 * (cpu - last_cpu) / dt,
            events_per_s: (m.events - last_m.events) / dt,
            lost: m.lost - last_m.lost,
            tracked: m.tracked,
            machine_busy_pct: 100.0 * (machine.busy - last_machine.busy)
                / (machine.total - last_machine.total).max(1e-9),
        };
        if points.len() % 12 == 11 {
            eprintln!(
                "xtask: soak: {t:.0} s: RSS {:.1} MiB, CPU {:.1}%, {:.0} ev/s, {:.0} lost, {:.0} tracked, machine {:.0}% busy",
                p.rss_mib, p.cpu_pct, p.events_per_s, p.lost, p.tracked, p.machine_busy_pct
            );
        }
        points.push(p);
        (last_t, last_cpu, last_m, last_machine) = (t, cpu, m, machine);
    }
    points
}

/// The samples as CSV.
pub fn csv(points: &[Point]) -> String {
    let mut s =
        String::from("t_s,rss_mib,agent_cpu_pct,events_per_s,lost,tracked,machine_busy_pct\n");
    for p in points {
        s.push_str(&format!(
            "{:.1},{:.1},{:.1},{:.0},{:.0},{:.0},{:.1}\n",
            p.t, p.rss_mib, p.cpu_pct, p.events_per_s, p.lost, p.tracked, p.machine_busy_pct
        ));
    }
    s
}
