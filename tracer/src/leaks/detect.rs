//! The rules, and the little state they need between dumps: when each
//! candidate socket was first seen in its state, when each stall began,
//! the active flags, and a bounded ring of cleared ones.
//!
//! Memory: the first-seen and stall maps hold only sockets in candidate
//! states that are still in the last dump (swept every update), capped at
//! [`MAX_TRACKED`]; sockets beyond the cap are counted in
//! [`DetectorStats::untracked`] and get an age only from the engine.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

pub use super::rules::Ending;
use super::rules::{
    GONE, HELD_ON, ORPHAN_GONE, PortAcc, SHUT_DOWN, STILL_HELD, Stall, apply_scan,
    attribute_to_listeners, cleared_how, find_local_peers, gone_how,
};
use super::{Change, Flag, LeakKind, Thresholds};
use super::{
    report::{Report, Source},
    rollup::{Gauges, Rollup},
};
use crate::{
    engine::Engine,
    snapshot::{Lookup, OwnerScan, SocketSnapshot},
    tcp::TcpState,
};

/// Cap on first-seen and stall entries (each).
pub const MAX_TRACKED: usize = 1 << 20;
/// Cleared flags kept for the report.
pub const HISTORY: usize = 256;
/// How long a flag cleared as gone from a dump is looked up again in the
/// engine, at each reconcile and each `/api/v1/leaks` answer, to say how
/// its socket ended. The engine keeps a closed socket's record
/// `--closed-retention` (5 s by default) after its close, which bounds it
/// anyway; this bounds the work.
pub const REFINE_NS: u64 = 60_000_000_000;

/// How often the owners of raised flags are looked up again, at most, so
/// that a process that exited or closed its fd is not named after it. A
/// scan for a new flag refreshes them all at once: the walk of `/proc` is
/// the same. Where a walk takes longer than a hundredth of this, the
/// refresh waits a hundred times the walk, so refreshing alone never takes
/// more than 1% of the event loop's time (a new flag is still looked up at
/// once: its first report names its owners).
pub const OWNERS_FRESH_NS: u64 = 10_000_000_000;

/// What a flag is about: one socket, one listening port in one network
/// namespace (`syn_recv`: only a walk lists request sockets), or one
/// listener (`accept_queue_full`: every dump lists the listeners, a
/// lookup dump too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Subject {
    Socket(u64),
    Port(u32, u16),
    Listener(u64),
}

type Key = (LeakKind, Subject);

/// What a dump shows the detector.
#[derive(Clone, Copy, Debug)]
pub enum Coverage<'a> {
    /// Every socket of the namespaces dumped: a walk.
    All,
    /// Only the sockets with these cookies (sorted), looked up one by one,
    /// and every listener (a lookup dump walks the listening tables):
    /// flags on other sockets and on ports, and the times kept to judge
    /// them, wait for the next walk.
    Only(&'a [u64]),
}

impl Coverage<'_> {
    fn socket(&self, cookie: u64) -> bool {
        match self {
            Coverage::All => true,
            Coverage::Only(cookies) => cookies.binary_search(&cookie).is_ok(),
        }
    }

    fn subject(&self, s: Subject) -> bool {
        match (self, s) {
            (_, Subject::Socket(c)) => self.socket(c),
            (_, Subject::Listener(_)) => true,
            (Coverage::All, Subject::Port(..)) => true,
            (Coverage::Only(_), Subject::Port(..)) => false,
        }
    }
}

mod judge;
mod stalls;

#[derive(Clone, Copy)]
struct Seen {
    state: TcpState,
    since_ns: u64,
    generation: u64,
}

/// Counters about the detector itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Sockets with a first-seen time or a stall being timed.
    pub tracked: usize,
    /// Times a socket was not tracked because a map was at [`MAX_TRACKED`].
    pub untracked: u64,
    /// Flags raised now.
    pub active: usize,
}

/// Raises and clears leak flags from successive sock_diag dumps.
pub struct Detector {
    pub(super) thresholds: Thresholds,
    seen: HashMap<u64, Seen>,
    pub(super) stalls: HashMap<u64, Stall>,
    active: BTreeMap<Key, Flag>,
    history: VecDeque<Flag>,
    rollup: Rollup,
    pub(super) generation: u64,
    pub(super) untracked: u64,
    /// When the owners of the raised flags were last looked up.
    owners_at: u64,
    /// How long the last walk of `/proc` for them took.
    owners_took: u64,
    /// When the last dump was checked (0: none yet).
    judged_ns: u64,
}

