//! Forecasts of the outage before it happens: when a process leaking
//! CLOSE_WAIT sockets runs out of file descriptors ([`fd`]), and when
//! connects to one remote endpoint run out of ephemeral ports ([`ports`],
//! at the growth [`trend`] measures). The math is pure; [`procfs`] reads
//! the two `/proc` files a process forecast needs; [`text`] prints them. The agent fills a
//! [`Forecasts`] on every reconcile (see docs/forecasts.md); `tracer leaks`
//! shows it, and the metrics export its top [`TOP`].
pub mod fd;
pub mod ports;
pub mod procfs;
pub mod text;
pub mod trend;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use self::{
    fd::{FdForecast, FdUsage},
    ports::{Endpoint, PortSettings, PortUsage, Sock},
    trend::Trend,
};
use crate::{
    engine::{BuildCookieHasher, Engine, SocketView, SyscallOwner},
    leaks::{LeakKind, ProcessLeaks, Reason},
};

/// Processes, and endpoints, forecast at most.
pub const TOP: usize = 20;

/// Everything forecast, as the leaks report carries it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Forecasts {
    /// Processes holding CLOSE_WAIT leaks, fastest growing first (at most
    /// [`TOP`]), then listening processes at their descriptor limit with no
    /// leak flagged yet.
    #[serde(default)]
    pub fd: Vec<FdForecast>,
    /// Remote endpoints, most ports in use first (at most [`TOP`]).
    #[serde(default)]
    pub ports: Vec<PortForecast>,
}

impl Forecasts {
    /// True when nothing is forecast.
    pub fn is_empty(&self) -> bool {
        self.fd.is_empty() && self.ports.is_empty()
    }

    /// True when something has run out now: a process at its descriptor
    /// limit, or an endpoint with no port free (`connect()` fails).
    pub fn run_out(&self) -> bool {
        let now = |left: Option<f64>| left == Some(0.0);
        self.fd.iter().any(|f| now(f.seconds_left))
            || self.ports.iter().any(|p| now(p.seconds_left))
    }
}

/// One endpoint's ephemeral ports and the time left at their growth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortForecast {
    /// Namespace, remote endpoint, local address.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// The ports now.
    #[serde(flatten)]
    pub usage: PortUsage,
    /// The namespace's settings.
    pub settings: PortSettings,
    /// Net growth of the ports in use, per second, over the last minute
    /// (`None`: less than 10 s of history).
    pub growth_per_second: Option<f64>,
    /// Seconds until none is free at that growth: 0 when none is free now,
    /// `None` when not growing.
    pub seconds_left: Option<f64>,
    /// The processes whose `connect()` took the most of the ports held
    /// (TIME_WAIT sockets keep the process that connected them), most
    /// first, at most [`CONNECTORS`]; empty from a snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connectors: Vec<Connector>,
}

/// Processes named per endpoint at most.
pub const CONNECTORS: usize = 3;

/// A process that connected to an endpoint, and how many of the sockets
/// to it holding a port it connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connector {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// Sockets to the endpoint it connected, TIME_WAIT included.
    pub sockets: u32,
}

