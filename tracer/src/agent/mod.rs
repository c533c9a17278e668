//! `tracer run`: the long-running agent. It owns the tasks: the event loop
//! (ring buffer -> engine), reconciliation with sock_diag on an interval,
//! and the HTTP server. Shared state sits behind one short-held mutex;
//! `/metrics` never takes it for longer than a `try_lock`.
mod api;
pub mod dwell;
pub(crate) mod pace;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    agent::pace::{Pace, thread_cpu_ns},
    bpf::Probes,
    config::Settings,
    diag::{
        DiagSocket,
        dump::{DumpOptions, Dumper},
    },
    engine::{self, ClosedBy, Correction, Direction, Engine, Observer, TimeWaitEnd},
    export::{http, metrics::Metrics},
    ingest::Ingest,
    tcp::TcpState,
};

/// `clock` (a `CLOCK_*` id) in nanoseconds.
pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Inode number of this process's network namespace (0 if unreadable):
/// what the kernel programs report as `netns`.
pub fn own_netns() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

/// True for events of sockets in the namespace `netns` (or of unknown namespace).
pub fn in_netns(ev: &crate::event::SockEvent, netns: u32) -> bool {
    ev.netns == 0 || netns == 0 || ev.netns == netns
}

/// The engine and what is computed alongside it, under one lock.
pub struct Core {
    /// The lifecycle engine.
    pub engine: Engine,
    /// Recent stays, for percentiles.
    pub dwell: dwell::Dwell,
    /// Local ports the host listens on, from the last dump.
    pub listening: HashSet<u16>,
    /// Leak detectors, run on every reconcile.
    pub detector: crate::leaks::Detector,
}

/// State shared between the event loop and the HTTP handlers.
pub struct Shared {
    /// Engine and friends.
    pub core: Mutex<Core>,
    /// All metrics.
    pub metrics: Arc<Metrics>,
    /// Settings in force.
    pub settings: Settings,
    /// Monotonic ns when the agent started.
    pub started_ns: u64,
    /// Programs attached.
    pub attached: AtomicBool,
    /// Monotonic ns of the last event-loop turn.
    pub heartbeat_ns: AtomicU64,
    /// Monotonic ns of the last event received (0: none yet).
    pub last_event_ns: AtomicU64,
    /// Monotonic ns of the last successful reconcile.
    pub last_reconcile_ns: AtomicU64,
    /// The network namespace the agent follows: its own, the one sock_diag sees.
    pub netns: u32,
    /// TIME_WAIT overflows (closes that left no timewait socket) since the
    /// last full dump: inferred TIME_WAIT records the next full dump will
    /// find missing. The gauge leaves them out.
    pub tw_overflow_pending: AtomicU64,
}

/// Observer that feeds metrics and dwell percentiles.
struct Obs<'a> {
    metrics: &'a Metrics,
    dwell: &'a mut dwell::Dwell,
}

impl Observer for Obs<'_> {
    fn stay(&mut self, cookie: u64, state: TcpState, duration_ns: u64, lower_bound: bool) {
        let mut m = self.metrics;
        m.stay(cookie, state, duration_ns, lower_bound);
        if !lower_bound {
            self.dwell.record(state, duration_ns as f64 / 1e9);
        }
    }
    fn transition(&mut self, cookie: u64, from: TcpState, to: TcpState) {
        let mut m = self.metrics;
        Observer::transition(&mut m, cookie, from, to);
    }
    fn closed(&mut self, cookie: u64, by: Option<ClosedBy>) {
        let mut m = self.metrics;
        Observer::closed(&mut m, cookie, by);
    }
    fn retransmit(&mut self, cookie: u64, state: Option<TcpState>) {
        let mut m = self.metrics;
        m.retransmit(cookie, state);
    }
    fn synack_retransmit(&mut self, cookie: u64) {
        let mut m = self.metrics;
        m.synack_retransmit(cookie);
    }
    fn reset(&mut self, cookie: u64, direction: Direction, state: Option<TcpState>) {
        let mut m = self.metrics;
        Observer::reset(&mut m, cookie, direction, state);
    }
    fn time_wait_ended(&mut self, cookie: u64, how: TimeWaitEnd) {
        let mut m = self.metrics;
        Observer::time_wait_ended(&mut m, cookie, how);
    }
    fn time_wait_never_appeared(&mut self, cookie: u64) {
        let mut m = self.metrics;
        m.time_wait_never_appeared(cookie);
    }
    fn correction(&mut self, cookie: u64, reason: Correction) {
        let mut m = self.metrics;
        Observer::correction(&mut m, cookie, reason);
    }
    fn evicted(&mut self, cookie: u64, live: bool) {
        let mut m = self.metrics;
        m.evicted(cookie, live);
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave the engine half
        // updated in a way later calls would trip over; keep serving.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copy engine-derived gauges into the metrics.
    fn publish(&self, core: &Core) {
        let mut counts = core.engine.counts_by_state();
        let overflow = self
            .tw_overflow_pending
            .load(Ordering::Relaxed)
            .min(core.engine.unconfirmed_time_wait());
        let tw = &mut counts[TcpState::TimeWait.index()];
        *tw = tw.saturating_sub(overflow);
        self.metrics.set_sockets(&counts);
        self.metrics.tracked.set(core.engine.tracked() as i64);
    }
}

