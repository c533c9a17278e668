//! The [`Report`] that `/api/v1/leaks` serves and `tracer leaks` prints:
//! flags grouped by process, worst first, with the forecasts.
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{Flag, LeakKind, PerKind, Reason, Thresholds};
use crate::snapshot::{OwnerScan, SocketSnapshot};

/// Where a report's data came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The running agent, with ages and thresholds.
    Agent,
    /// A one-shot sock_diag snapshot: suspects, every CLOSE_WAIT socket
    /// that sends nothing, every listener whose accept queue is full and
    /// every connection whose retransmit timer has backed off past the
    /// half-open threshold, with ages at best lower bounds.
    Snapshot,
}

/// The thresholds, in seconds, as the report shows them.
pub type ThresholdSeconds = PerKind<f64>;

/// The flags of one process; with `pid: None`, of sockets no process holds
/// (`owner_unknown: false`) or whose owner could not be named
/// (`owner_unknown: true`, with a `hint`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessLeaks {
    /// Process id; `None` for ownerless sockets (orphans, request sockets)
    /// and for sockets whose owner is unknown.
    pub pid: Option<u32>,
    /// True for the group of sockets that have an owner we could not name.
    #[serde(default)]
    pub owner_unknown: bool,
    /// With `owner_unknown`: why, and what would name the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Process name.
    pub comm: Option<String>,
    /// Full command line.
    pub cmdline: String,
    /// cgroup v2 path.
    pub cgroup: String,
    /// Container id, if the cgroup path carries one.
    pub container_id: Option<String>,
    /// CLOSE_WAIT leaks held.
    pub close_wait: usize,
    /// Age of the oldest flag, when known.
    pub oldest_age_seconds: Option<f64>,
    /// True when that age is a lower bound.
    pub oldest_is_lower_bound: bool,
    /// CLOSE_WAIT growth over the last ~5 minutes, sockets per minute
    /// (`None`: not enough history, or a snapshot).
    pub growth_per_minute: Option<f64>,
    /// The flags, oldest first.
    pub sockets: Vec<Flag>,
    /// No process has its pid any more, by this host's `/proc` when
    /// `tracer leaks` read the report (set there, for a report of this
    /// host only): it exited after the agent's last dump, whose flags
    /// still name it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited: bool,
}

/// Everything `tracer leaks` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Agent or snapshot.
    pub source: Source,
    /// A caveat for the reader ("no agent at URL: one-shot snapshot of suspects, ages not exact").
    pub note: Option<String>,
    /// Monotonic ns of the report (0 for a snapshot).
    pub now_ns: u64,
    /// How long before the report the agent last checked a dump, whose
    /// flags (and ages) these are; `None` for a snapshot, and before the
    /// first dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_age_seconds: Option<f64>,
    /// The agent's `--reconcile-interval`: how often it dumps when its
    /// budget does not space the dumps out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_interval_seconds: Option<f64>,
    /// `now_ns` on the wall clock (see [`Report::stamp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<crate::wall::Wall>,
    /// Thresholds in force (agent only).
    pub thresholds: Option<ThresholdSeconds>,
    /// The one network namespace (inode) an agent follows, when it was
    /// started with `--netns` for one; `None`: every namespace, or a
    /// snapshot.
    #[serde(default)]
    pub followed_netns: Option<u32>,
    /// The agent's own network namespace (inode): the host's for an agent
    /// on the host or with `hostNetwork`; for a snapshot, the one `tracer
    /// leaks` ran in. `None` from an agent older than this field.
    #[serde(default)]
    pub agent_netns: Option<u32>,
    /// Network namespaces the agent cannot follow (no `CAP_SYS_ADMIN` to
    /// enter them, none of their processes readable, or past the cap):
    /// leaks there are in no flag. The note says why.
    #[serde(default, skip_serializing_if = "crate::leaks::report::none_unfollowed")]
    pub unfollowed_netns: usize,
    /// Distinct leak flags (risks excluded); `tracer leaks` exits 1 when > 0.
    pub leak_count: usize,
    /// Leaks grouped by process, worst first.
    pub leaks: Vec<ProcessLeaks>,
    /// Risks (`idle_no_keepalive`), not leaks.
    pub risks: Vec<Flag>,
    /// Recently cleared flags, newest first.
    pub recently_cleared: Vec<Flag>,
    /// When descriptors and ephemeral ports run out (docs/forecasts.md);
    /// a snapshot has descriptor counts only, with no rate.
    #[serde(default, skip_serializing_if = "crate::forecast::Forecasts::is_empty")]
    pub forecasts: crate::forecast::Forecasts,
    /// The `/run/netns` names of the flags' namespaces, on the host that
    /// made the report (the agent's, or `tracer leaks`' for a snapshot),
    /// for the table's NETNS column and `tracer top`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub netns_names: BTreeMap<u32, String>,
}

