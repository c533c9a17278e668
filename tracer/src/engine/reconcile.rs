//! Dumps in: [`Engine::adopt`] at start, [`Engine::reconcile`] every
//! interval. A dump is the kernel's truth at `now_ns`; it confirms and ends
//! TIME_WAIT (which has no events) and heals lost events.
//!
//! Reconcile ends due TIME_WAIT timers, then runs two passes without
//! allocating: the first walks the dump, marking each tracked record `SEEN`
//! and fixing what disagrees; the second walks the records and judges the
//! unseen ones (after a frequent dump, only the records it can judge:
//! neither in TIME_WAIT nor finished, from the store's bitset of them).
//! Only records whose `since` is older than `now - slack` are
//! judged, and a frequent dump (`covers_time_wait == false`) does not judge
//! the absence of records that may hide in TIME_WAIT (see `engine` docs).
//! Timers run once more at the end, for records this dump confirmed late.
use super::observer::{Correction, Observer, TimeWaitEnd};
use super::record::ClosedBy;
use super::record::{Record, flag, tw_end};
use super::{BuildCookieHasher, Engine, TCP_TIMEWAIT_LEN_NS, TIME_WAIT_SLACK_NS};
use crate::snapshot::{Lookup, SocketSnapshot};
use crate::tcp::Family;
use crate::tcp::TcpState::{self, *};
use std::collections::HashMap;

/// Sockets of a dump reconciled between two calls of the caller's `pause`
/// (about a millisecond's work; see [`Engine::reconcile_within`]).
pub const PAUSE_EVERY: usize = 4096;

/// How many sockets of a dump ahead [`Engine::reconcile_within`] asks for
/// the cookie index's entry (and for the record, half as far).
const DUMP_AHEAD: usize = 16;

/// What a dump lists of each namespace it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Every socket, timewait ones in TIME_WAIT included.
    Full,
    /// Every socket but timewait ones in TIME_WAIT: records that may be
    /// such a socket are not judged by their absence.
    Live,
    /// As `Live`, but only the listeners and the sockets
    /// [`Engine::lookups`] named, looked up one by one: other records are
    /// not judged by their absence.
    LookedUp,
}

/// What one reconcile found and fixed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Sockets in the dump the engine did not track (adopted).
    pub missed: u64,
    /// Tracked open sockets absent from the dump and from the one before
    /// it (closed).
    pub vanished: u64,
    /// Tracked open sockets absent from the dump for the first time: the
    /// next dump closes them if absent again.
    pub absent_once: u64,
    /// Records whose state disagreed with the dump (the dump won).
    pub state_mismatch: u64,
    /// Inferred TIME_WAIT records the dump confirmed.
    pub time_wait_confirmed: u64,
    /// Inferred TIME_WAIT records that the dump showed as orphaned FIN_WAIT2.
    pub orphan_fin_wait2: u64,
    /// Confirmed TIME_WAIT records ended by their timer during this
    /// reconcile (at `since + 60 s`; `apply` and `expire` end others
    /// unreported here), or absent from a full dump within the slack of it.
    pub time_wait_expired: u64,
    /// Inferred TIME_WAIT records no full dump judged within 60 s + slack,
    /// ended by their timer during this reconcile.
    pub time_wait_unconfirmed_expired: u64,
    /// Confirmed TIME_WAIT records absent from a full dump well before
    /// their timer: killed (a RST or an explicit kill), ended as `Reset`.
    pub time_wait_killed: u64,
    /// Confirmed orphaned FIN_WAIT2 timewait records now absent.
    pub orphan_fin_wait2_ended: u64,
    /// Orphaned FIN_WAIT2 records two frequent dumps in a row did not list,
    /// well before their timer: taken into TIME_WAIT (see the `engine` docs).
    pub orphan_moved_on: u64,
    /// Inferred TIME_WAIT records the dump never showed.
    pub time_wait_never_appeared: u64,
    /// TIME_WAIT sockets adopted from a full dump in a namespace where a
    /// close since the last full dump was judged a `tcp_max_tw_buckets`
    /// overflow (see [`Correction::TimeWaitAtLimit`]); not in `missed`.
    pub time_wait_at_limit: u64,
    /// Missed sockets not adopted: the store was full of live records.
    pub not_adopted: u64,
    /// Dump sockets ignored: a finished record's cookie, or an untracked
    /// timewait socket in TIME_WAIT within the slack of its end.
    pub ignored: u64,
    /// Finished records dropped after their retention.
    pub expired: u64,
}

