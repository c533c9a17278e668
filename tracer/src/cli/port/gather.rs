//! What holds the port: the kernel's sockets on it (a sock_diag snapshot
//! of every namespace in scope, with their owners from `/proc`), and,
//! when an agent answers, what it knows of the same sockets (exact ages,
//! who closed first, the process that made the last syscall).
//!
//! The snapshot is always taken, with an agent too: it is the truth for
//! which sockets are in the bind table right now (listeners included), it
//! carries the TIME_WAIT timers, and it is cheap. The agent's answer is
//! joined to it by cookie. Sockets with an owner get their options read
//! ([`options_of`]).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use anyhow::Context as _;
use serde::Deserialize;

use super::{
    bind::in_bind_table,
    probe::{SockOptions, has_addr, options_of},
};
use crate::{
    cli::leaks::AgentClient,
    container::ContainerMap,
    diag::{own_netns, own_sockets, owners_of},
    pipeline::{NetnsScope, discover::discover, snapshot},
    snapshot::{FdOwner, SocketSnapshot},
};

/// Most sockets asked of the agent per page (its maximum).
const PAGE: usize = 10_000;

/// A socket as `/api/v1/sockets` lists it: the fields used here.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct AgentSocket {
    /// The kernel's socket cookie.
    pub cookie: u64,
    /// Local port.
    pub sport: u16,
    /// Seconds in the current state.
    pub age_seconds: f64,
    /// The socket predates the agent: the age is a lower bound.
    #[serde(default)]
    pub age_is_lower_bound: bool,
    /// `local`, `remote` or `reset`.
    #[serde(default)]
    pub closed_by: Option<String>,
    /// The process of the last syscall-driven transition.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Its command name.
    #[serde(default)]
    pub comm: Option<String>,
    /// Still open in the kernel (closed ones linger in the API a while).
    #[serde(default)]
    pub live: bool,
    /// The states it went through, first 8 (`syn_sent` first: it
    /// connected; `syn_recv`: it was accepted).
    #[serde(default)]
    pub path: Vec<String>,
}

/// One socket on the port.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    /// What sock_diag said.
    pub snap: SocketSnapshot,
    /// Every (process, fd) holding it.
    pub owners: Vec<FdOwner>,
    /// With no owners found although it has one (an inode): why, and what
    /// would name it ([`crate::snapshot::OwnerScan::unknown`]).
    pub owner_unknown: Option<&'static str>,
    /// What the agent knows of it, when one answered and tracked it.
    pub agent: Option<AgentSocket>,
    /// Its options, read through an owner's descriptor when it has one.
    pub options: Option<SockOptions>,
}

/// Everything found about the port.
#[derive(Debug, Default)]
pub struct Found {
    /// The sockets in the bind table on the port, by namespace inode.
    pub by_netns: BTreeMap<u32, Vec<Held>>,
    /// The container of each namespace that has one.
    pub containers: ContainerMap,
    /// `/run/netns` names, by inode.
    pub names: HashMap<u32, String>,
    /// Where each namespace can be entered (for the test bind).
    pub paths: HashMap<u32, std::path::PathBuf>,
    /// Namespaces dumped.
    pub namespaces: usize,
    /// Namespaces that could not be entered.
    pub refused: usize,
    /// Processes whose namespace could not be read ([`Census::unread`](crate::pipeline::Census::unread)).
    pub unread: u32,
    /// The agent answered.
    pub agent: bool,
    /// Sockets on the port in scope that the agent follows.
    pub agent_sockets: usize,
    /// The one namespace the agent follows, when it follows one.
    pub agent_followed: Option<u32>,
    /// TIME_WAIT sockets of connections *to* the port, on their clients'
    /// side in the namespaces scanned: they hold the clients' ports, not
    /// this one.
    pub clients_time_wait: usize,
    /// For a specific `--addr`: whether each namespace checked has it
    /// (`None`: could not tell); empty for any address.
    pub addr_in: HashMap<u32, Option<bool>>,
}

impl Found {
    /// How to enter namespace `netns` for a probe: `Some(None)` for this
    /// process's own (`own`, or 0: unreadable), `Some(path)` for another,
    /// `None` when no path to it is known.
    pub fn entry(&self, netns: u32, own: u32) -> Option<Option<&std::path::Path>> {
        if netns == own || netns == 0 {
            Some(None)
        } else {
            Some(Some(self.paths.get(&netns)?.as_path()))
        }
    }
}

