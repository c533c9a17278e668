//! The pipeline's event loop: read batches of events into the engine,
//! start a dump when one is due, reconcile with it when it ends. Namespaces
//! dumped for the first time are adopted, vanished ones end their sockets,
//! and unreachable ones are reported once, in one sentence each.
use std::future::Future;

use anyhow::Context as _;

use super::{
    Core, Dump, NetnsScope, Pipeline, SharedCore, Tracking,
    clock::monotonic_ns,
    sink::{Dumped, Flow, Sink, Tallies},
    steps::{Batch, catch_up, drain_locked, expire, new_containers, reconcile},
    tally::{EventNetns, tally_netns},
};
use crate::{
    bpf::KernelCounters,
    diag::owners_of,
    engine::Observer,
    ingest::{HOLD_BACK, Ingest, horizon_ns},
};

/// Sleep until monotonic `at_ns`; forever when `None`.
async fn until(at_ns: Option<u64>) {
    match at_ns {
        None => std::future::pending().await,
        Some(at) => {
            let wait = at.saturating_sub(monotonic_ns());
            tokio::time::sleep(std::time::Duration::from_nanos(wait)).await;
        }
    }
}

/// What woke the dump side of the loop.
enum Step {
    Tick,
    Dumped(anyhow::Result<Box<Dump>>),
}

/// The next tick, or the end of the dump in progress; never without tracking.
async fn next_step(tracking: Option<&mut Tracking>) -> Step {
    match tracking {
        None => std::future::pending().await,
        Some(t) if t.dumps.busy() => Step::Dumped(t.dumps.finished().await.map(Box::new)),
        Some(t) => {
            t.tick.tick().await;
            Step::Tick
        }
    }
}

/// How long the one namespace followed stays gone before tracer ends
/// ([`Pipeline::on_dump`]).
const SCOPE_GONE_FOR_NS: u64 = 3_000_000_000;

impl<D: Observer> Pipeline<D> {
    /// Run until `stop` completes, the sink says stop, or reading fails.
    /// SIGHUP does not stop it: settings are read only at start, so each
    /// one is logged and ignored.
    pub async fn run<S: Sink<Derived = D>>(
        &mut self,
        sink: &mut S,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tokio::pin!(stop);
        loop {
            let next_end = self.core.lock().engine.next_time_wait_end();
            let tracking = self.tracking.is_some();
            let seen = (tracking && self.scope.is_all()).then_some(&mut self.event_netns);
            tokio::select! {
                () = &mut stop => break,
                Some(()) = hangup.recv() => tracing::warn!(
                    event = "sighup_ignored",
                    "SIGHUP ignored: flags and the config file are read only at start; \
                     restart tracer to change them"
                ),
                () = read_batch(&mut self.ingest, &self.core, self.scope, tracking, seen, sink) => {}
                // Once every event stamped before the end is in (see
                // `expire`).
                () = until(next_end.map(|at| at + HOLD_BACK.as_nanos() as u64)) => {
                    self.expire(sink)
                }
                step = next_step(self.tracking.as_mut()) => match step {
                    Step::Tick => self.on_tick(sink)?,
                    Step::Dumped(dump) => self.on_dump(*dump?, sink)?,
                },
            }
            if sink.turn()? == Flow::Stop {
                break;
            }
        }
        // What the programs wrote before the stop, to the last event.
        let tracking = self.tracking.is_some();
        let seen = (tracking && self.scope.is_all()).then_some(&mut self.event_netns);
        let mut batch = Batch::new(&self.core, self.scope, tracking, seen, sink);
        let n = self.ingest.drain_all(|ev| batch.event(ev));
        batch.finish(n);
        sink.turn()?;
        Ok(())
    }

