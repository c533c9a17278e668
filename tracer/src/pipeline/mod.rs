//! The pipeline every command runs, written once: kernel programs
//! ([`crate::bpf`]) -> [`Ingest`] -> the [`NetnsScope`] filter -> the
//! lifecycle [`Engine`] -> the leak [`Detector`], reconciled with sock_diag
//! dumps from one [`DumpSource`], paced by [`Paces`].
//!
//! The commands choose only their [`Sink`]: `tracer run` feeds metrics and
//! the state the HTTP API reads, `tracer events` prints JSON lines. `tracer
//! leaks` without an agent takes one [`snapshot`] from the same source.
//!
//! - [`clock`]: monotonic and thread-CPU clocks;
//! - [`netns`]: which namespaces are followed (`--netns`);
//! - [`discover`]: finding the namespaces of the host;
//! - [`dumps`]: a dumper per namespace, and the thread a dump runs on;
//! - `run`: the event loop: ticks, dumps, namespaces coming and going;
//! - `steps`: what the loop does with what it reads (a batch of events, a
//!   dump adopted or reconciled, due stays ended), also called by a replay;
//! - [`pace`]: when the next dump is due, within the CPU budget;
//! - [`sink`]: what a command plugs in;
//! - `replay`: a recording of what the pipeline read ([`Recorder`], in the
//!   format of [`Recording`]), and playing it back through the same steps
//!   ([`Replay`]), for the golden-replay tests.
pub mod clock;
pub mod discover;
pub mod dumps;
pub mod netns;
pub mod pace;
mod replay;
mod run;
pub mod sink;
mod steps;
mod tally;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Context as _;

pub use self::{
    clock::{monotonic_ns, thread_cpu_ns},
    dumps::{Census, Dump, DumpSource, MAX_NETNS, snapshot, unread_said},
    netns::{NetnsChoice, NetnsScope},
    pace::{Pace, Paces},
    replay::{Recorder, Recording, Replay},
    sink::{Dumped, Flow, NetnsTally, Sink, Tallies},
};
use crate::{
    bpf::{KernelCounters, Probes},
    container::ContainerMap,
    engine::{self, Engine, Observer},
    ingest::Ingest,
    leaks::{Detector, Thresholds},
};

/// What a pipeline follows and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// The namespaces followed: the engine's events and the dumps' sockets.
    pub scope: NetnsScope,
    /// Kernel ring buffer size (a power of two).
    pub ring_bytes: u32,
    /// The engine's settings.
    pub engine: engine::Config,
    /// The leak detectors' thresholds.
    pub thresholds: Thresholds,
    /// Engine, detectors and dumps; `None` streams events only.
    pub reconcile: Option<Reconcile>,
}

/// How often to reconcile the engine with sock_diag.
#[derive(Clone, Copy, Debug)]
pub struct Reconcile {
    /// Live dumps (every state but TIME_WAIT).
    pub interval: Duration,
    /// Full dumps (TIME_WAIT included); `None`: live dumps only.
    pub time_wait_interval: Option<Duration>,
    /// CPU all dumps together may use, in percent of one core (0: no
    /// limit); live dumps get three quarters of it and full ones the rest
    /// (see [`pace::LIVE_SHARE`]).
    pub budget_percent: f64,
}

/// The engine, the detectors, and what a sink derives from the engine's
/// outcomes, under one lock.
pub struct Core<D> {
    /// The lifecycle engine.
    pub engine: Engine,
    /// Leak detectors, run on every reconcile.
    pub detector: Detector,
    /// The sink's own state; it observes the engine.
    pub derived: D,
    /// The container of each namespace that has one, as of the last dump.
    pub containers: Arc<ContainerMap>,
}

/// The [`Core`] behind its lock, shared with whoever reads it (the HTTP API).
pub struct SharedCore<D>(Mutex<Core<D>>);

impl<D> SharedCore<D> {
    /// Take the lock. A panic while holding it cannot leave the engine half
    /// updated in a way later calls would trip over; keep serving.
    pub fn lock(&self) -> MutexGuard<'_, Core<D>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the lock if nobody holds it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Core<D>>> {
        self.0.try_lock().ok()
    }
}

