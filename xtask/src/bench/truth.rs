//! The truth column: while a churn window runs, every few seconds the
//! kernel's TIME_WAIT count ([`sockdiag`], what `ss -tan state time-wait`
//! lists, in the churn's network namespace) is read right before and right
//! after a scrape of the agent's `tracer_tcp_sockets{state="time_wait"}`,
//! and inside those two dumps the namespace's count of timewait sockets
//! from `/proc/net/sockstat`, which one read gives at an instant. The
//! gauge is compared with the band the reads span ([`Point::band`]; no
//! deviation inside it), so neither the kernel's own movement during the
//! scrape nor a dump that the kernel overtook mid-walk is charged to the
//! agent. Variants without `/metrics` are
//! sampled too (kernel counts only), so every variant carries the same
//! sampling load.
use std::{
    net::SocketAddr,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{scrape, sockdiag};

/// One sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Seconds since the churn window started.
    pub t_secs: f64,
    /// Kernel TIME_WAIT count right before the scrape.
    pub ss_before: u64,
    /// The agent's `tracer_tcp_sockets{state="time_wait"}` (`None`: no agent
    /// with /metrics, or the series was missing).
    pub gauge: Option<f64>,
    /// Kernel TIME_WAIT count right after the scrape.
    pub ss_after: u64,
    /// The namespace's timewait sockets right before and right after the
    /// scrape, from `/proc/net/sockstat` (`tw`): one read of the kernel's
    /// counter, where a dump takes tens of milliseconds to walk a table
    /// that a bucket's expiry or a refill changes by thousands meanwhile.
    /// `None` where it was not read.
    pub sockstat: Option<[u64; 2]>,
}

impl Point {
    /// The band the kernel's TIME_WAIT count at the scrape lies in, as far
    /// as the reads tell: `(lo, hi)`.
    ///
    /// Without `sockstat`, the two dumps' counts. With it, `hi` is the
    /// higher of the two instant counts: no moment has more TIME_WAIT
    /// sockets than timewait sockets, and a dump that a bucket's expiry
    /// overtook mid-walk reads tens of thousands above either. `lo` is the
    /// lowest of all four reads: a dump that a refill overtook reads below
    /// the instant counts, and the instant counts hold orphaned FIN_WAIT2
    /// sockets, so neither alone is a floor.
    pub fn band(&self) -> (f64, f64) {
        let (b, a) = (self.ss_before, self.ss_after);
        let (lo, hi) = match self.sockstat {
            Some([tb, ta]) => (b.min(a).min(tb).min(ta), tb.max(ta)),
            None => (b.min(a), b.max(a)),
        };
        (lo as f64, hi as f64)
    }

    /// The kernel count the gauge is compared with: the nearer end of the
    /// band.
    pub fn reference(&self) -> f64 {
        let (lo, hi) = self.band();
        match self.gauge {
            Some(g) if (g - hi).abs() < (g - lo).abs() => hi,
            _ => lo,
        }
    }

    /// Gauge minus the kernel's count; 0 when the gauge lies in the band.
    pub fn deviation(&self) -> Option<f64> {
        let g = self.gauge?;
        let (lo, hi) = self.band();
        Some(if g < lo {
            g - lo
        } else if g > hi {
            g - hi
        } else {
            0.0
        })
    }

    /// The deviation in % of the kernel's count (of 1 when it is 0).
    pub fn deviation_pct(&self) -> Option<f64> {
        Some(100.0 * self.deviation()? / self.reference().max(1.0))
    }
}

/// The worst deviations over a set of samples, each keeping its sign
/// (positive: the gauge read more than the kernel). The worst in sockets
/// and the worst in percent may come from different samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Worst {
    /// Largest |gauge − kernel|, in sockets.
    pub abs: f64,
    /// Largest |gauge − kernel| / kernel, in %.
    pub pct: f64,
    /// Samples compared.
    pub samples: usize,
}

impl Worst {
    /// Over every point with a gauge; `None` when there is none.
    pub fn of<'a>(points: impl IntoIterator<Item = &'a Point>) -> Option<Worst> {
        let mut w: Option<Worst> = None;
        for p in points {
            let (Some(d), Some(pct)) = (p.deviation(), p.deviation_pct()) else {
                continue;
            };
            let cur = w.get_or_insert(Worst {
                abs: d,
                pct,
                samples: 0,
            });
            cur.samples += 1;
            if d.abs() > cur.abs.abs() {
                cur.abs = d;
            }
            if pct.abs() > cur.pct.abs() {
                cur.pct = pct;
            }
        }
        w
    }

    /// `+1234 / +8.8%`.
    pub fn fmt(&self) -> String {
        format!("{:+.0} / {:+.1}%", self.abs, self.pct)
    }
}

/// Format an optional worst deviation, `–` when absent.
pub fn fmt_worst(w: Option<Worst>) -> String {
    w.map_or_else(|| "–".to_string(), |w| w.fmt())
}

