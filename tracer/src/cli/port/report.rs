//! The answer, as data: per namespace holding the port, the verdict for
//! a new listener with and without `SO_REUSEADDR`, and every socket in
//! the way with its age, timer, owner and who closed first. `--json`
//! prints it as is; [`super::text`] renders it for people.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use serde::Serialize;

pub use super::verdict::Verdict;
use super::{
    bind::{Bind, Holder, Outcome, Reason, verdict},
    gather::{Found, Held},
    verdict::say,
};
use crate::{container::Container, snapshot::listener_for, tcp::TcpState};

/// `TCP_TIMEWAIT_LEN`: how long a TIME_WAIT socket lives (60 s, fixed in
/// the kernel), so its age is this minus its timer.
pub const TIME_WAIT_LEN_MS: u32 = 60_000;

/// The whole answer.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The port asked about.
    pub port: u16,
    /// The address a new listener would bind (`::`: any, dual-stack).
    pub addr: IpAddr,
    /// `agent` (ages from the agent) or `snapshot`.
    pub source: &'static str,
    /// How the answer was had, and what it cannot know.
    pub note: String,
    /// A plain `bind()` + `listen()` succeeds in every namespace.
    pub free: bool,
    /// The same with `SO_REUSEADDR`; `null` when unknown somewhere.
    pub free_with_reuseaddr: Option<bool>,
    /// Wall-clock time of the answer (RFC 3339, UTC).
    pub at: String,
    /// Network namespaces dumped.
    pub namespaces_scanned: usize,
    /// The network namespace `tracer port` ran in (0: unknown), where a
    /// listener started from the same shell would bind.
    pub own_netns: u32,
    /// Network namespaces that could not be entered (that needs
    /// `CAP_SYS_ADMIN`): what they hold is not in the answer.
    pub namespaces_not_entered: usize,
    /// Processes whose network namespace could not be read (that needs
    /// `CAP_SYS_PTRACE`): a namespace only they hold was not scanned.
    pub processes_not_read: u32,
    /// For a specific `addr`: some namespace looked at has it (`false`:
    /// none does, so a `bind()` to it fails with `EADDRNOTAVAIL` whatever
    /// the port); `null` for any address, or when it could not be told.
    pub addr_available: Option<bool>,
    /// Namespaces holding the port that do not have `addr`: a listener
    /// there cannot bind it, so they are left out of `namespaces` and of
    /// the verdict.
    pub namespaces_without_addr: usize,
    /// Namespaces where something is bound to the port (none: free everywhere).
    pub namespaces: Vec<Namespace>,
    /// Connections to the port that wait in TIME_WAIT on their clients'
    /// side, in the namespaces scanned (clients closed first). They hold
    /// the clients' ephemeral ports, not this one: `tracer leaks`' port
    /// forecasts say when those run out.
    pub clients_time_wait: usize,
}

/// One network namespace holding the port.
#[derive(Clone, Debug, Serialize)]
pub struct Namespace {
    /// Its inode (`stat -L -c %i /proc/<pid>/ns/net`).
    pub netns: u32,
    /// Its `/run/netns` name, if it has one.
    pub name: Option<String>,
    /// The container running in it, if one was found.
    pub container: Option<Container>,
    /// A new listener without `SO_REUSEADDR`.
    pub without_reuseaddr: Verdict,
    /// A new listener with `SO_REUSEADDR`.
    pub with_reuseaddr: Verdict,
    /// Listening sockets on the port (any address).
    pub listeners: Vec<Socket>,
    /// Every other socket bound to the port, by state, oldest first.
    pub sockets: Vec<Socket>,
    /// TIME_WAIT and orphaned FIN_WAIT2 mini sockets, and when the last goes.
    pub time_wait: Option<TimeWait>,
}

/// When the mini sockets go.
#[derive(Clone, Debug, Serialize)]
pub struct TimeWait {
    /// How many (TIME_WAIT and orphaned FIN_WAIT2 mini sockets).
    pub count: usize,
    /// Seconds until the last one is destroyed (the kernel's timer).
    pub last_expires_in_seconds: f64,
    /// When, wall clock (RFC 3339, UTC).
    pub last_expires_at: String,
    /// They are all that keeps a plain bind out: it succeeds then (unless
    /// a FIN_WAIT2 one's peer closes first: see `fin_wait2`).
    pub free_then: bool,
    /// Of them, orphaned FIN_WAIT2 sockets: one whose peer closes before
    /// its timer ends moves to TIME_WAIT and holds the port 60 s more.
    pub fin_wait2: usize,
}