    /// A tick: start a dump when one is due, else end what is due now.
    fn on_tick<S: Sink<Derived = D>>(&mut self, sink: &mut S) -> anyhow::Result<()> {
        let Some(t) = self.tracking.as_mut() else {
            return Ok(());
        };
        // The loss counters go out every tick, not only with a dump: the
        // budget may space dumps tens of seconds apart, and a count that
        // late hides a loss that happened now.
        let counters = self.probes.counters();
        sink.tallied(&tallies(counters, &self.ingest));
        t.warned.skipped(counters.recursion_misses);
        let lost = counters.bursty();
        // Lost events or a namespace no dump has seen, or sockets the
        // dump that healed them did not list: dump whatever the budget
        // says.
        let healing = lost > t.lost_at_dump || t.unadopted;
        let urgent = healing || t.recheck;
        if let Some(full) = t.paces.next(monotonic_ns(), urgent) {
            t.lost_at_dump = lost;
            t.unadopted = false;
            t.healing = healing;
            t.recheck = false;
            // On a blocking thread; events keep flowing meanwhile. A live
            // dump looks the engine's sockets up instead of walking every
            // socket when a walk costs more than the budget allows every
            // interval (beside 131,072 TIME_WAIT sockets ~45 ms; a lookup
            // costs a few µs), unless it has to find sockets the engine
            // does not know (after lost events) or the lookups would cost
            // more than the walk (few sockets on a slow machine, where
            // each request is dear). A recording walks, as a replay
            // expects.
            let may_look_up = !full && !urgent && t.paces.may_look_up() && self.recorder.is_none();
            let mut lookups = Vec::new();
            let (synacks, look_up) = {
                // Not with handshakes in trouble, which only a walk lists:
                // request sockets (a SYN-ACK retransmitted since the last
                // walk, or a port flagged) and connects the engine knows
                // no port of.
                let core = self.core.lock();
                let synacks = core.engine.stats().synack_retransmits;
                let look_up = may_look_up
                    && synacks == t.synacks_at_walk
                    && !core.detector.judges_ports()
                    && core.engine.lookups(monotonic_ns(), &mut lookups);
                if look_up {
                    core.detector.lookups(&mut lookups);
                }
                (synacks, look_up)
            };
            if look_up && t.paces.look_up(lookups.len()) {
                t.dumps.look_up(lookups);
            } else {
                t.synacks_at_walk = synacks;
                t.dumps.start(full);
            }
            if let Some(r) = &self.recorder {
                r.dump_started(monotonic_ns(), full);
            }
        } else if self.scope.is_all() {
            // Namespaces come and go between dumps the budget spaces out:
            // look for them every interval (a /proc scan, no socket walk).
            t.dumps.survey();
            self.expire(sink);
        } else {
            // No dump this tick: still drop what retention says, as a
            // reconcile would.
            self.expire(sink);
        }
        Ok(())
    }

    /// End the TIME_WAIT stays the kernel has ended, and drop finished
    /// records past their retention: as of the last drain's horizon, once
    /// every event before it is applied ([`catch_up`] says why).
    fn expire<S: Sink<Derived = D>>(&mut self, sink: &mut S) {
        let at_ns = horizon_ns();
        let tracking = self.tracking.is_some();
        let seen = (tracking && self.scope.is_all()).then_some(&mut self.event_netns);
        let batch = Batch::new(&self.core, self.scope, tracking, seen, sink);
        catch_up(&mut self.ingest, at_ns, batch);
        if let Some(r) = &self.recorder {
            r.expired(at_ns);
        }
        expire(&self.core, at_ns, sink);
    }

    /// A dump ended: reconcile with it, account for it, refresh the
    /// tallies. Fails once the one namespace followed (`--netns` naming
    /// another than tracer's own) is gone: nothing is left to follow, and
    /// a supervisor that restarts tracer can point it at the namespace
    /// that replaced it (a restarted container's). Gone means a dump found
    /// it gone and every dump for [`SCOPE_GONE_FOR_NS`] after did not find
    /// it again: a look at `/proc` that missed it once (a process exiting
    /// as it was read) is not the end. Without `CAP_SYS_PTRACE` another
    /// user's processes may be unreadable for good, so a namespace only
    /// they hold would look gone: tracer then goes on.
    fn on_dump<S: Sink<Derived = D>>(&mut self, dump: Dump, sink: &mut S) -> anyhow::Result<()> {
        let lost = match (self.scope, self.tracking.as_mut()) {
            (NetnsScope::One { inode, own: false }, Some(t)) if inode != 0 => {
                if dump.gone.contains(&inode) {
                    t.scope_gone_at.get_or_insert(dump.start_ns);
                } else if dump.census.known.contains(&inode) {
                    t.scope_gone_at = None;
                }
                t.scope_gone_at
                    .filter(|&at| dump.start_ns.saturating_sub(at) >= SCOPE_GONE_FOR_NS)
                    .filter(|_| {
                        use crate::bpf::preflight::{CAP_SYS_PTRACE, has_effective};
                        has_effective(CAP_SYS_PTRACE)
                    })
                    .map(|_| inode)
            }
            _ => None,
        };
        self.reconcile_dump(dump, sink);
        match lost {
            Some(inode) => Err(anyhow::anyhow!(
                "the network namespace followed ({inode}) is gone: no process or /run/netns \
                 mount holds it any more, so nothing is left to follow; start tracer again with \
                 --netns for the namespace that replaced it"
            )),
            None => Ok(()),
        }
    }