/// Dumps and their schedule; absent when only streaming.
struct Tracking {
    tick: tokio::time::Interval,
    dumps: DumpSource,
    paces: Paces,
    /// Kernel-side losses when the last dump started: more since then means
    /// the engine may be wrong, and the next tick dumps whatever the budget.
    lost_at_dump: u64,
    /// The last survey found namespaces no dump has adopted yet.
    unadopted: bool,
    /// The dump in progress heals: it was started for lost events or
    /// namespaces no dump had adopted.
    healing: bool,
    /// The last healing dump did not list sockets the engine holds open.
    /// A socket is closed only by the second dump in a row without it, so
    /// the next tick dumps again whatever the budget: losses heal within
    /// two ticks, not two paced intervals.
    recheck: bool,
    /// The engine's count of SYN-ACK retransmits when the last walk
    /// started: more since then, and the next live dump walks (it lists
    /// the request sockets of handshakes in trouble).
    synacks_at_walk: u64,
    /// The sentences about unreachable namespaces already said.
    warned: tally::Warned,
    /// When a dump first found the one namespace `--netns` chose gone
    /// (see `Pipeline::on_dump`).
    scope_gone_at: Option<u64>,
}

/// How often [`Pipeline::adopt`] moves events out of the lanes while its
/// dump runs: the default lanes fill in about 160 ms at 400,000 events a
/// second.
const ADOPT_SPILL_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Probes, ingest, scope, engine, detectors, dumps and pacing: one command's
/// whole pipeline. `D` is what its sink keeps beside the engine.
pub struct Pipeline<D> {
    probes: Probes,
    ingest: Ingest,
    scope: NetnsScope,
    core: Arc<SharedCore<D>>,
    tracking: Option<Tracking>,
    /// Namespaces seen in events that no discovery found yet: unreachable
    /// ones, or ones made since the last dump.
    event_netns: tally::EventNetns,
    /// Writes what the pipeline reads, when recording.
    recorder: Option<Recorder>,
}