/// Fill each forecast's `connectors` from `socks`: each socket, with the
/// process that connected it when known. Only sockets counted for an
/// endpoint (see [`ports::count_into`]) reach it: one on a port of
/// another endpoint's is not. O(sockets given).
pub fn name_connectors(
    forecasts: &mut [PortForecast],
    socks: impl Iterator<Item = (Sock, Option<SyscallOwner>)>,
) {
    if forecasts.is_empty() {
        return;
    }
    let at: HashMap<Endpoint, (usize, PortSettings), BuildCookieHasher> = forecasts
        .iter()
        .enumerate()
        .map(|(i, p)| (p.endpoint, (i, p.settings)))
        .collect();
    let mut tally: HashMap<(usize, u32), ([u8; 16], u32), BuildCookieHasher> = HashMap::default();
    for (s, owner) in socks {
        let Some(SyscallOwner { pid, comm }) = owner else {
            continue;
        };
        let key = Endpoint {
            netns: s.netns,
            remote: s.remote,
            local: s.local.ip(),
        };
        if let Some(&(i, settings)) = at.get(&key)
            && ports::holds_a_port(s.state)
            && settings.contains(s.local.port())
        {
            tally.entry((i, pid)).or_insert((comm, 0)).1 += 1;
        }
    }
    let mut named: Vec<(usize, Connector)> = tally
        .into_iter()
        .map(|((i, pid), (comm, sockets))| {
            let comm = crate::event::comm_str(&comm).to_owned();
            (i, Connector { pid, comm, sockets })
        })
        .collect();
    named.sort_by(|(i, a), (j, b)| (i, b.sockets, a.pid).cmp(&(j, a.sockets, b.pid)));
    for (i, c) in named {
        let list = &mut forecasts[i].connectors;
        if list.len() < CONNECTORS {
            list.push(c);
        }
    }
}

/// A process whose descriptors to forecast.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaker {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// CLOSE_WAIT leaks held.
    pub close_wait: u32,
    /// Their growth per minute.
    pub growth_per_minute: Option<f64>,
}

/// The CLOSE_WAIT leaks of a group that hold one of its descriptors (not
/// those still waiting in its listener's accept queue), and whether any
/// connection waits for it to accept (which a process out of descriptors
/// cannot).
fn held_close_wait(g: &ProcessLeaks) -> (usize, bool) {
    let waiting = |f: &&crate::leaks::Flag| {
        matches!(
            f.reason,
            Some(Reason::NotAccepted | Reason::AcceptQueueFull)
        )
    };
    let not_accepted = g
        .sockets
        .iter()
        .filter(waiting)
        .filter(|f| f.kind == LeakKind::CloseWait)
        .count();
    let accepts = g.sockets.iter().any(|f| waiting(&f));
    (g.close_wait.saturating_sub(not_accepted), accepts)
}

