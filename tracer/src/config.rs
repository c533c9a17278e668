//! Agent settings: defaults, a TOML file (`--config`), and flags, in
//! increasing priority. Every setting is one row of the table below, which
//! gives its type, default, flag, key and help at once (see `config/schema.rs`).
//! Unknown keys and bad values are errors that name the key, its line and
//! column, and say what is expected; the file is read only if it is a
//! regular file of at most 1 MiB ([`file`]).
#[macro_use]
mod schema;
mod file;
mod values;

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

pub use self::{
    file::{MAX_CONFIG_BYTES, Quantity},
    values::*,
};
use crate::{
    bpf::DEFAULT_RING_BYTES,
    leaks::{PerKind, Thresholds},
    pipeline::NetnsChoice,
};

/// The default listen address: loopback, on a port outside the 9100-9999
/// range that Prometheus's port allocation list hands to other exporters.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9077));

/// Default of `--reconcile-budget`: 1% of one core for all dumps together.
pub const DEFAULT_RECONCILE_BUDGET: f64 = 1.0;

settings! {
    run {
        /// Address for /metrics, /healthz and /api/v1 [default: 127.0.0.1:9077].
        listen: SocketAddr = DEFAULT_LISTEN => "ADDR:PORT" parse_listen as String;
        /// How often to reconcile with sock_diag, 10ms to 1d [default: 1s].
        reconcile_interval: Duration = Duration::from_secs(1) => "DURATION" parse_interval;
        /// How often the reconcile dump includes TIME_WAIT sockets, 10ms to 1d
        /// [default: 10s]. Their ends come from the kernel's 60 s timer; this
        /// dump confirms them and catches early kills. Costs ~1 µs of kernel
        /// time per socket.
        time_wait_interval: Duration = Duration::from_secs(10) => "DURATION" parse_interval;
        /// CPU all dumps together may use, in percent of one core, three
        /// quarters for live and a quarter for full dumps; a dump that
        /// costs more (a host holding 100,000s of TIME_WAIT sockets) is
        /// taken less often.
        /// Lost events still trigger a dump at the next interval.
        /// 0: no limit [default: 1%].
        reconcile_budget: f64 = DEFAULT_RECONCILE_BUDGET => "PERCENT" parse_percent;
        /// Cap on tracked sockets, up to 100000000; closed records are evicted
        /// first [default: 1000000].
        max_sockets: usize = 1_000_000 => "N" parse_max_sockets;
        /// Kernel ring buffer size in bytes, a power of two from 4096 to 256 MiB
        /// (kernel memory) [default: 8388608].
        ring_bytes: u32 = DEFAULT_RING_BYTES => "BYTES" parse_ring_bytes;
        /// How long closed sockets stay visible in /api/v1/sockets, up to 1d [default: 5s].
        closed_retention: Duration = Duration::from_secs(5) => "DURATION" parse_retention;
        /// Network namespaces to follow: all, host (the one tracer runs in), a
        /// /run/netns name, an inode, or pid:N [default: all].
        netns: NetnsChoice = NetnsChoice::All => "NETNS" parse_netns as String;
        /// Most workloads (pods, containers, or namespaces) with per-workload
        /// metric series of their own, up to 100000; the rest are summed under
        /// `other` [default: 256].
        max_workloads: usize = DEFAULT_MAX_WORKLOADS
            => "N" parse_max_workloads;
        /// Most HTTP connections open at once, 1 to 65536; at the cap the
        /// oldest idle one is closed to make room [default: 256].
        max_http_connections: usize = DEFAULT_MAX_HTTP_CONNECTIONS
            => "N" parse_max_http_connections;
        /// TLS and basic auth for the HTTP server: a YAML file in node_exporter's
        /// web config format (tls_server_config, basic_auth_users); relative
        /// paths in it are taken from its directory. `none` for plain HTTP,
        /// e.g. to override the config file [default: none].
        web_config: WebConfigFile = None => "FILE" parse_web_config as String;
    }
    thresholds {
        /// CLOSE_WAIT longer than this is a leak [default: 60s].
        close_wait_threshold: Duration = Thresholds::default().close_wait
            => "DURATION" parse_threshold;
        /// Retransmitting without ACK progress this long is half-open [default: 10s].
        half_open_threshold: Duration = Thresholds::default().half_open
            => "DURATION" parse_threshold;
        /// Idle ESTABLISHED without keepalive this long is at risk [default: 10m].
        idle_threshold: Duration = Thresholds::default().idle => "DURATION" parse_threshold;
        /// SYN_SENT/SYN_RECV this long is a stuck handshake [default: 10s].
        handshake_threshold: Duration = Thresholds::default().handshake
            => "DURATION" parse_threshold;
        /// Orphaned FIN_WAIT2 this long is flagged; the kernel ends an
        /// orphan at tcp_fin_timeout, 60 s by default [default: 30s].
        fin_wait2_threshold: Duration = Thresholds::default().fin_wait2
            => "DURATION" parse_threshold;
    }
}

impl Settings {
    /// The leak detectors' thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            close_wait: self.close_wait_threshold,
            half_open: self.half_open_threshold,
            idle: self.idle_threshold,
            handshake: self.handshake_threshold,
            fin_wait2: self.fin_wait2_threshold,
        }
    }
}

impl ThresholdFlags {
    /// The thresholds given, each `None` when its flag was not.
    pub fn given(&self) -> PerKind<Option<Duration>> {
        PerKind {
            close_wait: self.close_wait_threshold,
            half_open: self.half_open_threshold,
            idle: self.idle_threshold,
            handshake: self.handshake_threshold,
            fin_wait2: self.fin_wait2_threshold,
        }
    }

    /// The thresholds given, over the defaults of `tracer run`.
    pub fn thresholds(&self) -> Thresholds {
        let mut s = Settings::default();
        self.apply(&mut s);
        s.thresholds()
    }
}

#[cfg(test)]
mod tests;