/// Reconcile dumps carry `tcp_info`: the half-open and idle detectors need it.
/// Every reconcile: every state but TIME_WAIT (cheap: TIME_WAIT sockets
/// are the bulk of a busy host).
const FREQUENT: DumpOptions = DumpOptions {
    with_info: true,
    without_time_wait: true,
};
/// Every `--time-wait-interval`: everything.
const FULL: DumpOptions = DumpOptions {
    with_info: true,
    without_time_wait: false,
};

/// The dumpers and the buffer they fill, moved to a blocking thread for a
/// dump and handed back for reuse.
struct DumpKit {
    frequent: Dumper,
    full: Dumper,
    buf: Vec<DiagSocket>,
}

/// What one dump found.
struct DumpOutcome {
    /// Monotonic ns when the dump started.
    start_ns: u64,
    /// CPU time the dumping thread spent on it (mostly the kernel's walk).
    cpu_ns: u64,
    /// TIME_WAIT sockets included.
    full: bool,
    /// The kernel's TIME_WAIT overflow counter just before and after.
    overflow_before: Option<u64>,
    overflow_after: Option<u64>,
    result: anyhow::Result<()>,
}

type DumpJob = tokio::task::JoinHandle<(DumpKit, DumpOutcome)>;

impl DumpKit {
    fn open() -> anyhow::Result<DumpKit> {
        Ok(DumpKit {
            frequent: Dumper::new(FREQUENT).context("listing TCP sockets with sock_diag")?,
            full: Dumper::new(FULL).context("listing TCP sockets with sock_diag")?,
            buf: Vec::new(),
        })
    }

    fn dump(mut self, full: bool) -> (DumpKit, DumpOutcome) {
        let overflow_before = crate::diag::netstat::time_wait_overflows();
        let start_ns = monotonic_ns();
        let cpu_before = thread_cpu_ns();
        let dumper = if full {
            &mut self.full
        } else {
            &mut self.frequent
        };
        let result = dumper.dump_into(&mut self.buf).map_err(anyhow::Error::from);
        let cpu_ns = thread_cpu_ns().saturating_sub(cpu_before);
        let overflow_after = crate::diag::netstat::time_wait_overflows();
        (
            self,
            DumpOutcome {
                start_ns,
                cpu_ns,
                full,
                overflow_before,
                overflow_after,
                result,
            },
        )
    }
}

/// Run the agent until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> anyhow::Result<i32> {
    // One thread: the event loop, reconcile bookkeeping and the HTTP server
    // are all light; dumps run on the blocking pool. Fewer threads, fewer
    // cross-thread wake-ups on a busy host.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(settings))
}

