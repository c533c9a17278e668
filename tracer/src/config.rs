//! Agent settings: defaults, a TOML file (`--config`), and flags, in
//! increasing priority. Unknown keys and bad values are errors that name
//! the key and say what is expected.
use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context as _;
use serde::Deserialize;

use crate::{bpf::DEFAULT_RING_BYTES, pipeline::NetnsChoice};

/// The default listen address: loopback, on a port outside the 9100-9999
/// range that Prometheus's port allocation list hands to other exporters.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9077";

/// Everything `tracer run` can be told.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// HTTP address for /metrics, /healthz and the API.
    pub listen: SocketAddr,
    /// How often to reconcile with a sock_diag dump.
    pub reconcile_interval: Duration,
    /// How often that dump includes TIME_WAIT sockets (at least every
    /// reconcile).
    pub time_wait_interval: Duration,
    /// Percent of one core each kind of dump may use; a dump that costs
    /// more stretches its interval (0: no limit).
    pub reconcile_budget: f64,
    /// Cap on tracked socket records.
    pub max_sockets: usize,
    /// Kernel ring buffer size in bytes.
    pub ring_bytes: u32,
    /// How long a closed socket's record stays visible in the API.
    pub closed_retention: Duration,
    /// A socket in CLOSE_WAIT longer than this is a leak.
    pub close_wait_threshold: Duration,
    /// Retransmissions without ACK progress for this long: half-open.
    pub half_open_threshold: Duration,
    /// ESTABLISHED and idle this long without keepalive: at risk.
    pub idle_threshold: Duration,
    /// SYN_SENT (or SYN_RECV) this long: a stuck handshake.
    pub handshake_threshold: Duration,
    /// Orphaned FIN_WAIT2 this long: flagged.
    pub fin_wait2_threshold: Duration,
    /// The network namespaces followed: all (default), host, a `/run/netns`
    /// name, an inode, or `pid:N`.
    pub netns: NetnsChoice,
    /// Most workloads (pods, containers, namespaces) with metric series of
    /// their own; the rest are summed under `other`.
    pub max_workloads: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            reconcile_interval: Duration::from_secs(1),
            time_wait_interval: Duration::from_secs(10),
            reconcile_budget: DEFAULT_RECONCILE_BUDGET,
            max_sockets: 1_000_000,
            ring_bytes: DEFAULT_RING_BYTES,
            closed_retention: Duration::from_secs(5),
            close_wait_threshold: Duration::from_secs(60),
            half_open_threshold: Duration::from_secs(10),
            idle_threshold: Duration::from_secs(600),
            handshake_threshold: Duration::from_secs(10),
            fin_wait2_threshold: Duration::from_secs(60),
            netns: NetnsChoice::All,
            max_workloads: crate::export::workload::DEFAULT_MAX_WORKLOADS,
        }
    }
}

/// The config file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`Settings::listen`].
    pub listen: Option<String>,
    /// See [`Settings::reconcile_interval`] (e.g. "1s", "500ms").
    pub reconcile_interval: Option<String>,
    /// See [`Settings::time_wait_interval`].
    pub time_wait_interval: Option<String>,
    /// See [`Settings::reconcile_budget`] (e.g. "1%", 0.5).
    pub reconcile_budget: Option<Percent>,
    /// See [`Settings::max_sockets`].
    pub max_sockets: Option<usize>,
    /// See [`Settings::ring_bytes`].
    pub ring_bytes: Option<u32>,
    /// See [`Settings::closed_retention`].
    pub closed_retention: Option<String>,
    /// See [`Settings::close_wait_threshold`].
    pub close_wait_threshold: Option<String>,
    /// See [`Settings::half_open_threshold`].
    pub half_open_threshold: Option<String>,
    /// See [`Settings::idle_threshold`].
    pub idle_threshold: Option<String>,
    /// See [`Settings::handshake_threshold`].
    pub handshake_threshold: Option<String>,
    /// See [`Settings::fin_wait2_threshold`].
    pub fin_wait2_threshold: Option<String>,
    /// See [`Settings::netns`] (e.g. "all", "host", "blue", "pid:1").
    pub netns: Option<String>,
    /// See [`Settings::max_workloads`].
    pub max_workloads: Option<usize>,
}