impl<D: Observer> Pipeline<D> {
    /// Load and attach the programs, map their event lanes, open the dump
    /// source. Must be called inside a tokio runtime.
    pub fn new(cfg: Config, derived: D) -> anyhow::Result<Pipeline<D>> {
        let mut engine_cfg = cfg.engine;
        if engine_cfg.time_wait_clock.is_none() {
            // Where it cannot be read, stays end after exactly 60 s. Read
            // before the programs are attached: it takes 100 ms, in which
            // a busy host's events would fill the lanes.
            engine_cfg.time_wait_clock = clock::time_wait_clock();
        }
        let (probes, ring) = Probes::load(cfg.ring_bytes)?;
        let ingest = Ingest::new(ring);
        let tracking = match cfg.reconcile {
            None => None,
            Some(r) => {
                let mut tick = tokio::time::interval(r.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Some(Tracking {
                    tick,
                    dumps: DumpSource::open(cfg.scope),
                    paces: Paces::new(r.interval, r.time_wait_interval, r.budget_percent),
                    lost_at_dump: 0,
                    unadopted: false,
                    healing: false,
                    recheck: false,
                    synacks_at_walk: 0,
                    warned: tally::Warned::default(),
                    scope_gone_at: None,
                })
            }
        };
        let core = Core {
            engine: Engine::new(engine_cfg),
            detector: Detector::new(cfg.thresholds),
            derived,
            containers: Arc::default(),
        };
        Ok(Pipeline {
            probes,
            ingest,
            scope: cfg.scope,
            core: Arc::new(SharedCore(Mutex::new(core))),
            tracking,
            event_netns: HashMap::new(),
            recorder: None,
        })
    }

    /// Record what the pipeline reads from now on into `recorder`: the
    /// events of the namespaces followed, the dumps as they go into the
    /// engine (as the datagrams the kernel sent: its dump source captures
    /// them from now on), the owner scans and expiries. Call before
    /// [`Pipeline::adopt`].
    pub fn record(&mut self, recorder: Recorder) {
        recorder.header(self.scope, self.core.lock().detector.thresholds());
        self.ingest.tap(recorder.events(self.scope));
        if let Some(t) = &mut self.tracking {
            t.dumps.capture();
        }
        self.recorder = Some(recorder);
    }

    /// The core, to share with readers.
    pub fn core(&self) -> Arc<SharedCore<D>> {
        self.core.clone()
    }

    /// The handle another thread asks the event loop to read the ring
    /// buffer now with (before a scrape).
    pub fn drain_handle(&self) -> Arc<crate::ingest::Drain> {
        self.ingest.drain_handle()
    }

    /// The namespaces followed.
    pub fn scope(&self) -> NetnsScope {
        self.scope
    }

    /// The kernel programs' failure counters.
    pub fn counters(&self) -> KernelCounters {
        self.probes.counters()
    }

    /// Records read that could not be decoded.
    pub fn decode_errors(&self) -> u64 {
        self.ingest.decode_errors
    }

    /// Adopt every socket that exists: one dump (a full one when full dumps
    /// are scheduled) into the engine. The programs are attached, so nothing
    /// born from here on is missed. Returns how many sockets were adopted
    /// (0 when only streaming).
    ///
    /// The dump runs on the blocking pool while this thread moves the
    /// events that arrive meanwhile out of the lanes ([`Ingest::spill`]).
    /// Those stamped before the walk began are applied first: a socket
    /// born then is followed from its first event, not adopted mid-life.
    /// The adoption spills the rest too; the first drain hands them out
    /// after it, so they move adopted sockets as they would at any time. A
    /// first dump walks every socket cold: beside 131,072 TIME_WAIT
    /// sockets, at 400,000 events a second, it takes about 150 ms and the
    /// adoption 100 ms more, while the default lanes (about 65,000 events)
    /// fill in about 160 ms.
    pub async fn adopt<S: Sink<Derived = D>>(&mut self, sink: &mut S) -> anyhow::Result<usize> {
        let Pipeline {
            ingest,
            core,
            tracking,
            event_netns,
            recorder,
            scope,
            ..
        } = self;
        let Some(t) = tracking.as_mut() else {
            return Ok(0);
        };
        let full = t.paces.next(monotonic_ns(), false) == Some(true);
        t.dumps.start(full);
        let mut dump = loop {
            tokio::select! {
                dump = t.dumps.finished() => break dump?,
                () = tokio::time::sleep(ADOPT_SPILL_EVERY) => ingest.spill(),
            }
        };
        std::mem::replace(&mut dump.result, Ok(()))?;
        let interval = t.paces.done(full, dump.start_ns, dump.cpu_ns);
        sink.dumped(&Dumped {
            full,
            cpu_ns: dump.cpu_ns,
            interval,
            looked_up: 0,
            error: None,
        });
        steps::new_containers(core, &dump, sink);
        let mut scanned = None;
        let n = steps::adopt(
            Some(ingest),
            core,
            *scope,
            t.dumps.sockets(),
            &dump,
            sink,
            |inodes| {
                let scan = crate::diag::owners_of(inodes);
                if recorder.is_some() {
                    scanned = Some(scan.clone());
                }
                scan
            },
        );
        if let Some(r) = recorder {
            r.dumped(true, &dump, scanned.as_ref());
        }
        tally::tally_netns(t, event_netns, &dump, 0, sink);
        Ok(n)
    }
}

/// Hold SIGINT and SIGTERM pending on this thread (and the threads it
/// starts) until [`stop_signal`] can take them, or [`release_stop_signals`]
/// gives them back their default: `main` calls it first, so a signal that
/// comes while the long-running commands start is not lost nor fatal.
pub fn hold_stop_signals() {
    stop_signals_mask(libc::SIG_BLOCK);
}

/// Undo [`hold_stop_signals`] on this thread: a pending signal is
/// delivered now.
pub fn release_stop_signals() {
    stop_signals_mask(libc::SIG_UNBLOCK);
}

fn stop_signals_mask(how: libc::c_int) {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before
    // use; pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// A future that completes on SIGINT or SIGTERM, including one held
/// pending since [`hold_stop_signals`].
pub fn stop_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    release_stop_signals();
    Ok(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    })
}