    fn reconcile_dump<S: Sink<Derived = D>>(&mut self, dump: Dump, sink: &mut S) {
        let Some(t) = self.tracking.as_mut() else {
            return;
        };
        new_containers(&self.core, &dump, sink);
        if dump.survey {
            let ended = if dump.gone.is_empty() {
                0
            } else {
                let mut core = self.core.lock();
                let Core {
                    engine, derived, ..
                } = &mut *core;
                // The events of a namespace's last moments (its processes'
                // sockets closing) first: ended now, they cannot start
                // records again afterwards.
                drain_locked(&mut self.ingest, None, self.scope, engine, derived, sink);
                engine.forget_time_wait_limits(&dump.gone);
                let ended = engine.end_netns(&dump.gone, dump.start_ns, derived);
                derived.flush();
                ended
            };
            t.unadopted = dump.unadopted;
            tally_netns(t, &mut self.event_netns, &dump, ended, sink);
            return;
        }
        let (cpu_ns, ended) = match &dump.result {
            Ok(()) => {
                sink.port_settings(&dump.port_settings);
                let recorder = self.recorder.as_ref();
                let mut scanned = None;
                let done = reconcile(
                    Some(&mut self.ingest),
                    &self.core,
                    self.scope,
                    sink,
                    t.dumps.sockets(),
                    &dump,
                    |inodes| {
                        let scan = owners_of(inodes);
                        if recorder.is_some() {
                            scanned = Some(scan.clone());
                        }
                        scan
                    },
                );
                if let Some(r) = recorder {
                    r.dumped(false, &dump, scanned.as_ref());
                }
                t.recheck = t.healing && done.absent_once > 0;
                (dump.cpu_ns + done.engine_ns, done.ended)
            }
            // Try again at the next interval, not the next tick. Vanished
            // namespaces are gone all the same.
            Err(_) => {
                let mut core = self.core.lock();
                let Core {
                    engine, derived, ..
                } = &mut *core;
                let n = engine.end_netns(&dump.gone, dump.start_ns, derived);
                derived.flush();
                (dump.cpu_ns, n)
            }
        };
        let interval = match (&dump.result, &dump.looked_up) {
            (Ok(()), Some(cookies)) => t.paces.looked_up(cookies.len(), dump.start_ns, cpu_ns),
            (Ok(()), None) => t.paces.walked(dump.full, dump.start_ns, cpu_ns),
            (Err(_), _) => t.paces.done(dump.full, dump.start_ns, cpu_ns),
        };
        let configured = t.paces.configured(dump.full);
        t.warned
            .stretched(&dump.census, dump.full, interval, configured);
        sink.dumped(&Dumped {
            full: dump.full,
            cpu_ns,
            interval,
            looked_up: dump.looked_up.as_ref().map_or(0, Vec::len),
            error: dump.result.as_ref().err(),
        });
        sink.tallied(&tallies(self.probes.counters(), &self.ingest));
        tally_netns(t, &mut self.event_netns, &dump, ended, sink);
    }
}

/// The loss counts to publish: the kernel's `counters` and the records
/// `ingest` could not decode.
fn tallies(counters: KernelCounters, ingest: &Ingest) -> Tallies {
    Tallies {
        lost: counters.lost(),
        undecodable: ingest.decode_errors,
    }
}

/// Wait for events, then apply everything ready under one lock.
async fn read_batch<D: Observer, S: Sink<Derived = D>>(
    ingest: &mut Ingest,
    core: &SharedCore<D>,
    scope: NetnsScope,
    tracking: bool,
    seen: Option<&mut EventNetns>,
    sink: &mut S,
) {
    // The lock is taken at the first event in scope, once per batch.
    let mut batch = Batch::new(core, scope, tracking, seen, sink);
    let (n, asked) = ingest.next_batch(|ev| batch.event(ev)).await;
    batch.finish(n);
    if asked {
        ingest.drained();
    }
}
