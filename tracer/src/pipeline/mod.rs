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
//! - [`netns`]: which namespace is followed, and where its dumps come from;
//! - [`dumps`]: the dumpers and the thread a dump runs on;
//! - [`pace`]: when the next dump is due, within the CPU budget;
//! - [`sink`]: what a command plugs in.
pub mod clock;
pub mod dumps;
pub mod netns;
pub mod pace;
pub mod sink;

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Context as _;

pub use self::{
    clock::{monotonic_ns, thread_cpu_ns},
    dumps::{Dump, DumpSource, snapshot},
    netns::NetnsScope,
    pace::{Pace, Paces},
    sink::{Dumped, Flow, Sink, Tallies},
};
use crate::{
    bpf::{KernelCounters, Probes},
    diag::{DiagSocket, owners_of},
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
    /// CPU each kind of dump may use, in percent of one core (0: no limit).
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
    /// The TIME_WAIT overflow counter before the last full dump.
    overflow_baseline: Option<u64>,
}

/// What woke the dump side of the loop.
enum Step {
    Tick,
    Dumped(anyhow::Result<Dump>),
}

/// The next tick, or the end of the dump in progress; never without tracking.
async fn next_step(tracking: Option<&mut Tracking>) -> Step {
    match tracking {
        None => std::future::pending().await,
        Some(t) if t.dumps.busy() => Step::Dumped(t.dumps.finished().await),
        Some(t) => {
            t.tick.tick().await;
            Step::Tick
        }
    }
}

/// Probes, ingest, scope, engine, detectors, dumps and pacing: one command's
/// whole pipeline. `D` is what its sink keeps beside the engine.
pub struct Pipeline<D> {
    probes: Probes,
    ingest: Ingest,
    scope: NetnsScope,
    core: Arc<SharedCore<D>>,
    tracking: Option<Tracking>,
}

