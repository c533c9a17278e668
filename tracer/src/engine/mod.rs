//! The lifecycle engine: pure per-socket TCP state, durations and outcomes.
//!
//! It takes decoded kernel events ([`Engine::apply`]) and sock_diag dumps
//! ([`Engine::adopt`] at start, [`Engine::reconcile`] every interval), keeps
//! one compact record per socket cookie, and reports what it learns (stays,
//! transitions, closes, handshake outcomes, TIME_WAIT outcomes,
//! corrections, evictions) to an [`Observer`]. Time comes only from its
//! inputs (kernel monotonic ns); it does no I/O and never allocates per
//! event in steady state.
//!
//! # What it models
//! - **TIME_WAIT is inferred.** The full socket never reports TIME_WAIT: on
//!   `fin_wait2 -> close` or `closing -> close` (without a reset in that
//!   state) the record enters TIME_WAIT at the event's time, *unconfirmed*.
//!   The next *full* reconcile that judges it (see below) confirms it (dump
//!   shows a timewait socket in TIME_WAIT), turns it into an orphaned
//!   FIN_WAIT2 (timewait socket in FIN_WAIT2: the stay counts as
//!   `fin_wait2`; any dump may show this), or, when the cookie is absent,
//!   counts "never appeared" and finishes the record without a TIME_WAIT
//!   stay.
//! - **TIME_WAIT ends by its timer.** The kernel arms a fixed
//!   [`TCP_TIMEWAIT_LEN_NS`] timer when the socket enters TIME_WAIT, which
//!   its timer wheel fires at the next bucket boundary after 60 s (up to
//!   2 s later at HZ=250; [`TimeWaitClock`], when `Config` has one, else
//!   exactly 60 s). A confirmed record ends as [`TimeWaitEnd::Expired`] at
//!   that time as soon as any input (event, dump, or [`Engine::expire`])
//!   brings the clock past it, whether or not a dump still shows it.
//!   Earlier ends: a reset ([`TimeWaitEnd::Reset`]), a new connection on
//!   the same 4-tuple ([`TimeWaitEnd::Reused`]: a client's
//!   `syn_sent -> established` or a server's `listen -> syn_recv`, even
//!   without a cookie), a reset sent to it by its peer's socket in the
//!   same namespace (an orphan, or an inference not yet confirmed: the
//!   orphan dies of it with no event), or absence
//!   from a full dump more than [`TIME_WAIT_SLACK_NS`] before the timer
//!   (`Reset`: killed before its timer, by a RST or an explicit kill).
//!   `since` is the closing event's time; when the entry was not seen
//!   (adopted, found by a state mismatch, or an orphaned FIN_WAIT2 that got
//!   its FIN, which re-arms the timer at 60 s) it is
//!   `now - (60 s - expires_ms)` from the dump (`now` its start, from which
//!   the dumper counts every timer: `diag::on_dump_clock`). An inferred record no full
//!   dump has judged by `since + 60 s + slack` (full dumps failing) ends as
//!   `Expired` at `since + 60 s` too: it cannot have lasted longer.
//!   Not modelled: the kernel re-arms the timer when a retransmitted FIN
//!   or in-window ACK arrives in TIME_WAIT; such a socket is ended at 60 s
//!   and then ignored while dumps still show it.
//! - **`tcp_max_tw_buckets`.** With a namespace's limit known
//!   ([`Engine::set_time_wait_limit`]), a close there while it holds that
//!   many timewait records leaves none, as `inet_twsk_alloc()` decides;
//!   counted in [`Stats::time_wait_overflows`]. Near the limit that
//!   judgement can be wrong for a few ms (the engine ends its stays at the
//!   late edge of the timer wheel); a TIME_WAIT socket the next full dump
//!   then shows in that namespace is adopted as
//!   [`Correction::TimeWaitAtLimit`], not as a missed event.
//! - **Who closed first** ([`ClosedBy`]): the first of `-> fin_wait1`
//!   (local), `-> close_wait` (remote), or what the close's `sk_err` says
//!   ended it (ETIMEDOUT, or an ICMP error after a retransmit: timeout;
//!   a reset's errnos: reset), else a reset seen in the state that went to
//!   `close` (reset).
//! - **Handshakes** end when a socket leaves SYN_SENT or SYN_RECV: for
//!   ESTABLISHED a success (a client's latency: its SYN_SENT stay, when
//!   seen from the start), for CLOSE a failure whose reason is the evidence
//!   seen in that state: a reset received, else a retransmit, else none
//!   ([`HandshakeFailure`]; `handshake.rs`).
//! - **Owner** only from transitions that run in the owner's syscall:
//!   `close->syn_sent`, `close->listen`, `listen->close`,
//!   `established->fin_wait1`, `close_wait->last_ack`, and
//!   `established->close` unless a reset was just received (then it ran in
//!   softirq). Receive-path transitions never set it, nor does a close
//!   with an error: decoding takes its task away (`SockEvent::from_raw`).
//! - **Disorder**: an exact duplicate (same ts, from, to as the last applied
//!   transition) is ignored; an event older than the record's current state
//!   either follows it (`from` matches: applied with a clamped zero-length
//!   stay) or is stale (the record is already past it: only its facts are
//!   kept and the state does not move back; a closed record restarts only
//!   on a newer event); both count `out_of_order`. A `from` that differs
//!   from the tracked state counts `path_gap`, the event wins, and no stay
//!   is reported for the unseen part.
//! - **Sockets older than the agent** are adopted from a dump with
//!   `since_is_lower_bound` (ages are "at least"), except a TIME_WAIT
//!   socket, whose entry is `now - (TCP_TIMEWAIT_LEN - expires)`.
//!
//! # Reconcile contract
//! Pass `now_ns` = the monotonic time the dump *started*, and drain the
//! ring buffer before reconciling, so every event older than the dump has
//! been applied. Only records whose `state_since` is at least
//! `Config::reconcile_slack_ns` older than `now_ns` are judged (flagged
//! vanished, mismatched, or TIME_WAIT never appeared): a socket that
//! changed during the dump is left for the next one. A record is judged
//! by its absence only from the second dump in a row that lacks it (for a
//! timewait record, the second full dump), with no state change between:
//! a dump racing with churn can skip a socket, and a close made as the
//! walk passed may not be in the lanes' drained part yet (the report's
//! `absent_once` counts the records the next dump judges).
//!
//! Two kinds of dumps, told apart by `covers_time_wait`:
//! - **full** (`true`): every state. It judges everything above.
//! - **frequent** (`false`): every state except timewait sockets in the
//!   TIME_WAIT substate (sock_diag's state mask without `TCP_TIME_WAIT`;
//!   orphaned FIN_WAIT2 timewait sockets and all full sockets are in it).
//!   Records a TIME_WAIT socket may hide behind are not judged when absent:
//!   TIME_WAIT records (inferred or confirmed), and full sockets in
//!   FIN_WAIT1, FIN_WAIT2 or CLOSING (lost events may have turned them into
//!   one). The next full dump judges them. Everything else (missed,
//!   vanished, state mismatch, orphan confirmation) is judged as in a full
//!   dump; timer ends happen on every reconcile.
//! - **An orphan that moved on.** An orphaned FIN_WAIT2 timewait socket
//!   leaves FIN_WAIT2 with no event: its peer's FIN turns it into
//!   TIME_WAIT, a reset or its timer ends it. Frequent dumps list it while
//!   in FIN_WAIT2, so two of them in a row without it, both more than
//!   [`TIME_WAIT_SLACK_NS`] before its timer (known from the last dump
//!   that listed it), mean it got its FIN (a reset is the rare other
//!   case): the record enters TIME_WAIT then, unconfirmed, with `since`
//!   as a lower bound, and its FIN_WAIT2 stay ends there (up to two
//!   intervals later than it did). The next full dump confirms it and takes the exact
//!   entry from the timer. Without this the record would read `fin_wait2`
//!   until the next full dump while `ss` reads TIME_WAIT. Near or past its
//!   timer, or with the timer unknown, the absence is left to the full
//!   dump.
//! - **An orphan at its timer.** A full dump that lacks a confirmed orphan
//!   whose timer is due (within [`TIME_WAIT_SLACK_NS`]) ends it at once,
//!   with no second dump: the kernel destroyed it at its timer, and its
//!   FIN_WAIT2 stay ends there, not at the dump.
//!
//! A dump socket whose cookie belongs to a finished record is ignored (a
//! timewait socket outlives its 60 s while the kernel's timer wheel runs
//! late), and so is an untracked timewait socket in TIME_WAIT with at most
//! [`TIME_WAIT_SLACK_NS`] left: most likely the same socket after its
//! finished record was dropped by retention (a genuinely missed one that
//! close to its end is not worth a record).
//!
//! # Memory
//! At most `Config::max_sockets` records: at the cap the oldest finished
//! record is evicted first, else the oldest live one (dump adoption never
//! evicts a live record), and every eviction is counted. A record is 112
//! bytes in a slab (whose freed slots are reused) plus a cookie index
//! entry (4 bytes in a block shared with its neighbouring cookies, 16 in a
//! hash table for sparse ones), plus a 16-byte tuple index entry and an
//! 8-byte timer entry while in TIME_WAIT: about 130 (ESTABLISHED) to 160
//! (TIME_WAIT) bytes per socket with slack, two bits per slot (free, and
//! judged by a live reconcile), and a 24-byte queue entry while finished.
//! Each orphaned FIN_WAIT2 socket a dump listed in the last minute adds a
//! 16-byte entry. Two counts per local port, 512 KiB, are there from the
//! start. See `store.rs`.
mod apply;
mod config;
mod handshake;
mod hash;
mod netns;
mod observer;
mod reconcile;
mod record;
mod store;
#[cfg(test)]
mod tests;
mod time_wait;
mod wheel;