impl Report {
    /// The report with only the flags `keep` keeps (risks too), regrouped;
    /// each process keeps the growth the report gave it.
    pub fn narrowed(self, keep: impl Fn(&Flag) -> bool) -> Report {
        let growth: std::collections::HashMap<u32, Option<f64>> = self
            .leaks
            .iter()
            .filter_map(|g| Some((g.pid?, g.growth_per_minute)))
            .collect();
        let mut flags: Vec<Flag> = Vec::new();
        for f in self
            .leaks
            .iter()
            .flat_map(|g| &g.sockets)
            .chain(&self.risks)
        {
            // A flag with several owners is listed under each of them.
            let same = |o: &Flag| o.kind == f.kind && o.cookie == f.cookie && o.local == f.local;
            if keep(f) && !flags.iter().any(same) {
                flags.push(f.clone());
            }
        }
        let mut out = Report::build(
            self.source,
            self.note,
            self.now_ns,
            None,
            flags.iter(),
            self.recently_cleared
                .into_iter()
                .filter(|f| keep(f))
                .collect(),
            |pid, _, _| growth.get(&pid).copied().flatten(),
        );
        out.thresholds = self.thresholds;
        out.followed_netns = self.followed_netns;
        out.agent_netns = self.agent_netns;
        out.unfollowed_netns = self.unfollowed_netns;
        out.now = self.now;
        out.forecasts = self.forecasts;
        out.netns_names = self.netns_names;
        // A process's descriptors go with its leaks.
        let pids: Vec<Option<u32>> = out.leaks.iter().map(|g| g.pid).collect();
        out.forecasts.fd.retain(|f| pids.contains(&Some(f.pid)));
        out
    }

    /// Every flag of the report: leaks, risks and those recently cleared.
    fn flags_mut(&mut self) -> impl Iterator<Item = &mut Flag> {
        self.leaks
            .iter_mut()
            .flat_map(|g| g.sockets.iter_mut())
            .chain(self.risks.iter_mut())
            .chain(self.recently_cleared.iter_mut())
    }

    /// Say beside each connection waiting for `accept()`, and each full
    /// accept queue, when the process that should accept is out of
    /// descriptors now (its forecast): then `accept()` fails with EMFILE,
    /// which is why they wait. Call once the forecasts are in.
    pub fn link_forecasts(&mut self) {
        let out: Vec<&crate::forecast::FdForecast> = self
            .forecasts
            .fd
            .iter()
            .filter(|f| f.seconds_left == Some(0.0))
            .collect();
        if out.is_empty() {
            return;
        }
        let words: Vec<(u32, String)> = out
            .iter()
            .map(|f| {
                let limit = f.fd_limit.map_or("unlimited".into(), |l| l.to_string());
                let said = format!(
                    "; pid {} is out of descriptors ({} of {limit}): its accept() fails with EMFILE",
                    f.pid, f.open_fds
                );
                (f.pid, said)
            })
            .collect();
        for g in &mut self.leaks {
            for f in &mut g.sockets {
                if !matches!(
                    f.reason,
                    Some(Reason::NotAccepted | Reason::AcceptQueueFull)
                ) {
                    continue;
                }
                if let Some((_, said)) = words
                    .iter()
                    .find(|(pid, _)| f.owners.iter().any(|o| o.pid == *pid))
                    && !f.evidence.ends_with(said.as_str())
                {
                    f.evidence.push_str(said);
                }
            }
        }
    }