/// One socket bound to the port.
#[derive(Clone, Debug, Serialize)]
pub struct Socket {
    /// The kernel's socket cookie.
    pub cookie: u64,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// Its state (kernel name).
    pub state: TcpState,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port (`0.0.0.0:0` or `[::]:0` for listeners).
    pub peer: SocketAddr,
    /// Seconds in this state; `null` when unknown (no agent).
    pub age_seconds: Option<f64>,
    /// The age is at least this (the socket predates the agent).
    pub age_is_lower_bound: bool,
    /// Where the age comes from: `kernel_timer` (TIME_WAIT: 60 s minus
    /// its timer), `agent`, or `null` (unknown).
    pub age_source: Option<&'static str>,
    /// Seconds until the kernel destroys it (TIME_WAIT, orphaned FIN_WAIT2).
    pub expires_in_seconds: Option<f64>,
    /// `local` or `remote`: which side closed first, from the state;
    /// the agent's `closed_by` (which may also say `reset` or `timeout`)
    /// when it knows.
    pub closed_first: Option<String>,
    /// `local` (it connected) or `remote` (it was accepted), when the
    /// agent saw its handshake; `null` otherwise (and for listeners).
    pub opened_by: Option<&'static str>,
    /// Processes holding it (none for TIME_WAIT and orphaned sockets).
    pub owners: Vec<Owner>,
    /// True when it has an owner that could not be named (as in
    /// `tracer leaks`): not readable without privileges, or outside this
    /// pid namespace.
    pub owner_unknown: bool,
    /// With `owner_unknown`: why, and what would name the owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_hint: Option<&'static str>,
    /// Its `SO_REUSEADDR`, read through an owner's descriptor; `null`
    /// when it has none (TIME_WAIT, orphaned) or it could not be read.
    pub reuseaddr: Option<bool>,
    /// Its `IPV6_V6ONLY` (IPv6 sockets), read the same way.
    pub v6only: Option<bool>,
    /// The process of its last syscall-driven transition, per the agent.
    pub last_seen_process: Option<Owner>,
    /// Why it keeps a plain listener out (`listening`, `bound`), or `null`.
    pub blocks_without_reuseaddr: Option<&'static str>,
    /// Why it keeps a `SO_REUSEADDR` listener out (`listening`,
    /// `reuseaddr_unknown`), or `null`.
    pub blocks_with_reuseaddr: Option<&'static str>,
    /// A listener's accept queue: connections the kernel completed that the
    /// process has not accepted yet, and its backlog; `null` for others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<AcceptQueue>,
    /// A connection completed but not accepted yet: it has no file and
    /// waits in its listener's accept queue.
    pub not_accepted: bool,
    /// With `not_accepted`: the processes holding that listener (every
    /// listener on its address, with `SO_REUSEPORT`), which should accept
    /// it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listener_owners: Vec<Owner>,
}

/// A listener's accept queue, as `ss -lt` shows it (Recv-Q, Send-Q).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AcceptQueue {
    /// Connections waiting for `accept()`.
    pub waiting: u32,
    /// The backlog `listen()` asked for, capped by `somaxconn`.
    pub backlog: u32,
    /// More wait than the backlog holds: the kernel drops new handshakes
    /// (`ListenOverflows`) until the process accepts.
    pub full: bool,
}

/// A process holding a socket.
#[derive(Clone, Debug, Serialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Descriptor number; `null` when only the agent saw the process.
    pub fd: Option<u32>,
}

/// Which side closed first, from the state alone.
pub fn closed_first(state: TcpState) -> Option<&'static str> {
    match state {
        TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing | TcpState::TimeWait => {
            Some("local")
        }
        TcpState::CloseWait | TcpState::LastAck => Some("remote"),
        _ => None,
    }
}

/// A new listener's view of a socket on the port.
fn holder(h: &Held) -> Holder {
    Holder {
        addr: h.snap.saddr,
        state: h.snap.state,
        v6only: h.options.and_then(|o| o.v6only),
        reuseaddr: h.options.map(|o| o.reuseaddr),
    }
}

