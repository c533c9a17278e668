//! Playing a [`Recording`] through the pipeline's user-space steps, the
//! same functions the live loop calls: a batch of events decoded, scoped
//! and applied ([`steps::Batch`]), a dump adopted or reconciled with the
//! detectors run ([`steps::reconcile`]), due stays ended ([`steps::expire`]).
//! Time comes from the recording (events carry `ts_ns`, dumps their start
//! time), so a replay's outcome is the same on every machine: that is the
//! golden-replay test tier (`tracer/tests/replay.rs`). A dump's sockets
//! are decoded from the datagrams the kernel sent, by the parser a live
//! dump uses ([`crate::diag::parse_datagrams`]). It loads no kernel
//! programs and needs no privileges.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;

mod format;
mod owners;
mod recorder;

use self::format::{Header, Line, RecordedDump};
pub use self::{format::Recording, recorder::Recorder};
use super::{
    Core, Dump, NetnsScope, SharedCore,
    sink::{Dumped, Sink, Tallies},
    steps,
};
use crate::{
    engine::{self, Engine, Observer},
    event::SockEvent,
    leaks::Detector,
};

/// The pipeline's core, fed from a recording instead of the kernel.
pub struct Replay<D> {
    core: Arc<SharedCore<D>>,
    scope: NetnsScope,
    decode_errors: u64,
}

impl<D: Observer> Replay<D> {
    /// A core as the recording's pipeline had it: its namespace followed,
    /// its thresholds, `engine` settings, and the sink's `derived` state.
    pub fn new(header: &Header, engine: engine::Config, derived: D) -> Replay<D> {
        let core = Core {
            engine: Engine::new(engine),
            detector: Detector::new(header.thresholds_ms.map(Duration::from_millis)),
            derived,
            containers: Arc::default(),
        };
        Replay {
            core: Arc::new(SharedCore(Mutex::new(core))),
            // `own`: its inode is the recording's, not this host's.
            scope: NetnsScope::One {
                inode: header.netns,
                own: true,
            },
            decode_errors: 0,
        }
    }

    /// The core, to read the outcome from (or to share with a sink).
    pub fn core(&self) -> Arc<SharedCore<D>> {
        self.core.clone()
    }

    /// The namespaces followed: the recording's.
    pub fn scope(&self) -> NetnsScope {
        self.scope
    }

    /// Records that could not be decoded.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Play every line into the core and `sink`. The events between two
    /// other lines form one batch.
    pub fn play<S: Sink<Derived = D>>(
        &mut self,
        rec: &Recording,
        sink: &mut S,
    ) -> anyhow::Result<()> {
        let lines = &rec.lines;
        let mut i = 0;
        while i < lines.len() {
            match &lines[i] {
                Line::Event(_) => {
                    let mut batch = steps::Batch::new(&self.core, self.scope, true, None, sink);
                    let mut n = 0;
                    while let Some(Line::Event(r)) = lines.get(i) {
                        let raw = r.bytes().with_context(|| format!("event {}", i + 1))?;
                        match SockEvent::decode(&raw) {
                            Ok(ev) => batch.event(&ev),
                            Err(_) => self.decode_errors += 1,
                        }
                        n += 1;
                        i += 1;
                    }
                    batch.finish(n);
                    continue;
                }
                Line::Dump(d) => self
                    .dump(d, sink)
                    .with_context(|| format!("dump {}", i + 1))?,
                Line::Expire(at_ns) => steps::expire(&self.core, *at_ns, sink),
                Line::Header(_) | Line::DumpStarted { .. } => {}
            }
            i += 1;
        }
        Ok(())
    }

    /// A dump: adopted or reconciled as the live loop does, then accounted.
    fn dump<S: Sink<Derived = D>>(&mut self, d: &RecordedDump, sink: &mut S) -> anyhow::Result<()> {
        let sockets = d.sockets()?;
        let dump = Dump {
            start_ns: d.start_ns,
            cpu_ns: 0,
            full: d.full,
            // A recording agent walks: it records what a walk read.
            looked_up: None,
            survey: false,
            unadopted: false,
            tw_limits: d.tw_limits.clone(),
            port_settings: d.port_settings.clone(),
            result: Ok(()),
            covered: d.covered.clone(),
            fresh_from: d.fresh_from,
            fresh: d.fresh.clone(),
            // A replay has applied the events as they were handed out.
            fresh_walk_ns: d.start_ns,
            gone: d.gone.clone(),
            datagrams: Vec::new(),
            census: Default::default(),
        };
        let dumped = Dumped {
            full: d.full,
            cpu_ns: 0,
            interval: Duration::ZERO,
            looked_up: 0,
            error: None,
        };
        let owners = d.owners.as_ref();
        if d.adopt {
            sink.dumped(&dumped);
            steps::adopt(None, &self.core, self.scope, &sockets, &dump, sink, |_| {
                owners.map(Into::into).unwrap_or_default()
            });
            return Ok(());
        }
        sink.port_settings(&d.port_settings);
        steps::reconcile(None, &self.core, self.scope, sink, &sockets, &dump, |_| {
            owners.map(Into::into).unwrap_or_default()
        });
        sink.dumped(&dumped);
        sink.tallied(&Tallies {
            lost: 0,
            undecodable: self.decode_errors,
        });
        Ok(())
    }
}