/// Snapshot `scope`, keep what is bound to `port`, name its owners, ask
/// the agent `client` reaches (if one answers) what it knows of them, and
/// check which namespaces have `addr`.
pub fn gather(
    port: u16,
    addr: IpAddr,
    scope: NetnsScope,
    client: &AgentClient,
) -> anyhow::Result<Found> {
    let agent = ask_agent(client, port)?;
    let agent_followed = match agent {
        Some(_) => followed_by(client)?,
        None => None,
    };
    let (dump, census) = snapshot(scope).context("taking a sock_diag snapshot")?;
    let clients_time_wait = dump
        .iter()
        .filter(|s| s.dport == port && s.timewait && s.state == crate::tcp::TcpState::TimeWait)
        .count();
    // This command's own connections to the agent, when the agent serves
    // on the port asked about: the agent's ends of them hold the port only
    // for the question. The client keeps its connection open (pooled) past
    // the answers, so its end is in this dump to match against.
    let ours = own_sockets();
    let asking: HashSet<(u32, IpAddr, u16)> = dump
        .iter()
        .filter(|s| s.dport == port && ours.contains(&s.inode))
        .map(|s| (s.netns, s.saddr.to_canonical(), s.sport))
        .collect();
    let held: Vec<SocketSnapshot> = dump
        .into_iter()
        .filter(|s| s.sport == port && in_bind_table(s.state))
        .filter(|s| !asking.contains(&(s.netns, s.daddr.to_canonical(), s.dport)))
        .collect();
    let inodes: HashSet<u64> = held.iter().map(|s| s.inode).filter(|&i| i != 0).collect();
    let owners_scan = owners_of(&inodes);
    let mut found = Found {
        containers: (*census.containers).clone(),
        namespaces: census.tracked.max(1),
        refused: census.refused.len(),
        unread: census.unread(),
        agent: agent.is_some(),
        agent_followed,
        clients_time_wait,
        ..Found::default()
    };
    let mut agent = agent.unwrap_or_default();
    for snap in held {
        let owners = owners_scan.get(&snap.inode).cloned().unwrap_or_default();
        let options = owners
            .iter()
            .find_map(|o| options_of(o.pid, o.fd, snap.inode));
        found.by_netns.entry(snap.netns).or_default().push(Held {
            owner_unknown: owners_scan.unknown(snap.inode),
            owners,
            options,
            agent: agent.remove(&snap.cookie),
            snap,
        });
    }
    // The agent's sockets in scope: those the snapshot holds too.
    found.agent_sockets = found
        .by_netns
        .values()
        .flatten()
        .filter(|h| h.agent.is_some())
        .count();
    for list in found.by_netns.values_mut() {
        list.sort_by_key(|h| (h.snap.state, h.snap.saddr, h.snap.daddr, h.snap.dport));
    }
    let namespaces = discover();
    found.names = namespaces.names().into_iter().collect();
    found.paths = namespaces.paths.into_iter().collect();
    found.addr_in = addr_check(addr, scope, &found);
    Ok(found)
}

/// Which namespaces in `scope` have `addr`, when it is a specific address
/// (a listener on it binds only where an interface has it): every
/// namespace holding the port, and this process's, then the others until
/// one has it. Empty for an unspecified address (`::`, `0.0.0.0`).
fn addr_check(addr: IpAddr, scope: NetnsScope, found: &Found) -> HashMap<u32, Option<bool>> {
    let mut out = HashMap::new();
    if addr.is_unspecified() {
        return out;
    }
    let own = own_netns();
    let check = |netns: u32| has_addr(addr, found.entry(netns, own)?);
    match scope {
        NetnsScope::One { inode, .. } => {
            out.insert(inode, check(inode));
        }
        NetnsScope::All { .. } => {
            for &netns in found.by_netns.keys().chain([&own]) {
                out.entry(netns).or_insert_with(|| check(netns));
            }
            let rest: Vec<u32> = found
                .paths
                .keys()
                .copied()
                .filter(|n| !out.contains_key(n))
                .collect();
            for netns in rest {
                if out.values().any(|&has| has == Some(true)) {
                    break;
                }
                out.insert(netns, check(netns));
            }
        }
    }
    out
}

/// The one network namespace the agent follows, if it was started with
/// `--netns` for one (`followed_netns` in `/api/v1/summary`).
fn followed_by(client: &AgentClient) -> anyhow::Result<Option<u32>> {
    let Some(summary) = client.get_json::<serde_json::Value>("/api/v1/summary")? else {
        return Ok(None);
    };
    Ok(summary["followed_netns"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok()))
}

/// Every live socket the agent lists with `port` as its local port, by
/// cookie; `None` when no agent answers.
fn ask_agent(client: &AgentClient, port: u16) -> anyhow::Result<Option<HashMap<u64, AgentSocket>>> {
    let mut out = HashMap::new();
    let mut after: Option<u64> = None;
    loop {
        let mut path = format!("/api/v1/sockets?port={port}&limit={PAGE}");
        if let Some(a) = after {
            path.push_str(&format!("&after={a}"));
        }
        let Some(page) = client.get_json::<Vec<AgentSocket>>(&path)? else {
            return Ok(None);
        };
        let full = page.len() >= PAGE;
        after = page.last().map(|s| s.cookie);
        out.extend(
            page.into_iter()
                .filter(|s| s.sport == port && s.live)
                .map(|s| (s.cookie, s)),
        );
        if !full || after.is_none() {
            return Ok(Some(out));
        }
    }
}