/// A live record a lookup by 4-tuple and cookie can find
/// ([`Engine::lookups`]): not a listener (a walk of the listening table
/// lists those), with both ports known (a connect's `syn_sent` event
/// comes before the kernel picks the local port).
fn can_look_up(r: &Record) -> bool {
    r.state != Listen && r.lport != 0 && r.rport != 0 && !r.has(flag::BOUND) && !link_local(r)
}

/// An IPv6 link-local connection (`fe80::/10`): its socket is bound to the
/// interface of its scope, which the events do not carry, so a lookup
/// would not find it.
fn link_local(r: &Record) -> bool {
    let ll = |a: &[u8; 16]| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    r.family == Family::Ipv6 && (ll(&r.local) || ll(&r.remote))
}

/// Dump states the engine does not track: no event ever describes them
/// (request sockets, bound-only sockets, closed ones).
fn untracked_state(d: &SocketSnapshot) -> bool {
    !d.timewait && matches!(d.state, Close | NewSynRecv | BoundInactive)
}

/// The latest a socket the dump `d` lists at `now_ns` can have entered its
/// state: now, or for CLOSE_WAIT the peer's last ACK, which its FIN came
/// with or before.
fn entered_by(d: &SocketSnapshot, now_ns: u64) -> u64 {
    now_ns.saturating_sub(d.close_wait_at_least_ns().unwrap_or(0))
}

/// When a timewait socket with `expires_ms` left entered TIME_WAIT.
fn time_wait_entry(now_ns: u64, expires_ms: u32) -> u64 {
    let left = u64::from(expires_ms)
        .saturating_mul(1_000_000)
        .min(TCP_TIMEWAIT_LEN_NS);
    now_ns.saturating_sub(TCP_TIMEWAIT_LEN_NS - left)
}

/// Who closed first, as far as a state alone tells.
fn implied_closer(state: TcpState, timewait: bool) -> Option<ClosedBy> {
    match state {
        _ if timewait => Some(ClosedBy::Local),
        FinWait1 | FinWait2 | Closing | TimeWait => Some(ClosedBy::Local),
        CloseWait | LastAck => Some(ClosedBy::Remote),
        _ => None,
    }
}

/// When the timer of an orphaned FIN_WAIT2 timewait socket with
/// `expires_ms` left ends.
fn orphan_end(now_ns: u64, expires_ms: u32) -> u64 {
    now_ns.saturating_add(u64::from(expires_ms).saturating_mul(1_000_000))
}

/// An orphaned FIN_WAIT2 timewait socket.
fn orphan(d: &SocketSnapshot) -> bool {
    d.timewait && d.state == FinWait2
}

/// Remember in `ends` when the timer of `d` ends, if it is an orphaned
/// FIN_WAIT2 timewait socket (the caller tracks it).
fn note_orphan(ends: &mut HashMap<u64, u64, BuildCookieHasher>, d: &SocketSnapshot, now_ns: u64) {
    if orphan(d) {
        ends.insert(d.cookie, orphan_end(now_ns, d.expires_ms));
    }
}

/// An untracked timewait socket about to expire (overdue ones show 0 ms):
/// most likely one whose finished record retention already dropped.
fn time_wait_ending(d: &SocketSnapshot) -> bool {
    d.timewait
        && d.state != FinWait2
        && u64::from(d.expires_ms).saturating_mul(1_000_000) <= TIME_WAIT_SLACK_NS
}

