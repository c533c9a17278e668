//! The agent's answers to the HTTP API: sockets, summary, health.
use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use serde::Serialize;
use serde_json::{Value, json};

use super::Shared;
use crate::{
    container::{Container, ContainerMap},
    engine::{SocketView, SyscallOwner},
    export::{
        http::{Api, Health, SocketQuery},
        page::{Page, Picker},
    },
    pipeline::monotonic_ns,
    tcp::TcpState,
    wall::{Wall, WallClock},
};

/// [`Api`] over the shared agent state.
pub struct AgentApi(pub Arc<Shared>);

/// One socket, as `/api/v1/sockets` lists it.
#[derive(Serialize)]
pub struct SocketJson {
    cookie: u64,
    netns: u32,
    family: &'static str,
    saddr: std::net::IpAddr,
    sport: u16,
    daddr: std::net::IpAddr,
    dport: u16,
    state: TcpState,
    state_since_ns: u64,
    state_since: Wall,
    age_seconds: f64,
    age_is_lower_bound: bool,
    time_wait_confirmed: Option<bool>,
    time_wait_ended: Option<&'static str>,
    path: Vec<TcpState>,
    path_truncated: bool,
    closed_by: Option<&'static str>,
    half_closed: bool,
    retransmits: u32,
    synack_retransmits: u16,
    resets_sent: u8,
    resets_received: u8,
    pid: Option<u32>,
    comm: Option<String>,
    created_ns: Option<u64>,
    created: Option<Wall>,
    live: bool,
    container: Option<Container>,
}

impl SocketJson {
    fn new(
        v: &SocketView<'_>,
        now_ns: u64,
        clock: &WallClock,
        containers: &ContainerMap,
    ) -> SocketJson {
        let owner = v.owner();
        let (local, remote) = (v.local(), v.remote());
        SocketJson {
            cookie: v.cookie(),
            netns: v.netns(),
            family: v.family().name(),
            saddr: local.ip(),
            sport: local.port(),
            daddr: remote.ip(),
            dport: remote.port(),
            state: v.state(),
            state_since_ns: v.state_since_ns(),
            state_since: clock.at(v.state_since_ns()),
            age_seconds: now_ns.saturating_sub(v.state_since_ns()) as f64 / 1e9,
            age_is_lower_bound: v.since_is_lower_bound(),
            time_wait_confirmed: v.in_time_wait().then(|| v.time_wait_confirmed()),
            time_wait_ended: if v.time_wait_never_appeared() {
                Some("never_appeared")
            } else {
                v.time_wait_end().map(|e| e.name())
            },
            path: v.path().collect(),
            path_truncated: v.path_truncated(),
            closed_by: v.closed_by().map(|c| c.name()),
            half_closed: v.half_closed(),
            retransmits: v.retransmits(),
            synack_retransmits: v.synack_retransmits(),
            resets_sent: v.resets_sent(),
            resets_received: v.resets_received(),
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm_str().to_string()),
            // Known only when the creation itself was seen: a socket
            // adopted from a dump, or first met mid-life, is older.
            created_ns: v.birth_seen().then(|| v.created_ns()),
            created: v
                .birth_seen()
                .then(|| clock.at_known(v.created_ns()))
                .flatten(),
            live: v.is_live(),
            container: containers.get(v.netns()).map(|c| (**c).clone()),
        }
    }
}

impl AgentApi {
    /// The agent's own network namespace, `None` when it could not be read.
    fn agent_netns(&self) -> Option<u32> {
        Some(self.0.own_netns).filter(|&n| n != 0)
    }
}

impl Api for AgentApi {
    type Socket = SocketJson;

    /// Under the engine lock: one walk that only compares, then a copy of
    /// the page's records. Serialising happens after the lock is let go.
    fn sockets(&self, q: &SocketQuery) -> Result<Page<SocketJson>, String> {
        let mut picker = Picker::new(q.limit()?, q.after);
        let now = monotonic_ns();
        let clock = WallClock::now();
        let core = self.0.core.lock();
        // A socket accepted and never closed has named no owner yet: it
        // counts as its listener's process (the one that accepts, most
        // often), as `tracer events -p` counts it. One more walk, only
        // when owners are asked for.
        let by_owner = !q.pid.is_empty() || !q.comm.is_empty();
        // Several may listen on one port (SO_REUSEPORT workers, an IPv4
        // and an IPv6 listener): the kernel does not say whose queue a
        // socket came from, so it counts as any of theirs.
        let mut listeners: HashMap<(u32, u16), Vec<SyscallOwner>> = HashMap::new();
        if by_owner {
            core.engine
                .sockets()
                .filter(|v| v.state() == TcpState::Listen && v.is_live())
                .filter_map(|v| Some(((v.netns(), v.local().port()), v.owner()?)))
                .for_each(|(at, o)| listeners.entry(at).or_default().push(o));
        }
        let wanted = |o: &SyscallOwner| {
            (q.pid.is_empty() || q.pid.contains(&o.pid))
                && (q.comm.is_empty() || q.comm.iter().any(|c| o.comm_str() == c))
        };
        let owned = |v: &SocketView| match v.owner() {
            Some(o) => wanted(&o),
            None if v.state() != TcpState::Listen => listeners
                .get(&(v.netns(), v.local().port()))
                .is_some_and(|all| all.iter().any(wanted)),
            None => false,
        };
        core.engine
            .sockets()
            .filter(|v| q.state.is_empty() || (q.state.contains(&v.state()) && v.is_live()))
            .filter(|v| {
                q.port.is_empty()
                    || q.port.contains(&v.local().port())
                    || q.port.contains(&v.remote().port())
            })
            .filter(|v| q.netns.is_empty() || q.netns.contains(&v.netns()))
            .filter(|v| !by_owner || owned(v))
            .for_each(|v| picker.offer(v.cookie()));
        let (cookies, total, next_after) = picker.finish();
        let items = cookies
            .iter()
            .filter_map(|&c| core.engine.get(c))
            .map(|v| SocketJson::new(&v, now, &clock, &core.containers))
            .collect();
        drop(core);
        Ok(Page {
            items,
            total,
            next_after,
        })
    }