    /// Add `said` to the note, after what it says already.
    pub fn add_note(&mut self, said: String) {
        self.note = Some(match self.note.take() {
            Some(n) => format!("{n}; {said}"),
            None => said,
        });
    }

    /// Keep of `names` (`/run/netns` names by inode, of the host that made
    /// the report) those of the flags' namespaces.
    pub fn name_namespaces(&mut self, mut names: BTreeMap<u32, String>) {
        // The flags' own, and those of local peers in other namespaces.
        let mut used: std::collections::BTreeSet<u32> = self
            .flags_mut()
            .flat_map(|f| [Some(f.netns), f.local_peer.as_ref().and_then(|p| p.netns)])
            .flatten()
            .collect();
        used.extend(self.forecasts.ports.iter().map(|p| p.endpoint.netns));
        names.retain(|inode, _| used.contains(inode));
        self.netns_names = names;
    }

    /// Fill in the wall-clock times of the report and of every flag.
    pub fn stamp(&mut self, clock: &crate::wall::WallClock) {
        self.now = clock.at_known(self.now_ns);
        for f in self.flags_mut() {
            f.stamp(clock);
        }
    }

    /// Fill in the container of every flag, by its namespace and owners;
    /// with `host_network`, of flags in namespaces no container holds too,
    /// by their owners' cgroups (a container on the host's network: a
    /// snapshot's flags; the agent names its own when it raises them).
    pub fn attribute(&mut self, map: &crate::container::ContainerMap, host_network: bool) {
        if map.is_empty() && !host_network {
            return;
        }
        let mut namer = map.namer();
        for f in self.flags_mut() {
            if f.container.is_none() && (host_network || map.get(f.netns).is_some()) {
                f.container = namer.owning(f.netns, f.owners.iter().map(|o| o.pid));
            }
        }
    }

