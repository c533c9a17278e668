//! The forecasts' gauges: descriptors of the processes whose CLOSE_WAIT
//! leak grows, and ephemeral ports of the busiest remote endpoints, with
//! the seconds left before each runs out. At most
//! [`TOP`](crate::forecast::TOP) of each; a process or endpoint that no
//! longer qualifies loses its series at the next reconcile.
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::forecast::Forecasts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    pid: String,
    comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    netns: String,
    remote: String,
    local: String,
}

type Seconds = Gauge<f64, AtomicU64>;

/// The forecasts' families.
pub struct Forecast {
    fd_seconds: Family<ProcessLabels, Seconds>,
    open_fds: Family<ProcessLabels, Gauge>,
    fd_limit: Family<ProcessLabels, Gauge>,
    port_seconds: Family<EndpointLabels, Seconds>,
    ports_in_use: Family<EndpointLabels, Gauge>,
    ports_time_wait: Family<EndpointLabels, Gauge>,
    ports_free: Family<EndpointLabels, Gauge>,
}

impl Forecast {
    /// Register the families in `r` (empty until the first reconcile).
    pub fn register(r: &mut Registry) -> Forecast {
        let f = Forecast {
            fd_seconds: Family::default(),
            open_fds: Family::default(),
            fd_limit: Family::default(),
            port_seconds: Family::default(),
            ports_in_use: Family::default(),
            ports_time_wait: Family::default(),
            ports_free: Family::default(),
        };
        r.register(
            "forecast_fd_exhaustion_seconds",
            "Seconds until a process leaking CLOSE_WAIT sockets reaches its soft RLIMIT_NOFILE at its growth (top 20 growing leaks; 0 for those there, and for listening processes at their limit)",
            f.fd_seconds.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of a process with a growing CLOSE_WAIT leak",
            f.open_fds.clone(),
        );
        r.register(
            "process_fd_limit",
            "Soft RLIMIT_NOFILE of a process with a growing CLOSE_WAIT leak",
            f.fd_limit.clone(),
        );
        r.register(
            "forecast_port_exhaustion_seconds",
            "Seconds until no ephemeral port is left for connects to a remote endpoint, at the net growth of the last minute or of the last 10 s, whichever is faster",
            f.port_seconds.clone(),
        );
        r.register(
            "ephemeral_ports_in_use",
            "Ephemeral ports no new connect to a remote endpoint can take (top 20 endpoints)",
            f.ports_in_use.clone(),
        );
        r.register(
            "ephemeral_ports_time_wait",
            "Ephemeral ports held by TIME_WAIT sockets to a remote endpoint",
            f.ports_time_wait.clone(),
        );
        r.register(
            "ephemeral_ports_free",
            "Ephemeral ports left for connects to a remote endpoint",
            f.ports_free.clone(),
        );
        f
    }

    /// Replace every series with those of `f`.
    pub fn publish(&self, f: &Forecasts) {
        for fam in [&self.open_fds, &self.fd_limit] {
            fam.clear();
        }
        self.fd_seconds.clear();
        for p in &f.fd {
            let (Some(left), Some(limit)) = (p.seconds_left, p.fd_limit) else {
                continue;
            };
            // A leak that does not grow has no forecast, but one that has
            // run out stays at 0: it grows no more because accept() fails.
            if left > 0.0 && p.growth_per_minute.is_none_or(|g| g <= 0.0) {
                continue;
            }
            let l = ProcessLabels {
                pid: p.pid.to_string(),
                comm: p.comm.clone(),
            };
            self.fd_seconds.get_or_create(&l).set(left);
            self.open_fds.get_or_create(&l).set(p.open_fds as i64);
            self.fd_limit.get_or_create(&l).set(limit as i64);
        }
        for fam in [&self.ports_in_use, &self.ports_time_wait, &self.ports_free] {
            fam.clear();
        }
        self.port_seconds.clear();
        for p in &f.ports {
            let l = EndpointLabels {
                netns: p.endpoint.netns.to_string(),
                remote: p.endpoint.remote.to_string(),
                local: p.endpoint.local.to_string(),
            };
            self.ports_in_use
                .get_or_create(&l)
                .set(i64::from(p.usage.in_use));
            self.ports_time_wait
                .get_or_create(&l)
                .set(i64::from(p.usage.time_wait));
            self.ports_free
                .get_or_create(&l)
                .set(i64::from(p.usage.free));
            if let Some(left) = p.seconds_left {
                self.port_seconds.get_or_create(&l).set(left);
            }
        }
    }
}

/// A growing leak in a process limited to 1024 descriptors, one that is not
/// growing, and a client filling a 64-port range.
#[cfg(test)]
pub(super) fn sample() -> Forecasts {
    use crate::forecast::{Endpoint, FdForecast, FdUsage, PortForecast, PortSettings, PortUsage};
    let usage = FdUsage {
        open: 120,
        limit: Some(1024),
    };
    Forecasts {
        fd: vec![
            FdForecast::new(4242, "api", 100, usage, Some(10.0)),
            FdForecast::new(77, "worker", 3, usage, Some(0.0)),
        ],
        ports: vec![PortForecast {
            endpoint: Endpoint {
                netns: 4026531840,
                remote: "10.0.0.1:443".parse().expect("remote"),
                local: "10.0.0.9".parse().expect("local"),
            },
            usage: PortUsage {
                range: 64,
                connected: 2,
                closing: 0,
                time_wait: 18,
                time_wait_reusable: false,
                bound: 0,
                in_use: 20,
                free: 44,
            },
            settings: PortSettings {
                low: 40000,
                high: 40063,
                tw_reuse: 0,
            },
            growth_per_second: Some(2.0),
            seconds_left: Some(22.0),
            connectors: Vec::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_that_no_longer_qualify_disappear() {
        let m = crate::export::metrics::Metrics::new();
        m.forecast.publish(&sample());
        let text = m.encode();
        assert!(
            text.contains(r#"tracer_forecast_fd_exhaustion_seconds{pid="4242",comm="api"} 5424.0"#)
        );
        assert!(
            !text.contains(r#"pid="77""#),
            "a leak that does not grow has no forecast"
        );
        m.forecast.publish(&Forecasts::default());
        let text = m.encode();
        assert!(!text.contains(r#"pid="4242""#), "{text}");
        assert!(!text.contains("10.0.0.1:443"), "{text}");
    }

    /// A process that has run out stays at 0 though its leak grows no more
    /// (accept() fails): the alert on it must not go quiet then.
    #[test]
    fn a_process_out_of_descriptors_stays_at_zero() {
        use crate::forecast::{FdForecast, FdUsage};
        let m = crate::export::metrics::Metrics::new();
        let full = FdUsage {
            open: 1024,
            limit: Some(1024),
        };
        m.forecast.publish(&Forecasts {
            fd: vec![FdForecast::new(4242, "api", 1000, full, Some(0.0))],
            ports: Vec::new(),
        });
        let text = m.encode();
        assert!(
            text.contains(r#"tracer_forecast_fd_exhaustion_seconds{pid="4242",comm="api"} 0.0"#),
            "{text}"
        );
    }
}