pub use config::{Config, Stats};
pub use handshake::{Handshake, HandshakeFailure, Role};
pub use hash::{BuildCookieHasher, CookieHasher};
pub use observer::{Correction, Direction, Observer, TimeWaitEnd};
pub use reconcile::{Listing, ReconcileReport};
pub use record::{ClosedBy, PATH_LEN, SocketView, SyscallOwner};
pub use wheel::TimeWaitClock;

use record::flag;
use std::collections::{HashMap, HashSet};

use store::Store;

use crate::tcp::TcpState;

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// How long a timewait socket lives: `TCP_TIMEWAIT_LEN` (60 s), fixed in
/// the kernel (`include/net/tcp.h`), independent of `tcp_fin_timeout`.
pub const TCP_TIMEWAIT_LEN_NS: u64 = 60 * NS_PER_SEC;

/// Tolerance around a TIME_WAIT timer: a full dump that lacks a timewait
/// socket less than this before its 60 s are up saw it expire (the dump
/// takes time; the timer never fires early), not killed; an inferred one
/// nobody judged ends this long after its 60 s.
pub const TIME_WAIT_SLACK_NS: u64 = NS_PER_SEC;

/// The lifecycle engine. See the module docs.
pub struct Engine {
    cfg: Config,
    store: Store,
    stats: Stats,
    /// The latest time seen in any input; drives retention.
    clock_ns: u64,
    /// `tcp_max_tw_buckets` of each network namespace, where known.
    tw_limits: HashMap<u32, u32, BuildCookieHasher>,
    /// Per state, sockets the last dump listed that the cap left untracked
    /// (TIME_WAIT from the last full dump).
    untracked: [u64; TcpState::COUNT],
    /// New sockets refused at the cap since the last reconcile.
    refused_since_dump: u64,
    /// Namespaces where a close was judged to leave no timewait socket
    /// (`tcp_max_tw_buckets` reached) since the last full dump.
    tw_overflowed_in: HashSet<u32, BuildCookieHasher>,
    /// Cookie -> when the kernel's timer ends each orphaned FIN_WAIT2
    /// timewait socket, from the last dump that listed it. Entries of
    /// orphans that ended otherwise go at the next full dump past their
    /// end, so it holds at most the orphans dumps listed in the last 60 s.
    orphan_ends: HashMap<u64, u64, BuildCookieHasher>,
}

