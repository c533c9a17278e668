//! What each record contributes to the store's indexes, and keeping them
//! in step: per-state counts (in all and per namespace), the lists, the
//! TIME_WAIT tuple index, per-namespace and per-port TIME_WAIT counts.
//! Timers are the caller's (`Store::update`, `insert`, `remove`).
use super::super::record::{NIL, Record, flag};
use super::super::wheel::{TimeWaitClock, time_wait_end};
use super::super::{TCP_TIMEWAIT_LEN_NS, TIME_WAIT_SLACK_NS};
use super::timers::Timer;
use super::{Finished, Store, TIME_WAIT, TUPLES};
use crate::tcp::TcpState;

/// What a record contributes to the indexes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Acct {
    /// The state counted in `counts` (live records only).
    pub(super) counted: Option<TcpState>,
    /// Its network namespace (where `counted` is counted per namespace).
    pub(super) netns: u32,
    /// Whether it is on the finished queue.
    pub(super) finished: bool,
    /// Its `since_ns` while finished (else 0): the time its queue entry
    /// carries, so a change of it requeues the record.
    pub(super) finished_since: u64,
    /// Its tuple fingerprint, network namespace and local port, while in
    /// TIME_WAIT (or an orphaned FIN_WAIT2).
    pub(super) tw: Option<(u64, u32, u16)>,
    /// Its local port, while live in the TIME_WAIT state proper.
    pub(super) tw_port: Option<u16>,
    /// The base of its TIME_WAIT timer, `since + 60 s` (see `Timer`).
    pub(super) timer: Option<u64>,
    /// In TIME_WAIT, inferred and not confirmed by a dump yet.
    pub(super) unconfirmed: bool,
}

impl Acct {
    /// What an open record out of TIME_WAIT (neither `FINISHED` nor `TW`)
    /// in `state` and `netns` contributes: `acct` of it.
    pub(super) fn open(state: TcpState, netns: u32) -> Acct {
        Acct {
            counted: Some(state),
            netns,
            finished: false,
            finished_since: 0,
            tw: None,
            tw_port: None,
            timer: None,
            unconfirmed: false,
        }
    }

    /// Judged by a live dump's absence: live and not in TIME_WAIT proper
    /// (see [`Store::live_word`]).
    fn live_judged(&self) -> bool {
        self.counted.is_some() && self.tw_port.is_none()
    }
}

/// When the TIME_WAIT stay of `r` ends by its timer: the kernel's end for
/// its `since` (see `wheel`) once a dump confirmed it; that plus the slack
/// while only inferred (a full dump should have judged it by then). `None`
/// unless live in TIME_WAIT (an orphaned FIN_WAIT2 has no fixed timer).
pub(super) fn time_wait_deadline(r: &Record, clock: Option<&TimeWaitClock>) -> Option<u64> {
    if !has_deadline(r) {
        return None;
    }
    let end = time_wait_end(clock, r.since_ns);
    Some(if r.has(flag::TW_CONFIRMED) {
        end
    } else {
        end.saturating_add(TIME_WAIT_SLACK_NS)
    })
}

/// Whether `r` has a TIME_WAIT deadline: live in TIME_WAIT proper.
fn has_deadline(r: &Record) -> bool {
    !r.has(flag::FINISHED) && r.has(flag::TW) && r.state == TcpState::TimeWait
}

/// The timer of `r`, when it has a deadline: `time_wait_deadline(r)` is
/// its `deadline_ns()`.
pub(super) fn timer(r: &Record, clock: Option<&TimeWaitClock>) -> Option<Timer> {
    time_wait_deadline(r, clock)?;
    Some(Timer {
        base_ns: r.since_ns.saturating_add(TCP_TIMEWAIT_LEN_NS),
        end_ns: time_wait_end(clock, r.since_ns),
        cookie: r.cookie,
        grace: !r.has(flag::TW_CONFIRMED),
    })
}

/// The timer of the record in `slot`, for the timer queue.
pub(super) fn timer_at(slab: &[Record], slot: u32, clock: Option<&TimeWaitClock>) -> Option<Timer> {
    timer(slab.get(slot as usize)?, clock)
}

/// What `r` contributes. Called twice on every change of a record, so it
/// reads only the record: a timer's base and grace, not its end (the
/// timer wheel's arithmetic, two divisions, is the queue's business).
pub(super) fn acct(r: &Record) -> Acct {
    let finished = r.has(flag::FINISHED);
    let timer = has_deadline(r);
    Acct {
        counted: (!finished).then_some(r.state),
        netns: r.netns,
        finished,
        finished_since: if finished { r.since_ns } else { 0 },
        tw: (!finished && r.has(flag::TW)).then(|| (r.tuple_hash(), r.netns, r.lport)),
        tw_port: (!finished && r.has(flag::TW) && r.state == TcpState::TimeWait).then_some(r.lport),
        timer: timer.then(|| r.since_ns.saturating_add(TCP_TIMEWAIT_LEN_NS)),
        unconfirmed: timer && !r.has(flag::TW_CONFIRMED),
    }
}

