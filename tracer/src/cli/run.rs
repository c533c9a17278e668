//! `tracer run`: flags, merged over the config file and the defaults.
use std::path::PathBuf;

use clap::Args;

use crate::{
    config::{self, FileConfig, Settings},
    pipeline::NetnsChoice,
};

/// Leak detector thresholds, shared by `tracer run` and `tracer events`:
/// each from 1ms to 30d.
#[derive(Debug, Args, Default, Clone)]
pub struct ThresholdArgs {
    /// CLOSE_WAIT longer than this is a leak [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_threshold, allow_hyphen_values = true)]
    pub close_wait_threshold: Option<std::time::Duration>,
    /// Retransmitting without ACK progress this long is half-open [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_threshold, allow_hyphen_values = true)]
    pub half_open_threshold: Option<std::time::Duration>,
    /// Idle ESTABLISHED without keepalive this long is at risk [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_threshold, allow_hyphen_values = true)]
    pub idle_threshold: Option<std::time::Duration>,
    /// SYN_SENT/SYN_RECV this long is a stuck handshake [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_threshold, allow_hyphen_values = true)]
    pub handshake_threshold: Option<std::time::Duration>,
    /// Orphaned FIN_WAIT2 this long is flagged [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_threshold, allow_hyphen_values = true)]
    pub fin_wait2_threshold: Option<std::time::Duration>,
}

impl ThresholdArgs {
    /// Overlay the thresholds that were given onto `s`.
    pub fn apply(&self, s: &mut Settings) {
        for (flag, slot) in [
            (self.close_wait_threshold, &mut s.close_wait_threshold),
            (self.half_open_threshold, &mut s.half_open_threshold),
            (self.idle_threshold, &mut s.idle_threshold),
            (self.handshake_threshold, &mut s.handshake_threshold),
            (self.fin_wait2_threshold, &mut s.fin_wait2_threshold),
        ] {
            if let Some(v) = flag {
                *slot = v;
            }
        }
    }
}

/// Flags of `tracer run`. Each overrides the same key of `--config`.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// TOML config file; any flag below can be set there (kebab-case keys).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for /metrics, /healthz and /api/v1 [default: 127.0.0.1:9077].
    #[arg(long, value_name = "ADDR:PORT", value_parser = config::parse_listen)]
    pub listen: Option<std::net::SocketAddr>,
    /// How often to reconcile with sock_diag, 10ms to 1d [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_interval, allow_hyphen_values = true)]
    pub reconcile_interval: Option<std::time::Duration>,
    /// How often the reconcile dump includes TIME_WAIT sockets, 10ms to 1d
    /// [default: 10s]. Their ends come from the kernel's 60 s timer; this
    /// dump confirms them and catches early kills. Costs ~1 µs of kernel
    /// time per socket.
    #[arg(long, value_name = "DURATION", value_parser = config::parse_interval, allow_hyphen_values = true)]
    pub time_wait_interval: Option<std::time::Duration>,
    /// CPU each kind of dump may use, in percent of one core; a dump that
    /// costs more (a host holding 100,000s of TIME_WAIT sockets) is taken
    /// less often. Lost events still trigger a dump at the next interval.
    /// 0: no limit [default: 1%].
    #[arg(long, value_name = "PERCENT", value_parser = config::parse_percent, allow_hyphen_values = true)]
    pub reconcile_budget: Option<f64>,
    /// Cap on tracked sockets, up to 100000000; closed records are evicted
    /// first [default: 1000000].
    #[arg(long, value_name = "N", value_parser = config::parse_max_sockets, allow_hyphen_values = true)]
    pub max_sockets: Option<usize>,
    /// Kernel ring buffer size in bytes, a power of two from 4096 to 256 MiB
    /// (kernel memory) [default: 8388608].
    #[arg(long, value_name = "BYTES", value_parser = config::parse_ring_bytes, allow_hyphen_values = true)]
    pub ring_bytes: Option<u32>,
    /// How long closed sockets stay visible in /api/v1/sockets, up to 1d [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_retention, allow_hyphen_values = true)]
    pub closed_retention: Option<std::time::Duration>,
    /// Network namespaces to follow: all, host (the one tracer runs in), a
    /// /run/netns name, an inode, or pid:N [default: all].
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<NetnsChoice>,
    /// Most workloads (pods, containers, or namespaces) with per-workload
    /// metric series of their own, up to 100000; the rest are summed under
    /// `other` [default: 256].
    #[arg(long, value_name = "N", value_parser = config::parse_max_workloads, allow_hyphen_values = true)]
    pub max_workloads: Option<usize>,
    /// Most HTTP connections open at once, 1 to 65536; at the cap the
    /// oldest idle one is closed to make room [default: 256].
    #[arg(long, value_name = "N", value_parser = config::parse_max_http_connections, allow_hyphen_values = true)]
    pub max_http_connections: Option<usize>,
    /// Leak detector thresholds.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

impl RunArgs {
    /// Defaults, then the config file, then these flags.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(path) = &self.config {
            FileConfig::load(path)?.apply(&mut s)?;
        }
        if let Some(v) = self.listen {
            s.listen = v;
        }
        if let Some(v) = self.reconcile_interval {
            s.reconcile_interval = v;
        }
        if let Some(v) = self.time_wait_interval {
            s.time_wait_interval = v;
        }
        if let Some(v) = self.reconcile_budget {
            s.reconcile_budget = v;
        }
        if let Some(v) = self.max_sockets {
            s.max_sockets = v;
        }
        if let Some(v) = self.ring_bytes {
            s.ring_bytes = v;
        }
        if let Some(v) = self.closed_retention {
            s.closed_retention = v;
        }
        if let Some(v) = &self.netns {
            s.netns = v.clone();
        }
        if let Some(v) = self.max_workloads {
            s.max_workloads = v;
        }
        if let Some(v) = self.max_http_connections {
            s.max_http_connections = v;
        }
        self.thresholds.apply(&mut s);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("tracer-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tracer.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nmax-sockets = 5\nidle-threshold = \"1m\"\nnetns = \"host\"\nmax-workloads = 9\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            max_sockets: Some(7),
            ..Default::default()
        };
        let s = args.settings().unwrap();
        assert_eq!(s.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(s.max_sockets, 7);
        assert_eq!(s.idle_threshold, std::time::Duration::from_secs(60));
        assert_eq!(s.netns, NetnsChoice::Host);
        assert_eq!(s.max_workloads, 9);
        let missing = RunArgs {
            config: Some(dir.join("nope.toml")),
            ..Default::default()
        };
        let err = format!("{:#}", missing.settings().unwrap_err());
        assert!(
            err.contains("config file") && err.contains("nope.toml"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