async fn run_async(settings: Settings) -> anyhow::Result<i32> {
    let listener = http::bind(settings.listen).await?;
    let (probes, ring) = Probes::load(settings.ring_bytes, true)?;
    let mut ingest =
        Ingest::new(ring, Some(crate::bpf::DRAIN_INTERVAL)).context("polling the ring buffer")?;
    let mut kit = Some(DumpKit::open()?);
    let started_ns = monotonic_ns();
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::new(engine::Config {
        max_sockets: settings.max_sockets,
        retention_ns: settings.closed_retention.as_nanos() as u64,
        ..engine::Config::default()
    });
    let shared = Arc::new(Shared {
        core: Mutex::new(Core {
            engine,
            dwell: dwell::Dwell::new(),
            listening: HashSet::new(),
            detector: crate::leaks::Detector::new(crate::leaks::Thresholds::from_settings(
                &settings,
            )),
        }),
        metrics: metrics.clone(),
        settings: settings.clone(),
        started_ns,
        attached: AtomicBool::new(true),
        heartbeat_ns: AtomicU64::new(started_ns),
        last_event_ns: AtomicU64::new(0),
        last_reconcile_ns: AtomicU64::new(0),
        netns: own_netns(),
        tw_overflow_pending: AtomicU64::new(0),
    });

    // Adopt what exists: the programs are attached, so nothing born from
    // here on is missed; events for adopted sockets simply update them.
    let (k, first) = kit.take().map(|k| k.dump(true)).context("sock_diag")?;
    first
        .result
        .context("listing existing TCP sockets with sock_diag")?;
    let mut overflow_baseline = first.overflow_before;
    let mut paces = Paces::new(&settings);
    paces.done(&metrics, true, first.start_ns, first.cpu_ns);
    let adopted = {
        let mut core = shared.lock();
        let n = core.engine.adopt(&k.buf, first.start_ns);
        core.listening = listening_ports(&k.buf);
        shared.publish(&core);
        n
    };
    kit = Some(k);
    eprintln!(
        "tracer: agent running: {adopted} existing sockets adopted; serving http://{}/metrics",
        settings.listen
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let app = http::router(Arc::new(api::AgentApi(shared.clone())), metrics.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(http::serve(listener, app, async move {
            let _ = rx.changed().await;
        }))
    };

    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut tick = tokio::time::interval(settings.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<DumpJob> = None;
    // Kernel-side losses when the last dump started: more since then means
    // the engine may be wrong, and the next tick dumps whatever the budget.
    let mut lost_at_dump = probes.counters().lost();
    let mut lost_seen = 0u64;
    let mut undecodable_seen = 0u64;

    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            r = apply_batch(&mut ingest, &shared) => { r.context("reading the ring buffer")?; }
            _ = tick.tick(), if pending.is_none() => {
                let lost = probes.counters().lost();
                if let Some(full) = paces.next(monotonic_ns(), lost > lost_at_dump) {
                    lost_at_dump = lost;
                    // Dump on a blocking thread; events keep flowing meanwhile.
                    let k = match kit.take() {
                        Some(k) => k,
                        None => DumpKit::open()?,
                    };
                    pending = Some(tokio::task::spawn_blocking(move || k.dump(full)));
                } else {
                    // No dump this tick: still end the TIME_WAIT stays
                    // whose 60 s are up, as a reconcile would.
                    advance_clock(&shared);
                }
            }
            joined = async { pending.as_mut().expect("guarded by the if").await }, if pending.is_some() => {
                pending = None;
                let (k, out) = joined.context("sock_diag dump task")?;
                match out.result {
                    Ok(()) => {
                        let engine_ns = reconcile(&mut ingest, &shared, &k.buf, out.start_ns, out.full);
                        paces.done(&metrics, out.full, out.start_ns, out.cpu_ns + engine_ns);
                        if out.full {
                            overflow_baseline = out.overflow_before;
                        }
                    }
                    Err(e) => {
                        // Try again at the next interval, not the next tick.
                        paces.done(&metrics, out.full, out.start_ns, out.cpu_ns);
                        metrics.reconcile_errors.inc();
                        eprintln!("tracer: reconcile skipped: {e:#}");
                    }
                }
                kit = Some(k);
                // Closes since the last full dump that the kernel could not
                // give a timewait socket: the engine still counts them as
                // (unconfirmed) TIME_WAIT until the next full dump.
                let pending_overflow = match (overflow_baseline, out.overflow_after) {
                    (Some(b), Some(a)) => a.saturating_sub(b),
                    _ => 0,
                };
                shared.tw_overflow_pending.store(pending_overflow, Ordering::Relaxed);
                let k = probes.counters();
                metrics.events_lost.inc_by(k.lost().saturating_sub(lost_seen));
                lost_seen = lost_seen.max(k.lost());
                metrics.events_undecodable.inc_by(ingest.decode_errors.saturating_sub(undecodable_seen));
                undecodable_seen = undecodable_seen.max(ingest.decode_errors);
            }
        }
        shared.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
    }

    eprintln!("tracer: stopping");
    shared.attached.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    drop(probes);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => return Err(e).context("HTTP server task"),
        Err(_) => eprintln!("tracer: HTTP server did not stop within 5 s"),
    }
    Ok(0)
}

/// The schedules of both kinds of dump.
struct Paces {
    /// Every state but TIME_WAIT, every `--reconcile-interval`.
    live: Pace,
    /// Everything, every `--time-wait-interval`.
    full: Pace,
}

impl Paces {
    fn new(s: &Settings) -> Paces {
        Paces {
            live: Pace::new(s.reconcile_interval, s.reconcile_budget),
            full: Pace::new(s.time_wait_interval, s.reconcile_budget),
        }
    }

