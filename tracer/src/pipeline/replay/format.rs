//! The on-disk form of a recording: what a [`Pipeline`](crate::pipeline::Pipeline)
//! read from the kernel, in the order it read it, for the replay tier
//! (`tracer/tests/replay/`). One JSON object per line:
//!
//! | line | what |
//! |---|---|
//! | `{"header":{..}}` | first: format version, the namespace followed, the leak thresholds |
//! | `{"event":{"raw":"<hex>","note":".."}}` | one ring-buffer record, the bytes [`SockEvent::decode`] takes; `note` is for people and ignored |
//! | `{"dump_started":{"at_ns":N,"full":B}}` | a dump began on its thread (events keep coming) |
//! | `{"dump":{..}}` | a dump ended and was adopted or reconciled at this point of the stream |
//! | `{"expire":N}` | the loop ended due TIME_WAIT stays at monotonic `N` |
//!
//! A dump holds the sockets as sock_diag's parser decoded them (the
//! netlink bytes stay inside [`crate::diag`]), its start time, the
//! namespaces it covered, and the owner scan its detectors asked for.
use std::{fmt::Write as _, time::Duration};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub use super::sockets::{Owners, Socket};
use crate::{event::SockEvent, forecast::PortSettings, leaks::Thresholds};

/// The version of the format this build writes and reads.
pub const VERSION: u32 = 1;

/// One line of a recording.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// What the recording was made with.
    Header(Header),
    /// One ring-buffer record.
    Event(Record),
    /// A dump began.
    DumpStarted {
        /// Monotonic ns.
        at_ns: u64,
        /// TIME_WAIT sockets included.
        full: bool,
    },
    /// A dump ended and went into the engine here.
    Dump(RecordedDump),
    /// Due TIME_WAIT stays were ended at this monotonic time.
    Expire(u64),
}

/// What the recording was made with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// [`VERSION`].
    pub version: u32,
    /// The inode of the namespace followed.
    pub netns: u32,
    /// The leak thresholds, in milliseconds.
    pub thresholds_ms: ThresholdsMs,
}

/// [`Thresholds`] in milliseconds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ThresholdsMs {
    /// [`Thresholds::close_wait`].
    pub close_wait: u64,
    /// [`Thresholds::half_open`].
    pub half_open: u64,
    /// [`Thresholds::idle`].
    pub idle: u64,
    /// [`Thresholds::handshake`].
    pub handshake: u64,
    /// [`Thresholds::fin_wait2`].
    pub fin_wait2: u64,
}

impl From<&Thresholds> for ThresholdsMs {
    fn from(t: &Thresholds) -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        ThresholdsMs {
            close_wait: ms(t.close_wait),
            half_open: ms(t.half_open),
            idle: ms(t.idle),
            handshake: ms(t.handshake),
            fin_wait2: ms(t.fin_wait2),
        }
    }
}

impl From<ThresholdsMs> for Thresholds {
    fn from(t: ThresholdsMs) -> Self {
        let d = Duration::from_millis;
        Thresholds {
            close_wait: d(t.close_wait),
            half_open: d(t.half_open),
            idle: d(t.idle),
            handshake: d(t.handshake),
            fin_wait2: d(t.fin_wait2),
        }
    }
}

/// One ring-buffer record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The record's bytes, in hex.
    pub raw: String,
    /// The event decoded, for people reading the file; never read back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Record {
    /// A record of `raw`, with a note saying what it decodes to.
    pub fn new(raw: &[u8]) -> Record {
        let mut hex = String::with_capacity(raw.len() * 2);
        for b in raw {
            let _ = write!(hex, "{b:02x}");
        }
        Record {
            raw: hex,
            note: note(raw),
        }
    }

    /// The record's bytes.
    pub fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        let s = self.raw.as_bytes();
        anyhow::ensure!(s.len().is_multiple_of(2), "odd number of hex digits");
        s.chunks(2)
            .map(|p| {
                let p = std::str::from_utf8(p)?;
                u8::from_str_radix(p, 16).with_context(|| format!("{p:?} is not hex"))
            })
            .collect()
    }
}

/// `state syn_sent->established 127.0.0.1:41234->127.0.0.1:8080 sk 1f`.
fn note(raw: &[u8]) -> String {
    match SockEvent::decode(raw) {
        Err(e) => format!("undecodable: {e}"),
        Ok(ev) => {
            let change = match (ev.old_state, ev.new_state) {
                (Some(a), Some(b)) => format!(" {a}->{b}"),
                (None, Some(b)) => format!(" in {b}"),
                _ => String::new(),
            };
            format!(
                "{}{change} {}:{}->{}:{} sk {:x}",
                ev.kind.name(),
                ev.saddr,
                ev.sport,
                ev.daddr,
                ev.dport,
                ev.cookie
            )
        }
    }
}

/// A dump as the pipeline took it in.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecordedDump {
    /// The first dump, adopted (not reconciled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
    /// Monotonic ns when it started.
    pub start_ns: u64,
    /// TIME_WAIT sockets included.
    pub full: bool,
    /// Namespaces reconciled: `sockets[..fresh_from]`.
    pub covered: Vec<u32>,
    /// Where the sockets of namespaces dumped for the first time begin.
    pub fresh_from: usize,
    /// Namespaces dumped for the first time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fresh: Vec<u32>,
    /// Namespaces that vanished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<u32>,
    /// `tcp_max_tw_buckets` per namespace (full dumps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tw_limits: Vec<(u32, u32)>,
    /// Ephemeral port settings per namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_settings: Vec<(u32, PortSettings)>,
    /// The sockets, as the parser decoded them.
    pub sockets: Vec<Socket>,
    /// The owner scan the detectors asked for, if they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Owners>,
}

/// A whole recording, read back.
#[derive(Clone, Debug)]
pub struct Recording {
    /// Its first line.
    pub header: Header,
    /// The rest, in order.
    pub lines: Vec<Line>,
}

impl Recording {
    /// Read a recording's text; errors name the line.
    pub fn parse(text: &str) -> anyhow::Result<Recording> {
        let mut lines = Vec::new();
        for (i, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let line: Line =
                serde_json::from_str(l).with_context(|| format!("recording line {}", i + 1))?;
            lines.push(line);
        }
        let header = match lines.first() {
            Some(Line::Header(h)) => h.clone(),
            _ => anyhow::bail!("a recording starts with its header line"),
        };
        anyhow::ensure!(
            header.version == VERSION,
            "recording format {} is not the supported {VERSION}; record it again",
            header.version
        );
        lines.remove(0);
        Ok(Recording { header, lines })
    }

    /// The latest monotonic time the recording mentions: the replay's "now".
    pub fn end_ns(&self) -> u64 {
        self.lines
            .iter()
            .map(|l| match l {
                Line::Header(_) => 0,
                Line::Event(r) => r
                    .bytes()
                    .ok()
                    .and_then(|b| SockEvent::decode(&b).ok())
                    .map_or(0, |e| e.ts_ns),
                Line::DumpStarted { at_ns, .. } => *at_ns,
                Line::Dump(d) => d.start_ns,
                Line::Expire(at) => *at,
            })
            .max()
            .unwrap_or(0)
    }
}

/// One line of text (no newline).
pub fn to_line(line: &Line) -> String {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_string(line).unwrap_or_default()
}
