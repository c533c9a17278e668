//! The agent's sink: metrics, the agent's log of leak flags, and the
//! health and freshness marks the HTTP API reports.
use std::sync::{Arc, atomic::Ordering};

use super::state::{AgentState, Shared};
use crate::{
    diag::DiagSocket,
    event::SockEvent,
    forecast::{
        self, FdForecast, Forecaster, Leaker, PortForecast, PortSettings, PortSettingsByNetns,
    },
    leaks::Change,
    pipeline::{Core, Dumped, Flow, NetnsTally, Sink, Tallies, clock::thread_cpu_ns, monotonic_ns},
};

/// After a port forecast that took T of CPU, the next waits at least this
/// many times T: the forecasts walk every record the engine holds (beside
/// 131,072 TIME_WAIT sockets and 100,000 finished ones, ~5 ms), and live
/// reconciles that look sockets up come every second. So they use at
/// most 0.05% of a core (at 100,000 events a second, 5 ns per event):
/// every ~10 s beside those sockets, every reconcile on a host with a few
/// thousand.
const PORT_FORECAST_SPACING: u64 = 2000;

/// How often the listening processes are looked at for a descriptor
/// limit reached: two small `/proc` reads each (under 30 µs), at most
/// [`forecast::MAX_LISTENERS`] of them, so under 0.05% of a core.
const LISTENING_SPACING_NS: u64 = 5_000_000_000;

/// Feeds the agent's metrics and shared state from the pipeline.
pub struct AgentSink {
    shared: Arc<Shared>,
    /// The ports' trend between reconciles.
    forecaster: Forecaster,
    /// Each namespace's ephemeral port settings, from the last dump.
    port_settings: PortSettingsByNetns,
    /// What a reconcile left to forecast once the lock is let go.
    pending: Option<(Vec<Leaker>, Vec<PortForecast>)>,
    /// The processes that listen, from the last port forecast; those of
    /// them at their descriptor limit when last looked at, and when to look
    /// again (see [`LISTENING_SPACING_NS`]).
    listening: Vec<Leaker>,
    at_limit: Vec<FdForecast>,
    listening_due_ns: u64,
    /// The last port forecasts, and when the next may be taken: see
    /// [`PORT_FORECAST_SPACING`].
    ports: Vec<PortForecast>,
    ports_due_ns: u64,
    /// Events read since the last fold into the metrics, per kind (like
    /// `Kind::ALL`), and those of namespaces not followed: counted here,
    /// in plain memory, and added to the series once per batch.
    read: [u64; 5],
    not_followed: u64,
}

impl Shared {
    /// The agent's sink over this state: what `tracer run` feeds, and what
    /// the replay tests play recordings into.
    pub fn sink(self: &Arc<Self>) -> AgentSink {
        AgentSink::new(self.clone())
    }
}

impl AgentSink {
    /// A sink writing into `shared`.
    pub fn new(shared: Arc<Shared>) -> AgentSink {
        AgentSink {
            shared,
            forecaster: Forecaster::default(),
            port_settings: PortSettingsByNetns::default(),
            pending: None,
            listening: Vec::new(),
            at_limit: Vec::new(),
            listening_due_ns: 0,
            ports: Vec::new(),
            ports_due_ns: 0,
            read: [0; 5],
            not_followed: 0,
        }
    }

    /// Add the events read since the last fold to the metrics.
    fn fold_read(&mut self) {
        let metrics = &self.shared.metrics;
        metrics.agent.events_read(&mut self.read);
        metrics
            .netns
            .events_not_followed(std::mem::take(&mut self.not_followed));
    }