    /// What to dump at `now_ns`: `Some(true)` for a full dump, `Some(false)`
    /// for a live one, `None` for nothing yet. `lost`: events were lost
    /// since the last dump, so one is due regardless of the budget.
    fn next(&self, now_ns: u64, lost: bool) -> Option<bool> {
        if self.full.due(now_ns) {
            Some(true)
        } else if lost || self.live.due(now_ns) {
            Some(false)
        } else {
            None
        }
    }

    /// Account for a dump and schedule the next one of its kind. A full
    /// dump also covers a live one.
    fn done(&mut self, metrics: &Metrics, full: bool, start_ns: u64, cpu_ns: u64) {
        let (pace, m) = if full {
            self.live.covered(start_ns);
            (&mut self.full, &metrics.dumps[1])
        } else {
            (&mut self.live, &metrics.dumps[0])
        };
        pace.done(start_ns, cpu_ns);
        m.count.inc();
        m.cpu_seconds.inc_by(cpu_ns as f64 / 1e9);
        m.interval_seconds.set(pace.interval().as_secs_f64());
    }
}

/// Wait for events, then apply everything ready under one lock.
async fn apply_batch(ingest: &mut Ingest, shared: &Shared) -> std::io::Result<()> {
    // Collect first (the ring buffer wakes us), then lock once per batch.
    let mut core = None;
    let metrics = &*shared.metrics;
    let n = ingest
        .next_batch(|ev| {
            metrics.event(ev.kind);
            if !in_netns(ev, shared.netns) {
                metrics.events_other_netns.inc();
                return;
            }
            let core = core.get_or_insert_with(|| shared.lock());
            let Core { engine, dwell, .. } = &mut **core;
            engine.apply(ev, &mut Obs { metrics, dwell });
        })
        .await?;
    if n > 0 {
        shared
            .last_event_ns
            .store(monotonic_ns(), Ordering::Relaxed);
    }
    if let Some(core) = core {
        shared.publish(&core);
    }
    Ok(())
}

/// End what is due at the current time, with no event or dump to carry it.
fn advance_clock(shared: &Shared) {
    let metrics = &*shared.metrics;
    let mut core = shared.lock();
    let Core { engine, dwell, .. } = &mut *core;
    engine.expire(monotonic_ns(), &mut Obs { metrics, dwell });
    shared.publish(&core);
}

/// Apply events older than the dump, then reconcile with it. `full`: the
/// dump includes TIME_WAIT sockets. Returns the CPU time the engine's
/// reconcile took: with the dump, what grows with the host's socket count
/// (owner lookups for new leak flags are one-offs, and not counted).
fn reconcile(
    ingest: &mut Ingest,
    shared: &Shared,
    dump: &[DiagSocket],
    start_ns: u64,
    full: bool,
) -> u64 {
    let metrics = &*shared.metrics;
    let mut core = shared.lock();
    let Core {
        engine,
        dwell,
        listening,
        detector,
    } = &mut *core;
    ingest.drain_now(|ev| {
        metrics.event(ev.kind);
        if in_netns(ev, shared.netns) {
            engine.apply(ev, &mut Obs { metrics, dwell });
        } else {
            metrics.events_other_netns.inc();
        }
    });
    let cpu_before = thread_cpu_ns();
    engine.reconcile(dump, start_ns, full, &mut Obs { metrics, dwell });
    let engine_ns = thread_cpu_ns().saturating_sub(cpu_before);
    let engine_ref = &*engine;
    let changes = detector.update(
        dump,
        start_ns,
        |cookie, st| engine_ref.state_since(cookie, st),
        crate::diag::owner::owners_of,
    );
    for c in &changes {
        if let crate::leaks::Change::Raised(f) = c {
            metrics.leak_flagged(f.kind);
        }
        // The agent's log: one JSON object per line, the same objects
        // `tracer events` prints.
        let mut line = Vec::with_capacity(512);
        if crate::export::stream::write_leak(&mut line, c, start_ns).is_ok() {
            eprint!("{}", String::from_utf8_lossy(&line));
        }
    }
    metrics.set_leaks(&detector.gauges());
    *listening = listening_ports(dump);
    let mut per_port: Vec<(Option<u16>, u64)> = Vec::new();
    engine.time_wait_by_local_port(|port, n| {
        per_port.push((listening.contains(&port).then_some(port), n));
    });
    metrics.set_time_wait_by_port(per_port.into_iter());
    shared.publish(&core);
    shared
        .last_reconcile_ns
        .store(monotonic_ns(), Ordering::Relaxed);
    engine_ns
}

fn listening_ports(dump: &[DiagSocket]) -> HashSet<u16> {
    dump.iter()
        .filter(|d| d.state == TcpState::Listen)
        .map(|d| d.sport)
        .collect()
}