fn socket(h: &Held, plain: Option<Reason>, reuse: Option<Reason>) -> Socket {
    let s = &h.snap;
    // TIME_WAIT's age comes from its timer even with an agent: a socket
    // that reached TIME_WAIT from an orphaned FIN_WAIT2 mini socket moved
    // without a state-change event, so the agent dates it from the mini.
    // A CLOSE_WAIT socket's age is at least the time since the peer's
    // FIN, as `tracer leaks` reckons it.
    let fin = s.close_wait_at_least_ns().map(|ns| ns as f64 / 1e9);
    let (age, lower, source) = match (&h.agent, fin) {
        _ if s.timewait && s.state == TcpState::TimeWait => (
            Some(f64::from(TIME_WAIT_LEN_MS.saturating_sub(s.expires_ms)) / 1e3),
            false,
            Some("kernel_timer"),
        ),
        (Some(a), Some(fin)) if a.age_is_lower_bound => {
            (Some(a.age_seconds.max(fin)), true, Some("agent"))
        }
        (Some(a), _) => (Some(a.age_seconds), a.age_is_lower_bound, Some("agent")),
        (None, Some(fin)) => (Some(fin), true, Some("last_ack")),
        (None, None) => (None, false, None),
    };
    Socket {
        cookie: s.cookie,
        family: s.family.name(),
        state: s.state,
        local: SocketAddr::new(s.saddr, s.sport),
        peer: SocketAddr::new(s.daddr, s.dport),
        age_seconds: age,
        age_is_lower_bound: lower,
        age_source: source,
        expires_in_seconds: s.timewait.then(|| f64::from(s.expires_ms) / 1e3),
        closed_first: h
            .agent
            .as_ref()
            .and_then(|a| a.closed_by.clone())
            .or_else(|| closed_first(s.state).map(str::to_owned)),
        // A life the agent saw begin starts `close, syn_sent` (it
        // connected) or `listen, syn_recv` (it was accepted).
        opened_by: h.agent.as_ref().and_then(|a| {
            a.path.iter().take(2).find_map(|st| match st.as_str() {
                "syn_sent" => Some("local"),
                "syn_recv" | "new_syn_recv" => Some("remote"),
                _ => None,
            })
        }),
        owners: owners_of(h),
        owner_unknown: h.owner_unknown.is_some(),
        owner_hint: h.owner_unknown,
        reuseaddr: h.options.map(|o| o.reuseaddr),
        v6only: h.options.and_then(|o| o.v6only),
        last_seen_process: h.agent.as_ref().and_then(|a| {
            Some(Owner {
                pid: a.pid?,
                comm: a.comm.clone().unwrap_or_default(),
                fd: None,
            })
        }),
        blocks_without_reuseaddr: plain.map(Reason::name),
        blocks_with_reuseaddr: reuse.map(Reason::name),
        // sock_diag gives a listener's queue in rqueue and its backlog in
        // wqueue.
        accept_queue: (s.state == TcpState::Listen).then_some(AcceptQueue {
            waiting: s.rqueue,
            backlog: s.wqueue,
            full: s.accept_queue_full(),
        }),
        not_accepted: s.awaits_accept(),
        listener_owners: Vec::new(),
    }
}

fn owners_of(h: &Held) -> Vec<Owner> {
    h.owners
        .iter()
        .map(|o| Owner {
            pid: o.pid,
            comm: o.comm.clone(),
            fd: Some(o.fd),
        })
        .collect()
}

