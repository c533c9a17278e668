//! Reading `tracer run`'s HTTP endpoints: a minimal HTTP/1.0 GET (the agent
//! listens on loopback only) and the Prometheus text format, reduced to the
//! counters the benchmark reports.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Context as _;

/// GET `path`; returns (status, body).
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading GET {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in the reply to GET {path}"))?;
    Ok((status, body.to_string()))
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
}

impl Counters {
    /// Parse the Prometheus text exposition format.
    pub fn parse(text: &str) -> Counters {
        let mut c = Counters::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "tracer_events_total" => c.events += v,
                "tracer_events_lost_total" => c.lost += v,
                "tracer_tracked_sockets" => c.tracked = v,
                "tracer_tcp_sockets" if label(labels, "state") == Some("time_wait") => {
                    c.time_wait = Some(v);
                }
                "tracer_reconcile_corrections_total" => {
                    let reason = label(labels, "reason").unwrap_or("").to_string();
                    c.corrections.push((reason, v));
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
        }
    }
}

/// The sum of the series of metric `name` whose labels include every
/// `(key, value)` of `want`; `None` when no series matches.
pub fn gauge(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = series.split_once('{').unwrap_or((series, ""));
        if n != name || !want.iter().all(|(k, v)| label(labels, k) == Some(v)) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.trim_end_matches('}').split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
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
             tracer_tcp_sockets{state=\"time_wait\"} 1234\n# EOF\n",
        );
        assert_eq!(a.events, 12.0);
        assert_eq!(a.time_wait, Some(1234.0));
        assert_eq!(a.corrections.iter().map(|(_, v)| v).sum::<f64>(), 1.0);
        let b = Counters::parse(
            "tracer_events_total{kind=\"state\"} 110\ntracer_events_lost_total 3\n\
             tracer_reconcile_corrections_total{reason=\"missed\"} 4\n",
        );
        let d = b.since(&a);
        assert_eq!((d.events, d.lost), (98.0, 3.0));
        assert_eq!(d.corrections, vec![("missed".to_string(), 3.0)]);
    }

    #[test]
    fn gauge_sums_the_series_with_the_labels_asked_for() {
        let text = "tracer_tcp_sockets{state=\"established\"} 4\n\
                    tracer_workload_sockets{pod=\"\",netns=\"host\",state=\"time_wait\"} 7\n\
                    tracer_workload_sockets{pod=\"\",netns=\"4026\",state=\"time_wait\"} 2\n\
                    tracer_netns_tracked 3\n";
        assert_eq!(
            gauge(text, "tracer_tcp_sockets", &[("state", "established")]),
            Some(4.0)
        );
        let tw = [("netns", "host"), ("state", "time_wait")];
        assert_eq!(gauge(text, "tracer_workload_sockets", &tw), Some(7.0));
        assert_eq!(
            gauge(text, "tracer_workload_sockets", &[("state", "time_wait")]),
            Some(9.0)
        );
        assert_eq!(gauge(text, "tracer_netns_tracked", &[]), Some(3.0));
        assert_eq!(
            gauge(text, "tracer_tcp_sockets", &[("state", "listen")]),
            None
        );
    }
}
