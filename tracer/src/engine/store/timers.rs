//! The store's TIME_WAIT timers: queues of 8-byte `(slot, tick)` entries,
//! one per record with a timer, earliest first.
//!
//! A timer is keyed by its *base*, `since + 60 s`, and ends there once a
//! dump confirmed it, or [`TIME_WAIT_SLACK_NS`] later while still inferred
//! (the store's `time_wait_deadline`). Keying by the base means a dump
//! confirming a timer does not move it. An inferred one whose base passes
//! moves from `queue` to `grace` to wait out the slack; both are in
//! `(base, cookie)` order, so the earlier of their two fronts is always the
//! next timer due: [`TimerQueue::pop`] returns timers in exactly the order,
//! and at exactly the time, that a min-heap of `(deadline, cookie)` would,
//! and never before their exact deadline.
//!
//! A tick is 2^20 ns (about 1 ms) of the base, truncated to 32 bits. It
//! wraps every 52 days of uptime, so ticks are compared as serial numbers
//! (RFC 1982): right while the entries lie within 2^31 ticks (26 days) of
//! one another, and every base is within about a minute of the clock.
//! Entries of one tick are ordered by their record's exact key, read
//! through the slot.
//!
//! Timers are armed nearly in order (events arrive almost sorted), so a
//! push goes at the back, or at most [`NEAR`] entries before it. One armed
//! further back (a dump adopting timewait sockets, in hash order) waits in
//! a side list that the next pop sorts and merges in one pass: a batch of
//! k costs O(k log k) plus the entries it passes, not k shifts of the queue.
//!
//! The store reports when a record's timer goes or gets another base (the
//! entry becomes a tombstone, dropped once it reaches either end), when a
//! record moves to another slot (the entry is repointed in place), and when
//! one is confirmed (leaving `grace` if it is there); each finds the entry
//! by binary search on its tick. So every live entry names the record that
//! armed it, and the queues hold one entry per timer plus the tombstones of
//! about the last minute.
use std::cmp::Ordering;
use std::collections::VecDeque;

use super::super::TIME_WAIT_SLACK_NS;
use super::super::record::NIL;

/// log2 of a tick in ns.
const TICK_SHIFT: u32 = 20;

/// How many entries a push may step back over before it goes to the side
/// list instead.
const NEAR: usize = 32;

/// Side-list capacity kept after a merge (a bigger batch's is given back).
const LATE_KEEP: usize = 1024;

/// The tick of a time.
pub(super) fn tick(ns: u64) -> u32 {
    (ns >> TICK_SHIFT) as u32
}

/// Serial-number order of two ticks.
fn serial(a: u32, b: u32) -> Ordering {
    (a.wrapping_sub(b) as i32).cmp(&0)
}

/// What the queue needs to know of a record with a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Timer {
    /// `since + 60 s`: where it sits in the queues. Distinct records rarely
    /// share a tick of it, so finding an entry stays a binary search.
    pub base_ns: u64,
    /// When it ends once confirmed: at or after `base_ns`, and never
    /// earlier for a later base (the kernel's timer wheel rounds many bases
    /// up to one bucket's end).
    pub end_ns: u64,
    /// Breaks ties.
    pub cookie: u64,
    /// Inferred: it ends [`TIME_WAIT_SLACK_NS`] after `end_ns`.
    pub grace: bool,
}

impl Timer {
    /// When it ends.
    pub fn deadline_ns(&self) -> u64 {
        if self.grace {
            self.end_ns.saturating_add(TIME_WAIT_SLACK_NS)
        } else {
            self.end_ns
        }
    }

    /// Its place in `queue` and `grace`.
    fn order(&self) -> (u64, u64) {
        (self.base_ns, self.cookie)
    }
}

/// A timer: its record's slot and its base's tick. `slot == NIL` is a
/// tombstone (a cancelled timer, left in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    slot: u32,
    tick: u32,
}

const _: () = assert!(size_of::<Entry>() == 8);

const TOMBSTONE: Entry = Entry { slot: NIL, tick: 0 };

/// The timer of the record `e` names, unless `e` is a tombstone (or the
/// record no longer matches it, which the store never leaves).
fn live<K: Fn(u32) -> Option<Timer>>(e: Entry, key: &K) -> Option<Timer> {
    if e.slot == NIL {
        return None;
    }
    key(e.slot).filter(|t| tick(t.base_ns) == e.tick)
}

