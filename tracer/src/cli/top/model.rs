//! What `tracer top` shows, as data: one [`Sample`] of the agent's API
//! turned into the [`Model`]'s tables, with the change per second of each
//! state's count measured against the previous sample. Pure: no I/O, no
//! clock but the agent's own `now_ns`.
use std::{collections::BTreeMap, net::IpAddr};

use serde::Deserialize;

use crate::{
    leaks::{Report, table::fmt_age},
    tcp::TcpState,
};

/// `/api/v1/summary`, the parts `tracer top` reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Summary {
    /// The agent's CLOCK_MONOTONIC when it answered.
    pub now_ns: u64,
    /// The same on the wall clock (RFC 3339).
    #[serde(default)]
    pub now: Option<String>,
    /// Sockets the agent follows.
    #[serde(default)]
    pub tracked_sockets: u64,
    /// Live sockets per state (kernel names).
    #[serde(default)]
    pub sockets: BTreeMap<String, u64>,
    /// Dwell-time percentiles per state, seconds.
    #[serde(default)]
    pub dwell_seconds: BTreeMap<String, Dwell>,
    /// Handshake outcomes since the agent started, when it counts them.
    #[serde(default)]
    pub handshakes: Option<Handshakes>,
}

/// One state's recent stays (`dwell_seconds` of the summary).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
pub struct Dwell {
    /// Stays completed since the agent started.
    #[serde(default)]
    pub count: u64,
    /// Median, seconds.
    pub p50: f64,
    /// 90th percentile, seconds.
    pub p90: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// Longest, seconds.
    pub max: f64,
}

/// Handshakes by role (`client`, `server`): completed, and failed by reason.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Handshakes {
    /// Completed handshakes per role.
    #[serde(default)]
    pub established: BTreeMap<String, u64>,
    /// Failed handshakes per role and reason.
    #[serde(default)]
    pub failed: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Handshakes {
    fn totals(&self) -> (u64, u64) {
        let ok = self.established.values().sum();
        let failed = self.failed.values().flat_map(|r| r.values()).sum();
        (ok, failed)
    }
}

/// One TIME_WAIT socket of `/api/v1/sockets`, the parts `tracer top` reads.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TwSocket {
    /// Cookie: the paging cursor.
    pub cookie: u64,
    /// Local address.
    pub saddr: IpAddr,
    /// Local port.
    pub sport: u16,
    /// Remote address.
    pub daddr: IpAddr,
    /// Remote port.
    pub dport: u16,
    /// Owner, when a syscall revealed it.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Owner's name, when a syscall revealed it.
    #[serde(default)]
    pub comm: Option<String>,
    /// Its network namespace (inode; 0: unknown).
    #[serde(default)]
    pub netns: u64,
    /// The container of its namespace, when it has one.
    #[serde(default)]
    pub container: Option<crate::container::Container>,
}

/// One refresh: everything asked of the agent.
#[derive(Clone, Debug)]
pub struct Sample {
    /// `/api/v1/summary`.
    pub summary: Summary,
    /// `/api/v1/leaks`, narrowed by the filters.
    pub leaks: Report,
    /// TIME_WAIT sockets read (at most [`super::fetch::MAX_TIME_WAIT`]).
    pub time_wait: Vec<TwSocket>,
    /// True when more TIME_WAIT sockets were left unread.
    pub time_wait_sampled: bool,
}

/// The panels, in focus order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    /// Sockets by state, with change per second.
    States,
    /// Dwell-time percentiles per state.
    Dwell,
    /// The oldest CLOSE_WAIT sockets.
    CloseWait,
    /// Leaking processes.
    Procs,
    /// TIME_WAIT by local port.
    TwPorts,
    /// TIME_WAIT by remote endpoint.
    TwRemotes,
}

impl Panel {
    /// Every panel, in focus order.
    pub const ALL: [Panel; 6] = [
        Panel::States,
        Panel::Dwell,
        Panel::CloseWait,
        Panel::Procs,
        Panel::TwPorts,
        Panel::TwRemotes,
    ];

    /// Index in [`Panel::ALL`].
    pub fn index(self) -> usize {
        Panel::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }

    /// The panel's title.
    pub fn title(self) -> &'static str {
        match self {
            Panel::States => "Sockets by state",
            Panel::Dwell => "Dwell time",
            Panel::CloseWait => "Oldest CLOSE_WAIT",
            Panel::Procs => "Leaking processes",
            Panel::TwPorts => "TIME_WAIT by local port",
            Panel::TwRemotes => "TIME_WAIT by remote",
        }
    }

    /// Column names.
    pub fn header(self) -> &'static [&'static str] {
        match self {
            Panel::States => &["STATE", "COUNT", "CHANGE/s"],
            Panel::Dwell => &["STATE", "STAYS", "P50", "P90", "P99", "MAX"],
            Panel::CloseWait => &[
                "AGE",
                "PID",
                "COMM",
                "FD",
                "LOCAL -> REMOTE",
                "CONTAINER",
                "EOF READ",
            ],
            Panel::Procs => &["PID", "COMM", "CLOSE_WAIT", "LEAKS", "OLDEST", "GROWTH/min"],
            Panel::TwPorts => &["PORT", "COUNT", "WHERE"],
            Panel::TwRemotes => &["REMOTE", "COUNT"],
        }
    }

    /// The sort keys `s` cycles through: (name, biggest first).
    pub fn sorts(self) -> &'static [(&'static str, bool)] {
        match self {
            Panel::States => &[("state", false), ("count", true), ("change", true)],
            Panel::Dwell => &[
                ("state", false),
                ("p99", true),
                ("max", true),
                ("stays", true),
            ],
            Panel::CloseWait => &[("age", true), ("pid", false), ("port", false)],
            Panel::Procs => &[("count", true), ("growth", true), ("pid", false)],
            Panel::TwPorts => &[("count", true), ("port", false)],
            Panel::TwRemotes => &[("count", true), ("remote", false)],
        }
    }
}

/// A value rows are sorted by.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// Numbers (missing ones sort as -inf).
    Num(f64),
    /// Text.
    Text(String),
}

/// One table row: its cells, and one key per entry of [`Panel::sorts`].
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The cells, as shown.
    pub cells: Vec<String>,
    /// Sort keys.
    pub keys: Vec<Key>,
}

/// Handshakes since the agent started, and per second since the last sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandshakeLine {
    /// Completed.
    pub ok: u64,
    /// Failed, any reason.
    pub failed: u64,
    /// (completed, failed) per second; `None` on the first sample.
    pub rates: Option<(f64, f64)>,
    /// Of the failed: connects that found no free local port (their
    /// ports to the destination exhausted).
    pub no_local_port: u64,
}

/// Everything on screen but the keys' state.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Wall-clock time of the sample, as the agent gave it.
    pub now: String,
    /// Sockets the agent follows.
    pub tracked: u64,
    /// Handshakes, when the agent counts them.
    pub handshakes: Option<HandshakeLine>,
    /// Distinct leaks in the report.
    pub leak_count: usize,
    /// Those leaks by kind, most first: `2 close_wait, 1 stuck_handshake`.
    pub leak_kinds: String,
    /// The forecast that runs out soonest, as `tracer leaks` words it, and
    /// whether it has run out now.
    pub soonest: Option<(String, bool)>,
    /// Network namespaces the agent cannot follow: their leaks are not
    /// shown.
    pub unfollowed_netns: usize,
    /// The agent's CLOSE_WAIT threshold, seconds: how old a socket must be
    /// to be in the CLOSE_WAIT panel.
    pub close_wait_after: Option<f64>,
    /// When the TIME_WAIT panels count a sample (the first
    /// [`MAX_TIME_WAIT`](super::fetch::MAX_TIME_WAIT) sockets read): how
    /// many TIME_WAIT sockets the agent has in all.
    pub time_wait_sampled: Option<u64>,
    /// Rows per panel, in [`Panel::ALL`] order, unsorted.
    pub tables: [Vec<Row>; 6],
}

/// Seconds for a table: `850us`, `12ms`, `1.5s`, `12m05s`.
pub fn fmt_secs(s: f64) -> String {
    match s {
        s if s < 0.001 => format!("{:.0}us", s * 1e6),
        s if s < 1.0 => format!("{:.0}ms", s * 1e3),
        s => fmt_age(Some(s), false),
    }
}

/// `2026-11-30T05:42:20.617148759Z` to `2026-11-30T05:42:20Z`.
fn to_seconds(rfc3339: &str) -> String {
    match rfc3339.get(..19) {
        Some(head) if rfc3339.ends_with('Z') => format!("{head}Z"),
        _ => rfc3339.to_owned(),
    }
}

/// A report's leaks by kind, each flag once (one under several processes
/// too), most first.
fn leak_kinds(r: &Report) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut by: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for f in r.leaks.iter().flat_map(|g| &g.sockets) {
        if seen.insert((f.kind, f.netns, f.cookie, f.local, f.remote)) {
            *by.entry(f.kind.name()).or_default() += 1;
        }
    }
    let mut kinds: Vec<(&str, usize)> = by.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let words: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    words.join(", ")
}

/// The forecast of `r` with the least time left, worded.
fn soonest(r: &Report) -> Option<(String, bool)> {
    use crate::forecast::text::{fd_line, port_line};
    let fd = r
        .forecasts
        .fd
        .iter()
        .filter_map(|f| Some((f.seconds_left?, fd_line(f, false))));
    let ports = r.forecasts.ports.iter().filter_map(|p| {
        let name = r.netns_names.get(&p.endpoint.netns).map(String::as_str);
        Some((p.seconds_left?, port_line(p, name)))
    });
    fd.chain(ports)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(left, line)| (line, left <= 0.0))
}