/// A record for a socket first seen in a dump, or `None` for an untracked state.
fn adopted(d: &SocketSnapshot, now_ns: u64) -> Option<Record> {
    if untracked_state(d) {
        return None;
    }
    let state = if d.timewait && d.state != FinWait2 {
        TimeWait
    } else {
        d.state
    };
    let mut r = Record::new(d.cookie, d.family, state, now_ns);
    r.set_tuple(d.saddr, d.sport, d.daddr, d.dport);
    r.netns = d.netns;
    r.push_path(state);
    r.closed_by = implied_closer(state, d.timewait);
    r.set(flag::BOUND, d.ifindex != 0);
    if d.timewait {
        r.set(flag::TW | flag::TW_CONFIRMED, true);
    }
    if d.timewait && state == TimeWait {
        r.since_ns = time_wait_entry(now_ns, d.expires_ms);
        r.created_ns = r.since_ns;
    } else {
        r.since_ns = entered_by(d, now_ns);
        r.created_ns = r.since_ns;
        r.set(flag::LOWER_BOUND, true);
    }
    Some(r)
}

impl Engine {
    /// Create records for the sockets of a dump taken at `now_ns` (at agent
    /// start): TIME_WAIT ones with their entry time from `expires_ms`, any
    /// other state with `since_is_lower_bound`. Already tracked cookies are
    /// left alone; at the cap nothing is evicted (sockets the engine never
    /// saw change are not worth dropping records for): the rest count in
    /// `Stats::not_adopted`. Returns how many records were created. An
    /// adopted TIME_WAIT ends by its timer (at `since + 60 s`) on the first
    /// `apply`, `reconcile` or `expire` past it.
    pub fn adopt(&mut self, dump: &[SocketSnapshot], now_ns: u64) -> usize {
        self.adopt_within(dump, now_ns, || {})
    }

    /// [`Engine::adopt`], calling `pause` every `PAUSE_EVERY` sockets, as
    /// [`Engine::reconcile_within`] does: a first dump beside 131,072
    /// TIME_WAIT sockets takes about 100 ms to adopt.
    pub fn adopt_within(
        &mut self,
        dump: &[SocketSnapshot],
        now_ns: u64,
        mut pause: impl FnMut(),
    ) -> usize {
        self.clock_ns = self.clock_ns.max(now_ns);
        self.drop_retained();
        let mut n = 0;
        for (i, d) in dump.iter().enumerate() {
            if i % PAUSE_EVERY == PAUSE_EVERY - 1 {
                pause();
            }
            if self.store.slot(d.cookie).is_some() {
                continue;
            }
            let Some(rec) = adopted(d, now_ns) else {
                continue;
            };
            let state = rec.state;
            if self.store.len() < self.cfg.max_sockets
                && self.store.insert(rec, false, &mut ()).is_some()
            {
                n += 1;
                note_orphan(&mut self.orphan_ends, d, now_ns);
            } else {
                self.stats.not_adopted += 1;
                self.untracked[state.index()] += 1;
            }
        }
        n
    }

    /// Compare the engine with a dump that started at `now_ns` and fix it:
    /// end TIME_WAIT stays whose timer is due, confirm, reclassify or end
    /// TIME_WAIT, adopt missed sockets, close vanished ones, follow the dump
    /// on a state mismatch. `covers_time_wait`: the dump includes timewait
    /// sockets in the TIME_WAIT substate (a full dump); when false, records
    /// that may be such a socket are not judged by their absence. Call it
    /// after draining the events up to the dump (see the module docs).
    pub fn reconcile(
        &mut self,
        dump: &[SocketSnapshot],
        now_ns: u64,
        covers_time_wait: bool,
        obs: &mut impl Observer,
    ) -> ReconcileReport {
        let listing = if covers_time_wait {
            Listing::Full
        } else {
            Listing::Live
        };
        self.reconcile_within(dump, now_ns, listing, |_| true, obs, || {})
    }

