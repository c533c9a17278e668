//! Views over the flags: the per-process CLOSE_WAIT roll-up with its growth
//! history, and the gauges the agent exports (the report is in
//! [`super::report`]).
use std::collections::{HashMap, VecDeque};

use super::{Flag, LeakKind, Reason};

/// Growth is measured over this window.
const WINDOW_NS: u64 = 300 * 1_000_000_000;
/// At most one count sample per process per this long.
const SAMPLE_EVERY_NS: u64 = 10 * 1_000_000_000;
/// No growth figure until the history spans this long.
const MIN_SPAN_NS: u64 = 30 * 1_000_000_000;
/// The recent growth is measured over at least this long.
const RECENT_NS: u64 = 30 * 1_000_000_000;
/// The recent growth counts once it is this many sockets.
const RECENT_MIN_RISE: u32 = 3;
/// Processes with a growth history, at most.
const MAX_PROCS: usize = 4096;
/// `tracer_close_wait_leaks_by_process` names this many processes; the rest is `other`.
pub const TOP_COMMS: usize = 20;

/// Per-process (pid, comm) history of CLOSE_WAIT leak counts: (ns, count)
/// samples covering the last [`WINDOW_NS`], bounded.
#[derive(Default)]
pub(super) struct Rollup {
    procs: HashMap<(u32, String), VecDeque<(u64, u32)>>,
}

/// CLOSE_WAIT leaks per (pid, comm); a socket shared by several processes
/// counts for each.
fn close_wait_by_process<'a>(flags: impl Iterator<Item = &'a Flag>) -> HashMap<(u32, String), u32> {
    let mut counts: HashMap<(u32, String), u32> = HashMap::new();
    for f in flags.filter(|f| f.kind == LeakKind::CloseWait) {
        let mut pids: Vec<(u32, &str)> =
            f.owners.iter().map(|o| (o.pid, o.comm.as_str())).collect();
        pids.dedup_by_key(|p| p.0);
        for (pid, comm) in pids {
            *counts.entry((pid, comm.to_owned())).or_default() += 1;
        }
    }
    counts
}

impl Rollup {
    /// Record the current counts at `now`; forget processes with none.
    pub(super) fn sample<'a>(&mut self, now: u64, flags: impl Iterator<Item = &'a Flag>) {
        let counts = close_wait_by_process(flags);
        self.procs.retain(|k, _| counts.contains_key(k));
        for (key, count) in counts {
            let len = self.procs.len();
            let hist = match self.procs.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(_) if len >= MAX_PROCS => continue,
                std::collections::hash_map::Entry::Vacant(e) => e.insert(VecDeque::new()),
            };
            if hist
                .back()
                .is_none_or(|&(t, _)| now.saturating_sub(t) >= SAMPLE_EVERY_NS)
            {
                hist.push_back((now, count));
            }
            // Keep one sample at or before the window start as the baseline.
            while hist.len() >= 2 && hist[1].0 <= now.saturating_sub(WINDOW_NS) {
                hist.pop_front();
            }
        }
    }

    /// Sockets per minute to `count` now: the faster of the growth over the
    /// last ~5 minutes and over the last [`RECENT_NS`] or so, once that is
    /// [`RECENT_MIN_RISE`] sockets (the port forecast's rule:
    /// `forecast::trend::faster_growth`); `None` until the history
    /// spans [`MIN_SPAN_NS`].
    pub(super) fn growth(&self, pid: u32, comm: &str, now: u64, count: u32) -> Option<f64> {
        let hist = self.procs.get(&(pid, comm.to_owned()))?;
        let per_second = crate::forecast::trend::faster_growth(
            hist,
            (now, count),
            MIN_SPAN_NS,
            RECENT_NS,
            RECENT_MIN_RISE,
        )?;
        Some(per_second * 60.0)
    }
}

/// The numbers behind the agent's leak gauges. Label sets are complete
/// (zeros included) so the agent can set every pre-created series.
#[derive(Clone, Debug, PartialEq)]
pub struct Gauges {
    /// `tracer_close_wait_leaks`.
    pub close_wait_leaks: u64,
    /// `tracer_close_wait_leaks_by_process{comm}`: the top [`TOP_COMMS`]
    /// names by count, then `("other", rest)` (always present). A socket
    /// counts once, for its first owner; ownerless ones count as `other`.
    pub close_wait_by_comm: Vec<(String, u64)>,
    /// `tracer_half_open_connections{reason}`.
    pub half_open: [(Reason, u64); 2],
    /// `tracer_stuck_handshakes{kind}`: SYN_SENT sockets, request
    /// sockets summed over listening ports, and listeners whose accept
    /// queue is full.
    pub stuck_handshakes: [(Reason, u64); 3],
    /// `tracer_idle_without_keepalive`.
    pub idle_without_keepalive: u64,
    /// Orphaned FIN_WAIT2 sockets flagged.
    pub orphaned_fin_wait2: u64,
}

impl Gauges {
    /// Count the active flags.
    pub fn from_flags<'a>(flags: impl Iterator<Item = &'a Flag>) -> Gauges {
        let mut g = Gauges {
            close_wait_leaks: 0,
            close_wait_by_comm: Vec::new(),
            half_open: Reason::HALF_OPEN.map(|r| (r, 0)),
            stuck_handshakes: Reason::HANDSHAKE.map(|r| (r, 0)),
            idle_without_keepalive: 0,
            orphaned_fin_wait2: 0,
        };
        let mut by_comm: HashMap<&str, u64> = HashMap::new();
        let mut other = 0;
        for f in flags {
            let add = |slots: &mut [(Reason, u64)], n: u64| {
                if let Some(s) = slots.iter_mut().find(|s| Some(s.0) == f.reason) {
                    s.1 += n;
                }
            };
            match f.kind {
                LeakKind::CloseWait => {
                    g.close_wait_leaks += 1;
                    match f.owners.first() {
                        Some(o) => *by_comm.entry(o.comm.as_str()).or_default() += 1,
                        None => other += 1,
                    }
                }
                LeakKind::HalfOpen => add(&mut g.half_open, 1),
                LeakKind::StuckHandshake => {
                    add(&mut g.stuck_handshakes, u64::from(f.count.unwrap_or(1)))
                }
                LeakKind::IdleNoKeepalive => g.idle_without_keepalive += 1,
                LeakKind::OrphanedFinWait2 => g.orphaned_fin_wait2 += 1,
            }
        }
        let mut ranked: Vec<(&str, u64)> = by_comm.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (i, (comm, n)) in ranked.into_iter().enumerate() {
            if i < TOP_COMMS && comm != "other" {
                g.close_wait_by_comm.push((comm.to_owned(), n));
            } else {
                other += n;
            }
        }
        g.close_wait_by_comm.push(("other".to_owned(), other));
        g
    }
}