    fn summary(&self) -> Value {
        let core = self.0.core.lock();
        let counts = core.engine.counts_by_state();
        let mut states = serde_json::Map::new();
        let mut dwell = serde_json::Map::new();
        let (_, (stays, handshakes)) = &core.derived;
        for st in TcpState::ALL {
            states.insert(st.name().into(), json!(counts[st.index()]));
            if let Some(p) = stays.percentiles(st) {
                dwell.insert(st.name().into(), json!(p));
            }
        }
        let stats = core.engine.stats();
        let (now, clock) = (monotonic_ns(), WallClock::now());
        json!({
            "now_ns": now,
            "now": clock.at(now),
            "started_ns": self.0.started_ns,
            "started": clock.at(self.0.started_ns),
            "followed_netns": self.0.followed_netns,
            "agent_netns": self.agent_netns(),
            "tracked_sockets": stats.tracked,
            "sockets": states,
            "dwell_seconds": dwell,
            "dwell_window": super::dwell::WINDOW,
            "handshakes": handshakes.summary(),
        })
    }

    fn leaks(&self, m: &crate::filter::Match) -> Value {
        let mut core = self.0.core.lock();
        let now = monotonic_ns();
        // A close read since the dump that found the socket gone.
        let crate::pipeline::Core {
            engine, detector, ..
        } = &mut *core;
        detector.say_how_gone_by(&mut [], now, engine);
        let mut report = detector.report(now);
        report.attribute(&core.containers, false);
        drop(core);
        report.followed_netns = self.0.followed_netns;
        report.agent_netns = self.agent_netns();
        report.dump_interval_seconds = Some(self.0.settings.reconcile_interval.as_secs_f64());
        let netns = self.0.netns.lock().map(|t| *t).unwrap_or_default();
        if let Some((n, said)) = netns.not_followed() {
            report.unfollowed_netns = n;
            report.add_note(said);
        }
        if let Ok(f) = self.0.forecasts.lock() {
            report.forecasts = f.clone();
        }
        report.link_forecasts();
        report.name_namespaces(crate::pipeline::discover::names());
        let mut report = m.report(report);
        report.stamp(&WallClock::now());
        serde_json::to_value(report).unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }

    fn health(&self) -> Health {
        let s = &self.0;
        let now = monotonic_ns();
        let attached = s.attached.load(Ordering::Relaxed);
        let beat_age = now.saturating_sub(s.heartbeat_ns.load(Ordering::Relaxed)) as f64 / 1e9;
        let stall = (3.0 * s.settings.reconcile_interval.as_secs_f64()).max(5.0);
        let last_event = s.last_event_ns.load(Ordering::Relaxed);
        let event_age = (last_event != 0).then(|| now.saturating_sub(last_event) as f64 / 1e9);
        let ok = attached && beat_age < stall;
        let mut detail = format!(
            "programs {}; event loop last ran {beat_age:.1}s ago; last event {}",
            if attached { "attached" } else { "detached" },
            event_age.map_or("none yet".to_string(), |a| format!("{a:.1}s ago"))
        );
        if s.cap_binding.load(Ordering::Relaxed) {
            // Still serving, and the gauges still true; but some sockets
            // are followed only through the dumps.
            detail.push_str(&format!(
                "; degraded: --max-sockets {} binds, new sockets go untracked",
                s.settings.max_sockets
            ));
        }
        Health { ok, detail }
    }

    /// Events the kernel has written but the loop has not read yet would
    /// leave the answer behind `ss`: ask for them, briefly. If the loop is
    /// busy past that, the answer is at most one batch old.
    async fn catch_up(&self) {
        self.0.drain.now(super::SCRAPE_DRAIN_WAIT).await;
    }

    async fn refresh_metrics(&self) {
        // Never wait for the engine: if it is busy, the gauges from its
        // last batch are at most one batch old.
        self.catch_up().await;
        if let Some(core) = self.0.core.try_lock() {
            self.0.publish(&core);
        }
    }
}
