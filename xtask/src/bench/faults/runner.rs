//! The agent under the fault soak, across its restarts: starting, stopping
//! and killing it, looking at it during a phase, and turning a phase's
//! looks and recovery into a [`Row`].
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    Row,
    probe::{self, Gauges, Look, RECOVERY_LIMIT},
};
use crate::bench::{
    agent::{Agent, Env, Variant},
    truth::Worst,
};

/// `tracer_events_lost_total` summed over the agents of a phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lost {
    base: f64,
    last: f64,
    banked: f64,
}

impl Lost {
    fn phase_start(&mut self) {
        self.banked = 0.0;
        self.base = self.last;
    }

    fn saw(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.last = v;
        }
    }

    fn new_agent(&mut self) {
        self.banked += self.last - self.base;
        (self.base, self.last) = (0.0, 0.0);
    }

    /// Lost since the phase started, as of the last look.
    pub fn total(&self) -> f64 {
        self.banked + self.last - self.base
    }
}

/// The agent of the moment and what the phases keep across it.
pub struct Runner<'a> {
    /// Where things are; its `run_args` (`--tracer-arg`) go to every start.
    pub env: &'a Env,
    /// The agent running now.
    pub agent: Option<Agent>,
    /// Where its gauges are read.
    pub gauges: Gauges,
    /// Events lost in this phase.
    pub lost: Lost,
    /// In this phase, `tracer_netns_tracked` must come back to at most this.
    pub tracked_max: Option<f64>,
}

impl Runner<'_> {
    /// Stop the agent running now (if any) and start `tracer run --netns
    /// NETNS EXTRA...`; how long it took to answer `/healthz` with 200.
    pub fn start(&mut self, netns: &str, extra: &[&str], label: &str) -> anyhow::Result<Duration> {
        self.stop();
        let mut env = self.env.clone();
        env.run_args = ["--netns", netns]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .chain(self.env.run_args.iter().cloned())
            .collect();
        let t0 = Instant::now();
        let agent = Agent::start(Variant::Run, &env, label)?.context("tracer run did not start")?;
        let took = t0.elapsed();
        self.agent = Some(agent);
        self.lost.new_agent();
        self.gauges = match netns {
            "host" => Gauges::Total,
            _ => Gauges::OwnNetns,
        };
        eprintln!(
            "xtask: soak-faults: tracer run --netns {netns} {} ready in {:.1} s",
            extra.join(" "),
            took.as_secs_f64()
        );
        Ok(took)
    }

    /// Stop the agent with SIGINT (SIGKILL when it does not answer).
    pub fn stop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            // `finish` sends SIGINT and waits; dropping kills.
            if a.begin().is_ok() {
                let _ = a.finish();
            }
        }
    }

    /// SIGKILL the agent and reap it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let a = self.agent.take().context("no agent to kill")?;
        // SAFETY: signalling our own child by pid.
        if unsafe { libc::kill(a.pid() as libc::pid_t, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill -9 of tracer run");
        }
        drop(a);
        Ok(())
    }

    /// Where the agent serves.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.agent
            .as_ref()
            .and_then(Agent::http)
            .context("no agent running")
    }

    /// One look at the agent.
    pub fn look(&mut self) -> Look {
        let l = match &self.agent {
            Some(a) => Look::take(
                a.pid(),
                a.http().unwrap_or(([127, 0, 0, 1], 1).into()),
                self.gauges,
            ),
            None => Look::nobody(),
        };
        self.lost.saw(l.lost);
        l
    }

    /// Look once a second for `d`.
    pub fn watch(&mut self, d: Duration) -> Vec<Look> {
        let end = Instant::now() + d;
        let mut looks = Vec::new();
        while Instant::now() < end {
            let next = Instant::now() + Duration::from_secs(1);
            looks.push(self.look());
            std::thread::sleep(next.saturating_duration_since(Instant::now()).min(d));
        }
        looks
    }

    /// Run one phase: `body` applies the fault, returns the looks taken
    /// while it lasted and when it ended; then wait for recovery.
    pub fn phase(
        &mut self,
        name: &'static str,
        fault: &str,
        body: impl FnOnce(&mut Self, &mut Vec<String>) -> anyhow::Result<(Vec<Look>, Instant)>,
    ) -> Row {
        eprintln!("xtask: soak-faults: phase {name}: {fault}");
        let mut notes = Vec::new();
        if !self.agent.as_ref().is_some_and(|a| probe::alive(a.pid())) {
            notes.push("the agent was down at the start; started again".to_string());
            if let Err(e) = self.start("host", &[], "faults-again") {
                notes.push(format!("{e:#}"));
            }
        }
        self.look();
        self.lost.phase_start();
        self.tracked_max = None;
        let (during, recovery) = match body(self, &mut notes) {
            Ok((during, since)) => {
                let max = self.tracked_max;
                let rec = probe::recover(
                    since,
                    || self.look(),
                    |l| max.is_none_or(|m| l.netns_tracked.is_some_and(|t| t <= m)),
                );
                (during, rec)
            }
            Err(e) => {
                notes.push(format!("failed: {e:#}"));
                (Vec::new(), probe::Recovery::default())
            }
        };
        if recovery.took.is_none()
            && let Some(last) = recovery.looks.last()
        {
            let mut why = last.failures();
            if let (Some(max), Some(t)) = (self.tracked_max, last.netns_tracked)
                && t > max
            {
                why.push(format!("{t:.0} namespaces followed, not {max:.0}"));
            }
            notes.push(format!(
                "not recovered after {:.0} s: {}",
                RECOVERY_LIMIT.as_secs_f64(),
                why.join(", ")
            ));
        }
        let died = during.iter().filter(|l| !l.alive).count();
        if died > 0 {
            notes.push(format!("agent dead in {died} of {} looks", during.len()));
        }
        let unhealthy = during.iter().filter(|l| l.health != Some(200)).count();
        let slowest = during.iter().filter_map(|l| l.metrics).max();
        let silent = during.iter().filter(|l| l.metrics.is_none()).count();
        notes.push(format!(
            "during: `/healthz` not 200 in {unhealthy} of {} looks, `/metrics` slowest {}{}",
            during.len(),
            slowest.map_or("–".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
            match silent {
                0 => String::new(),
                n => format!(", no answer in {n}"),
            }
        ));
        let after: &[Look] = match recovery.took {
            Some(_) => &recovery.looks[recovery.looks.len().saturating_sub(probe::CONFIRM)..],
            None => &recovery.looks,
        };
        let worst = |ls: &[Look]| {
            (
                Worst::of(ls.iter().map(|l| &l.tw)),
                Worst::of(ls.iter().map(|l| &l.est)),
            )
        };
        let survived = died == 0 && recovery.took.is_some_and(|d| d <= RECOVERY_LIMIT);
        let row = Row {
            phase: name,
            fault: fault.to_string(),
            survived,
            recovery: recovery.took,
            lost: self.lost.total(),
            during: worst(&during),
            after: worst(after),
            notes,
        };
        eprintln!(
            "xtask: soak-faults: phase {name}: {}, recovery {}, {:.0} events lost",
            if survived { "survived" } else { "NOT survived" },
            row.recovery
                .map_or("none".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            row.lost
        );
        row
    }
}