impl Engine {
    /// An empty engine. `max_sockets` is clamped to `1..u32::MAX`.
    pub fn new(mut cfg: Config) -> Engine {
        cfg.max_sockets = cfg.max_sockets.clamp(1, record::NIL as usize - 1);
        Engine {
            cfg,
            store: Store::new(cfg.max_sockets, cfg.time_wait_clock),
            stats: Stats::default(),
            clock_ns: 0,
            tw_limits: HashMap::default(),
            untracked: [0; TcpState::COUNT],
            refused_since_dump: 0,
            tw_overflowed_in: HashSet::default(),
            orphan_ends: HashMap::default(),
        }
    }

    /// Sockets per state as the kernel has them: the live records
    /// ([`Engine::counts_by_state`]) plus, when `max_sockets` binds, the
    /// sockets the last dump listed that the engine could not hold (as of
    /// that dump). Equal to `ss` whether or not the cap binds.
    pub fn sockets_by_state(&self) -> [u64; TcpState::COUNT] {
        let mut n = *self.store.counts();
        for (n, u) in n.iter_mut().zip(self.untracked) {
            *n += u;
        }
        n
    }

    /// True when `max_sockets` binds: the last dump listed sockets the
    /// engine could not hold, or new sockets went untracked since.
    pub fn cap_binding(&self) -> bool {
        self.refused_since_dump > 0 || self.untracked.iter().any(|&n| n > 0)
    }