impl FileConfig {
    /// Read and parse a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        FileConfig::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parse TOML text.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("{}", e.message().trim_end()).context(
                e.span()
                    .map(|s| format!("at byte {}", s.start))
                    .unwrap_or_else(|| "invalid TOML".into()),
            )
        })
    }

    /// Overlay this file's values onto `s`.
    pub fn apply(&self, s: &mut Settings) -> anyhow::Result<()> {
        if let Some(v) = &self.listen {
            s.listen = parse_listen(v)
                .map_err(anyhow::Error::msg)
                .context("key listen")?;
        }
        if let Some(v) = self.max_sockets {
            s.max_sockets = check_max_sockets(v).context("key max-sockets")?;
        }
        if let Some(v) = self.ring_bytes {
            s.ring_bytes = v;
        }
        if let Some(v) = self.max_workloads {
            s.max_workloads = v;
        }
        if let Some(v) = &self.netns {
            s.netns = v.parse().map_err(anyhow::Error::msg).context("key netns")?;
        }
        if let Some(v) = &self.reconcile_budget {
            s.reconcile_budget = v.value().context("key reconcile-budget")?;
        }
        let durations: [(&str, &Option<String>, &mut Duration); 8] = [
            (
                "reconcile-interval",
                &self.reconcile_interval,
                &mut s.reconcile_interval,
            ),
            (
                "time-wait-interval",
                &self.time_wait_interval,
                &mut s.time_wait_interval,
            ),
            (
                "closed-retention",
                &self.closed_retention,
                &mut s.closed_retention,
            ),
            (
                "close-wait-threshold",
                &self.close_wait_threshold,
                &mut s.close_wait_threshold,
            ),
            (
                "half-open-threshold",
                &self.half_open_threshold,
                &mut s.half_open_threshold,
            ),
            (
                "idle-threshold",
                &self.idle_threshold,
                &mut s.idle_threshold,
            ),
            (
                "handshake-threshold",
                &self.handshake_threshold,
                &mut s.handshake_threshold,
            ),
            (
                "fin-wait2-threshold",
                &self.fin_wait2_threshold,
                &mut s.fin_wait2_threshold,
            ),
        ];
        for (key, v, slot) in durations {
            if let Some(v) = v {
                *slot = parse_duration(v)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("key {key}"))?;
            }
        }
        Ok(())
    }
}

/// Parse `ADDR:PORT`, or `:PORT` for the default address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        s.to_string()
    };
    full.parse().map_err(|_| {
        format!("{s:?} is not an ADDR:PORT listen address (e.g. 127.0.0.1:9077 or [::]:9077)")
    })
}

/// Parse a duration: a number with a unit (`ms`, `s`, `m`, `h`), or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 5m, 1h)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Default of `--reconcile-budget`: 1% of one core per kind of dump.
pub const DEFAULT_RECONCILE_BUDGET: f64 = 1.0;

/// A percentage in the config file: a number, or a string such as `"1%"`.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum Percent {
    /// `reconcile-budget = 0.5`
    Number(f64),
    /// `reconcile-budget = "0.5%"`
    Text(String),
}

impl Percent {
    fn value(&self) -> anyhow::Result<f64> {
        match self {
            Percent::Number(v) => check_percent(*v, &v.to_string()),
            Percent::Text(t) => parse_percent(t),
        }
        .map_err(anyhow::Error::msg)
    }
}

/// Parse a percentage of one core: `1`, `1%`, `0.5%`; 0 means no limit.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 1%, 0.5%, 0 for no limit)"))?;
    check_percent(v, s)
}

fn check_percent(v: f64, s: &str) -> Result<f64, String> {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} must be between 0% and 100%"))
    }
}

/// `--max-sockets` must leave room for at least one socket.
pub fn check_max_sockets(n: usize) -> anyhow::Result<usize> {
    if n == 0 {
        anyhow::bail!("max-sockets must be at least 1");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("1%"), Ok(1.0));
        assert_eq!(parse_percent(" 0.5 % "), Ok(0.5));
        assert_eq!(parse_percent("2"), Ok(2.0));
        assert_eq!(parse_percent("0"), Ok(0.0));
        assert!(
            parse_percent("101%")
                .unwrap_err()
                .contains("between 0% and 100%")
        );
        assert!(parse_percent("-1").is_err());
        assert!(
            parse_percent("lots")
                .unwrap_err()
                .contains("not a percentage")
        );
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen(":9999").unwrap(),
            "127.0.0.1:9999".parse().unwrap()
        );
        assert_eq!(parse_listen("[::]:80").unwrap(), "[::]:80".parse().unwrap());
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let f = FileConfig::parse(
            "listen = \"0.0.0.0:9100\"\nreconcile-interval = \"250ms\"\nmax-sockets = 10\n\
             time-wait-interval = \"30s\"\nreconcile-budget = \"0.5%\"\n",
        )
        .unwrap();
        let mut s = Settings::default();
        f.apply(&mut s).unwrap();
        assert_eq!(s.time_wait_interval, Duration::from_secs(30));
        assert_eq!(s.reconcile_budget, 0.5);
        let mut n = Settings::default();
        FileConfig::parse("reconcile-budget = 2")
            .unwrap()
            .apply(&mut n)
            .unwrap();
        assert_eq!(n.reconcile_budget, 2.0);
        let err = FileConfig::parse("reconcile-budget = \"much\"")
            .unwrap()
            .apply(&mut n)
            .unwrap_err();
        assert!(format!("{err:#}").contains("reconcile-budget"), "{err:#}");
        assert_eq!(s.listen, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(s.reconcile_interval, Duration::from_millis(250));
        assert_eq!(s.max_sockets, 10);
        assert_eq!(s.close_wait_threshold, Duration::from_secs(60));

        let err = FileConfig::parse("lisen = \"x\"").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `lisen`"),
            "{err:#}"
        );
        let err = FileConfig::parse("max-sockets = \"many\"").unwrap_err();
        assert!(format!("{err:#}").contains("invalid type"), "{err:#}");
        let bad = FileConfig::parse("close-wait-threshold = \"forever\"").unwrap();
        let err = bad.apply(&mut Settings::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("close-wait-threshold"),
            "{err:#}"
        );
        let zero = FileConfig::parse("max-sockets = 0").unwrap();
        assert!(zero.apply(&mut Settings::default()).is_err());
    }
}