/// True when the queued `p` goes before a new live entry with `tick` and
/// `order`; a tombstone of the same tick may go either side (it does not).
fn precedes<K>(p: Entry, tick: u32, order: (u64, u64), key: &K) -> bool
where
    K: Fn(u32) -> Option<Timer>,
{
    match serial(p.tick, tick) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => live(p, key).is_some_and(|t| t.order() < order),
    }
}

/// Insert `e` (timer `t`) in order, stepping back over at most `max`
/// entries from the back; `false` (and nothing done) when that is not far
/// enough.
fn insert<K>(q: &mut VecDeque<Entry>, e: Entry, t: Timer, max: usize, key: &K) -> bool
where
    K: Fn(u32) -> Option<Timer>,
{
    let n = q.len();
    let mut i = n;
    while i > 0 && !precedes(q[i - 1], e.tick, t.order(), key) {
        i -= 1;
        if n - i > max {
            return false;
        }
    }
    q.insert(i, e);
    true
}

/// The index of the live entry `(slot, tick)` in `q`.
fn find(q: &VecDeque<Entry>, slot: u32, tick: u32) -> Option<usize> {
    let start = q.partition_point(|e| serial(e.tick, tick) == Ordering::Less);
    q.range(start..)
        .take_while(|e| e.tick == tick)
        .position(|e| e.slot == slot)
        .map(|i| start + i)
}

/// Make `q[i]` a tombstone, dropping tombstones at either end.
fn bury(q: &mut VecDeque<Entry>, i: usize) {
    q[i].slot = NIL;
    while q.front().is_some_and(|e| e.slot == NIL) {
        q.pop_front();
    }
    while q.back().is_some_and(|e| e.slot == NIL) {
        q.pop_back();
    }
}

/// See the module docs. A `key` gives the [`Timer`] of the record in a
/// slot, `None` when it has none.
pub(super) struct TimerQueue {
    /// Entries in tick order, live ones in `Timer::order`.
    queue: VecDeque<Entry>,
    /// Live entries armed too far back for `queue`, in no order.
    late: Vec<Entry>,
    /// Inferred timers past their base, in the same order as `queue`.
    grace: VecDeque<Entry>,
    /// Nothing is due, or moves to `grace`, before this: a lower bound
    /// that lets most pops return at once.
    idle_until: u64,
}

impl TimerQueue {
    /// An empty queue.
    pub fn new() -> TimerQueue {
        TimerQueue {
            queue: VecDeque::new(),
            late: Vec::new(),
            grace: VecDeque::new(),
            idle_until: u64::MAX,
        }
    }

    /// No timer is due before this (a lower bound; `u64::MAX`: none armed).
    pub fn not_before(&self) -> u64 {
        self.idle_until
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        (self.queue.capacity() + self.late.capacity() + self.grace.capacity()) * size_of::<Entry>()
    }

    /// Arm the timer of the record in `slot` (nothing if it has none).
    pub fn push<K>(&mut self, slot: u32, key: &K)
    where
        K: Fn(u32) -> Option<Timer>,
    {
        let Some(t) = key(slot) else {
            return;
        };
        let e = Entry {
            slot,
            tick: tick(t.base_ns),
        };
        self.idle_until = self.idle_until.min(t.end_ns);
        if !insert(&mut self.queue, e, t, NEAR, key) {
            self.late.push(e);
        }
    }

    /// Cancel the timer `slot` armed with `base_ns`. False when there is no
    /// such entry.
    pub fn remove(&mut self, slot: u32, base_ns: u64) -> bool {
        let tick = tick(base_ns);
        if let Some(i) = find(&self.queue, slot, tick) {
            bury(&mut self.queue, i);
        } else if let Some(j) = self.late_index(slot, tick) {
            self.late.swap_remove(j);
        } else if let Some(i) = find(&self.grace, slot, tick) {
            bury(&mut self.grace, i);
        } else {
            return false;
        }
        true
    }

    /// The inferred timer of `slot`, based at `base_ns`, was confirmed: it
    /// ends at its base now, so it leaves `grace` if it waits there.
    pub fn confirmed<K>(&mut self, slot: u32, base_ns: u64, key: &K)
    where
        K: Fn(u32) -> Option<Timer>,
    {
        if let Some(i) = find(&self.grace, slot, tick(base_ns)) {
            bury(&mut self.grace, i);
            self.push(slot, key);
        }
    }