    /// The kernel's `tcp_max_tw_buckets` in `netns`: a close there leaves no
    /// timewait socket while the namespace holds that many (the kernel's
    /// `inet_twsk_alloc()` rule), so none is inferred either.
    pub fn set_time_wait_limit(&mut self, netns: u32, limit: u32) {
        self.tw_limits.insert(netns, limit);
    }

    /// Forget the limits of namespaces that vanished.
    pub fn forget_time_wait_limits(&mut self, gone: &[u32]) {
        for netns in gone {
            self.tw_limits.remove(netns);
        }
    }

    /// True when `netns` holds as many timewait sockets as the kernel allows.
    fn time_wait_full(&self, netns: u32) -> bool {
        self.tw_limits
            .get(&netns)
            .is_some_and(|&max| self.store.time_wait_in(netns) >= max)
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Live sockets per state (index with [`TcpState::index`]): TIME_WAIT
    /// counts inferred and confirmed timewait records, FIN_WAIT2 includes
    /// orphaned ones; finished records are not counted. O(1).
    pub fn counts_by_state(&self) -> [u64; TcpState::COUNT] {
        *self.store.counts()
    }

    /// Live records in TIME_WAIT that no dump has confirmed yet (inferred
    /// from a close; a full reconcile judges each within one interval).
    /// Bounds how many of the TIME_WAIT count may be sockets the kernel
    /// never created (`tcp_max_tw_buckets` overflow). O(1).
    pub fn unconfirmed_time_wait(&self) -> u64 {
        self.store.unconfirmed()
    }

    /// Live sockets per state (index with [`TcpState::index`]) for each
    /// network namespace that has any: O(namespaces), kept as records
    /// change.
    pub fn live_by_netns(&self) -> impl Iterator<Item = (u32, &[u32; TcpState::COUNT])> {
        self.store.live_per_netns()
    }

    /// Live records in TIME_WAIT on local port `port`. O(1).
    pub fn time_wait_on_port(&self, port: u16) -> u64 {
        u64::from(self.store.time_wait_on_port(port))
    }

    /// Call `f(local_port, n)` for every local port with `n > 0` records in
    /// TIME_WAIT, in port order (a walk over all 65,536 ports).
    pub fn time_wait_by_local_port(&self, mut f: impl FnMut(u16, u64)) {
        for port in 0..=u16::MAX {
            let n = self.time_wait_on_port(port);
            if n > 0 {
                f(port, n);
            }
        }
    }

    /// Every record (live and recently finished), in no particular order.
    pub fn sockets(&self) -> impl Iterator<Item = SocketView<'_>> {
        self.store.records().map(|rec| SocketView { rec })
    }