/// The processes of a leaks report's groups that hold CLOSE_WAIT leaks:
/// fastest growing first, then most leaks; at most [`TOP`].
pub fn leakers(groups: &[ProcessLeaks]) -> Vec<Leaker> {
    let mut out: Vec<Leaker> = groups
        .iter()
        .filter_map(|g| {
            // A process with connections waiting for its accept() is
            // forecast too, for what may keep it from accepting: no
            // descriptor left (see `fd_forecasts`).
            let (held, accepts) = held_close_wait(g);
            Some(Leaker {
                pid: g.pid?,
                comm: g.comm.clone()?,
                close_wait: u32::try_from(held).ok().filter(|&n| n > 0 || accepts)?,
                growth_per_minute: g.growth_per_minute,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.growth_per_minute
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&a.growth_per_minute.unwrap_or(f64::NEG_INFINITY))
            .then(b.close_wait.cmp(&a.close_wait))
            .then(a.pid.cmp(&b.pid))
    });
    out.truncate(TOP);
    out
}

/// The descriptor forecasts of `leakers`, each process's usage from
/// `usage` (a process gone or unreadable is left out, and one that holds
/// no CLOSE_WAIT leak unless it is out of descriptors now).
pub fn fd_forecasts(leakers: &[Leaker], usage: impl Fn(u32) -> Option<FdUsage>) -> Vec<FdForecast> {
    leakers
        .iter()
        .filter_map(|l| {
            let u = usage(l.pid)?;
            let out = u.limit.is_some_and(|limit| u.open >= limit);
            if l.close_wait == 0 && !out {
                return None;
            }
            Some(FdForecast::new(
                l.pid,
                &l.comm,
                l.close_wait,
                u,
                l.growth_per_minute,
            ))
        })
        .collect()
}

/// Most listening processes looked at for a descriptor limit reached.
pub const MAX_LISTENERS: usize = 64;

/// The processes that called `listen()` on the engine's listeners (as the
/// event named them), each once, at most [`MAX_LISTENERS`]: the servers
/// whose `accept()` fails when they run out of descriptors, looked at
/// ([`listeners_at_limit`]) before any of their leaks is old enough to
/// flag. O(open sockets), so taken with the paced port forecast.
pub fn listening_processes(engine: &Engine) -> Vec<Leaker> {
    let mut out: Vec<Leaker> = Vec::new();
    for v in engine
        .open_sockets()
        .filter(|v| v.state() == crate::tcp::TcpState::Listen)
    {
        let Some(o) = v.owner() else { continue };
        if out.len() >= MAX_LISTENERS {
            break;
        }
        if !out.iter().any(|l| l.pid == o.pid) {
            out.push(Leaker {
                pid: o.pid,
                comm: o.comm_str().to_owned(),
                close_wait: 0,
                growth_per_minute: None,
            });
        }
    }
    out
}

/// Forecasts for the `listening` processes that are at their descriptor
/// limit now (`usage`: [`procfs::at_limit`]): the outage itself, which a
/// leak too young to flag can cause.
pub fn listeners_at_limit(
    listening: &[Leaker],
    usage: impl Fn(u32) -> Option<FdUsage>,
) -> Vec<FdForecast> {
    listening
        .iter()
        .filter_map(|l| Some(FdForecast::new(l.pid, &l.comm, 0, usage(l.pid)?, None)))
        .collect()
}

/// Add to `fd` the forecasts of `more` for processes it has none for.
pub fn add_missing(fd: &mut Vec<FdForecast>, more: &[FdForecast]) {
    for m in more {
        if !fd.iter().any(|f| f.pid == m.pid) {
            fd.push(m.clone());
        }
    }
}

/// Each network namespace's ephemeral port settings, by inode.
pub type PortSettingsByNetns = HashMap<u32, PortSettings, BuildCookieHasher>;

/// The agent's memory between reconciles: the ports' trend.
#[derive(Debug)]
pub struct Forecaster {
    trend: Trend,
    /// The last count, kept for its memory.
    counts: ports::Counts,
}

impl Default for Forecaster {
    fn default() -> Self {
        Forecaster {
            trend: Trend::new(2 * TOP),
            counts: ports::Counts::default(),
        }
    }
}

impl Forecaster {
    /// [`Forecaster::ports`] over the engine's live sockets (the counting
    /// picks those on a port of their namespace's range, and the bound
    /// ones). Records of namespace 0 (not known) are taken as
    /// `own_netns`'s. O(records held).
    pub fn engine_ports(
        &mut self,
        engine: &Engine,
        own_netns: u32,
        now_ns: u64,
        settings: &PortSettingsByNetns,
    ) -> Vec<PortForecast> {
        let sock = |v: SocketView<'_>| Sock {
            netns: if v.netns() == 0 { own_netns } else { v.netns() },
            local: v.local(),
            remote: v.remote(),
            state: v.state(),
        };
        let listeners = engine.open_sockets().map(sock);
        let socks = engine.sockets().filter(|v| v.is_live()).map(sock);
        let mut out = self.ports(now_ns, listeners, socks, settings);
        let owned = engine
            .sockets()
            .filter(|v| v.is_live())
            .map(|v| (sock(v), v.owner()));
        name_connectors(&mut out, owned);
        out
    }

    /// Count the ports of the sockets `socks` yields, with the bound ports
    /// of `listeners` (see [`ports::count_into`]), at `now_ns` with each
    /// namespace's `settings`, record the trend of the busiest endpoints,
    /// and forecast the [`TOP`] of them. O(sockets given).
    pub fn ports(
        &mut self,
        now_ns: u64,
        listeners: impl Iterator<Item = Sock>,
        socks: impl Iterator<Item = Sock>,
        settings: &PortSettingsByNetns,
    ) -> Vec<PortForecast> {
        let mut counts = std::mem::take(&mut self.counts);
        ports::count_into(
            listeners,
            socks,
            |ns| settings.get(&ns).copied(),
            &mut counts,
        );
        let out = self.rank(now_ns, &counts, settings);
        self.counts = counts;
        out
    }

    /// Record the trend of the busiest endpoints of `counts` and forecast
    /// the [`TOP`] of them.
    fn rank(
        &mut self,
        now_ns: u64,
        counts: &ports::Counts,
        settings: &PortSettingsByNetns,
    ) -> Vec<PortForecast> {
        let mut ranked: Vec<(Endpoint, PortUsage)> = counts.iter().map(|(e, u)| (*e, *u)).collect();
        // Busiest first, ties by endpoint: a total order, so picking the
        // first 2 × TOP and sorting only those gives what sorting every
        // endpoint (one per local address on a host with many) would.
        let order = |a: &(Endpoint, PortUsage), b: &(Endpoint, PortUsage)| {
            b.1.in_use.cmp(&a.1.in_use).then(a.0.cmp(&b.0))
        };
        if ranked.len() > 2 * TOP {
            ranked.select_nth_unstable_by(2 * TOP, order);
            ranked.truncate(2 * TOP);
        }
        ranked.sort_by(order);
        // The trend is of the ports connections hold: listeners take ports
        // out of the range too (in `free`), but one started is a step, not
        // a rate to run out at.
        let sample: Vec<(Endpoint, u32)> = ranked.iter().map(|(e, u)| (*e, u.held())).collect();
        self.trend.sample(now_ns, &sample);
        ranked
            .into_iter()
            .take(TOP)
            .filter_map(|(endpoint, usage)| {
                let settings = *settings.get(&endpoint.netns)?;
                let growth = self.trend.growth_per_second(&endpoint);
                Some(PortForecast {
                    endpoint,
                    usage,
                    settings,
                    growth_per_second: growth,
                    seconds_left: trend::seconds_left(usage.free, growth),
                    connectors: Vec::new(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TcpState;

    fn group(pid: u32, close_wait: usize, growth: Option<f64>) -> ProcessLeaks {
        ProcessLeaks {
            pid: Some(pid),
            owner_unknown: false,
            hint: None,
            comm: Some(format!("p{pid}")),
            cmdline: String::new(),
            cgroup: String::new(),
            container_id: None,
            close_wait,
            oldest_age_seconds: None,
            oldest_is_lower_bound: false,
            growth_per_minute: growth,
            sockets: Vec::new(),
            exited: false,
        }
    }

    #[test]
    fn a_listening_process_at_its_limit_is_forecast_once() {
        let l = |pid| Leaker {
            pid,
            comm: "srv".into(),
            close_wait: 0,
            growth_per_minute: None,
        };
        let at = |pid: u32| {
            (pid != 3).then_some(FdUsage {
                open: 64,
                limit: Some(64),
            })
        };
        // Pid 1 is forecast already as a leaker; 3 is not at its limit.
        let mut fd = fd_forecasts(
            &[Leaker {
                close_wait: 5,
                ..l(1)
            }],
            at,
        );
        add_missing(&mut fd, &listeners_at_limit(&[l(1), l(2), l(3)], at));
        let got: Vec<(u32, u32, Option<f64>)> = fd
            .iter()
            .map(|f| (f.pid, f.close_wait, f.seconds_left))
            .collect();
        assert_eq!(got, [(1, 5, Some(0.0)), (2, 0, Some(0.0))]);
        assert_eq!(
            text::fd_line(&fd[1], false),
            "PID 2 srv: 64 of 64 fds: out of descriptors now: accept(), socket() and open() fail with EMFILE"
        );
    }

    #[test]
    fn leakers_fastest_first_only_close_wait_holders() {
        let groups = [
            group(1, 5, None),
            group(2, 3, Some(10.0)),
            group(3, 0, Some(99.0)),
            group(4, 9, Some(1.0)),
        ];
        let pids: Vec<u32> = leakers(&groups).iter().map(|l| l.pid).collect();
        assert_eq!(pids, [2, 4, 1]);
        let f = fd_forecasts(&leakers(&groups), |pid| {
            (pid != 4).then_some(FdUsage {
                open: 100,
                limit: Some(160),
            })
        });
        assert_eq!(f.len(), 2, "pid 4 is gone");
        assert_eq!(f[0].seconds_left, Some(360.0));
        assert_eq!(f[1].seconds_left, None, "no rate");
    }

    /// The engine's listeners hold their ports from every endpoint, and
    /// are found among its open sockets without reading the TIME_WAIT
    /// ones; those count as such.
    #[test]
    fn the_engines_listeners_and_time_wait_sockets_count_in_its_ports() {
        use crate::engine::Config;
        use TcpState::*;
        let mut engine = Engine::new(Config::default());
        let mut step = |cookie: u64, port: u16, path: &[TcpState]| {
            for w in path.windows(2) {
                let mut ev = crate::testkit::event(cookie);
                (ev.sport, ev.old_state, ev.new_state) = (port, Some(w[0]), Some(w[1]));
                engine.apply(&ev, &mut ());
            }
        };
        step(1, 40_000, &[Close, Listen]);
        step(2, 40_001, &[Close, SynSent, Established]);
        step(3, 40_002, &[Close, SynSent, Established]);
        let active_close = [Close, SynSent, Established, FinWait1, FinWait2, Close];
        step(4, 40_003, &active_close);
        // Out of the range: not connect()'s.
        step(5, 20_000, &[Close, SynSent, Established]);
        let open: Vec<u64> = engine.open_sockets().map(|v| v.cookie()).collect();
        assert_eq!(open.len(), 4, "{open:?}");
        assert!(!open.contains(&4), "TIME_WAIT is not open: {open:?}");
        let mut settings = PortSettingsByNetns::default();
        let none_reused = PortSettings {
            tw_reuse: 0,
            ..PortSettings::DEFAULT
        };
        settings.insert(7, none_reused);
        let got = Forecaster::default().engine_ports(&engine, 7, 1_000_000_000, &settings);
        assert_eq!(got.len(), 1, "{got:?}");
        let u = got[0].usage;
        assert_eq!(
            (u.connected, u.time_wait, u.bound, u.in_use),
            (2, 1, 1, 4),
            "{u:?}"
        );
        // The connects' process (testkit's), its TIME_WAIT socket
        // included; the socket out of the range is not one of these.
        assert_eq!(
            got[0].connectors,
            [Connector {
                pid: 999,
                comm: "bystander".into(),
                sockets: 3
            }]
        );
    }

    #[test]
    fn the_processes_that_connect_most_are_named_per_endpoint() {
        let settings = sixty_four_ports();
        let to = |port: u16, remote: &str, state| Sock {
            netns: 7,
            local: format!("127.0.0.1:{port}").parse().expect("local"),
            remote: remote.parse().expect("remote"),
            state,
        };
        let mut socks = Vec::new();
        // To :5000, pids 1 (5), 2 (3), 3 (1), 4 (2), and two of no known
        // process; to :6000, pid 9 alone; a listener of pid 1 on :5000's
        // side of nothing.
        for (pid, n) in [(1, 5), (2, 3), (3, 1), (4, 2)] {
            for _ in 0..n {
                socks.push((
                    to(
                        40000 + socks.len() as u16,
                        "127.0.0.1:5000",
                        TcpState::TimeWait,
                    ),
                    Some(pid),
                ));
            }
        }
        socks.push((to(40050, "127.0.0.1:5000", TcpState::Established), None));
        socks.push((to(40051, "127.0.0.1:5000", TcpState::Established), None));
        socks.push((to(40052, "127.0.0.1:6000", TcpState::Established), Some(9)));
        // Out of the range, and closed: neither holds one of its ports.
        socks.push((to(20000, "127.0.0.1:5000", TcpState::Established), Some(3)));
        socks.push((to(40060, "127.0.0.1:5000", TcpState::Close), Some(3)));
        let plain: Vec<Sock> = socks.iter().map(|(s, _)| *s).collect();
        let mut got = Forecaster::default().ports(
            1_000_000_000,
            plain.iter().copied(),
            plain.iter().copied(),
            &settings,
        );
        let comms = ["", "api", "worker", "cron", "batch"];
        let owner = |pid: u32| {
            let name = comms.get(pid as usize).copied().unwrap_or("other");
            let mut comm = [0u8; 16];
            comm[..name.len()].copy_from_slice(name.as_bytes());
            SyscallOwner { pid, comm }
        };
        name_connectors(&mut got, socks.iter().map(|(s, pid)| (*s, pid.map(owner))));
        let of = |port: u16| {
            got.iter()
                .find(|p| p.endpoint.remote.port() == port)
                .map(|p| {
                    p.connectors
                        .iter()
                        .map(|c| (c.pid, c.comm.as_str(), c.sockets))
                        .collect::<Vec<_>>()
                })
                .expect("endpoint")
        };
        assert_eq!(
            of(5000),
            [(1, "api", 5), (2, "worker", 3), (4, "batch", 2)],
            "most first, at most {CONNECTORS}"
        );
        assert_eq!(of(6000), [(9, "other", 1)]);
    }

    /// Namespace 7 with a range of 64 ports (40000-40063), no TIME_WAIT reuse.
    fn sixty_four_ports() -> PortSettingsByNetns {
        let mut settings = PortSettingsByNetns::default();
        settings.insert(
            7,
            PortSettings {
                low: 40000,
                high: 40063,
                tw_reuse: 0,
            },
        );
        settings
    }

    #[test]
    fn a_client_filling_its_range_is_forecast() {
        let settings = sixty_four_ports();
        let mut f = Forecaster::default();
        let mut last = Vec::new();
        for s in 1..=11u16 {
            let socks: Vec<Sock> = (0..2 * s)
                .map(|i| Sock {
                    netns: 7,
                    local: format!("127.0.0.1:{}", 40000 + i).parse().expect("local"),
                    remote: "127.0.0.1:5000".parse().expect("remote"),
                    state: TcpState::TimeWait,
                })
                .collect();
            last = f.ports(
                u64::from(s) * 1_000_000_000,
                socks.iter().copied(),
                socks.iter().copied(),
                &settings,
            );
        }
        let p = &last[0];
        assert_eq!((p.usage.in_use, p.usage.free), (22, 42));
        assert_eq!(p.growth_per_second, Some(2.0));
        assert_eq!(p.seconds_left, Some(21.0));
    }

    #[test]
    fn listeners_started_take_ports_but_are_no_rate() {
        let settings = sixty_four_ports();
        let sock = |port: u16, state| Sock {
            netns: 7,
            local: format!("127.0.0.1:{port}").parse().expect("local"),
            remote: if state == TcpState::Listen {
                "0.0.0.0:0".parse().expect("any")
            } else {
                "127.0.0.1:5000".parse().expect("remote")
            },
            state,
        };
        let mut f = Forecaster::default();
        let mut last = Vec::new();
        // Four connections throughout; one more listener in the range
        // every second.
        for s in 1..=12u16 {
            let listeners: Vec<Sock> = (0..s).map(|i| sock(40010 + i, TcpState::Listen)).collect();
            let conns: Vec<Sock> = (0..4)
                .map(|i| sock(40000 + i, TcpState::Established))
                .collect();
            last = f.ports(
                u64::from(s) * 1_000_000_000,
                listeners.iter().copied(),
                conns.iter().copied(),
                &settings,
            );
        }
        let p = &last[0];
        assert_eq!(
            (p.usage.connected, p.usage.bound, p.usage.in_use),
            (4, 12, 16)
        );
        assert_eq!(p.growth_per_second, Some(0.0), "{p:?}");
        assert_eq!(p.seconds_left, None, "{p:?}");
    }
}