    /// Group `flags` by owning process, worst first (most CLOSE_WAIT, then
    /// most flags, then oldest), and the orphans no process holds last. `growth(pid, comm, count)` gives a
    /// process's CLOSE_WAIT growth.
    pub fn build<'a>(
        source: Source,
        note: Option<String>,
        now_ns: u64,
        thresholds: Option<&Thresholds>,
        flags: impl Iterator<Item = &'a Flag>,
        recently_cleared: Vec<Flag>,
        growth: impl Fn(u32, &str, u32) -> Option<f64>,
    ) -> Report {
        let mut groups: BTreeMap<Holder, ProcessLeaks> = BTreeMap::new();
        let mut risks = Vec::new();
        let mut leak_count = 0;
        for f in flags {
            if !f.kind.is_leak() {
                risks.push(f.clone());
                continue;
            }
            leak_count += 1;
            let mut holders: Vec<Holder> = f.owners.iter().map(|o| Holder::Pid(o.pid)).collect();
            holders.dedup();
            if holders.is_empty() {
                holders.push(match (&f.owner_hint, f.owner_unknown) {
                    (Some(hint), true) => Holder::Unknown(hint.clone()),
                    (None, true) => Holder::Unknown(String::new()),
                    (_, false) => Holder::Nobody,
                });
            }
            for holder in holders {
                let g = groups.entry(holder.clone()).or_insert_with(|| {
                    let pid = match holder {
                        Holder::Pid(pid) => Some(pid),
                        _ => None,
                    };
                    let o = f.owners.iter().find(|o| Some(o.pid) == pid);
                    let hint = match &holder {
                        Holder::Unknown(h) if !h.is_empty() => Some(h.clone()),
                        _ => None,
                    };
                    ProcessLeaks {
                        pid,
                        owner_unknown: matches!(holder, Holder::Unknown(_)),
                        hint,
                        comm: o.map(|o| o.comm.clone()),
                        cmdline: o.map(|o| o.cmdline.clone()).unwrap_or_default(),
                        cgroup: o.map(|o| o.cgroup.clone()).unwrap_or_default(),
                        container_id: o.and_then(|o| o.container_id.clone()),
                        close_wait: 0,
                        oldest_age_seconds: None,
                        oldest_is_lower_bound: false,
                        growth_per_minute: None,
                        sockets: Vec::new(),
                        exited: false,
                    }
                });
                g.close_wait += usize::from(f.kind == LeakKind::CloseWait);
                if let Some(a) = f.age_seconds
                    && g.oldest_age_seconds.is_none_or(|o| a > o)
                {
                    g.oldest_age_seconds = Some(a);
                    g.oldest_is_lower_bound = f.age_is_lower_bound;
                }
                g.sockets.push(f.clone());
            }
        }
        let mut leaks: Vec<ProcessLeaks> = groups.into_values().collect();
        for g in &mut leaks {
            // Oldest first; as old (a burst of them), by the process's
            // fd, as `ls -l /proc/PID/fd` lists them.
            let fd = |f: &Flag| {
                f.owners
                    .iter()
                    .find(|o| Some(o.pid) == g.pid)
                    .map_or(u32::MAX, |o| o.fd)
            };
            // Ages as the table shows them, to a tenth of a second.
            let tenths = |f: &Flag| f.age_seconds.map_or(-1, |a| (a * 10.0).round() as i64);
            g.sockets
                .sort_by(|a, b| tenths(b).cmp(&tenths(a)).then(fd(a).cmp(&fd(b))));
            if let (Some(pid), Some(comm)) = (g.pid, &g.comm)
                && let Ok(n) = u32::try_from(g.close_wait)
                && n > 0
            {
                g.growth_per_minute = growth(pid, comm, n);
            }
        }
        // Orphans, which no process holds, after every process's group:
        // each of their flags names the peer that keeps them, which is
        // where to look.
        let nobody = |g: &ProcessLeaks| g.pid.is_none() && !g.owner_unknown;
        leaks.sort_by(|a, b| {
            nobody(a)
                .cmp(&nobody(b))
                .then(b.close_wait.cmp(&a.close_wait))
                .then(b.sockets.len().cmp(&a.sockets.len()))
                .then(
                    b.oldest_age_seconds
                        .unwrap_or(-1.0)
                        .total_cmp(&a.oldest_age_seconds.unwrap_or(-1.0)),
                )
                .then(a.pid.cmp(&b.pid))
        });
        Report {
            source,
            note,
            now_ns,
            dump_age_seconds: None,
            dump_interval_seconds: None,
            now: None,
            thresholds: thresholds.map(|t| t.map(|d| d.as_secs_f64())),
            leak_count,
            followed_netns: None,
            agent_netns: None,
            unfollowed_netns: 0,
            leaks,
            risks,
            recently_cleared,
            forecasts: crate::forecast::Forecasts::default(),
            netns_names: BTreeMap::new(),
        }
    }

    /// The exit status `tracer leaks` uses: 1 with leaks, or when a
    /// forecast says something has run out now; else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.leak_count > 0 || self.forecasts.run_out())
    }
}

/// Who holds a group's sockets: a process, someone we could not name
/// (with the hint), or nobody.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    Pid(u32),
    Unknown(String),
    Nobody,
}