    /// The live sockets out of TIME_WAIT (listeners among them), in no
    /// particular order: a subset of [`Engine::sockets`] found without
    /// reading the others' records.
    pub fn open_sockets(&self) -> impl Iterator<Item = SocketView<'_>> {
        self.store.open_records().map(|rec| SocketView { rec })
    }

    /// When the live socket `cookie` entered `state`, and whether that is
    /// only a lower bound; `None` when it is not tracked or is in another
    /// state. The leak detectors' age lookup.
    pub fn state_since(&self, cookie: u64, state: TcpState) -> Option<(u64, bool)> {
        self.get(cookie)
            .filter(|v| v.is_live() && v.state() == state)
            .map(|v| (v.state_since_ns(), v.since_is_lower_bound()))
    }

    /// The record of `cookie`.
    pub fn get(&self, cookie: u64) -> Option<SocketView<'_>> {
        self.store.slot(cookie).map(|s| SocketView {
            rec: self.store.rec(s),
        })
    }

    /// Records held (live and finished); never above `max_sockets`.
    pub fn tracked(&self) -> usize {
        self.store.len()
    }

    /// Heap bytes the records and their indexes hold (an estimate from
    /// capacities; excludes the `Engine` struct itself).
    pub fn approx_heap_bytes(&self) -> usize {
        self.store.approx_heap_bytes()
    }

    /// Counters, with `tracked`, `live` and `evictions` filled in.
    pub fn stats(&self) -> Stats {
        Stats {
            tracked: self.store.len(),
            live: self.store.counts().iter().sum(),
            evictions: self.store.evictions(),
            ..self.stats
        }
    }

    /// Advance the clock to `now_ns`: end the TIME_WAIT stays whose timer
    /// is due (reported to `obs`), then drop finished records older than
    /// the retention. `apply` and `reconcile` do this themselves; call it
    /// when no input arrives for a while. Returns how many were dropped.
    pub fn expire(&mut self, now_ns: u64, obs: &mut impl Observer) -> usize {
        self.clock_ns = self.clock_ns.max(now_ns);
        self.time_wait_timers(obs);
        self.drop_retained()
    }

    /// End every TIME_WAIT whose timer is due at the clock, at its
    /// deadline. Returns how many (confirmed, inferred) ended.
    fn time_wait_timers(&mut self, obs: &mut impl Observer) -> (u64, u64) {
        let mut n = (0, 0);
        while let Some((slot, deadline)) = self.store.pop_time_wait_timer(self.clock_ns) {
            let r = self.store.rec(slot);
            let at = if r.has(flag::TW_CONFIRMED) {
                n.0 += 1;
                deadline
            } else {
                n.1 += 1;
                self.store.time_wait_end(r.since_ns)
            };
            self.end_time_wait(slot, at, TimeWaitEnd::Expired, obs);
        }
        n
    }

    /// When to call [`Engine::expire`] next so that TIME_WAIT stays end when
    /// the kernel ends them: no timer is due before this (it may be a little
    /// early). `None` when no stay is in TIME_WAIT.
    pub fn next_time_wait_end(&self) -> Option<u64> {
        self.store.next_time_wait_timer()
    }

    /// Drop finished records older than the retention, as of the clock.
    fn drop_retained(&mut self) -> usize {
        let n = match self.clock_ns.checked_sub(self.cfg.retention_ns) {
            Some(cutoff) => self.store.expire(cutoff),
            None => 0,
        };
        self.stats.expired += n as u64;
        n
    }

    /// True when `state` lasting `dur_ns` makes the connection half-closed.
    fn half_closed(&self, state: TcpState, dur_ns: u64) -> bool {
        matches!(state, TcpState::FinWait2 | TcpState::CloseWait)
            && dur_ns > self.cfg.half_closed_threshold_ns
    }
}