impl Detector {
    /// A detector with no history.
    pub fn new(thresholds: Thresholds) -> Detector {
        Detector {
            thresholds,
            seen: HashMap::new(),
            stalls: HashMap::new(),
            active: BTreeMap::new(),
            history: VecDeque::new(),
            rollup: Rollup::default(),
            generation: 0,
            untracked: 0,
            owners_at: 0,
            owners_took: 0,
            judged_ns: 0,
        }
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Check a dump taken at `now_ns` (CLOCK_MONOTONIC; take the dump with
    /// `DumpOptions { with_info: true }`), raise and clear flags, and return
    /// what changed: cleared flags first, then raised ones.
    ///
    /// `since(cookie, state)` returns when the socket entered `state` and
    /// whether that time is a lower bound (the engine's
    /// `state_since_ns`/`since_is_lower_bound`), or `None` when unknown; the
    /// detector then uses when it first saw the socket in that state, as a
    /// lower bound. `owners` is called at most once, with the inodes of
    /// every raised flag, when a flag is new or the owners are older than
    /// [`OWNERS_FRESH_NS`]; pass the `/proc` owner scan. A flag whose owner
    /// the scan could not see is marked `owner_unknown`, with a hint.
    pub fn update<S, O, R>(
        &mut self,
        dump: &[SocketSnapshot],
        now_ns: u64,
        since: S,
        owners: O,
    ) -> Vec<Change>
    where
        S: Fn(u64, TcpState) -> Option<(u64, bool)>,
        O: FnOnce(&HashSet<u64>) -> R,
        R: Into<OwnerScan>,
    {
        self.update_within(dump, Coverage::All, now_ns, since, owners)
    }

    /// [`Detector::update`] with a dump that shows what `coverage` says:
    /// flags on subjects it does not cover are neither raised nor cleared.
    pub fn update_within<S, O, R>(
        &mut self,
        dump: &[SocketSnapshot],
        coverage: Coverage<'_>,
        now_ns: u64,
        since: S,
        owners: O,
    ) -> Vec<Change>
    where
        S: Fn(u64, TcpState) -> Option<(u64, bool)>,
        O: FnOnce(&HashSet<u64>) -> R,
        R: Into<OwnerScan>,
    {
        self.generation += 1;
        self.judged_ns = now_ns;
        let mut found: BTreeMap<Key, Flag> = BTreeMap::new();
        let mut ports: BTreeMap<(u32, u16), PortAcc> = BTreeMap::new();
        for d in dump {
            self.check(d, now_ns, &since, &mut found, &mut ports);
        }
        find_local_peers(found.values_mut(), dump);
        attribute_to_listeners(found.values_mut(), |netns, port| {
            ports
                .get(&(netns, port))
                .map(|acc| acc.listeners.as_slice())
        });
        for (port, acc) in ports {
            if let Some(f) = self.port_flag(port, &acc, now_ns) {
                found.insert((LeakKind::StuckHandshake, Subject::Port(port.0, port.1)), f);
            }
        }
        let generation = self.generation;
        self.seen
            .retain(|&c, s| s.generation == generation || !coverage.socket(c));
        self.stalls
            .retain(|&c, s| s.generation == generation || !coverage.socket(c));

        let mut changes = Vec::new();
        let ended: Vec<Key> = self
            .active
            .keys()
            .filter(|k| !found.contains_key(k) && coverage.subject(k.1))
            .copied()
            .collect();
        if !ended.is_empty() {
            let mut now_state: HashMap<u64, TcpState> = ended
                .iter()
                .filter_map(|(_, s)| match s {
                    Subject::Socket(c) | Subject::Listener(c) => Some((*c, TcpState::Close)),
                    Subject::Port(..) => None,
                })
                .collect();
            let mut missing: HashSet<u64> = now_state.keys().copied().collect();
            for d in dump {
                if let Some(st) = now_state.get_mut(&d.cookie) {
                    *st = d.state;
                    missing.remove(&d.cookie);
                }
            }
            for key in ended {
                let Some(mut f) = self.active.remove(&key) else {
                    continue;
                };
                let state = f
                    .cookie
                    .filter(|c| !missing.contains(c))
                    .and_then(|c| now_state.get(&c).copied());
                f.cleared_at_ns = Some(now_ns);
                f.cleared_how = Some(cleared_how(&f, state));
                if self.history.len() == HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(f.clone());
                changes.push(Change::Cleared(f));
            }
        }

        let mut raised = Vec::new();
        let mut reowned = Vec::new();
        for (key, f) in found {
            match self.active.get_mut(&key) {
                Some(a) => {
                    // Accepted since (its own inode now), or its listener
                    // found: the owners are another socket's.
                    if f.inode != 0
                        && (a.inode, &a.sibling_listeners) != (f.inode, &f.sibling_listeners)
                    {
                        a.inode = f.inode;
                        a.sibling_listeners = f.sibling_listeners;
                        a.owners.clear();
                        reowned.push(key);
                    }
                    // Its local peer found (or another one): its owners too.
                    fn peer(p: &Option<super::LocalPeer>) -> Option<(u64, &[u64])> {
                        p.as_ref()
                            .map(|p| (p.inode, p.sibling_listeners.as_slice()))
                    }
                    if peer(&f.local_peer) != peer(&a.local_peer) {
                        a.local_peer = f.local_peer;
                        reowned.push(key);
                    }
                    // A half-open stall keeps its flag when its evidence
                    // changes kind, and when its socket changes state (the
                    // peer's FIN arrives: CLOSE_WAIT).
                    a.reason = f.reason;
                    a.state = f.state;
                    a.age_seconds = f.age_seconds;
                    a.age_is_lower_bound = f.age_is_lower_bound;
                    a.unread_bytes = f.unread_bytes;
                    a.read_to_end = f.read_to_end;
                    a.evidence = f.evidence;
                    a.count = f.count;
                }
                None => {
                    raised.push(key);
                    self.active.insert(key, f);
                }
            }
        }
        self.attach_owners(&raised, &reowned, owners, now_ns);
        for key in raised {
            if let Some(f) = self.active.get(&key) {
                changes.push(Change::Raised(f.clone()));
            }
        }
        self.rollup.sample(now_ns, self.active.values());
        changes
    }

    /// Owners for new flags, and again for all raised flags once theirs
    /// are [`OWNERS_FRESH_NS`] old: a process exits, or closes its copy
    /// of a socket a fork shares.
    fn attach_owners<O, R>(&mut self, raised: &[Key], reowned: &[Key], owners: O, now_ns: u64)
    where
        O: FnOnce(&HashSet<u64>) -> R,
        R: Into<OwnerScan>,
    {
        let new = raised.iter().chain(reowned).any(|k| {
            self.active
                .get(k)
                .is_some_and(|f| scanned(f).next().is_some())
        });
        let every = OWNERS_FRESH_NS.max(self.owners_took.saturating_mul(100));
        let stale = now_ns.saturating_sub(self.owners_at) >= every;
        let inodes: HashSet<u64> = self.active.values().flat_map(scanned).collect();
        if inodes.is_empty() || !(new || stale) {
            return;
        }
        let walk = std::time::Instant::now();
        let found: OwnerScan = owners(&inodes).into();
        self.owners_took = u64::try_from(walk.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.owners_at = now_ns;
        for f in self
            .active
            .values_mut()
            .filter(|f| scanned(f).next().is_some())
        {
            apply_scan(f, &found);
        }
    }

    /// The sockets of the flags raised now, to look up (with their
    /// namespace) when a live dump does not walk: a flag clears when its
    /// socket is gone, whether the engine follows it or not.
    pub fn lookups(&self, out: &mut Vec<(u32, Lookup)>) {
        for f in self.active.values() {
            if let (Some(cookie), Some(remote)) = (f.cookie, f.remote) {
                out.push((f.netns, Lookup::between(f.local, remote, cookie, f.ifindex)));
            }
        }
    }

    /// True while a flag is raised on a port (stuck server handshakes):
    /// only a walk of the kernel's tables, which lists request sockets,
    /// can clear it. (A listener's flag needs no walk: a dump that looks
    /// sockets up lists the listening tables too.)
    pub fn judges_ports(&self) -> bool {
        self.active
            .keys()
            .any(|(_, s)| matches!(s, Subject::Port(..)))
    }

    /// The flags raised now.
    pub fn active(&self) -> impl Iterator<Item = &Flag> {
        self.active.values()
    }

    /// Say how the sockets ended whose flags `changes` cleared as gone from
    /// the dump, where `record` knows: each socket's engine record as
    /// (live, state, who closed it). The history's copies too, and the
    /// history's flags cleared as gone in the last [`REFINE_NS`]: a dump
    /// can find a socket gone before the agent has read its close, so the
    /// engine may know how it ended only at a later reconcile.
    ///
    /// Where the record, its close read, says no more than "socket gone",
    /// a flag whose owner still holds the socket's descriptor (`held`)
    /// says so: its socket was closed under the process (`ss -K`, which
    /// sends the peer a reset; a sock_diag destroy), and the descriptor
    /// leaks on. A timeout, a reset or a TIME_WAIT the record tells of
    /// comes first: those, too, close a socket its process still holds.
    pub fn say_how_gone<R, H>(&mut self, changes: &mut [Change], now_ns: u64, record: R, held: H)
    where
        R: Fn(u64) -> Option<Ending>,
        H: Fn(&Flag) -> bool,
    {
        let refine = |f: &mut Flag| {
            let (Some(cookie), Some(GONE | ORPHAN_GONE)) = (f.cookie, f.cleared_how.as_deref())
            else {
                return;
            };
            let known = record(cookie);
            let how = known.and_then(|e| gone_how(f.kind, &e));
            // The close was read (or the record is gone): a descriptor
            // still held is the rest of the story.
            let held_on =
                f.cleared_how.as_deref() == Some(GONE) && known.is_none_or(|e| !e.live) && held(f);
            // In CLOSE_WAIT, `shutdown(SHUT_WR)` sends the FIN as a close
            // does (LAST_ACK), and the process keeps the descriptor.
            let shut_down =
                held_on && f.kind == LeakKind::CloseWait && known.is_some_and(|e| e.app_closed);
            f.cleared_how = match (how, held_on) {
                _ if shut_down => Some(SHUT_DOWN.to_owned()),
                (Some(how), true) => Some(format!("{how}; {HELD_ON}")),
                (Some(how), false) => Some(how.to_owned()),
                (None, true) => Some(STILL_HELD.to_owned()),
                (None, false) => return,
            };
        };
        let changed = changes.iter_mut().filter_map(|c| match c {
            Change::Cleared(f) => Some(f),
            Change::Raised(_) => None,
        });
        let recent = self
            .history
            .iter_mut()
            .rev()
            .take_while(|h| h.cleared_at_ns.unwrap_or(0) + REFINE_NS >= now_ns);
        changed.chain(recent).for_each(refine);
    }

    /// [`Detector::say_how_gone`] from `engine`'s records and `/proc`
    /// (whether an owner still holds the flag's descriptor).
    pub fn say_how_gone_by(&mut self, changes: &mut [Change], now_ns: u64, engine: &Engine) {
        self.say_how_gone(
            changes,
            now_ns,
            |cookie| {
                engine.get(cookie).map(|v| Ending {
                    live: v.is_live(),
                    state: v.state(),
                    closed_by: v.ended_by(),
                    app_closed: v.path().any(|s| s == TcpState::LastAck),
                    time_wait_end: v.time_wait_end(),
                    reset_sent: v.resets_sent() > 0,
                })
            },
            |f| {
                f.inode != 0
                    && f.owners
                        .iter()
                        .any(|o| crate::diag::holds_socket(o.pid, o.fd, f.inode))
            },
        );
    }

    /// The flags raised now, to fill in what the detector does not know
    /// (their container).
    pub fn active_mut(&mut self) -> impl Iterator<Item = &mut Flag> {
        self.active.values_mut()
    }

    /// Recently cleared flags, oldest first (at most [`HISTORY`]).
    pub fn recently_cleared(&self) -> impl Iterator<Item = &Flag> {
        self.history.iter()
    }

    /// The numbers for the agent's gauges.
    pub fn gauges(&self) -> Gauges {
        Gauges::from_flags(self.active.values())
    }

    /// The `/api/v1/leaks` report at `now_ns`.
    pub fn report(&self, now_ns: u64) -> Report {
        let mut r = Report::build(
            Source::Agent,
            None,
            now_ns,
            Some(&self.thresholds),
            self.active.values(),
            self.history.iter().rev().cloned().collect(),
            |pid, comm, count| self.rollup.growth(pid, comm, now_ns, count),
        );
        r.dump_age_seconds =
            (self.judged_ns > 0).then(|| now_ns.saturating_sub(self.judged_ns) as f64 / 1e9);
        r
    }

    /// Counters about the detector itself.
    pub fn stats(&self) -> DetectorStats {
        DetectorStats {
            tracked: self.seen.len() + self.stalls.len(),
            untracked: self.untracked,
            active: self.active.len(),
        }
    }
}

/// The inodes a flag's owners are looked up by: its socket's (or its
/// listener's), and its local peer's.
fn scanned(f: &Flag) -> impl Iterator<Item = u64> + '_ {
    let peer = f.local_peer.as_ref();
    [Some(f.inode), peer.map(|p| p.inode)]
        .into_iter()
        .flatten()
        .chain(f.sibling_listeners.iter().copied())
        .chain(
            peer.into_iter()
                .flat_map(|p| p.sibling_listeners.iter().copied()),
        )
        .filter(|&i| i != 0)
}
