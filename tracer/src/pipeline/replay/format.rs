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
//! A dump holds, per namespace dumped (in the order its sockets went into
//! the engine), the namespace's inode and the sock_diag datagrams the
//! kernel sent, as bytes in hex with the request each answers (`walk`:
//! `both`, `ipv4` or `ipv6`, and its `seq`); a replay decodes them with
//! [`crate::diag::parse_datagrams`], the parser of a live dump. Beside
//! them: its start time, the namespaces it covered and found, their
//! TIME_WAIT limits and port settings, and the owner scan its detectors
//! asked for. `note`s are for people and ignored:
//!
//! ```text
//! {"dump":{"start_ns":N,"full":true,"covered":[I],"fresh_from":3,
//!   "netns":[{"inode":I,"datagrams":[{"walk":"both","seq":2,"late_ms":3,"raw":"<hex>"}],
//!             "note":"listen 127.0.0.1:80->0.0.0.0:0 sk 1f, .."}],
//!   "owners":{..}}}
//! ```
use std::fmt::Write as _;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub use super::owners::Owners;
use crate::{
    diag::{Datagram, Walk, parse_datagrams},
    event::SockEvent,
    forecast::PortSettings,
    leaks::PerKind,
    snapshot::SocketSnapshot,
};

/// The version of the format this build writes and reads.
pub const VERSION: u32 = 2;

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

/// [`Thresholds`](crate::leaks::Thresholds) in milliseconds.
pub type ThresholdsMs = PerKind<u64>;

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
        Record {
            raw: hex(raw),
            note: note(raw),
        }
    }

    /// The record's bytes.
    pub fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        unhex(&self.raw)
    }
}

/// `bytes` in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The bytes a [`hex`] string spells.
fn unhex(hex: &str) -> anyhow::Result<Vec<u8>> {
    let s = hex.as_bytes();
    anyhow::ensure!(s.len().is_multiple_of(2), "odd number of hex digits");
    s.chunks(2)
        .map(|p| {
            let p = std::str::from_utf8(p)?;
            u8::from_str_radix(p, 16).with_context(|| format!("{p:?} is not hex"))
        })
        .collect()
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
    /// Each namespace dumped, in the order of its sockets: reconciled
    /// ones (`covered`), then new ones (`fresh`).
    pub netns: Vec<RecordedNetns>,
    /// The owner scan the detectors asked for, if they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Owners>,
}

impl RecordedDump {
    /// The sockets of the dump, decoded from its datagrams by the parser
    /// of a live dump, namespace after namespace, and where those of
    /// namespaces dumped for the first time begin (checked against the
    /// recorded `fresh_from`).
    pub fn sockets(&self) -> anyhow::Result<Vec<SocketSnapshot>> {
        let mut out = Vec::new();
        let mut fresh_from = None;
        for ns in &self.netns {
            if fresh_from.is_none() && !self.covered.contains(&ns.inode) {
                fresh_from = Some(out.len());
            }
            parse_datagrams(&ns.datagrams()?, ns.inode, &mut out)
                .with_context(|| format!("the datagrams of namespace {}", ns.inode))?;
        }
        let fresh_from = fresh_from.unwrap_or(out.len());
        anyhow::ensure!(
            fresh_from == self.fresh_from,
            "the namespaces covered hold {fresh_from} sockets, the dump says {}",
            self.fresh_from
        );
        Ok(out)
    }
}

/// One namespace of a dump: the datagrams the kernel sent for it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecordedNetns {
    /// The namespace's inode, written into its sockets.
    pub inode: u32,
    /// In the order received.
    pub datagrams: Vec<RecordedDatagram>,
    /// The sockets they decode to, for people reading the file; never
    /// read back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl RecordedNetns {
    /// Namespace `inode`'s `datagrams`, with a note listing its sockets.
    pub fn new(inode: u32, datagrams: &[Datagram]) -> RecordedNetns {
        let mut sockets = Vec::new();
        let note = match parse_datagrams(datagrams, inode, &mut sockets) {
            Err(e) => format!("undecodable: {e}"),
            Ok(()) => sockets
                .iter()
                .map(|s| {
                    format!(
                        "{} {}:{}->{}:{} sk {:x}",
                        s.state, s.saddr, s.sport, s.daddr, s.dport, s.cookie
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        RecordedNetns {
            inode,
            datagrams: datagrams
                .iter()
                .map(|d| RecordedDatagram {
                    walk: d.walk.name().into(),
                    seq: d.seq,
                    late_ms: d.late_ms,
                    raw: hex(&d.bytes),
                })
                .collect(),
            note,
        }
    }

    /// The datagrams, as [`parse_datagrams`] takes them.
    pub fn datagrams(&self) -> anyhow::Result<Vec<Datagram>> {
        self.datagrams
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let walk = Walk::from_name(&d.walk)
                    .with_context(|| format!("datagram {}: unknown walk {:?}", i + 1, d.walk))?;
                let bytes = unhex(&d.raw).with_context(|| format!("datagram {}", i + 1))?;
                Ok(Datagram {
                    walk,
                    seq: d.seq,
                    bytes,
                    late_ms: d.late_ms,
                })
            })
            .collect()
    }
}

/// One sock_diag datagram as the kernel sent it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecordedDatagram {
    /// The request it answers: `both`, `ipv4` or `ipv6`.
    pub walk: String,
    /// That request's sequence number.
    pub seq: u32,
    /// Milliseconds after the dump's start it arrived (its timers count
    /// from that start: `diag::on_dump_clock`); 0 in recordings made
    /// before it was kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late_ms: u32,
    /// Its bytes, in hex.
    pub raw: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
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
        let mut numbered = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        // The header first: an older format is named as such, not as its
        // first line this build cannot read.
        let header = match numbered.next().map(|(_, l)| serde_json::from_str(l)) {
            Some(Ok(Line::Header(h))) => h,
            _ => anyhow::bail!("a recording starts with its header line"),
        };
        anyhow::ensure!(
            header.version == VERSION,
            "recording format {} is not the supported {VERSION}; record it again",
            header.version
        );
        let mut lines = Vec::new();
        for (i, l) in numbered {
            let line: Line =
                serde_json::from_str(l).with_context(|| format!("recording line {}", i + 1))?;
            lines.push(line);
        }
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