/// The report of a one-shot snapshot (no agent): every CLOSE_WAIT socket of
/// `dump` that has sent no data for the default CLOSE_WAIT threshold, or
/// never (a half-close in use sends its answer), is a suspected leak, with its owners
/// from `owners` (as the `/proc` owner scan returns: the holders, and
/// whether an owner not found could not be read; for one never accepted,
/// its listener's) and its age at least the time since the peer's last ACK
/// (its FIN at the latest); so is every listener whose accept queue is full,
/// and every connection whose retransmit timer has spent the half-open
/// threshold (`rules::stall_suspect`), which is then not also a CLOSE_WAIT
/// suspect.
/// Each holder's descriptors against its limit, from `/proc`, are in its
/// forecasts, with no rate.
pub fn snapshot_report(dump: &[SocketSnapshot], owners: &OwnerScan, note: String) -> Report {
    snapshot_report_with(dump, owners, note, crate::forecast::procfs::fd_usage)
}

/// [`snapshot_report`] with each process's descriptors from `usage`.
pub fn snapshot_report_with(
    dump: &[SocketSnapshot],
    owners: &OwnerScan,
    note: String,
    usage: impl Fn(u32) -> Option<crate::forecast::FdUsage>,
) -> Report {
    let defaults = super::Thresholds::default();
    let in_use = defaults.close_wait;
    let mut listeners: HashMap<(u32, u16), Vec<(std::net::IpAddr, u64)>> = HashMap::new();
    for d in dump
        .iter()
        .filter(|d| d.state == crate::tcp::TcpState::Listen && d.inode != 0)
    {
        listeners
            .entry((d.netns, d.sport))
            .or_default()
            .push((d.saddr, d.inode));
    }
    let mut flags: Vec<Flag> = dump
        .iter()
        .filter_map(|d| {
            // A socket whose answer goes unacknowledged is a half-open
            // suspect, not also a CLOSE_WAIT one: it did write.
            let mut f = if let Some(f) = super::rules::stall_suspect(d, defaults.half_open) {
                f
            } else if d.state == crate::tcp::TcpState::CloseWait && !d.timewait {
                // It sent lately, and has sent at all (a socket that never
                // did has its birth as its last send; a connecting one
                // counts its SYN, 1): a half-close in use.
                let answering = d.info.is_some_and(|i| {
                    i.bytes_acked > 1
                        && Duration::from_millis(u64::from(i.last_data_sent_ms)) < in_use
                });
                if answering {
                    return None;
                }
                let (age, _) = super::rules::fin_floor(d, (0, true));
                let since = if age == 0 {
                    ", age unknown (snapshot)".to_owned()
                } else {
                    format!(
                        " for at least {} (since the peer's last ACK; snapshot)",
                        super::rules::span(age)
                    )
                };
                let evidence = format!(
                    "in CLOSE_WAIT{since}; {}",
                    super::rules::close_wait_words(d)
                );
                let mut f = super::rules::close_wait_flag(d, 0, (age, true), evidence);
                if age == 0 {
                    f.age_seconds = None;
                }
                f
            } else if d.accept_queue_full() {
                let mut f =
                    super::rules::queue_flag(d, 0, (0, true), "now (snapshot: since when unknown)");
                f.age_seconds = None;
                f
            } else {
                return None;
            };
            f.raised_at_ns = 0;
            Some(f)
        })
        .collect();
    super::rules::attribute_to_listeners(flags.iter_mut(), |netns, port| {
        listeners.get(&(netns, port)).map(Vec::as_slice)
    });
    for f in &mut flags {
        super::rules::apply_scan(f, owners);
    }
    let mut report = Report::build(
        Source::Snapshot,
        Some(note),
        0,
        None,
        flags.iter(),
        Vec::new(),
        |_, _, _| None,
    );
    let leakers = crate::forecast::leakers(&report.leaks);
    report.forecasts.fd = crate::forecast::fd_forecasts(&leakers, usage);
    report.link_forecasts();
    report
}

/// An agent that follows every namespace leaves `unfollowed_netns` out.
fn none_unfollowed(n: &usize) -> bool {
    *n == 0
}
