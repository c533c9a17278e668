//! The pipeline's steps, each a function that both the live event loop
//! ([`super::run`]) and a replay ([`super::replay`]) call: a batch of
//! events applied under one lock ([`Batch`]), a first dump adopted
//! ([`adopt`]), a dump reconciled with the detectors run ([`reconcile`]),
//! due TIME_WAIT stays ended ([`expire`]).
use std::{collections::HashSet, sync::MutexGuard};

use super::{
    Core, Dump, NetnsScope, SharedCore,
    clock::thread_cpu_ns,
    sink::Sink,
    tally::{EventNetns, note_event_netns},
};
use crate::{
    container::ContainerMap,
    engine::{Engine, Listing, Observer},
    event::SockEvent,
    ingest::Ingest,
    leaks::{Change, Coverage, Detector},
    snapshot::{OwnerScan, SocketSnapshot},
};

/// Give the engine each namespace's `tcp_max_tw_buckets` from a full dump,
/// and forget those of vanished namespaces.
pub(super) fn set_time_wait_limits(engine: &mut Engine, dump: &Dump) {
    for &(netns, limit) in &dump.tw_limits {
        engine.set_time_wait_limit(netns, limit);
    }
    engine.forget_time_wait_limits(&dump.gone);
}

/// Adopt the sockets of a first dump into the engine, keeping the kernel's
/// lanes from filling meanwhile (a replay has no `ingest`): the events
/// spilled are handed out after it, as they came after the dump began.
/// Then run the detectors on it, as a reconcile does, naming the owners of
/// new flags with `owners`: leaks older than the agent are flagged from
/// its first answer, not one reconcile interval later. Returns how many
/// sockets were adopted.
pub(super) fn adopt<D: Observer, S: Sink<Derived = D>>(
    mut ingest: Option<&mut Ingest>,
    core: &SharedCore<D>,
    scope: NetnsScope,
    sockets: &[SocketSnapshot],
    dump: &Dump,
    sink: &mut S,
    owners: impl FnOnce(&HashSet<u64>) -> OwnerScan,
) -> usize {
    let mut core = core.lock();
    let Core {
        engine,
        detector,
        derived,
        containers,
    } = &mut *core;
    set_time_wait_limits(engine, dump);
    if let Some(ingest) = ingest.as_deref_mut() {
        drain_locked(
            ingest,
            Some(dump.fresh_walk_ns),
            scope,
            engine,
            derived,
            sink,
        );
    }
    let n = engine.adopt_within(sockets, dump.start_ns, || spill(&mut ingest));
    let changes = detect(
        detector,
        containers,
        engine,
        sockets,
        Coverage::All,
        dump.start_ns,
        owners,
    );
    spill(&mut ingest);
    core.derived.flush();
    sink.reconciled(&mut core, sockets, &changes, dump.start_ns);
    n
}

/// Run the detectors on a dump taken at `start_ns` (`coverage`: the
/// sockets it judges), naming the owners of new flags with `owners`, and
/// give each flag without a container the one its namespace and owners
/// name. Returns the flags raised and cleared.
fn detect(
    detector: &mut Detector,
    containers: &ContainerMap,
    engine: &Engine,
    sockets: &[SocketSnapshot],
    coverage: Coverage<'_>,
    start_ns: u64,
    owners: impl FnOnce(&HashSet<u64>) -> OwnerScan,
) -> Vec<Change> {
    let mut changes = detector.update_within(
        sockets,
        coverage,
        start_ns,
        |cookie, st| engine.state_since(cookie, st),
        owners,
    );
    detector.say_how_gone_by(&mut changes, start_ns, engine);
    // Flags keep the container they were raised in, even once it is gone.
    let changed = changes.iter_mut().map(|c| match c {
        Change::Raised(f) | Change::Cleared(f) => f,
    });
    // A flag in a namespace no container holds is named by its owner's
    // cgroup (a container on the host's network) once, when raised.
    let mut namer = containers.namer();
    for f in detector.active_mut().chain(changed) {
        let look = containers.get(f.netns).is_some() || f.raised_at_ns == start_ns;
        if f.container.is_none() && look {
            f.container = namer.owning(f.netns, f.owners.iter().map(|o| o.pid));
        }
    }
    changes
}