    /// The sockets a live reconcile can look up one by one instead of
    /// walking the kernel's tables: every record a live dump's absence
    /// would judge, but listeners (a walk of the listening table lists
    /// those) and records without both ports. Appended to `out` with their
    /// namespace. Returns false when lookups would not do at `now_ns`: the
    /// engine holds a connect without a local port (its `syn_sent` event
    /// comes before the kernel picks one) older than the reconcile slack,
    /// a handshake that may be stuck and that only a walk lists; or the
    /// cap leaves sockets untracked, which only a walk counts. A reconcile
    /// with what the lookups found is [`Listing::LookedUp`].
    pub fn lookups(&self, now_ns: u64, out: &mut Vec<(u32, Lookup)>) -> bool {
        let judge_before = now_ns.saturating_sub(self.cfg.reconcile_slack_ns);
        let mut complete = !self.cap_binding();
        for r in self.store.open_records() {
            if can_look_up(r) {
                out.push((
                    r.netns,
                    Lookup {
                        family: r.family,
                        local: r.local,
                        lport: r.lport,
                        remote: r.remote,
                        rport: r.rport,
                        cookie: r.cookie,
                        ifindex: 0,
                    },
                ));
            } else if r.state == SynSent && r.since_ns <= judge_before {
                complete = false;
            }
        }
        complete
    }

    /// [`Engine::reconcile`] with a dump that lists only the network
    /// namespaces `covers` says yes to: records of other namespaces are not
    /// judged by their absence (they may live in a namespace nobody could
    /// dump), and that lists what `listing` says. `pause` is called every
    /// `PAUSE_EVERY` sockets of the dump and every 16 times that many
    /// records: the caller's chance to keep the kernel's event lanes from
    /// filling during a long reconcile (without touching the engine).
    pub fn reconcile_within(
        &mut self,
        dump: &[SocketSnapshot],
        now_ns: u64,
        listing: Listing,
        covers: impl Fn(u32) -> bool,
        obs: &mut impl Observer,
        mut pause: impl FnMut(),
    ) -> ReconcileReport {
        let covers_time_wait = listing == Listing::Full;
        let looked_up = listing == Listing::LookedUp;
        let mut rep = ReconcileReport::default();
        let judge_before = now_ns.saturating_sub(self.cfg.reconcile_slack_ns);
        // Recount what the cap leaves untracked, in the states this dump
        // lists (a live dump leaves TIME_WAIT out).
        // Looked-up sockets are all ones the engine tracks: the last
        // walk's counts stand.
        for (i, n) in self.untracked.iter_mut().enumerate() {
            if !looked_up && (covers_time_wait || i != TimeWait.index()) {
                *n = 0;
            }
        }
        self.refused_since_dump = 0;
        self.clock_ns = self.clock_ns.max(now_ns);
        self.count_timers(&mut rep, obs);
        for (i, d) in dump.iter().enumerate() {
            if i % PAUSE_EVERY == PAUSE_EVERY - 1 {
                pause();
            }
            // The kernel lists sockets in its hash order, not the store's:
            // each one's index entry and record are cold. Ask for the
            // entry `DUMP_AHEAD` sockets on and the record half as far, so
            // the waits for memory overlap.
            if let Some(a) = dump.get(i + DUMP_AHEAD) {
                self.store.prefetch_lookups(a.cookie, None);
            }
            if let Some(b) = dump.get(i + DUMP_AHEAD / 2) {
                self.store.prefetch_record(b.cookie);
            }
            match self.store.slot(d.cookie) {
                Some(slot) => self.present(slot, d, now_ns, judge_before, &mut rep, obs),
                None if time_wait_ending(d) => rep.ignored += 1,
                None => {
                    let Some(mut rec) = adopted(d, now_ns) else {
                        continue;
                    };
                    rec.set(flag::SEEN, true);
                    let reason = if covers_time_wait
                        && rec.state == TimeWait
                        && self.tw_overflowed_in.contains(&d.netns)
                    {
                        rep.time_wait_at_limit += 1;
                        Correction::TimeWaitAtLimit
                    } else {
                        rep.missed += 1;
                        Correction::Missed
                    };
                    obs.correction(d.cookie, reason);
                    let state = rec.state;
                    if self.store.insert(rec, false, obs).is_none() {
                        rep.not_adopted += 1;
                        self.stats.not_adopted += 1;
                        self.untracked[state.index()] += 1;
                    } else {
                        note_orphan(&mut self.orphan_ends, d, now_ns);
                    }
                }
            }
        }
        if covers_time_wait {
            for slot in 0..self.store.slots() {
                if slot as usize % (16 * PAUSE_EVERY) == 16 * PAUSE_EVERY - 1 {
                    pause();
                }
                if self.store.get(slot).is_some_and(|r| covers(r.netns)) {
                    self.absent(slot, now_ns, judge_before, true, &mut rep, obs);
                }
            }
            self.end_over_limits(now_ns, &covers, &mut rep, obs);
        } else {
            // A live dump judges neither TIME_WAIT nor finished records,
            // most of a busy host's, and marks none of them seen: walk only
            // the others' bits. Judging a record changes no other record,
            // so each word's copy stays true while its bits are judged.
            for w in 0..self.store.live_words() {
                if w % (16 * PAUSE_EVERY / 64) == 16 * PAUSE_EVERY / 64 - 1 {
                    pause();
                }
                let mut bits = self.store.live_word(w);
                while bits != 0 {
                    let slot = (w * 64) as u32 + bits.trailing_zeros();
                    bits &= bits - 1;
                    let r = self.store.rec(slot);
                    let listed = !looked_up || r.state == Listen || can_look_up(r);
                    if listed && covers(r.netns) {
                        self.absent(slot, now_ns, judge_before, false, &mut rep, obs);
                    }
                }
            }
        }
        self.count_timers(&mut rep, obs);
        if covers_time_wait {
            // Covered: the closes judged so far in these namespaces had
            // their timewait sockets in this dump, or none.
            self.tw_overflowed_in.retain(|&netns| !covers(netns));
            // Orphans past their timer ended, whichever way.
            self.orphan_ends
                .retain(|_, &mut end| end.saturating_add(TIME_WAIT_SLACK_NS) > now_ns);
        }
        rep.expired = self.drop_retained() as u64;
        rep
    }