    /// The slot of the timer armed earliest (the oldest stay in TIME_WAIT),
    /// without removing it; `None` when none is armed.
    pub fn earliest<K>(&mut self, key: &K) -> Option<u32>
    where
        K: Fn(u32) -> Option<Timer>,
    {
        self.merge_late(key);
        while self.queue.front().is_some_and(|&e| live(e, key).is_none()) {
            self.queue.pop_front();
        }
        while self.grace.front().is_some_and(|&e| live(e, key).is_none()) {
            self.grace.pop_front();
        }
        let front = |q: &VecDeque<Entry>| {
            q.front()
                .and_then(|&e| Some((live(e, key)?.order(), e.slot)))
        };
        match (front(&self.queue), front(&self.grace)) {
            (Some(a), Some(b)) => Some(a.min(b).1),
            (a, b) => a.or(b).map(|(_, slot)| slot),
        }
    }

    /// The slots of the next live-looking entries of the main queue, front
    /// first: most likely the next timers due (a hint for prefetching; a
    /// tombstone's slot is skipped, a stale entry's is not).
    pub fn upcoming(&self) -> impl Iterator<Item = u32> + '_ {
        self.queue
            .iter()
            .take(8)
            .map(|e| e.slot)
            .filter(|&s| s != NIL)
    }

    /// The earliest timer, with its exact deadline, if that is at or before
    /// `now_ns`, removing it.
    pub fn pop<K>(&mut self, now_ns: u64, key: &K) -> Option<(u32, u64)>
    where
        K: Fn(u32) -> Option<Timer>,
    {
        if now_ns < self.idle_until {
            return None;
        }
        self.merge_late(key);
        // The front of `queue`, once inferred timers past their base have
        // moved to `grace`: the earliest of `queue`'s, if any is due.
        let first = loop {
            let Some(&e) = self.queue.front() else {
                break None;
            };
            match live(e, key) {
                Some(t) if t.grace && t.end_ns <= now_ns => {
                    self.queue.pop_front();
                    insert(&mut self.grace, e, t, usize::MAX, key);
                }
                Some(t) => break Some(t),
                None => {
                    self.queue.pop_front();
                }
            }
        };
        while let Some(&e) = self.grace.front()
            && live(e, key).is_none()
        {
            self.grace.pop_front();
        }
        let waiting = self.grace.front().and_then(|&e| live(e, key));
        let (q, t) = match (first, waiting) {
            (Some(a), Some(b)) if (b.deadline_ns(), b.cookie) < (a.deadline_ns(), a.cookie) => {
                (&mut self.grace, b)
            }
            (Some(a), _) => (&mut self.queue, a),
            (None, Some(b)) => (&mut self.grace, b),
            (None, None) => {
                self.idle_until = u64::MAX;
                return None;
            }
        };
        if t.deadline_ns() > now_ns {
            // Whatever comes next: `first` moving to `grace` or due (both
            // at its base), or `waiting` due.
            self.idle_until = first
                .map(|a| a.end_ns)
                .into_iter()
                .chain(waiting.map(|b| b.deadline_ns()))
                .min()
                .unwrap_or(u64::MAX);
            return None;
        }
        q.pop_front().map(|e| (e.slot, t.deadline_ns()))
    }

    /// The index in `late` of the entry `(slot, tick)` (most likely a
    /// recent one).
    fn late_index(&self, slot: u32, tick: u32) -> Option<usize> {
        self.late
            .iter()
            .rposition(|e| e.slot == slot && e.tick == tick)
    }

    /// Sort the side list and merge it into `queue`, from the back.
    fn merge_late<K>(&mut self, key: &K)
    where
        K: Fn(u32) -> Option<Timer>,
    {
        let Some(first) = self.late.first() else {
            return;
        };
        // Ticks ranked as offsets from one of them: the same order as
        // `serial` within its range, and a total order whatever happens.
        let mid = first.tick;
        let rank = |t: u32| t.wrapping_sub(mid) ^ (1 << 31);
        let order = |e: &Entry| key(e.slot).map(|t| t.order());
        self.late.sort_unstable_by(|a, b| {
            rank(a.tick)
                .cmp(&rank(b.tick))
                .then_with(|| order(a).cmp(&order(b)))
        });
        let n = self.queue.len();
        let (mut i, mut w) = (n, n + self.late.len());
        self.queue.resize(w, TOMBSTONE);
        let mut last = None;
        while let Some(&b) = self.late.last() {
            let o = *last.get_or_insert_with(|| order(&b).unwrap_or_default());
            w -= 1;
            if i > 0 && !precedes(self.queue[i - 1], b.tick, o, key) {
                i -= 1;
                self.queue[w] = self.queue[i];
            } else {
                self.queue[w] = b;
                self.late.pop();
                last = None;
            }
        }
        if self.late.capacity() > LATE_KEEP {
            self.late.shrink_to(LATE_KEEP);
        }
    }
}

#[cfg(test)]
mod check;
#[cfg(test)]
mod tests;