/// Move the events ready in the lanes into memory during long work on the
/// event loop ([`Ingest::spill`]); a replay has no `ingest`.
fn spill(ingest: &mut Option<&mut Ingest>) {
    if let Some(ingest) = ingest.as_deref_mut() {
        ingest.spill();
    }
}

/// Hand a changed container map to the core and the sink, before the
/// dump's sockets are reconciled (so new leak flags name their container).
pub(super) fn new_containers<D, S: Sink<Derived = D>>(
    core: &SharedCore<D>,
    dump: &Dump,
    sink: &mut S,
) {
    let map = &dump.census.containers;
    let mut core = core.lock();
    if std::sync::Arc::ptr_eq(&core.containers, map) || *core.containers == **map {
        return;
    }
    core.containers = map.clone();
    drop(core);
    sink.containers(map);
}

/// How many events a [`Batch`] holds back: the engine is asked for what
/// an event reads ([`Engine::prefetch`]) this many events
/// before it applies it, enough to cover a miss to memory at this
/// project's cost per event.
const AHEAD: usize = 8;

/// One batch of events on its way into the engine: the lock is taken at
/// the first event in scope and held until [`Batch::finish`]. The live
/// loop feeds it from the ring buffer, a replay from a recording. Each
/// event is applied (and handed to the sink) [`AHEAD`] events after it
/// came, in the order they came; `finish` applies the rest.
pub(super) struct Batch<'a, D, S> {
    to: Applier<'a, D, S>,
    /// Events held back, the one `taken` names next to go. Applied where
    /// they are: an event moved out first went through the stack twice.
    held: [Option<SockEvent>; AHEAD],
    taken: usize,
}

/// Where a [`Batch`] applies its events.
struct Applier<'a, D, S> {
    core: &'a SharedCore<D>,
    guard: Option<MutexGuard<'a, Core<D>>>,
    scope: NetnsScope,
    tracking: bool,
    /// Namespaces seen in events, when every namespace is followed.
    seen: Option<&'a mut EventNetns>,
    last_netns: u32,
    sink: &'a mut S,
}

impl<'a, D: Observer, S: Sink<Derived = D>> Batch<'a, D, S> {
    /// A batch into `core`; `tracking`: the engine follows events (not
    /// streaming only).
    pub(super) fn new(
        core: &'a SharedCore<D>,
        scope: NetnsScope,
        tracking: bool,
        seen: Option<&'a mut EventNetns>,
        sink: &'a mut S,
    ) -> Self {
        Batch {
            to: Applier {
                core,
                guard: None,
                scope,
                tracking,
                seen,
                last_netns: 0,
                sink,
            },
            held: [None; AHEAD],
            taken: 0,
        }
    }

    /// One event: ask the engine for what it reads, and apply the one
    /// held back longest.
    pub(super) fn event(&mut self, ev: &SockEvent) {
        let to = &mut self.to;
        if to.tracking && to.scope.contains(ev) {
            let core = to.guard.get_or_insert_with(|| to.core.lock());
            core.engine.prefetch(ev);
        }
        let slot = &mut self.held[self.taken % AHEAD];
        self.taken = self.taken.wrapping_add(1);
        if let Some(old) = slot {
            to.apply(old);
        }
        *slot = Some(*ev);
    }

    /// Apply the events still held back, in order.
    fn apply_held(&mut self) {
        for i in 0..AHEAD {
            let at = self.taken.wrapping_add(i) % AHEAD;
            if let Some(ev) = &self.held[at] {
                self.to.apply(ev);
            }
            self.held[at] = None;
        }
    }

