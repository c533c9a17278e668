//! The variants under test and their processes: start one, wait until it is
//! tracing, mark the start of the measured window, and at the end collect
//! its CPU, peak RSS, events and losses before stopping it.
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{kprog, procfs, scrape};

/// How long a variant gets to exit after SIGINT. bpftrace prints and clears
/// its maps first, which has taken over 30 s once after the 20,000 conn/s
/// rounds.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// One way of running the machine during the churn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// No tracer at all.
    Baseline,
    /// `tracer run` with its defaults.
    Run,
    /// `tracer run` following only an empty network namespace
    /// ([`Env::empty_netns`]): it reads, decodes and counts every event and
    /// applies none, and its dumps find nothing. The floor of any agent
    /// that reads every event.
    Reading,
    /// `tracer events > /dev/null`.
    Events,
    /// `bpftrace bench/tcpstates-dwell.bt`.
    Bpftrace,
    /// An empty raw tracepoint program on the same tracepoint, which the
    /// kernel runs the way it runs the tracer's BTF tracepoint program: the
    /// floor of the tracer's kind of program.
    EmptyRaw,
    /// An empty bpftrace program on the same tracepoint: the floor of what
    /// a program there costs, as issue 9 measures it. A classic tracepoint,
    /// as the bpftrace peer's: the kernel fills a trace record for it first.
    Empty,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 7] = [
        Variant::Baseline,
        Variant::Run,
        Variant::Reading,
        Variant::Events,
        Variant::Bpftrace,
        Variant::EmptyRaw,
        Variant::Empty,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline (no tracer)",
            Variant::Run => "tracer run",
            Variant::Reading => "tracer run, reading only (floor)",
            Variant::Events => "tracer events >/dev/null",
            Variant::Bpftrace => "bpftrace tcpstates-dwell.bt",
            Variant::EmptyRaw => "empty raw tracepoint program",
            Variant::Empty => "empty program (floor)",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Run => "run",
            Variant::Reading => "reading",
            Variant::Events => "events",
            Variant::Bpftrace => "bpftrace",
            Variant::EmptyRaw => "empty-raw",
            Variant::Empty => "empty",
        }
    }
}

/// The classic tracepoint floor's program: bpftrace's cheapest possible
/// program on the tracepoint the tracer and the bpftrace peer use.
pub const EMPTY_PROGRAM: &str = "tracepoint:sock:inet_sock_set_state {}";

/// Where things are.
#[derive(Clone, Debug)]
pub struct Env {
    /// target/release/tracer.
    pub tracer: PathBuf,
    /// bench/tcpstates-dwell.bt.
    pub bpftrace_script: PathBuf,
    /// Scratch directory for agent output.
    pub scratch: PathBuf,
    /// Extra arguments for `tracer run` (e.g. `--ring-bytes`).
    pub run_args: Vec<String>,
    /// The empty network namespace (a `/run/netns` name) that
    /// [`Variant::Reading`] follows.
    pub empty_netns: Option<String>,
    /// Read each variant's kernel-program counters around the window
    /// (`kernel.bpf_stats_enabled` is on).
    pub bpf_stats: bool,
    /// Sample the kernel's TIME_WAIT count (and `tracer run`'s gauge) this
    /// often during each window; `None`: not at all.
    pub truth_every: Option<Duration>,
}

/// What an agent did during the measured window.
#[derive(Clone, Debug, Default)]
pub struct AgentStats {
    /// CPU seconds (user + system) during the window.
    pub cpu_secs: f64,
    /// Context switches of all agent threads during the window.
    pub ctx_switches: Option<f64>,
    /// Peak resident set (VmHWM) over the agent's life, KiB.
    pub hwm_kib: Option<u64>,
    /// Events the agent handled (whole life for `events` and bpftrace).
    pub events: Option<f64>,
    /// Events lost in the kernel.
    pub lost: Option<f64>,
    /// Reconcile corrections per reason (`tracer run` only).
    pub corrections: Option<Vec<(String, f64)>>,
    /// CPU seconds of the sock_diag dumps during the window (the kernel's
    /// walk and the reconcile, `tracer_reconcile_cpu_seconds_total`;
    /// `tracer run` only). Part of `cpu_secs`.
    pub dump_cpu_secs: Option<f64>,
}

/// A running agent.
pub struct Agent {
    variant: Variant,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    http: Option<SocketAddr>,
    window: Option<(f64, Option<u64>, Option<scrape::Counters>)>,
}

