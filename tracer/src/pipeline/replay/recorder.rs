//! The recording tap: given to a [`Pipeline`](crate::pipeline::Pipeline) with
//! [`Pipeline::record`](crate::pipeline::Pipeline::record), it writes what the
//! pipeline reads (ring-buffer records of the namespaces followed, dumps
//! as they go into the engine, owner scans, expiries) as a
//! [recording](super::format), in the order the pipeline handled
//! them. Without it the pipeline does no work for recording.
use std::sync::{Arc, Mutex};

use super::format::{Header, Line, Record, RecordedDump, RecordedNetns, VERSION, to_line};
use crate::pipeline::{Dump, NetnsScope};
use crate::{event::SockEvent, leaks::Thresholds, snapshot::OwnerScan};

/// Collects a recording; clones share it.
#[derive(Clone, Default)]
pub struct Recorder {
    text: Arc<Mutex<String>>,
}

impl Recorder {
    /// An empty recording.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// The recording so far, one line per item.
    pub fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn push(&self, line: &Line) {
        if let Ok(mut t) = self.text.lock() {
            t.push_str(&to_line(line));
            t.push('\n');
        }
    }

    /// The first line: what the pipeline follows and judges with.
    pub(in crate::pipeline) fn header(&self, scope: NetnsScope, thresholds: &Thresholds) {
        let netns = match scope {
            NetnsScope::One { inode, .. } => inode,
            NetnsScope::All { own } => own,
        };
        self.push(&Line::Header(Header {
            version: VERSION,
            netns,
            thresholds_ms: thresholds.map(|d| d.as_millis() as u64),
        }));
    }

    /// The tap [`crate::ingest::Ingest`] hands every record to: keeps
    /// those of namespaces in `scope`, and those it cannot decode.
    pub(in crate::pipeline) fn events(&self, scope: NetnsScope) -> crate::ingest::Tap {
        let me = self.clone();
        Box::new(move |raw: &[u8]| {
            if SockEvent::decode(raw).is_ok_and(|ev| !scope.contains(&ev)) {
                return;
            }
            me.push(&Line::Event(Record::new(raw)));
        })
    }

    /// A dump began.
    pub(in crate::pipeline) fn dump_started(&self, at_ns: u64, full: bool) {
        self.push(&Line::DumpStarted { at_ns, full });
    }

    /// A dump went into the engine: adopted (`adopt`) or reconciled, with
    /// the owner scan its detectors asked for. Its sockets are recorded as
    /// the datagrams they came in ([`Dump::datagrams`]: the pipeline's
    /// dump source captures them once recording).
    pub(in crate::pipeline) fn dumped(&self, adopt: bool, dump: &Dump, owners: Option<&OwnerScan>) {
        self.push(&Line::Dump(RecordedDump {
            adopt,
            start_ns: dump.start_ns,
            full: dump.full,
            covered: dump.covered.clone(),
            fresh_from: dump.fresh_from,
            fresh: dump.fresh.clone(),
            gone: dump.gone.clone(),
            tw_limits: dump.tw_limits.clone(),
            port_settings: dump.port_settings.clone(),
            netns: dump
                .datagrams
                .iter()
                .map(|(inode, d)| RecordedNetns::new(*inode, d))
                .collect(),
            owners: owners.map(Into::into),
        }));
    }

    /// The loop ended due TIME_WAIT stays at `now_ns`.
    pub(in crate::pipeline) fn expired(&self, now_ns: u64) {
        self.push(&Line::Expire(now_ns));
    }
}