    /// Under the lock: count the engine's sockets on ephemeral ports per
    /// endpoint (when due: see [`PORT_FORECAST_SPACING`]), and pick the
    /// processes whose descriptors to read. O(sockets).
    fn gather_forecasts(&mut self, core: &Core<AgentState>, now_ns: u64) {
        if now_ns >= self.ports_due_ns {
            let cpu = thread_cpu_ns();
            self.ports = self.forecaster.engine_ports(
                &core.engine,
                self.shared.own_netns,
                now_ns,
                &self.port_settings,
            );
            self.listening = forecast::listening_processes(&core.engine);
            let took = thread_cpu_ns().saturating_sub(cpu);
            let wait = took.saturating_mul(PORT_FORECAST_SPACING);
            self.ports_due_ns = now_ns.saturating_add(wait);
            tracing::debug!(
                "port forecast over {} sockets took {:.1} ms of CPU; the next in {:.0} s at the earliest",
                core.engine.tracked(),
                took as f64 / 1e6,
                wait as f64 / 1e9
            );
        }
        // Processes that leak CLOSE_WAIT sockets, and those whose
        // listeners' queues hold connections (see forecast::leakers).
        let g = core.detector.gauges();
        let full = |&(r, n): &(crate::leaks::Reason, u64)| {
            r == crate::leaks::Reason::AcceptQueueFull && n > 0
        };
        let queued = g.close_wait_leaks > 0 || g.stuck_handshakes.iter().any(full);
        let leakers = if queued {
            forecast::leakers(&core.detector.report(now_ns).leaks)
        } else {
            Vec::new()
        };
        self.pending = Some((leakers, self.ports.clone()));
    }

    /// Say once when `--max-sockets` starts or stops binding, and mark it
    /// for `/healthz`.
    fn note_cap(&self, core: &Core<AgentState>) {
        let binding = core.engine.cap_binding();
        if self.shared.cap_binding.swap(binding, Ordering::Relaxed) != binding {
            let stats = core.engine.stats();
            if binding {
                tracing::warn!(
                    event = "max_sockets_binding",
                    "--max-sockets {} is binding: new sockets go untracked \
                     (their states still count in tracer_tcp_sockets, from the dumps) and \
                     TIME_WAIT records are evicted first; raise --max-sockets to follow every socket",
                    core.engine.config().max_sockets
                );
            } else {
                tracing::info!(
                    event = "max_sockets_unbound",
                    "--max-sockets {} no longer binds: every socket is followed again \
                     ({} tracked)",
                    core.engine.config().max_sockets,
                    stats.tracked
                );
            }
        }
    }
}

impl Sink for AgentSink {
    type Derived = AgentState;

    fn event(&mut self, ev: &SockEvent, in_scope: bool) {
        self.read[ev.kind as usize] += 1;
        self.not_followed += u64::from(!in_scope);
    }

    fn batch(&mut self, read: usize, core: Option<&Core<AgentState>>) {
        self.fold_read();
        if read > 0 {
            self.shared
                .last_event_ns
                .store(monotonic_ns(), Ordering::Relaxed);
        }
        if let Some(core) = core {
            self.shared.publish(core);
        }
    }

    fn advanced(&mut self, core: &Core<AgentState>) {
        self.shared.publish(core);
    }

    fn reconciled(
        &mut self,
        core: &mut Core<AgentState>,
        dump: &[DiagSocket],
        changes: &[Change],
        start_ns: u64,
    ) {
        self.fold_read();
        let metrics = &*self.shared.metrics;
        let clock = crate::wall::WallClock::now();
        // One line per flag, up to a bound per dump and direction: an agent
        // started beside hundreds of leaks (or a process exiting with
        // them) would bury its log under them. The rest are one line.
        let (mut raised, mut cleared) = (0, 0);
        for c in changes {
            let n = match c {
                Change::Raised(f) => {
                    metrics.leaks.flagged(f.kind);
                    &mut raised
                }
                Change::Cleared(_) => &mut cleared,
            };
            *n += 1;
            if *n <= LEAK_LINES_PER_DUMP {
                log_leak(c, start_ns, &clock);
            }
        }
        let more = raised.saturating_sub(LEAK_LINES_PER_DUMP);
        if more > 0 {
            tracing::warn!(
                event = "leaks_flagged_unlogged",
                count = more,
                "{more} more leaks flagged at this dump, not logged one by one (tracer leaks, \
                 /api/v1/leaks and tracer events list every one)"
            );
        }
        let more = cleared.saturating_sub(LEAK_LINES_PER_DUMP);
        if more > 0 {
            tracing::info!(
                event = "leaks_cleared_unlogged",
                count = more,
                "{more} more leaks cleared at this dump, not logged one by one (/api/v1/leaks \
                 lists them under recently_cleared)"
            );
        }
        metrics.leaks.publish(&core.detector.gauges());
        metrics.tcp.listening_in(dump);
        self.note_cap(core);
        self.shared.publish(core);
        self.shared
            .last_reconcile_ns
            .store(monotonic_ns(), Ordering::Relaxed);
        self.gather_forecasts(core, start_ns);
    }