impl Agent {
    /// Start `variant` and wait until it traces; `None` for the baseline.
    pub fn start(variant: Variant, env: &Env, label: &str) -> anyhow::Result<Option<Agent>> {
        let out = env.scratch.join(format!("{label}-{}.out", variant.tag()));
        let err = env.scratch.join(format!("{label}-{}.err", variant.tag()));
        let stderr = || File::create(&err).with_context(|| format!("creating {}", err.display()));
        let (mut cmd, http) = match variant {
            Variant::Baseline => return Ok(None),
            Variant::Run | Variant::Reading => {
                let addr = free_port()?;
                let mut c = Command::new(&env.tracer);
                c.arg("run")
                    .arg("--listen")
                    .arg(addr.to_string())
                    .args(&env.run_args);
                if variant == Variant::Reading {
                    let netns = env
                        .empty_netns
                        .as_deref()
                        .context("no empty network namespace for the reading-only agent")?;
                    c.arg("--netns").arg(netns);
                }
                c.stdout(
                    File::create(&out).with_context(|| format!("creating {}", out.display()))?,
                );
                (c, Some(addr))
            }
            Variant::Events => {
                let mut c = Command::new(&env.tracer);
                c.arg("events").stdout(Stdio::null());
                (c, None)
            }
            Variant::Bpftrace => {
                let mut c = Command::new("bpftrace");
                c.arg(&env.bpftrace_script)
                    .env("BPFTRACE_MAP_KEYS_MAX", "262144");
                c.stdout(
                    File::create(&out).with_context(|| format!("creating {}", out.display()))?,
                );
                (c, None)
            }
            Variant::EmptyRaw => {
                let mut c = Command::new(
                    std::env::current_exe()
                        .context("finding the xtask binary to hold the floor program")?,
                );
                c.args(["bench", "--hold-floor-program"]);
                c.stdout(
                    File::create(&out).with_context(|| format!("creating {}", out.display()))?,
                );
                (c, None)
            }
            Variant::Empty => {
                let mut c = Command::new("bpftrace");
                c.arg("-e").arg(EMPTY_PROGRAM);
                c.stdout(
                    File::create(&out).with_context(|| format!("creating {}", out.display()))?,
                );
                (c, None)
            }
        };
        cmd.stdin(Stdio::null()).stderr(stderr()?);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", variant.name()))?;
        let mut agent = Agent {
            variant,
            child,
            out,
            err,
            http,
            window: None,
        };
        agent.wait_ready(Duration::from_secs(120))?;
        // Let start-up work (socket dump, first reconcile) settle.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Some(agent))
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}): {}",
                    self.variant.name(),
                    read(&self.err).trim()
                );
            }
            let ready = match self.variant {
                Variant::Baseline => true,
                Variant::Run | Variant::Reading => self
                    .http
                    .is_some_and(|a| matches!(scrape::get(a, "/healthz"), Ok((200, _)))),
                Variant::Events => read(&self.err).contains("tracing TCP events"),
                // bpftrace prints "Attaching" before it loads its programs,
                // which takes it a second or more with a big map.
                Variant::Bpftrace | Variant::Empty => {
                    read(&self.out).contains("Attaching")
                        && kprog::prog_ids(self.pid()).is_ok_and(|ids| !ids.is_empty())
                }
                Variant::EmptyRaw => read(&self.out).contains(super::floor::READY),
            };
            if ready {
                return Ok(());
            }
            if t0.elapsed() > limit {
                self.kill();
                bail!(
                    "{} was not ready after {limit:?}: {}",
                    self.variant.name(),
                    read(&self.err).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where `tracer run` serves /metrics.
    pub fn http(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Mark the start of the measured window.
    pub fn begin(&mut self) -> anyhow::Result<()> {
        let cpu = procfs::cpu_secs(self.pid())?;
        let ctx = procfs::ctx_switches(self.pid());
        let counters = self.scrape()?;
        self.window = Some((cpu, ctx, counters));
        Ok(())
    }

    fn scrape(&self) -> anyhow::Result<Option<scrape::Counters>> {
        let Some(addr) = self.http else {
            return Ok(None);
        };
        let (status, body) = scrape::get(addr, "/metrics")?;
        anyhow::ensure!(status == 200, "GET /metrics answered {status}");
        Ok(Some(scrape::Counters::parse(&body)))
    }

    /// End the window and collect what the agent did in it; the agent runs
    /// on ([`Agent::begin`] starts the next window).
    pub fn window_stats(&mut self) -> anyhow::Result<AgentStats> {
        let (cpu0, ctx0, before) = self
            .window
            .take()
            .context("window_stats() without begin()")?;
        let cpu1 = procfs::cpu_secs(self.pid())?;
        let ctx1 = procfs::ctx_switches(self.pid());
        let hwm_kib = procfs::status_kib(self.pid(), "VmHWM");
        let after = self.scrape()?;
        let mut stats = AgentStats {
            cpu_secs: cpu1 - cpu0,
            ctx_switches: ctx0.zip(ctx1).map(|(a, b)| b.saturating_sub(a) as f64),
            hwm_kib,
            ..AgentStats::default()
        };
        if let (Some(a), Some(b)) = (after, before) {
            let d = a.since(&b);
            stats.events = Some(d.events);
            stats.lost = Some(d.lost);
            stats.corrections = Some(d.corrections);
            stats.dump_cpu_secs = Some(d.reconcile_cpu_secs);
        }
        Ok(stats)
    }

    /// End the window, stop the agent and collect what it did.
    pub fn finish(mut self) -> anyhow::Result<AgentStats> {
        let mut stats = self.window_stats()?;
        if !self.stop()? {
            // A round's throughput and bpf_stats are already taken; only the
            // child's own summary is lost. Losing the whole bench for it is worse.
            eprintln!(
                "xtask: warning: {} did not stop within {} s of SIGINT and was killed; \
                 this round has no event count of its own",
                self.variant.name(),
                STOP_GRACE.as_secs()
            );
            return Ok(stats);
        }
        match self.variant {
            Variant::Events => {
                let s = read(&self.err);
                let (events, lost) = parse_events_summary(&s)
                    .with_context(|| format!("no summary from tracer events: {}", s.trim()))?;
                stats.events = Some(events);
                stats.lost = Some(lost);
            }
            Variant::Bpftrace => stats.events = parse_bpftrace_count(&read(&self.out)),
            Variant::Baseline
            | Variant::Run
            | Variant::Reading
            | Variant::EmptyRaw
            | Variant::Empty => {}
        }
        Ok(stats)
    }

    /// SIGINT, wait (the agent prints its summary), SIGKILL after
    /// [`STOP_GRACE`]. False when it had to be killed.
    fn stop(&mut self) -> anyhow::Result<bool> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let t0 = Instant::now();
        while t0.elapsed() < STOP_GRACE {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Ok(false)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// A network namespace under `/run/netns`, made for the run and deleted
/// on drop, whatever happens.
pub struct TempNetns(String);

impl TempNetns {
    /// Make `/run/netns/<name>`, empty.
    pub fn make(name: String) -> anyhow::Result<TempNetns> {
        crate::cmd::run("ip", &["netns", "add", &name])
            .with_context(|| format!("making network namespace {name}"))?;
        Ok(TempNetns(name))
    }

    /// Its name under `/run/netns`.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let l =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port for /metrics")?;
    Ok(l.local_addr()?)
}

/// `tracer: N events read, M printed, L lost in the kernel ...` -> (N, L).
fn parse_events_summary(s: &str) -> Option<(f64, f64)> {
    let line = s.lines().rev().find(|l| l.contains("events read"))?;
    let num_before = |needle: &str| -> Option<f64> {
        let head = &line[..line.find(needle)?];
        head.split_whitespace()
            .last()?
            .trim_matches(',')
            .parse()
            .ok()
    };
    Some((
        num_before(" events read")?,
        num_before(" lost in the kernel")?,
    ))
}

/// `@events: N` from the bpftrace script's END output.
fn parse_bpftrace_count(s: &str) -> Option<f64> {
    s.lines()
        .find_map(|l| l.strip_prefix("@events:")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summaries() {
        let s = "tracer: tracing TCP events; stop with Ctrl-C\n\
                 tracer: 123 events read, 120 printed, 7 lost in the kernel (ring buffer full: 7, read errors: 0), 0 undecodable\n";
        assert_eq!(parse_events_summary(s), Some((123.0, 7.0)));
        assert_eq!(
            parse_bpftrace_count("Attaching 2 probes...\n\n@events: 4567\n"),
            Some(4567.0)
        );
        assert_eq!(parse_bpftrace_count("nothing"), None);
    }
}