    /// After a full dump: a namespace with more timewait records than its
    /// `tcp_max_tw_buckets` holds some the kernel never created. At the
    /// limit the engine cannot tell which close the kernel refused: the
    /// ones it judged overflowed but the kernel kept were just adopted from
    /// the dump, and the ones it judged kept but the kernel refused are
    /// among the unconfirmed records the dump did not show (absent once).
    /// End that many of those now, instead of at the next full dump.
    fn end_over_limits(
        &mut self,
        now_ns: u64,
        covers: &impl Fn(u32) -> bool,
        rep: &mut ReconcileReport,
        obs: &mut impl Observer,
    ) {
        let mut over: Vec<(u32, u32)> = self
            .tw_limits
            .iter()
            .filter(|&(&netns, _)| covers(netns))
            .filter_map(|(&netns, &max)| {
                let n = self.store.time_wait_in(netns);
                (n > max).then(|| (netns, n - max))
            })
            .collect();
        if over.is_empty() {
            return;
        }
        for slot in 0..self.store.slots() {
            let Some(r) = self.store.get(slot) else {
                continue;
            };
            if !r.has(flag::TW) || !r.has(flag::MISSING) || r.has(flag::TW_CONFIRMED) {
                continue;
            }
            let (cookie, netns) = (r.cookie, r.netns);
            let Some((_, excess)) = over.iter_mut().find(|(n, e)| *n == netns && *e > 0) else {
                continue;
            };
            *excess -= 1;
            rep.time_wait_never_appeared += 1;
            obs.time_wait_never_appeared(cookie);
            self.finish_at(slot, now_ns, tw_end::NEVER_APPEARED);
            if over.iter().all(|&(_, e)| e == 0) {
                return;
            }
        }
    }