fn rate(now: u64, then: u64, secs: f64) -> f64 {
    (now as f64 - then as f64) / secs
}

fn fmt_rate(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r.abs() < 0.05 => "0".into(),
        Some(r) if r.abs() >= 10.0 => format!("{r:+.0}"),
        Some(r) => format!("{r:+.1}"),
    }
}

impl Model {
    /// The model of `s`; rates against `prev`, the previous sample's summary.
    pub fn build(s: &Sample, prev: Option<&Summary>) -> Model {
        let sum = &s.summary;
        let secs = prev
            .map(|p| sum.now_ns.saturating_sub(p.now_ns) as f64 / 1e9)
            .filter(|&d| d > 0.0);
        let mut m = Model {
            now: sum.now.as_deref().map_or(String::new(), to_seconds),
            tracked: sum.tracked_sockets,
            leak_count: s.leaks.leak_count,
            unfollowed_netns: s.leaks.unfollowed_netns,
            close_wait_after: s.leaks.thresholds.as_ref().map(|t| t.close_wait),
            time_wait_sampled: s.time_wait_sampled.then(|| {
                sum.sockets
                    .get(TcpState::TimeWait.name())
                    .copied()
                    .unwrap_or(0)
            }),
            leak_kinds: leak_kinds(&s.leaks),
            soonest: soonest(&s.leaks),
            ..Model::default()
        };
        m.handshakes = sum.handshakes.as_ref().map(|h| {
            let (ok, failed) = h.totals();
            let was = prev
                .and_then(|p| p.handshakes.as_ref())
                .map(Handshakes::totals);
            let rates = was
                .zip(secs)
                .map(|((o, f), d)| (rate(ok, o, d), rate(failed, f, d)));
            let no_local_port = h
                .failed
                .get("client")
                .and_then(|r| r.get("no_local_port"))
                .copied()
                .unwrap_or(0);
            HandshakeLine {
                ok,
                failed,
                rates,
                no_local_port,
            }
        });
        for (i, st) in TcpState::ALL.iter().enumerate() {
            let count = sum.sockets.get(st.name()).copied().unwrap_or(0);
            let change = prev.zip(secs).map(|(p, d)| {
                let was = p.sockets.get(st.name()).copied().unwrap_or(0);
                rate(count, was, d)
            });
            m.tables[0].push(Row {
                cells: vec![st.name().into(), count.to_string(), fmt_rate(change)],
                keys: vec![Key::Num(i as f64), Key::Num(count as f64), num(change)],
            });
            if let Some(d) = sum.dwell_seconds.get(st.name()) {
                m.tables[1].push(Row {
                    cells: vec![
                        st.name().into(),
                        d.count.to_string(),
                        fmt_secs(d.p50),
                        fmt_secs(d.p90),
                        fmt_secs(d.p99),
                        fmt_secs(d.max),
                    ],
                    keys: vec![
                        Key::Num(i as f64),
                        Key::Num(d.p99),
                        Key::Num(d.max),
                        Key::Num(d.count as f64),
                    ],
                });
            }
        }
        m.tables[2] = close_wait_rows(&s.leaks);
        m.tables[3] = process_rows(&s.leaks);
        let (ports, remotes) = time_wait_rows(&s.time_wait, s.leaks.agent_netns);
        (m.tables[4], m.tables[5]) = (ports, remotes);
        m
    }

    /// The rows of `panel` that contain `filter` (any cell, any case),
    /// sorted by its `sort`-th key.
    pub fn rows(&self, panel: Panel, sort: usize, filter: &str) -> Vec<&Row> {
        let needle = filter.to_lowercase();
        let mut rows: Vec<&Row> = self.tables[panel.index()]
            .iter()
            .filter(|r| {
                needle.is_empty() || r.cells.iter().any(|c| c.to_lowercase().contains(&needle))
            })
            .collect();
        let sorts = panel.sorts();
        let (i, desc) = (sort % sorts.len(), sorts[sort % sorts.len()].1);
        rows.sort_by(|a, b| {
            let o = match (&a.keys[i], &b.keys[i]) {
                (Key::Num(x), Key::Num(y)) => x.total_cmp(y),
                (Key::Text(x), Key::Text(y)) => x.cmp(y),
                (Key::Num(_), Key::Text(_)) => std::cmp::Ordering::Less,
                (Key::Text(_), Key::Num(_)) => std::cmp::Ordering::Greater,
            };
            // Stable: ties keep the table's own order.
            if desc { o.reverse() } else { o }
        });
        rows
    }
}

mod rows;

pub use rows::time_wait_rows;
use rows::{close_wait_rows, num, process_rows};

#[cfg(test)]
pub(crate) mod tests;