impl<D: Observer> Pipeline<D> {
    /// Load and attach the programs, open the ring buffer and the dump
    /// source. Must be called inside a tokio runtime.
    pub fn new(cfg: Config, derived: D) -> anyhow::Result<Pipeline<D>> {
        let (probes, ring) = Probes::load(cfg.ring_bytes, true)?;
        let ingest = Ingest::new(ring, Some(crate::bpf::DRAIN_INTERVAL))
            .context("polling the ring buffer")?;
        let tracking = match cfg.reconcile {
            None => None,
            Some(r) => {
                let mut tick = tokio::time::interval(r.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Some(Tracking {
                    tick,
                    dumps: DumpSource::open(cfg.scope)?,
                    paces: Paces::new(r.interval, r.time_wait_interval, r.budget_percent),
                    lost_at_dump: 0,
                    overflow_baseline: None,
                })
            }
        };
        let core = Core {
            engine: Engine::new(cfg.engine),
            detector: Detector::new(cfg.thresholds),
            derived,
        };
        Ok(Pipeline {
            probes,
            ingest,
            scope: cfg.scope,
            core: Arc::new(SharedCore(Mutex::new(core))),
            tracking,
        })
    }

    /// The core, to share with readers.
    pub fn core(&self) -> Arc<SharedCore<D>> {
        self.core.clone()
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
    pub fn adopt<S: Sink<Derived = D>>(&mut self, sink: &mut S) -> anyhow::Result<usize> {
        let Some(t) = self.tracking.as_mut() else {
            return Ok(0);
        };
        let full = t.paces.next(monotonic_ns(), false) == Some(true);
        let dump = t.dumps.dump_now(full)?;
        dump.result?;
        t.overflow_baseline = dump.overflow_before;
        let interval = t.paces.done(full, dump.start_ns, dump.cpu_ns);
        sink.dumped(&Dumped {
            full,
            cpu_ns: dump.cpu_ns,
            interval,
            error: None,
        });
        let mut core = self.core.lock();
        let n = core.engine.adopt(t.dumps.sockets(), dump.start_ns);
        sink.adopted(&mut core, t.dumps.sockets());
        Ok(n)
    }

    /// Run until `stop` completes, the sink says stop, or reading fails.
    pub async fn run<S: Sink<Derived = D>>(
        &mut self,
        sink: &mut S,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let tracking = self.tracking.is_some();
        loop {
            tokio::select! {
                () = &mut stop => break,
                r = read_batch(&mut self.ingest, &self.core, self.scope, tracking, sink) => {
                    r.context("reading the ring buffer")?;
                }
                step = next_step(self.tracking.as_mut()) => match step {
                    Step::Tick => self.on_tick(sink)?,
                    Step::Dumped(dump) => self.on_dump(dump?, sink),
                },
            }
            if sink.turn()? == Flow::Stop {
                break;
            }
        }
        Ok(())
    }

    /// A tick: start a dump when one is due, else end what is due now.
    fn on_tick<S: Sink<Derived = D>>(&mut self, sink: &mut S) -> anyhow::Result<()> {
        let Some(t) = self.tracking.as_mut() else {
            return Ok(());
        };
        let lost = self.probes.counters().lost();
        if let Some(full) = t.paces.next(monotonic_ns(), lost > t.lost_at_dump) {
            t.lost_at_dump = lost;
            // On a blocking thread; events keep flowing meanwhile.
            t.dumps.start(full)?;
        } else {
            // No dump this tick: still end the TIME_WAIT stays whose 60 s
            // are up, as a reconcile would.
            let mut core = self.core.lock();
            let Core {
                engine, derived, ..
            } = &mut *core;
            engine.expire(monotonic_ns(), derived);
            sink.advanced(&core);
        }
        Ok(())
    }

    /// A dump ended: reconcile with it, account for it, refresh the tallies.
    fn on_dump<S: Sink<Derived = D>>(&mut self, dump: Dump, sink: &mut S) {
        let Some(t) = self.tracking.as_mut() else {
            return;
        };
        let cpu_ns = match &dump.result {
            Ok(()) => {
                let engine_ns = reconcile(
                    &mut self.ingest,
                    &self.core,
                    self.scope,
                    sink,
                    t.dumps.sockets(),
                    &dump,
                );
                if dump.full {
                    t.overflow_baseline = dump.overflow_before;
                }
                dump.cpu_ns + engine_ns
            }
            // Try again at the next interval, not the next tick.
            Err(_) => dump.cpu_ns,
        };
        let interval = t.paces.done(dump.full, dump.start_ns, cpu_ns);
        sink.dumped(&Dumped {
            full: dump.full,
            cpu_ns,
            interval,
            error: dump.result.as_ref().err(),
        });
        let tw_overflow_pending = match (t.overflow_baseline, dump.overflow_after) {
            (Some(b), Some(a)) => a.saturating_sub(b),
            _ => 0,
        };
        sink.tallied(&Tallies {
            tw_overflow_pending,
            lost: self.probes.counters().lost(),
            undecodable: self.ingest.decode_errors,
        });
    }
}

/// Wait for events, then apply everything ready under one lock.
async fn read_batch<D: Observer, S: Sink<Derived = D>>(
    ingest: &mut Ingest,
    core: &SharedCore<D>,
    scope: NetnsScope,
    tracking: bool,
    sink: &mut S,
) -> std::io::Result<()> {
    // Collect first (the ring buffer wakes us), then lock once per batch.
    let mut guard = None;
    let n = ingest
        .next_batch(|ev| {
            let in_scope = scope.contains(ev);
            if in_scope && tracking {
                let core = guard.get_or_insert_with(|| core.lock());
                let Core {
                    engine, derived, ..
                } = &mut **core;
                engine.apply(ev, derived);
            }
            sink.event(ev, in_scope);
        })
        .await?;
    sink.batch(n, guard.as_deref());
    Ok(())
}

/// Apply the events older than the dump, reconcile with it, run the
/// detectors. Returns the CPU time the engine's reconcile took: with the
/// dump, what grows with the host's socket count (owner lookups for new leak
/// flags are one-offs, and not counted).
fn reconcile<D: Observer, S: Sink<Derived = D>>(
    ingest: &mut Ingest,
    core: &SharedCore<D>,
    scope: NetnsScope,
    sink: &mut S,
    sockets: &[DiagSocket],
    dump: &Dump,
) -> u64 {
    let mut guard = core.lock();
    let Core {
        engine,
        detector,
        derived,
    } = &mut *guard;
    ingest.drain_now(|ev| {
        let in_scope = scope.contains(ev);
        if in_scope {
            engine.apply(ev, derived);
        }
        sink.event(ev, in_scope);
    });
    let cpu_before = thread_cpu_ns();
    engine.reconcile(sockets, dump.start_ns, dump.full, derived);
    let engine_ns = thread_cpu_ns().saturating_sub(cpu_before);
    let engine = &*engine;
    let changes = detector.update(
        sockets,
        dump.start_ns,
        |cookie, st| engine.state_since(cookie, st),
        owners_of,
    );
    sink.reconciled(&mut guard, sockets, &changes, dump.start_ns);
    engine_ns
}

/// A future that completes on SIGINT or SIGTERM.
pub fn stop_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    })
}