    /// End the due TIME_WAIT timers, counting them in `rep`.
    fn count_timers(&mut self, rep: &mut ReconcileReport, obs: &mut impl Observer) {
        let (confirmed, inferred) = self.time_wait_timers(obs);
        rep.time_wait_expired += confirmed;
        rep.time_wait_unconfirmed_expired += inferred;
    }

    /// `slot` is in the dump as `d`.
    fn present(
        &mut self,
        slot: u32,
        d: &SocketSnapshot,
        now_ns: u64,
        judge_before: u64,
        rep: &mut ReconcileReport,
        obs: &mut impl Observer,
    ) {
        let r = self.store.rec(slot);
        let (cookie, state, since, lower_bound) =
            (r.cookie, r.state, r.since_ns, r.has(flag::LOWER_BOUND));
        if r.has(flag::FINISHED) {
            // Closed since the dump began, or a timewait socket the timer
            // already ended (the kernel's fires late): never revived.
            rep.ignored += 1;
            return;
        }
        if untracked_state(d) || (r.has(flag::TW) && !d.timewait) {
            // Not a socket we follow (a cookie is never reused, so a
            // timewait record cannot be a full socket again): judged as
            // absent, or left alone.
            return;
        }
        let judged = since <= judge_before;
        note_orphan(&mut self.orphan_ends, d, now_ns);
        if r.has(flag::TW) {
            if !r.has(flag::TW_CONFIRMED) {
                rep.time_wait_confirmed += 1;
            }
            match (state, d.state) {
                (TimeWait, FinWait2) => {
                    rep.orphan_fin_wait2 += 1;
                    self.store.update(slot, |r| {
                        r.state = FinWait2;
                        r.replace_last_path(TimeWait, FinWait2);
                    });
                }
                (FinWait2, TimeWait) => {
                    // The orphan got its FIN: TIME_WAIT restarted at 60 s.
                    let entry = time_wait_entry(now_ns, d.expires_ms);
                    self.orphan_to_time_wait(slot, entry, true, lower_bound, obs);
                }
                (TimeWait, TimeWait) if self.store.rec(slot).has(flag::LOWER_BOUND) => {
                    // An orphan that moved on between frequent dumps: the
                    // timer gives its entry.
                    let entry = time_wait_entry(now_ns, d.expires_ms).min(since);
                    self.store.update(slot, |r| {
                        r.since_ns = entry;
                        r.set(flag::LOWER_BOUND, false);
                    });
                }
                _ => {}
            }
            if self.store.rec(slot).has(flag::TW_CONFIRMED) {
                self.store.mark(slot, flag::SEEN, true);
            } else {
                self.store
                    .update(slot, |r| r.set(flag::TW_CONFIRMED | flag::SEEN, true));
            }
            return;
        }
        if judged && (d.timewait || d.state != state) {
            rep.state_mismatch += 1;
            obs.correction(cookie, Correction::StateMismatch);
            let to = if d.timewait && d.state != FinWait2 {
                TimeWait
            } else {
                d.state
            };
            self.store.update(slot, |r| {
                r.prev = Some(r.kernel_state());
                if d.timewait {
                    r.push_path(Close);
                    r.set(flag::TW | flag::TW_CONFIRMED, true);
                    // Its FIN_WAIT2 entry, if any, was not seen.
                    r.set(flag::FW2_KEPT, false);
                    r.tw_end = tw_end::NONE;
                }
                r.push_path(to);
                r.state = to;
                r.set(flag::RST_RX | flag::RST_TX | flag::RTX, false);
                if r.closed_by.is_none() {
                    r.closed_by = implied_closer(to, d.timewait);
                }
                if d.timewait && to == TimeWait {
                    r.since_ns = time_wait_entry(now_ns, d.expires_ms).max(since);
                    r.set(flag::LOWER_BOUND, false);
                } else {
                    // After its last known state began.
                    r.since_ns = entered_by(d, now_ns).max(since);
                    r.set(flag::LOWER_BOUND, true);
                }
            });
        }
        // A connect's syn_sent event comes before the kernel picks its
        // local port: a handshake that never finishes has no later event
        // to carry it, so the dump gives it (the API's `?port=` finds it,
        // and later dumps can look it up).
        if self.store.rec(slot).lport == 0 && d.sport != 0 {
            self.store
                .update(slot, |r| r.set_tuple(d.saddr, d.sport, d.daddr, d.dport));
        }
        let seen = if d.ifindex != 0 {
            flag::SEEN | flag::BOUND
        } else {
            flag::SEEN
        };
        self.store.mark(slot, seen, true);
    }

