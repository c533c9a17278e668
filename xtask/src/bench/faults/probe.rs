//! One look at the agent: is it alive, does `/healthz` answer 200, how long
//! does `/metrics` take, and how far are its TIME_WAIT and ESTABLISHED
//! gauges from the kernel's counts ([`sockdiag`], taken right before and
//! right after the scrape as in [`truth`](super::super::truth)). Then the
//! recovery rule: after a fault, the first of [`CONFIRM`] looks in a row
//! that all pass, begun within [`RECOVERY_LIMIT`].
use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use crate::bench::{scrape, sockdiag, truth::Point};

/// How long after a fault the gauges may take to return to the kernel's counts.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// The slowest `/metrics` answer that passes.
pub const METRICS_LIMIT: Duration = Duration::from_secs(1);
/// Passing looks in a row that make a recovery.
pub const CONFIRM: usize = 3;

/// Where the gauges are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gauges {
    /// `tracer_tcp_sockets{state}`: the agent follows only the run's namespace.
    Total,
    /// `tracer_workload_sockets{netns="host",state}`: the agent follows
    /// every namespace, and the run's namespace is its own.
    OwnNetns,
}

/// One look.
#[derive(Clone, Debug)]
pub struct Look {
    /// The agent's process exists.
    pub alive: bool,
    /// `/healthz`'s status, `None` when it did not answer.
    pub health: Option<u16>,
    /// How long `/metrics` took to answer 200, `None` when it did not.
    pub metrics: Option<Duration>,
    /// TIME_WAIT: kernel before, gauge, kernel after.
    pub tw: Point,
    /// ESTABLISHED, the same way.
    pub est: Point,
    /// `tracer_events_lost_total`.
    pub lost: Option<f64>,
    /// `tracer_netns_tracked`.
    pub netns_tracked: Option<f64>,
    /// `tracer_reconcile_interval_seconds{dump="live"}`: how often
    /// namespaces are looked for.
    pub live_interval: Option<f64>,
}

/// A gauge within 1 % or 20 sockets of the kernel's count.
pub fn close_enough(p: &Point) -> bool {
    p.deviation()
        .is_some_and(|d| d.abs() <= (0.01 * p.reference()).max(20.0))
}

impl Look {
    /// Take one look at the agent `pid` serving on `addr`.
    pub fn take(pid: u32, addr: SocketAddr, gauges: Gauges) -> Look {
        let alive = alive(pid);
        let health = scrape::get(addr, "/healthz").ok().map(|(s, _)| s);
        let (tw0, est0) = kernel();
        let t0 = Instant::now();
        let body = match scrape::get(addr, "/metrics") {
            Ok((200, body)) => Some(body),
            _ => None,
        };
        let took = t0.elapsed();
        let (est1, tw1) = {
            let (tw, est) = kernel();
            (est, tw)
        };
        let text = body.as_deref().unwrap_or("");
        let read = |state: &str| match gauges {
            Gauges::Total => scrape::gauge(text, "tracer_tcp_sockets", &[("state", state)]),
            Gauges::OwnNetns => scrape::gauge(
                text,
                "tracer_workload_sockets",
                &[("netns", "host"), ("state", state)],
            ),
        };
        let point = |before: u64, gauge, after: u64| Point {
            t_secs: 0.0,
            ss_before: before,
            gauge,
            ss_after: after,
            sockstat: None,
        };
        Look {
            alive,
            health,
            metrics: body.as_ref().map(|_| took),
            tw: point(tw0, read("time_wait"), tw1),
            est: point(est0, read("established"), est1),
            lost: scrape::gauge(text, "tracer_events_lost_total", &[]),
            netns_tracked: scrape::gauge(text, "tracer_netns_tracked", &[]),
            live_interval: scrape::gauge(
                text,
                "tracer_reconcile_interval_seconds",
                &[("dump", "live")],
            ),
        }
    }

    /// The look when no agent runs.
    pub fn nobody() -> Look {
        let (tw, est) = kernel();
        let point = |n| Point {
            t_secs: 0.0,
            ss_before: n,
            gauge: None,
            ss_after: n,
            sockstat: None,
        };
        Look {
            alive: false,
            health: None,
            metrics: None,
            tw: point(tw),
            est: point(est),
            lost: None,
            netns_tracked: None,
            live_interval: None,
        }
    }

    /// What keeps this look from passing, in words.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if !self.alive {
            f.push("agent dead".to_string());
        }
        if self.health != Some(200) {
            f.push(format!(
                "`/healthz` {}",
                self.health.map_or("no answer".into(), |s| s.to_string())
            ));
        }
        match self.metrics {
            None => f.push("`/metrics` no answer".into()),
            Some(d) if d > METRICS_LIMIT => {
                f.push(format!("`/metrics` {:.1} s", d.as_secs_f64()));
            }
            Some(_) => {}
        }
        for (name, p) in [("TIME_WAIT", &self.tw), ("ESTABLISHED", &self.est)] {
            if !close_enough(p) {
                f.push(match (p.deviation(), p.gauge) {
                    (Some(d), Some(g)) => {
                        format!(
                            "{name} gauge {g:.0} off by {d:+.0} from {:.0}",
                            p.reference()
                        )
                    }
                    _ => format!("no {name} gauge"),
                });
            }
        }
        f
    }

    /// Alive, healthy, `/metrics` within [`METRICS_LIMIT`], both gauges close enough.
    pub fn passes(&self) -> bool {
        self.alive
            && self.health == Some(200)
            && self.metrics.is_some_and(|d| d <= METRICS_LIMIT)
            && close_enough(&self.tw)
            && close_enough(&self.est)
    }
}

/// The kernel's (TIME_WAIT, ESTABLISHED) counts in this thread's namespace;
/// 0 when a dump failed (the gauge then shows as far off).
fn kernel() -> (u64, u64) {
    (
        sockdiag::count_time_wait().unwrap_or(0),
        sockdiag::count_established().unwrap_or(0),
    )
}

/// The process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// What recovery looked like.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// From the end of the fault to the first of the passing looks.
    pub took: Option<Duration>,
    /// Every look taken while waiting, in order.
    pub looks: Vec<Look>,
}

/// Look every half second until [`CONFIRM`] looks in a row pass, the first
/// of them within [`RECOVERY_LIMIT`] of `since`, and `extra` holds for them.
pub fn recover(
    since: Instant,
    mut look: impl FnMut() -> Look,
    extra: impl Fn(&Look) -> bool,
) -> Recovery {
    let mut r = Recovery::default();
    let mut run: Option<(Duration, usize)> = None;
    loop {
        let at = since.elapsed();
        let l = look();
        let ok = l.passes() && extra(&l);
        r.looks.push(l);
        run = match (ok, run) {
            (false, _) => None,
            (true, None) if at > RECOVERY_LIMIT => return r,
            (true, None) => Some((at, 1)),
            (true, Some((first, n))) => Some((first, n + 1)),
        };
        match run {
            Some((first, n)) if n >= CONFIRM => {
                r.took = Some(first);
                return r;
            }
            None if at > RECOVERY_LIMIT => return r,
            _ => {}
        }
        thread::sleep(Duration::from_millis(500));
    }
}
