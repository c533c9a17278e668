//! Agent settings: defaults, a TOML file (`--config`), and flags, in
//! increasing priority. Unknown keys and bad values are errors that name
//! the key, its line and column, and say what is expected; the file is read
//! only if it is a regular file of at most 1 MiB.
mod values;

use std::{io::Read as _, net::SocketAddr, path::Path, time::Duration};

use anyhow::Context as _;
use serde::Deserialize;
use toml::Spanned;

pub use self::values::*;
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
    /// Most HTTP connections open at once.
    pub max_http_connections: usize,
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
            max_http_connections: crate::export::serve::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The config file: every key optional, unknown keys rejected. Each value
/// keeps its place in the file, so an error can give line and column.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`Settings::listen`].
    pub listen: Option<Spanned<String>>,
    /// See [`Settings::reconcile_interval`] (e.g. "1s", "500ms", 5).
    pub reconcile_interval: Option<Spanned<Quantity>>,
    /// See [`Settings::time_wait_interval`].
    pub time_wait_interval: Option<Spanned<Quantity>>,
    /// See [`Settings::reconcile_budget`] (e.g. "1%", 0.5).
    pub reconcile_budget: Option<Spanned<Quantity>>,
    /// See [`Settings::max_sockets`].
    pub max_sockets: Option<Spanned<Quantity>>,
    /// See [`Settings::ring_bytes`].
    pub ring_bytes: Option<Spanned<Quantity>>,
    /// See [`Settings::closed_retention`].
    pub closed_retention: Option<Spanned<Quantity>>,
    /// See [`Settings::close_wait_threshold`].
    pub close_wait_threshold: Option<Spanned<Quantity>>,
    /// See [`Settings::half_open_threshold`].
    pub half_open_threshold: Option<Spanned<Quantity>>,
    /// See [`Settings::idle_threshold`].
    pub idle_threshold: Option<Spanned<Quantity>>,
    /// See [`Settings::handshake_threshold`].
    pub handshake_threshold: Option<Spanned<Quantity>>,
    /// See [`Settings::fin_wait2_threshold`].
    pub fin_wait2_threshold: Option<Spanned<Quantity>>,
    /// See [`Settings::netns`] (e.g. "all", "host", "blue", "pid:1").
    pub netns: Option<Spanned<String>>,
    /// See [`Settings::max_workloads`].
    pub max_workloads: Option<Spanned<Quantity>>,
    /// See [`Settings::max_http_connections`].
    pub max_http_connections: Option<Spanned<Quantity>>,
    /// The text parsed, to turn byte offsets into lines and columns.
    #[serde(skip)]
    text: String,
}