    /// Judge `slot` if the dump did not show it. `full`: the dump covered
    /// TIME_WAIT.
    fn absent(
        &mut self,
        slot: u32,
        now_ns: u64,
        judge_before: u64,
        full: bool,
        rep: &mut ReconcileReport,
        obs: &mut impl Observer,
    ) {
        let r = self.store.rec(slot);
        let (cookie, since, entry) = (r.cookie, r.since_ns, r.state_entry_ns());
        let seen = r.has(flag::SEEN);
        if r.has(flag::FINISHED) {
            if seen {
                self.store.mark(slot, flag::SEEN, false);
            }
            return;
        }
        if seen || since > judge_before {
            if self.half_closed(r.state, now_ns.saturating_sub(entry)) {
                self.store.mark(slot, flag::HALF_CLOSED, true);
            }
            self.store.mark(
                slot,
                flag::SEEN | flag::MISSING | flag::ORPHAN_MISSING,
                false,
            );
            return;
        }
        if !full && r.is_orphan() {
            self.orphan_absent(slot, now_ns, rep, obs);
            return;
        }
        if !full && (r.has(flag::TW) || matches!(r.state, FinWait1 | FinWait2 | Closing)) {
            // May be (or have become) a timewait socket in TIME_WAIT, which
            // this dump does not list: the next full dump judges it. The
            // kernel drops an event that fires while the program runs on
            // the same CPU (a softirq interrupting a syscall's event), so
            // `fin_wait1 -> fin_wait2 -> close` can go unseen.
            return;
        }
        if r.is_orphan() && r.has(flag::TW_CONFIRMED) {
            // A confirmed orphan absent from a full dump once its timer is
            // due: the kernel destroyed it then. Its stay ends at the timer,
            // not at this dump, and no second dump is needed to believe it.
            let due = self.orphan_ends.get(&cookie).copied();
            if let Some(end) = due.filter(|&end| end <= now_ns.saturating_add(TIME_WAIT_SLACK_NS)) {
                rep.orphan_fin_wait2_ended += 1;
                self.orphan_ends.remove(&cookie);
                self.end_time_wait(slot, end.min(now_ns).max(since), TimeWaitEnd::Expired, obs);
                return;
            }
        }
        if r.has(flag::TW) && !r.has(flag::MISSING) {
            // Absent once: judged by the next full dump if absent again.
            self.store.mark(slot, flag::MISSING, true);
            return;
        }
        if r.has(flag::TW) {
            if r.has(flag::TW_CONFIRMED) {
                if r.state != TimeWait {
                    // Its timer not due yet (the branch above took those):
                    // something killed it (a reset, `ss -K`).
                    let killed = self.orphan_ends.remove(&cookie).is_some();
                    rep.orphan_fin_wait2_ended += 1;
                    let how = if killed {
                        TimeWaitEnd::Reset
                    } else {
                        TimeWaitEnd::Expired
                    };
                    self.end_time_wait(slot, now_ns, how, obs);
                    return;
                }
                let deadline = self.store.time_wait_end(since);
                if deadline > now_ns.saturating_add(TIME_WAIT_SLACK_NS) {
                    rep.time_wait_killed += 1;
                    self.end_time_wait(slot, now_ns, TimeWaitEnd::Reset, obs);
                } else {
                    // Expired during the dump: a timer never fires early,
                    // so the stay was its full 60 s.
                    rep.time_wait_expired += 1;
                    self.end_time_wait(slot, deadline, TimeWaitEnd::Expired, obs);
                }
            } else {
                rep.time_wait_never_appeared += 1;
                obs.time_wait_never_appeared(cookie);
                self.finish_at(slot, now_ns, tw_end::NEVER_APPEARED);
            }
        } else if !r.has(flag::MISSING) {
            // Absent once. A dump can skip a socket, and a close the kernel
            // made in the walk's last moment can still be on its way to the
            // lanes: judged by the next dump if absent again.
            rep.absent_once += 1;
            self.store.mark(slot, flag::MISSING, true);
        } else {
            rep.vanished += 1;
            obs.correction(cookie, Correction::Vanished);
            self.finish_at(slot, now_ns, tw_end::NONE);
        }
    }