impl Store {
    /// Count `a` and, when finished, append the record in `slot` to the
    /// finished queue (timers are the caller's).
    pub(super) fn account(&mut self, slot: u32, a: Acct) {
        self.count(a);
        self.live_judged.set(slot, a.live_judged());
        self.unconfirmed += u64::from(a.unconfirmed);
        self.add_time_wait(slot, a);
        if a.finished {
            self.append(slot);
        }
    }

    /// Undo `account` (timers are the caller's).
    pub(super) fn unaccount(&mut self, slot: u32, a: Acct) {
        self.uncount(a);
        self.live_judged.set(slot, false);
        self.unconfirmed -= u64::from(a.unconfirmed);
        self.remove_time_wait(slot, a);
        if a.finished {
            self.unlink(slot);
        }
    }

    /// `unaccount(before)` then `account(after)`, touching only what
    /// changed: a state change within a namespace, the commonest update,
    /// is one hash lookup instead of four.
    pub(super) fn reaccount(&mut self, slot: u32, before: Acct, after: Acct) {
        match (before.counted, after.counted) {
            (Some(b), Some(a)) if before.netns == after.netns => {
                if b != a {
                    self.move_count(after.netns, b, a);
                }
            }
            _ => {
                self.uncount(before);
                self.count(after);
            }
        }
        self.unconfirmed -= u64::from(before.unconfirmed);
        self.unconfirmed += u64::from(after.unconfirmed);
        if before.live_judged() != after.live_judged() {
            self.live_judged.set(slot, after.live_judged());
        }
        if before.tw != after.tw || before.tw_port != after.tw_port {
            self.remove_time_wait(slot, before);
            self.add_time_wait(slot, after);
        }
        // A finished record that changes moves to the tail, as `account`
        // puts it: the list stays in order of last change.
        if before.finished {
            self.unlink(slot);
        }
        if after.finished {
            self.append(slot);
        }
    }

    /// A live record of `netns` went from state `from` to `to`.
    pub(super) fn move_count(&mut self, netns: u32, from: TcpState, to: TcpState) {
        self.counts[from.index()] -= 1;
        self.counts[to.index()] += 1;
        if let Some(c) = self.live_per_netns.get_mut(&netns) {
            c[from.index()] -= 1;
            c[to.index()] += 1;
        }
    }

    fn count(&mut self, a: Acct) {
        if let Some(st) = a.counted {
            self.counts[st.index()] += 1;
            self.live_per_netns.entry(a.netns).or_default()[st.index()] += 1;
        }
    }

    fn uncount(&mut self, a: Acct) {
        if let Some(st) = a.counted {
            self.counts[st.index()] -= 1;
            if let Some(c) = self.live_per_netns.get_mut(&a.netns) {
                c[st.index()] -= 1;
                if c.iter().all(|&n| n == 0) {
                    self.live_per_netns.remove(&a.netns);
                }
            }
        }
    }

    fn add_time_wait(&mut self, slot: u32, a: Acct) {
        if let Some((h, netns, port)) = a.tw {
            // At most one timewait socket per tuple exists; the newest wins.
            self.tw_index.insert(h, self.slab[slot as usize].cookie);
            *self.tw_per_netns.entry(netns).or_default() += 1;
            let c = &mut self.per_port[usize::from(port)];
            c[TUPLES] += 1;
            if c[TUPLES] == 1 {
                self.tuple_ports.set(u32::from(port), true);
            }
        }
        if let Some(port) = a.tw_port {
            self.per_port[usize::from(port)][TIME_WAIT] += 1;
        }
    }

    fn remove_time_wait(&mut self, slot: u32, a: Acct) {
        let cookie = self.slab[slot as usize].cookie;
        if let Some((h, netns, port)) = a.tw {
            if self.tw_index.get(h) == Some(cookie) {
                self.tw_index.remove(h);
            }
            let c = &mut self.per_port[usize::from(port)];
            c[TUPLES] -= 1;
            if c[TUPLES] == 0 {
                self.tuple_ports.set(u32::from(port), false);
            }
            if let Some(n) = self.tw_per_netns.get_mut(&netns) {
                *n -= 1;
                if *n == 0 {
                    self.tw_per_netns.remove(&netns);
                }
            }
        }
        if let Some(port) = a.tw_port {
            self.per_port[usize::from(port)][TIME_WAIT] -= 1;
        }
    }

    /// Queue the record in `slot` at the back of the finished queue.
    fn append(&mut self, slot: u32) {
        let seq = self.finished_front.wrapping_add(self.finished.len() as u32);
        let r = &mut self.slab[slot as usize];
        r.fin_seq = seq;
        let entry = Finished {
            since_ns: r.since_ns,
            cookie: r.cookie,
            slot,
        };
        self.finished.push_back(entry);
    }

    /// Take the record in `slot` off the finished queue: blank its entry.
    fn unlink(&mut self, slot: u32) {
        let at = self.slab[slot as usize]
            .fin_seq
            .wrapping_sub(self.finished_front) as usize;
        let entry = &mut self.finished[at];
        debug_assert_eq!(entry.slot, slot);
        entry.slot = NIL;
    }
}