/// The most a config file may hold: 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl FileConfig {
    /// Read and parse a TOML file: a regular file of at most
    /// [`MAX_CONFIG_BYTES`]. FIFOs, devices and directories are refused
    /// without blocking on them.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let name = || format!("config file {}", path.display());
        let text = read_bounded(path).with_context(name)?;
        FileConfig::parse(&text).with_context(name)
    }

    /// Parse TOML text.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        match toml::from_str::<FileConfig>(text) {
            Ok(mut f) => {
                f.text = text.to_owned();
                Ok(f)
            }
            Err(e) => {
                let msg = e.message().trim_end().replace('\n', "; ");
                match e.span() {
                    Some(span) => {
                        let (line, col) = line_col(text, span.start);
                        match key_before(text, span.start) {
                            Some(key) => {
                                anyhow::bail!("key {key} at line {line}, column {col}: {msg}")
                            }
                            None => anyhow::bail!("line {line}, column {col}: {msg}"),
                        }
                    }
                    None => anyhow::bail!("{msg}"),
                }
            }
        }
    }

    /// "key K at line L, column C", for an error about one value.
    fn at<T>(&self, key: &str, v: &Spanned<T>) -> String {
        let (line, col) = line_col(&self.text, v.span().start);
        format!("key {key} at line {line}, column {col}")
    }

    /// Check one value with `parse`, naming the key and its place.
    fn check<T, U>(
        &self,
        key: &str,
        v: &Option<Spanned<T>>,
        parse: impl FnOnce(&T) -> Result<U, String>,
    ) -> anyhow::Result<Option<U>> {
        v.as_ref()
            .map(|v| parse(v.get_ref()).map_err(|e| anyhow::anyhow!("{}: {e}", self.at(key, v))))
            .transpose()
    }

    /// [`FileConfig::check`] for a [`Quantity`].
    fn quantity<U>(
        &self,
        key: &str,
        v: &Option<Spanned<Quantity>>,
        parse: impl FnOnce(&str) -> Result<U, String>,
    ) -> anyhow::Result<Option<U>> {
        self.check(key, v, |q| parse(&q.0))
    }

    /// Overlay this file's values onto `s`.
    pub fn apply(&self, s: &mut Settings) -> anyhow::Result<()> {
        if let Some(v) = self.check("listen", &self.listen, |v| parse_listen(v))? {
            s.listen = v;
        }
        if let Some(v) = self.quantity("max-sockets", &self.max_sockets, parse_max_sockets)? {
            s.max_sockets = v;
        }
        if let Some(v) = self.quantity("ring-bytes", &self.ring_bytes, parse_ring_bytes)? {
            s.ring_bytes = v;
        }
        if let Some(v) = self.quantity("max-workloads", &self.max_workloads, parse_max_workloads)? {
            s.max_workloads = v;
        }
        let conns = self.quantity(
            "max-http-connections",
            &self.max_http_connections,
            parse_max_http_connections,
        )?;
        if let Some(v) = conns {
            s.max_http_connections = v;
        }
        if let Some(v) = self.check("netns", &self.netns, |v| v.parse::<NetnsChoice>())? {
            s.netns = v;
        }
        let budget = self.quantity("reconcile-budget", &self.reconcile_budget, parse_percent)?;
        if let Some(v) = budget {
            s.reconcile_budget = v;
        }
        let durations: [(&str, &Option<Spanned<Quantity>>, &mut Duration, Bounds); 8] = [
            (
                "reconcile-interval",
                &self.reconcile_interval,
                &mut s.reconcile_interval,
                INTERVAL,
            ),
            (
                "time-wait-interval",
                &self.time_wait_interval,
                &mut s.time_wait_interval,
                INTERVAL,
            ),
            (
                "closed-retention",
                &self.closed_retention,
                &mut s.closed_retention,
                RETENTION,
            ),
            (
                "close-wait-threshold",
                &self.close_wait_threshold,
                &mut s.close_wait_threshold,
                THRESHOLD,
            ),
            (
                "half-open-threshold",
                &self.half_open_threshold,
                &mut s.half_open_threshold,
                THRESHOLD,
            ),
            (
                "idle-threshold",
                &self.idle_threshold,
                &mut s.idle_threshold,
                THRESHOLD,
            ),
            (
                "handshake-threshold",
                &self.handshake_threshold,
                &mut s.handshake_threshold,
                THRESHOLD,
            ),
            (
                "fin-wait2-threshold",
                &self.fin_wait2_threshold,
                &mut s.fin_wait2_threshold,
                THRESHOLD,
            ),
        ];
        for (key, v, slot, bounds) in durations {
            if let Some(d) = self.quantity(key, v, |v| parse_duration_within(v, bounds))? {
                *slot = d;
            }
        }
        Ok(())
    }
}

/// Read at most [`MAX_CONFIG_BYTES`] of a regular file. Opened without
/// blocking, so a FIFO with no writer is refused rather than waited on.
fn read_bounded(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .context("cannot be opened")?;
    let meta = file.metadata().context("cannot be inspected")?;
    let t = meta.file_type();
    let kind = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        ""
    };
    if !kind.is_empty() {
        anyhow::bail!("is {kind}, not a regular file; give the path of a TOML file");
    }
    let too_big = || {
        anyhow::anyhow!(
            "is over the {} KiB a config file may hold; is it the right file?",
            MAX_CONFIG_BYTES >> 10
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("cannot be read")?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| {
        let (line, col) = line_col(
            &String::from_utf8_lossy(e.as_bytes()),
            e.utf8_error().valid_up_to(),
        );
        anyhow::anyhow!("is not UTF-8 text (line {line}, column {col})")
    })
}

/// The 1-based line and column (in characters) of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// The key of a `key = value` line when byte `at` lies in its value.
fn key_before(text: &str, at: usize) -> Option<String> {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = before[start..].split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| key.to_owned())
}

/// A config value that may be a number or a string: `reconcile-interval
/// = 5` (bare seconds) or `"5s"`, `reconcile-budget = 0.5` or `"0.5%"`,
/// `max-sockets = 1000`. Checked, with its key, by [`FileConfig::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string such as \"10s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                // Debug keeps 1e20 short; a whole float still reads as one.
                Ok(Quantity(format!("{v:?}")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Default of `--reconcile-budget`: 1% of one core per kind of dump.
pub const DEFAULT_RECONCILE_BUDGET: f64 = 1.0;

#[cfg(test)]
mod tests;