/// Judge what was found for a new listener on `addr` (`v6only` as
/// given). `test_bind` resolves an unknown `SO_REUSEADDR` verdict in a
/// namespace: `Some(true)` when a test bind succeeded there.
pub fn build(
    port: u16,
    addr: IpAddr,
    v6only: bool,
    found: &Found,
    note: String,
    mut test_bind: impl FnMut(u32) -> Option<bool>,
) -> Report {
    let now = SystemTime::now();
    let plain = Bind {
        addr,
        v6only,
        reuseaddr: false,
    };
    let reuse = Bind {
        reuseaddr: true,
        ..plain
    };
    let lacks = |netns: &u32| found.addr_in.get(netns) == Some(&Some(false));
    let mut namespaces = Vec::new();
    for (&netns, held) in found.by_netns.iter().filter(|(n, _)| !lacks(n)) {
        let holders: Vec<Holder> = held.iter().map(holder).collect();
        let (p_out, p_why) = verdict(&plain, &holders);
        let (mut r_out, r_why) = verdict(&reuse, &holders);
        let mut tested = false;
        if r_out == Outcome::Unknown
            && let Some(ok) = test_bind(netns)
        {
            tested = true;
            r_out = if ok { Outcome::Free } else { Outcome::Busy };
        }
        let reason =
            |why: &[(usize, Reason)], i: usize| why.iter().find(|&&(j, _)| j == i).map(|&(_, r)| r);
        let (mut listeners, mut sockets) = (Vec::new(), Vec::new());
        let listening: Vec<(IpAddr, u64)> = held
            .iter()
            .filter(|h| h.snap.state == TcpState::Listen && h.snap.inode != 0)
            .map(|h| (h.snap.saddr, h.snap.inode))
            .collect();
        // Every listener's owners by address: with SO_REUSEPORT several
        // share one, and which one's queue holds a connection is not told.
        let mut owners_at: HashMap<IpAddr, Vec<Owner>> = HashMap::new();
        for l in held.iter().filter(|h| h.snap.state == TcpState::Listen) {
            owners_at
                .entry(l.snap.saddr)
                .or_default()
                .extend(owners_of(l));
        }
        for (i, h) in held.iter().enumerate() {
            let r = if tested && r_out == Outcome::Free {
                None
            } else {
                reason(&r_why, i)
            };
            let mut s = socket(h, reason(&p_why, i), r);
            if s.not_accepted
                && let Some(&(at, _)) = listener_for(&listening, h.snap.saddr)
            {
                s.listener_owners = owners_at.get(&at).cloned().unwrap_or_default();
            }
            if h.snap.state == TcpState::Listen {
                listeners.push(s);
            } else {
                sockets.push(s);
            }
        }
        // By state, oldest first (unknown ages last).
        sockets.sort_by(|a: &Socket, b: &Socket| {
            let age = |s: &Socket| s.age_seconds.unwrap_or(-1.0);
            (a.state.index().cmp(&b.state.index()))
                .then(age(b).total_cmp(&age(a)))
                .then((a.local, a.peer).cmp(&(b.local, b.peer)))
        });
        let minis: Vec<&Held> = held.iter().filter(|h| h.snap.timewait).collect();
        let time_wait = minis.iter().map(|h| h.snap.expires_ms).max().map(|ms| {
            let left = Duration::from_millis(u64::from(ms));
            TimeWait {
                count: minis.len(),
                last_expires_in_seconds: left.as_secs_f64(),
                last_expires_at: humantime::format_rfc3339_millis(now + left).to_string(),
                free_then: p_why.iter().all(|&(i, _)| held[i].snap.timewait),
                fin_wait2: minis
                    .iter()
                    .filter(|h| h.snap.state == TcpState::FinWait2)
                    .count(),
            }
        });
        namespaces.push(Namespace {
            netns,
            name: found.names.get(&netns).cloned(),
            container: found.containers.get(netns).map(|c| (**c).clone()),
            without_reuseaddr: say(p_out, &p_why, false),
            with_reuseaddr: say(r_out, &r_why, tested),
            listeners,
            sockets,
            time_wait,
        });
    }
    let checked = found.addr_in.values();
    let addr_available = if checked.len() == 0 {
        None
    } else if checked.clone().any(|&has| has == Some(true)) {
        Some(true)
    } else if checked.clone().all(|&has| has == Some(false)) {
        Some(false)
    } else {
        None
    };
    let unavailable = addr_available == Some(false);
    let free = !unavailable
        && namespaces
            .iter()
            .all(|n| n.without_reuseaddr.outcome == "free");
    let free_with_reuseaddr = if unavailable
        || namespaces
            .iter()
            .any(|n| n.with_reuseaddr.outcome == "busy")
    {
        Some(false)
    } else if namespaces
        .iter()
        .all(|n| n.with_reuseaddr.outcome == "free")
    {
        Some(true)
    } else {
        None
    };
    Report {
        port,
        addr,
        source: if found.agent { "agent" } else { "snapshot" },
        note,
        free,
        free_with_reuseaddr,
        at: humantime::format_rfc3339_millis(now).to_string(),
        namespaces_scanned: found.namespaces,
        own_netns: 0,
        namespaces_not_entered: found.refused,
        processes_not_read: found.unread,
        addr_available,
        namespaces_without_addr: found.by_netns.keys().filter(|n| lacks(n)).count(),
        namespaces,
        clients_time_wait: found.clients_time_wait,
    }
}

impl Report {
    /// 0 when a plain bind succeeds everywhere, 1 when it fails somewhere
    /// (or no namespace has the address).
    pub fn exit_code(&self) -> i32 {
        if self.free { 0 } else { 1 }
    }
}
