//! Reading `tracer run`'s HTTP endpoints with the tests' own client and
//! exposition reader (`tracer-testkit`), reduced to the counters the
//! benchmark reports.
use std::net::SocketAddr;

use anyhow::Context as _;
pub use tracer_testkit::exposition::gauge;
use tracer_testkit::exposition::samples;

/// GET `path`; returns (status, body).
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    tracer_testkit::http::get(addr, path).with_context(|| format!("GET {path} from {addr}"))
}

/// The counters the benchmark reads from `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Sum of `tracer_events_total` over kinds.
    pub events: f64,
    /// `tracer_events_lost_total`.
    pub lost: f64,
    /// `tracer_reconcile_corrections_total`, per reason.
    pub corrections: Vec<(String, f64)>,
    /// `tracer_tracked_sockets` (a gauge).
    pub tracked: f64,
    /// `tracer_tcp_sockets{state="time_wait"}` (a gauge), when present.
    pub time_wait: Option<f64>,
    /// Sum of `tracer_reconcile_cpu_seconds_total` over kinds of dump.
    pub reconcile_cpu_secs: f64,
}

impl Counters {
    /// Read them from an exposition.
    pub fn parse(text: &str) -> Counters {
        let mut c = Counters::default();
        for s in samples(text) {
            match s.name {
                "tracer_events_total" => c.events += s.value,
                "tracer_events_lost_total" => c.lost += s.value,
                "tracer_tracked_sockets" => c.tracked = s.value,
                "tracer_reconcile_cpu_seconds_total" => c.reconcile_cpu_secs += s.value,
                "tracer_tcp_sockets" if s.label("state") == Some("time_wait") => {
                    c.time_wait = Some(s.value);
                }
                "tracer_reconcile_corrections_total" => {
                    let reason = s.label("reason").unwrap_or("").to_string();
                    c.corrections.push((reason, s.value));
                }
                _ => {}
            }
        }
        c
    }

    /// `self - before`, per counter (per reason for corrections).
    pub fn since(&self, before: &Counters) -> Counters {
        let prev = |r: &str| {
            before
                .corrections
                .iter()
                .find(|(k, _)| k == r)
                .map_or(0.0, |(_, v)| *v)
        };
        Counters {
            events: self.events - before.events,
            lost: self.lost - before.lost,
            corrections: self
                .corrections
                .iter()
                .map(|(r, v)| (r.clone(), v - prev(r)))
                .collect(),
            tracked: self.tracked,
            time_wait: self.time_wait,
            reconcile_cpu_secs: self.reconcile_cpu_secs - before.reconcile_cpu_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_subtracts_the_counters() {
        let a = Counters::parse(
            "# HELP tracer_events_total x\n# TYPE tracer_events counter\n\
             tracer_events_total{kind=\"state\"} 10\ntracer_events_total{kind=\"retransmit\"} 2\n\
             tracer_events_lost_total 0\n\
             tracer_reconcile_corrections_total{reason=\"missed\"} 1\n\
             tracer_reconcile_corrections_total{reason=\"vanished\"} 0\n\
             tracer_sockets{state=\"established\"} 4\n\
             tracer_tcp_sockets{state=\"established\"} 4\n\
             tracer_tcp_sockets{state=\"time_wait\"} 1234\n\
             tracer_reconcile_cpu_seconds_total{dump=\"live\"} 0.25\n\
             tracer_reconcile_cpu_seconds_total{dump=\"full\"} 0.5\n# EOF\n",
        );
        assert_eq!(a.events, 12.0);
        assert_eq!(a.time_wait, Some(1234.0));
        assert_eq!(a.corrections.iter().map(|(_, v)| v).sum::<f64>(), 1.0);
        let b = Counters::parse(
            "tracer_events_total{kind=\"state\"} 110\ntracer_events_lost_total 3\n\
             tracer_reconcile_corrections_total{reason=\"missed\"} 4\n\
             tracer_reconcile_cpu_seconds_total{dump=\"live\"} 1\n\
             tracer_reconcile_cpu_seconds_total{dump=\"full\"} 0.5\n",
        );
        assert_eq!(a.reconcile_cpu_secs, 0.75);
        let d = b.since(&a);
        assert_eq!((d.events, d.lost), (98.0, 3.0));
        assert_eq!(d.reconcile_cpu_secs, 0.75);
        assert_eq!(d.corrections, vec![("missed".to_string(), 3.0)]);
    }
}