    /// The batch of `read` records is applied: show what the observers
    /// counted, tell the sink, let go of the lock.
    pub(super) fn finish(mut self, read: usize) {
        self.apply_held();
        let to = &mut self.to;
        if let Some(core) = to.guard.as_deref_mut() {
            core.derived.flush();
        }
        to.sink.batch(read, to.guard.as_deref());
    }
}

impl<D: Observer, S: Sink<Derived = D>> Applier<'_, D, S> {
    /// Note the namespace of `ev`, apply it when in scope, tell the sink.
    fn apply(&mut self, ev: &SockEvent) {
        if let Some(seen) = self.seen.as_deref_mut()
            && ev.netns != self.last_netns
            && ev.netns != 0
        {
            self.last_netns = ev.netns;
            note_event_netns(seen, ev.netns, ev.ts_ns);
        }
        let in_scope = self.scope.contains(ev);
        if in_scope && self.tracking {
            let core = self.guard.get_or_insert_with(|| self.core.lock());
            let Core {
                engine, derived, ..
            } = &mut **core;
            engine.apply(ev, derived);
        }
        self.sink.event(ev, in_scope);
    }
}

/// Apply the events `ingest` holds that were stamped before `horizon_ns`,
/// as one [`Batch`]: what the engine must have seen before it ends the
/// stays due by then ([`expire`]).
///
/// Why first: at `tcp_max_tw_buckets`, whether a close leaves a TIME_WAIT
/// depends on how many the namespace holds when it closes. The kernel
/// ends a bucket of its timer wheel at one tick (tens of thousands at
/// once under churn); a close stamped before that tick but applied after
/// the engine ended the bucket would find room the kernel did not have,
/// and count a TIME_WAIT it refused. Events read in order end each tick's
/// stays in order ([`Engine::apply`]).
pub(super) fn catch_up<D: Observer, S: Sink<Derived = D>>(
    ingest: &mut Ingest,
    horizon_ns: u64,
    mut batch: Batch<'_, D, S>,
) {
    let n = ingest.drain_before(horizon_ns, |ev| batch.event(ev));
    batch.finish(n);
}

/// Apply the events ready in `ingest` (those in scope), or those stamped
/// before `before` (monotonic ns), to an engine whose core the caller
/// holds locked, telling the sink of each: for work that needs the engine
/// as of now, or as of a walk's start, before it goes on under the same
/// lock (an adoption, a reconcile, a namespace's end). A [`Batch`] takes
/// the lock itself.
pub(super) fn drain_locked<D: Observer, S: Sink<Derived = D>>(
    ingest: &mut Ingest,
    before: Option<u64>,
    scope: NetnsScope,
    engine: &mut Engine,
    derived: &mut D,
    sink: &mut S,
) {
    let apply = |ev: &SockEvent| {
        let in_scope = scope.contains(ev);
        if in_scope {
            engine.apply(ev, derived);
        }
        sink.event(ev, in_scope);
    };
    match before {
        Some(horizon) => ingest.drain_before(horizon, apply),
        None => ingest.drain_now(apply),
    };
}

/// End the TIME_WAIT stays the kernel has ended by `now_ns`, and drop
/// finished records past their retention.
pub(super) fn expire<D: Observer, S: Sink<Derived = D>>(
    core: &SharedCore<D>,
    now_ns: u64,
    sink: &mut S,
) {
    let mut core = core.lock();
    let Core {
        engine, derived, ..
    } = &mut *core;
    engine.expire(now_ns, derived);
    derived.flush();
    sink.advanced(&core);
}

/// What [`reconcile`] did.
pub(super) struct Reconciled {
    /// CPU time the engine took: with the dump's, what grows with the
    /// host's socket count (owner lookups for new leak flags are one-offs,
    /// and not counted).
    pub engine_ns: u64,
    /// Sockets ended with their namespace.
    pub ended: u64,
    /// Open sockets the dump did not list, for the first time: the next
    /// dump closes them if it does not list them either.
    pub absent_once: u64,
}