    /// The orphaned FIN_WAIT2 record in `slot` is absent from a frequent
    /// dump, which lists such sockets: the second time in a row, well
    /// before its timer, it enters TIME_WAIT (see the `engine` docs).
    fn orphan_absent(
        &mut self,
        slot: u32,
        now_ns: u64,
        rep: &mut ReconcileReport,
        obs: &mut impl Observer,
    ) {
        let r = self.store.rec(slot);
        let cookie = r.cookie;
        let before_timer = self
            .orphan_ends
            .get(&cookie)
            .is_some_and(|&end| now_ns.saturating_add(TIME_WAIT_SLACK_NS) < end);
        if !before_timer {
            // It may have expired: the next full dump judges it.
            self.store.mark(slot, flag::ORPHAN_MISSING, false);
            return;
        }
        if !r.has(flag::ORPHAN_MISSING) {
            // A dump racing with churn can skip a socket: once is not enough.
            self.store.mark(slot, flag::ORPHAN_MISSING, true);
            return;
        }
        rep.orphan_moved_on += 1;
        self.orphan_to_time_wait(slot, now_ns, false, false, obs);
    }

    /// The orphaned FIN_WAIT2 record in `slot` entered TIME_WAIT at
    /// `entry_ns` (never before it closed): its FIN_WAIT2 stay ends there
    /// (`stay_lower_bound` as [`Observer::stay`] has it). `exact`: the
    /// timer gave the entry; otherwise it is a lower bound, unconfirmed
    /// until a full dump shows the socket.
    fn orphan_to_time_wait(
        &mut self,
        slot: u32,
        entry_ns: u64,
        exact: bool,
        stay_lower_bound: bool,
        obs: &mut impl Observer,
    ) {
        let r = self.store.rec(slot);
        // The stay is reported from the handover (the part before went at
        // the close); half-closed is judged over the whole FIN_WAIT2.
        let (cookie, since, first) = (r.cookie, r.since_ns, r.state_entry_ns());
        let entry = entry_ns.max(since);
        self.orphan_ends.remove(&cookie);
        obs.stay(cookie, FinWait2, entry - since, stay_lower_bound);
        let half = self.half_closed(FinWait2, entry - first);
        self.store.update(slot, |r| {
            r.state = TimeWait;
            r.since_ns = entry;
            r.set(flag::FW2_KEPT, false);
            r.set(flag::LOWER_BOUND, !exact);
            if !exact {
                r.set(flag::TW_CONFIRMED, false);
            }
            r.set(flag::ORPHAN_MISSING, false);
            r.set(flag::HALF_CLOSED, half || r.has(flag::HALF_CLOSED));
            r.push_path(TimeWait);
        });
    }

    /// Finish `slot` at `at_ns` without reporting a stay.
    fn finish_at(&mut self, slot: u32, at_ns: u64, tw: u8) {
        self.store.update(slot, |r| {
            if tw == tw_end::NEVER_APPEARED {
                r.pop_path(TimeWait);
            } else {
                r.push_path(Close);
            }
            r.set(flag::FINISHED, true);
            r.set(flag::LOWER_BOUND, false);
            r.state = Close;
            r.since_ns = at_ns.max(r.since_ns);
            r.tw_end = tw;
        });
    }
}