    fn port_settings(&mut self, settings: &[(u32, PortSettings)]) {
        self.port_settings.clear();
        self.port_settings.extend(settings.iter().copied());
    }

    fn dumped(&mut self, d: &Dumped<'_>) {
        // Off the lock: read the leaking processes' /proc (at most TOP),
        // and whether a listening one is at its descriptor limit.
        if let Some((leakers, ports)) = self.pending.take() {
            let mut fd = forecast::fd_forecasts(&leakers, forecast::procfs::fd_usage);
            let now = monotonic_ns();
            if now >= self.listening_due_ns {
                self.listening_due_ns = now.saturating_add(LISTENING_SPACING_NS);
                self.at_limit =
                    forecast::listeners_at_limit(&self.listening, forecast::procfs::at_limit);
            }
            forecast::add_missing(&mut fd, &self.at_limit);
            let f = forecast::Forecasts { fd, ports };
            self.shared.metrics.forecast.publish(&f);
            if let Ok(mut slot) = self.shared.forecasts.lock() {
                *slot = f;
            }
        }
        self.shared.metrics.reconcile.dumped(d);
        if let Some(e) = d.error {
            tracing::warn!(event = "reconcile_skipped", "reconcile skipped: {e:#}");
        }
    }

    fn tallied(&mut self, t: &Tallies) {
        self.shared.metrics.agent.tallied(t);
    }

    fn netns(&mut self, t: &NetnsTally) {
        self.shared.metrics.netns.publish(t);
        if let Ok(mut last) = self.shared.netns.lock() {
            *last = *t;
        }
    }

    fn turn(&mut self) -> anyhow::Result<Flow> {
        // Events a namespace's end drained (no batch followed them).
        self.fold_read();
        self.shared
            .heartbeat_ns
            .store(monotonic_ns(), Ordering::Relaxed);
        Ok(Flow::Continue)
    }
}

/// The leak flags raised, and those cleared, that one dump logs one line
/// each; the rest are counted in one line.
const LEAK_LINES_PER_DUMP: usize = 20;

/// A leak flag raised (warn) or cleared (info), as one structured log
/// event: the fields `tracer events` prints for it, the first owner
/// flattened (`pid`, `comm`, `fd`), and `owner_unknown` to tell an owner
/// that could not be named from none. What is not known (a reason, a
/// remote, a container, an owner) is left out rather than written as a
/// placeholder.
fn log_leak(c: &Change, ts_ns: u64, clock: &crate::wall::WallClock) {
    let f = c.flag();
    let first = f.owners.first();
    let owners: Vec<String> = f
        .owners
        .iter()
        .map(|o| format!("{}[{}] fd {}", o.comm, o.pid, o.fd))
        .collect();
    let owners = (!owners.is_empty()).then(|| owners.join(", "));
    let container = f
        .container
        .as_ref()
        .map(|c| c.name.clone().unwrap_or_else(|| c.id.clone()));
    let remote = f.remote.map(|r| r.to_string());
    macro_rules! leak_event {
        ($level:ident, $what:literal, $why:expr) => {
            tracing::$level!(
                event = c.event_name(),
                leak = f.kind.name(),
                reason = f.reason.map(|r| r.name()),
                cookie = f.cookie,
                local = %f.local,
                remote = remote.as_deref(),
                state = f.state.name(),
                netns = f.netns,
                container = container.as_deref(),
                age_seconds = f.age_seconds,
                unread_bytes = f.unread_bytes,
                read_to_end = f.read_to_end,
                pid = first.map(|o| o.pid),
                comm = first.map(|o| o.comm.as_str()),
                fd = first.map(|o| o.fd),
                owners = owners.as_deref(),
                owner_unknown = f.owner_unknown,
                ts = %clock.at(ts_ns),
                concat!($what, ": {}"),
                $why
            )
        };
    }
    match c {
        Change::Raised(_) => leak_event!(warn, "leak flagged", f.evidence),
        Change::Cleared(_) => leak_event!(
            info,
            "leak cleared",
            f.cleared_how.as_deref().unwrap_or("condition ended")
        ),
    }
}