/// Adopt the namespaces the dump covers for the first time, apply the
/// events older than the dump (those still in `ingest`; a replay has
/// applied them already), reconcile the namespaces it covered before, end
/// the sockets of vanished ones, run the detectors, which name the owners
/// of new flags with `owners` (the `/proc` scan, live).
///
/// A namespace dumped for the first time is adopted before the events are
/// applied, as at start ([`adopt`]): its sockets' events then find them. A
/// reset received by one of them marks it, a new connection that takes
/// over the tuple of one in TIME_WAIT ends that stay, and its closes are
/// judged against its `tcp_max_tw_buckets`, none of which an event for a
/// socket not adopted yet can do.
pub(super) fn reconcile<D: Observer, S: Sink<Derived = D>>(
    ingest: Option<&mut Ingest>,
    core: &SharedCore<D>,
    scope: NetnsScope,
    sink: &mut S,
    sockets: &[SocketSnapshot],
    dump: &Dump,
    owners: impl FnOnce(&HashSet<u64>) -> OwnerScan,
) -> Reconciled {
    let mut guard = core.lock();
    let Core {
        engine,
        detector,
        derived,
        containers,
    } = &mut *guard;
    let mut ingest = ingest;
    let (old, fresh) = sockets.split_at(dump.fresh_from.min(sockets.len()));
    let cpu_before = thread_cpu_ns();
    set_time_wait_limits(engine, dump);
    // A new namespace's sockets have a history before its walk (a pod
    // starts with its connections): their events first, or the snapshot
    // stands in for them, and a connection reads as adopted mid-life.
    if !fresh.is_empty()
        && let Some(ingest) = ingest.as_deref_mut()
    {
        drain_locked(
            ingest,
            Some(dump.fresh_walk_ns),
            scope,
            engine,
            derived,
            sink,
        );
    }
    // Adopting and reconciling hold the event loop for a while (a full
    // dump of a busy host: 100,000s of sockets, and the forecasts over
    // every record): keep the kernel's lanes from filling meanwhile.
    engine.adopt_within(fresh, dump.start_ns, || spill(&mut ingest));
    let adopt_ns = thread_cpu_ns().saturating_sub(cpu_before);
    if let Some(ingest) = ingest.as_deref_mut() {
        drain_locked(ingest, None, scope, engine, derived, sink);
    }
    let mut pause = || spill(&mut ingest);
    let cpu_before = thread_cpu_ns();
    let covered = &dump.covered;
    let own_covered = covered.binary_search(&scope.own_inode()).is_ok();
    let report = engine.reconcile_within(
        old,
        dump.start_ns,
        match (dump.full, &dump.looked_up) {
            (true, _) => Listing::Full,
            (false, None) => Listing::Live,
            (false, Some(_)) => Listing::LookedUp,
        },
        |n| covered.binary_search(&n).is_ok() || (n == 0 && own_covered),
        derived,
        &mut pause,
    );
    let ended = engine.end_netns(&dump.gone, dump.start_ns, derived);
    let engine_ns = adopt_ns + thread_cpu_ns().saturating_sub(cpu_before);
    let engine = &*engine;
    let coverage = match &dump.looked_up {
        Some(cookies) => Coverage::Only(cookies),
        None => Coverage::All,
    };
    let changes = detect(
        detector,
        containers,
        engine,
        sockets,
        coverage,
        dump.start_ns,
        owners,
    );
    pause();
    guard.derived.flush();
    sink.reconciled(&mut guard, sockets, &changes, dump.start_ns);
    Reconciled {
        engine_ns,
        ended,
        absent_once: report.absent_once,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{
        engine::{Config, Engine},
        leaks::{Detector, Thresholds},
        tcp::TcpState,
    };

    /// What the sink was told, in order: each event's cookie and scope.
    #[derive(Default)]
    struct Told(Vec<(u64, bool)>);

    impl Sink for Told {
        type Derived = ();

        fn event(&mut self, ev: &SockEvent, in_scope: bool) {
            self.0.push((ev.cookie, in_scope));
        }
    }

    /// A connect of `cookie` in namespace `netns`, stamped `cookie` ns.
    fn connect(cookie: u64, netns: u32) -> SockEvent {
        SockEvent {
            ts_ns: cookie,
            sport: 0,
            old_state: Some(TcpState::Close),
            new_state: Some(TcpState::SynSent),
            netns,
            ..crate::testkit::event(cookie)
        }
    }

    #[test]
    fn a_batch_applies_and_tells_every_event_in_order_however_many_it_holds_back() {
        for n in [0, 1, AHEAD - 1, AHEAD, AHEAD + 1, 3 * AHEAD + 5] {
            let core = SharedCore(Mutex::new(Core {
                engine: Engine::new(Config::default()),
                detector: Detector::new(Thresholds::default()),
                derived: (),
                containers: Arc::default(),
            }));
            let mut told = Told::default();
            // Every third event is in another namespace: told, not applied.
            let scope = NetnsScope::One {
                inode: 7,
                own: false,
            };
            let netns = |c: u64| if c.is_multiple_of(3) { 8 } else { 7 };
            let mut batch = Batch::new(&core, scope, true, None, &mut told);
            for c in 1..=n as u64 {
                batch.event(&connect(c, netns(c)));
            }
            batch.finish(n);
            let want: Vec<(u64, bool)> = (1..=n as u64).map(|c| (c, netns(c) == 7)).collect();
            assert_eq!(told.0, want, "{n} events");
            let core = core.lock();
            let applied = want.iter().filter(|(_, in_scope)| *in_scope).count();
            assert_eq!(core.engine.stats().events, applied as u64, "{n} events");
            for (c, in_scope) in want {
                assert_eq!(core.engine.get(c).is_some(), in_scope, "cookie {c}");
            }
        }
    }

    /// At `tcp_max_tw_buckets`, a close stamped just before the tick that
    /// ends a TIME_WAIT stay found the namespace full: the kernel left no
    /// TIME_WAIT. Read before the stays are ended, it overflows; applied
    /// after them (the order before `catch_up`), it finds the room the
    /// tick made and counts a TIME_WAIT the kernel refused.
    #[test]
    fn a_close_before_a_tick_is_applied_before_the_tick_ends_its_stays() {
        use tracer_common::{ABI_VERSION, Event, FAMILY_INET, KIND_STATE};

        use crate::{
            bpf::{Stream, lanes::Lanes},
            engine::{TCP_TIMEWAIT_LEN_NS, TIME_WAIT_SLACK_NS},
        };

        const NS: u32 = 4_026_531_840;
        let scope = NetnsScope::One {
            inode: NS,
            own: false,
        };
        for caught_up in [true, false] {
            let mut engine = Engine::new(Config::default());
            engine.set_time_wait_limit(NS, 1);
            // The first close takes the namespace's one TIME_WAIT.
            let first = SockEvent {
                ts_ns: 1_000_000_000,
                old_state: Some(TcpState::FinWait2),
                new_state: Some(TcpState::Close),
                netns: NS,
                ..crate::testkit::event(1)
            };
            engine.apply(&first, &mut ());
            // Without the kernel's timer wheel known, an inferred stay ends
            // 60 s after its close, plus the slack a full dump has to
            // confirm it.
            let tick = first.ts_ns + TCP_TIMEWAIT_LEN_NS + TIME_WAIT_SLACK_NS;
            let core = SharedCore(Mutex::new(Core {
                engine,
                detector: Detector::new(Thresholds::default()),
                derived: (),
                containers: Arc::default(),
            }));
            // The second closes a microsecond before the tick, still in
            // the lanes when the event loop wakes for it.
            let mut lanes = Lanes::owned(&[16]);
            let second = Event {
                kind: KIND_STATE,
                version: ABI_VERSION,
                family: FAMILY_INET,
                old_state: 5,
                new_state: 7,
                ts_ns: tick - 1_000,
                cookie: 2,
                sport: 40_002,
                dport: 80,
                netns: NS,
                ..Event::ZERO
            };
            assert!(lanes.write(0, second, true));
            let mut ingest = Ingest::new(Stream {
                events: lanes,
                logs: None,
            });
            let mut told = Told::default();
            let at = tick + 2_000_000;
            let read = |ingest: &mut Ingest, told: &mut Told| {
                catch_up(ingest, at, Batch::new(&core, scope, true, None, told));
            };
            if caught_up {
                read(&mut ingest, &mut told);
                expire(&core, at, &mut told);
            } else {
                expire(&core, at, &mut told);
                read(&mut ingest, &mut told);
            }
            assert_eq!(told.0, vec![(2, true)], "the second close was read");
            let core = core.lock();
            let e = &core.engine;
            assert!(
                !e.get(1).expect("first").in_time_wait(),
                "its timer ended it"
            );
            let second = e.get(2).expect("second");
            if caught_up {
                assert!(!second.in_time_wait(), "the namespace was full");
                assert_eq!(e.stats().time_wait_overflows, 1);
                assert_eq!(e.counts_by_state()[TcpState::TimeWait.index()], 0);
            } else {
                assert!(second.in_time_wait(), "the room of the tick, too early");
            }
        }
    }

    /// Reconcile a dump (`full` or not) that walked namespace `ns` for the
    /// first time, started at `start_ns` with that walk at `fresh_walk_ns`,
    /// listing `sockets`, while `events` wait in the lanes: the core after,
    /// and the events the sink was told of.
    fn reconcile_first_dump(
        scope: NetnsScope,
        ns: u32,
        (start_ns, fresh_walk_ns, full): (u64, u64, bool),
        sockets: &[SocketSnapshot],
        events: &[tracer_common::Event],
    ) -> (SharedCore<()>, Told) {
        use crate::{
            bpf::{Stream, lanes::Lanes},
            pipeline::dumps::Dump,
        };

        let core = SharedCore(Mutex::new(Core {
            engine: Engine::new(Config::default()),
            detector: Detector::new(Thresholds::default()),
            derived: (),
            containers: Arc::default(),
        }));
        let dump = Dump {
            start_ns,
            cpu_ns: 0,
            full,
            looked_up: None,
            survey: false,
            unadopted: false,
            tw_limits: Vec::new(),
            port_settings: Vec::new(),
            result: Ok(()),
            covered: Vec::new(),
            fresh_from: 0,
            fresh: vec![ns],
            fresh_walk_ns,
            gone: Vec::new(),
            datagrams: Vec::new(),
            census: Default::default(),
        };
        let mut lanes = Lanes::owned(&[16]);
        for &ev in events {
            assert!(lanes.write(0, ev, true));
        }
        let mut ingest = Ingest::new(Stream {
            events: lanes,
            logs: None,
        });
        let mut told = Told::default();
        reconcile(
            Some(&mut ingest),
            &core,
            scope,
            &mut told,
            sockets,
            &dump,
            |_| OwnerScan::default(),
        );
        (core, told)
    }

    /// A namespace made with its sockets (a pod that starts with its
    /// connections): their events, stamped before the first walk of the
    /// namespace began, still wait in the lanes when that dump is
    /// reconciled. Applied first, they make the socket's whole life; the
    /// snapshot adopted before them would have stood in for it (a path of
    /// its state alone, the handshake unseen).
    #[test]
    fn a_new_namespaces_sockets_keep_the_history_before_its_walk() {
        use tracer_common::{ABI_VERSION, Event, FAMILY_INET, KIND_STATE};

        use crate::testkit::{SnapshotBuilder, snapshot};

        const NS: u32 = 4_026_531_843;
        let start_ns = 10_000_000_000;
        // The dump walked the namespaces it knew first: the new one's walk
        // began 5 ms after the dump did.
        let fresh_walk_ns = start_ns + 5_000_000;
        // listen -> syn_recv -> established -> close_wait, the last 1 ms
        // before the walk (after the dump's start).
        let events: Vec<Event> = [(10, 3), (3, 1), (1, 8)]
            .into_iter()
            .enumerate()
            .map(|(i, (from, to))| Event {
                kind: KIND_STATE,
                version: ABI_VERSION,
                family: FAMILY_INET,
                old_state: from,
                new_state: to,
                ts_ns: fresh_walk_ns - 3_000_000 + i as u64 * 1_000_000,
                cookie: 5,
                sport: 8080,
                dport: 40_000,
                netns: NS,
                ..Event::ZERO
            })
            .collect();
        let (core, told) = reconcile_first_dump(
            NetnsScope::All { own: 1 },
            NS,
            (start_ns, fresh_walk_ns, false),
            &[snapshot(5, TcpState::CloseWait).netns(NS)],
            &events,
        );
        assert_eq!(told.0, vec![(5, true); 3], "every event was read");
        let core = core.lock();
        let r = core.engine.get(5).expect("followed");
        let path: Vec<TcpState> = r.path().collect();
        assert_eq!(
            path,
            [
                TcpState::Listen,
                TcpState::SynRecv,
                TcpState::Established,
                TcpState::CloseWait
            ]
        );
        assert_eq!(
            core.engine.state_since(5, TcpState::CloseWait),
            Some((fresh_walk_ns - 1_000_000, false)),
            "its CLOSE_WAIT is dated by its event, exactly"
        );
    }

    /// A reconcile's first dump of a namespace listed a TIME_WAIT socket;
    /// while it ran, a new connection took over that socket's tuple (the
    /// kernel ended the TIME_WAIT). Adopted after the events, the stay
    /// would come back and hold the gauge one too high for up to a minute.
    #[test]
    fn a_namespace_dumped_first_by_a_reconcile_is_adopted_before_its_events() {
        use std::net::IpAddr;

        use tracer_common::{ABI_VERSION, Event, FAMILY_INET, KIND_STATE};

        use crate::testkit::{LOCAL, REMOTE, REMOTE_PORT, SnapshotBuilder, local_port, snapshot};

        const NS: u32 = 4_026_531_841;
        let start_ns = 10_000_000_000;
        let (IpAddr::V4(local), IpAddr::V4(remote)) = (LOCAL, REMOTE) else {
            unreachable!("the kit's addresses are IPv4")
        };
        let mut taking_over = Event {
            kind: KIND_STATE,
            version: ABI_VERSION,
            family: FAMILY_INET,
            old_state: 7,
            new_state: 2,
            ts_ns: start_ns + 1_000_000,
            cookie: 6,
            sport: local_port(5),
            dport: REMOTE_PORT,
            netns: NS,
            ..Event::ZERO
        };
        taking_over.saddr[..4].copy_from_slice(&local.octets());
        taking_over.daddr[..4].copy_from_slice(&remote.octets());
        let (core, told) = reconcile_first_dump(
            NetnsScope::One {
                inode: NS,
                own: false,
            },
            NS,
            (start_ns, start_ns, true),
            &[snapshot(5, TcpState::TimeWait).timewait(30_000).netns(NS)],
            &[taking_over],
        );
        assert_eq!(told.0, vec![(6, true)], "the connect was read");
        let core = core.lock();
        let e = &core.engine;
        assert!(
            !e.get(5).is_some_and(|r| r.is_live()),
            "the TIME_WAIT its tuple's new connection ended stays ended"
        );
        assert_eq!(e.counts_by_state()[TcpState::TimeWait.index()], 0);
        assert_eq!(e.counts_by_state()[TcpState::SynSent.index()], 1);
    }
}