/// A sampling thread; stop it with [`Sampler::finish`].
pub struct Sampler {
    stop: mpsc::Sender<()>,
    handle: thread::JoinHandle<anyhow::Result<Vec<Point>>>,
}

impl Sampler {
    /// Sample every `every` (the first after half of it), scraping the agent
    /// at `metrics` when there is one.
    pub fn start(metrics: Option<SocketAddr>, every: Duration) -> anyhow::Result<Sampler> {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("bench-truth".into())
            .spawn(move || sample(metrics, every, &stopped))
            .context("starting the TIME_WAIT sampler")?;
        Ok(Sampler { stop, handle })
    }

    /// Stop sampling (a sample in progress completes) and return the samples.
    pub fn finish(self) -> anyhow::Result<Vec<Point>> {
        let _ = self.stop.send(());
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the TIME_WAIT sampler panicked"))?
    }
}

fn sample(
    metrics: Option<SocketAddr>,
    every: Duration,
    stopped: &mpsc::Receiver<()>,
) -> anyhow::Result<Vec<Point>> {
    let t0 = Instant::now();
    let mut due = t0 + every / 2;
    let mut points = Vec::new();
    loop {
        let wait = due.saturating_duration_since(Instant::now());
        match stopped.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(points),
        }
        let t_secs = t0.elapsed().as_secs_f64();
        let ss_before = sockdiag::count_time_wait()?;
        let tw_before = sockdiag::sockstat_tw()?;
        let gauge = match metrics {
            Some(addr) => {
                let (status, body) = scrape::get(addr, "/metrics")?;
                anyhow::ensure!(status == 200, "GET /metrics answered {status}");
                scrape::Counters::parse(&body).time_wait
            }
            None => None,
        };
        let tw_after = sockdiag::sockstat_tw()?;
        let ss_after = sockdiag::count_time_wait()?;
        points.push(Point {
            t_secs,
            ss_before,
            gauge,
            ss_after,
            sockstat: Some([tw_before, tw_after]),
        });
        due += every;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(b: u64, g: f64, a: u64) -> Point {
        Point {
            t_secs: 0.0,
            ss_before: b,
            gauge: Some(g),
            ss_after: a,
            sockstat: None,
        }
    }

    #[test]
    fn the_gauge_is_compared_with_the_nearer_count() {
        assert_eq!(p(100, 105.0, 110).deviation(), Some(0.0));
        assert_eq!(p(110, 105.0, 100).deviation(), Some(0.0));
        assert_eq!(p(100, 130.0, 110).deviation(), Some(20.0));
        assert_eq!(p(100, 90.0, 110).deviation(), Some(-10.0));
        assert_eq!(
            p(100, 130.0, 110).deviation_pct(),
            Some(100.0 * 20.0 / 110.0)
        );
        assert_eq!(p(0, 5.0, 0).deviation_pct(), Some(500.0));
        let none = Point {
            gauge: None,
            ..p(1, 0.0, 1)
        };
        assert_eq!(none.deviation(), None);
    }

    /// A bucket of timewait sockets expired during the first dump: it read
    /// 61,017, far above the instant counts (44,118 and 45,409) that
    /// bracket the gauge (a sample of a peak run).
    #[test]
    fn the_instant_counts_cap_the_band() {
        let fire = Point {
            sockstat: Some([44_118, 45_409]),
            ..p(61_017, 44_325.0, 45_870)
        };
        assert_eq!(fire.band(), (44_118.0, 45_409.0));
        assert_eq!(fire.deviation(), Some(0.0));
        assert_eq!(
            Point {
                sockstat: None,
                ..fire
            }
            .deviation(),
            Some(-1545.0)
        );
        // Above every timewait socket the kernel had: counted in full.
        let over = Point {
            gauge: Some(46_000.0),
            ..fire
        };
        assert_eq!(over.deviation(), Some(591.0));
        assert_eq!(over.reference(), 45_409.0);
        // A refill overtook the first dump: it is the floor.
        let refill = Point {
            sockstat: Some([77_975, 78_204]),
            ..p(75_470, 77_130.0, 78_885)
        };
        assert_eq!(refill.band(), (75_470.0, 78_204.0));
        assert_eq!(refill.deviation(), Some(0.0));
        let under = Point {
            gauge: Some(75_000.0),
            ..refill
        };
        assert_eq!(under.deviation(), Some(-470.0));
    }

    #[test]
    fn the_worst_keeps_its_sign_per_measure() {
        let pts = [p(1000, 1100.0, 1000), p(10, 5.0, 10), p(500, 480.0, 500)];
        let w = Worst::of(&pts).expect("some");
        assert_eq!((w.abs, w.pct, w.samples), (100.0, -50.0, 3));
        assert_eq!(w.fmt(), "+100 / -50.0%");
        let none = Point {
            gauge: None,
            ..p(1, 0.0, 1)
        };
        assert_eq!(Worst::of(&[none]), None);
    }
}
