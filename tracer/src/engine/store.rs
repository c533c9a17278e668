//! The bounded record store: a slab of [`Record`]s, a cookie index,
//! per-state counts, a 4-tuple index of TIME_WAIT records, a queue of
//! TIME_WAIT timers, and the queue of finished records that makes
//! retention and eviction O(1).
//!
//! Records live in a `Vec` whose freed slots are reused, so a socket
//! costs its 112 bytes plus its `cookie -> slot` entry: 4 bytes in a block
//! shared with the neighbouring cookies, or 16 in an open-addressing table
//! for the sparse ones (`cookies.rs`, one cache line per lookup, which the
//! store asks for ahead where it knows what comes next), and a record
//! never moves: removing one touches its own entries only. (Moving the
//! last record into the hole instead cost its index entry, timer and links
//! too, and a removal is mostly of a record a minute old, out of the CPU's
//! caches.) A new record takes a free slot near the ones taken just before
//! it (`slots.rs`), so records made together share pages.
//!
//! Finished records are queued in the order they finished, each entry
//! with the record's cookie, slot and finish time: retention and the first
//! eviction choice both take the queue's front, and retention drops a
//! record without reading it (the record, 5 s cold in a slab of a hundred
//! megabytes, cost a miss of the CPU's address translation on every
//! drop). A record that leaves the queue (it changes, or is removed)
//! blanks its entry through its `fin_seq`, and blank entries are popped as
//! they reach the front. (Nearly in order of finish time: a TIME_WAIT
//! that its timer ends up to the slack late joins with its deadline
//! behind records that finished after it, and waits for them;
//! `Engine::apply` drops what a change of the front bares.) Live records
//! are on no queue: nothing walks them in order, and keeping them in order
//! of last change touched other records on every event.
//! All changes to a record's state, `FINISHED` or `TW` flags go through
//! [`Store::update`], which diffs an accounting snapshot before and after,
//! so counts, lists, the tuple index and the timers cannot drift.
//!
//! Every record that has a TIME_WAIT deadline (see [`time_wait_deadline`])
//! has exactly one 8-byte `(slot, tick)` entry in the timer queue
//! (`timers.rs`), which pops them in `(deadline, cookie)` order. Entries are
//! keyed by `since + 60 s`, which a dump confirming the record leaves alone.
//! A record that leaves TIME_WAIT or gets another `since` cancels its entry,
//! leaving a tombstone until it reaches an end of the queue (about 61 s at
//! most), so the queue stays near the number of TIME_WAIT records.
mod acct;
#[cfg(test)]
mod check;
mod cookies;
mod slots;
mod table;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::{HashMap, VecDeque};

use super::hash::BuildCookieHasher;
use super::observer::Observer;
use super::record::{NIL, Record, flag};
use super::wheel::{TimeWaitClock, time_wait_end};
use crate::memory;
use crate::tcp::TcpState;
use acct::{Acct, acct, timer_at};
use cookies::Cookies;
use slots::{SlotBits, Slots};
use table::Table;
use timers::TimerQueue;

/// A finished record's entry in the store's queue of them: what
/// retention needs to drop it without reading it.
#[derive(Clone, Copy, Debug)]
struct Finished {
    /// The record's `since_ns` when it was queued.
    since_ns: u64,
    cookie: u64,
    /// `NIL`: blank, the record left the queue.
    slot: u32,
}

/// The timewait records of one local port, two counts indexed by
/// [`TIME_WAIT`] and [`TUPLES`]. (An array, not a struct, so that the
/// store's check compares them all at once.)
type PortCounts = [u32; 2];

/// Live records in TIME_WAIT: the per-port gauge, read every turn
/// without a scan.
const TIME_WAIT: usize = 0;

/// Live timewait records (those in `tw_index`'s and `tw_per_netns`'s
/// count, orphaned FIN_WAIT2 ones too): a new connection on a port with
/// none cannot take over a TIME_WAIT's tuple, and skips the tuple index, a
/// key at random in a table of megabytes. (A server's port, when its
/// clients close first, holds none at all.)
const TUPLES: usize = 1;

/// The bounded store. See the module docs.
pub(super) struct Store {
    /// Records, and what the free slots last held.
    slab: Vec<Record>,
    /// The free slots of `slab`, and which one a new record takes.
    slots: Slots,
    /// `cookie -> slot` of every record.
    index: Cookies,
    /// Tuple fingerprint -> cookie of the records in TIME_WAIT.
    tw_index: Table<u64>,
    /// One entry per record with a TIME_WAIT deadline, earliest first.
    timers: TimerQueue,
    /// The slot whose timer entry `pop_time_wait_timer` just returned (and
    /// removed), until its record's deadline changes; else `NIL`.
    fired: u32,
    /// Finished records, oldest first, and blank entries.
    finished: VecDeque<Finished>,
    /// The sequence number of the front entry of `finished` (wrapping).
    finished_front: u32,
    counts: [u64; TcpState::COUNT],
    /// Live records in TIME_WAIT that no dump confirmed yet.
    unconfirmed: u64,
    /// Live records per state in each network namespace (namespaces with
    /// none are removed): the per-workload gauges, read without a scan.
    live_per_netns: HashMap<u32, [u32; TcpState::COUNT], BuildCookieHasher>,
    /// Live timewait records (TIME_WAIT and orphaned FIN_WAIT2) per
    /// network namespace: what the kernel holds against
    /// `tcp_max_tw_buckets`. Entries at zero are removed.
    tw_per_netns: HashMap<u32, u32, BuildCookieHasher>,
    /// One bit per slot, set while its record is live and not in TIME_WAIT
    /// proper: the records a live dump's absence judges. A live reconcile
    /// walks these bits instead of every record, most of which are in
    /// TIME_WAIT on a busy host (1 bit per slot: 128 KiB at a million).
    live_judged: SlotBits,
    /// Two counts per local port (65,536 entries, 512 KiB), side by side
    /// so that a record entering or leaving TIME_WAIT reads one line.
    per_port: Box<[PortCounts]>,
    /// One bit per local port, set while its [`TUPLES`] count is not
    /// zero (8 KiB): what each new connection checks, a few events ahead
    /// of applying it, where the counts' 512 KiB missed the CPU's caches
    /// and address translations.
    tuple_ports: SlotBits,
    /// When the kernel ends a TIME_WAIT stay; `None`: after exactly 60 s.
    clock: Option<TimeWaitClock>,
    max: usize,
    evictions: u64,
}

impl Store {
    /// An empty store that holds at most `max` records (at least 1).
    pub fn new(max: usize, clock: Option<TimeWaitClock>) -> Store {
        Store {
            slab: Vec::new(),
            slots: Slots::default(),
            index: Cookies::new(),
            tw_index: Table::new(),
            timers: TimerQueue::new(),
            fired: NIL,
            finished: VecDeque::new(),
            finished_front: 0,
            counts: [0; TcpState::COUNT],
            unconfirmed: 0,
            live_per_netns: HashMap::default(),
            tw_per_netns: HashMap::default(),
            live_judged: SlotBits::default(),
            per_port: vec![[0; 2]; 1 << 16].into_boxed_slice(),
            tuple_ports: SlotBits::default(),
            clock,
            max: max.clamp(1, NIL as usize - 1),
            evictions: 0,
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.slab.len() - self.slots.free()
    }

    /// Heap bytes held, estimated from capacities: the slab, both indexes
    /// and the timer queue.
    pub fn approx_heap_bytes(&self) -> usize {
        self.slab.capacity() * size_of::<Record>()
            + self.slots.heap_bytes()
            + self.per_port.len() * size_of::<PortCounts>()
            + self.tuple_ports.heap_bytes()
            + self.live_judged.heap_bytes()
            + self.finished.capacity() * size_of::<Finished>()
            + self.index.heap_bytes()
            + self.tw_index.heap_bytes()
            + self.timers.heap_bytes()
    }

    /// Records evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Live records per state.
    pub fn counts(&self) -> &[u64; TcpState::COUNT] {
        &self.counts
    }

    /// Live records in TIME_WAIT not confirmed by a dump.
    pub fn unconfirmed(&self) -> u64 {
        self.unconfirmed
    }

    /// Live timewait records (TIME_WAIT or orphaned FIN_WAIT2) of `netns`.
    pub fn time_wait_in(&self, netns: u32) -> u32 {
        self.tw_per_netns.get(&netns).copied().unwrap_or(0)
    }

    /// The network namespaces that hold live timewait records.
    pub fn time_wait_namespaces(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.tw_per_netns.keys().copied()
    }

    /// Live records per state, for each network namespace that has any.
    pub fn live_per_netns(&self) -> impl Iterator<Item = (u32, &[u32; TcpState::COUNT])> {
        self.live_per_netns.iter().map(|(&n, c)| (n, c))
    }

    /// Live records in TIME_WAIT on local port `port`.
    pub fn time_wait_on_port(&self, port: u16) -> u32 {
        self.per_port[usize::from(port)][TIME_WAIT]
    }

    /// When the kernel ends a TIME_WAIT stay that began at `since_ns`.
    pub fn time_wait_end(&self, since_ns: u64) -> u64 {
        time_wait_end(self.clock.as_ref(), since_ns)
    }

    /// The slot of a record whose TIME_WAIT timer is due at `now_ns`, with
    /// its deadline, removing its entry; `None` when no timer is due. Due
    /// timers come earliest first, ties by cookie.
    pub fn pop_time_wait_timer(&mut self, now_ns: u64) -> Option<(u32, u64)> {
        let slab = &self.slab;
        let clock = self.clock.as_ref();
        let due = self.timers.pop(now_ns, &|s| timer_at(slab, s, clock));
        if let Some((slot, _)) = due {
            self.fired = slot;
            // The next timers are most likely due next, a minute after
            // their records were last touched. Ask for the second's record,
            // and for what ending the first reads beside its record (which
            // came with the last pop's ask): its tuple's index entry and
            // its port's count.
            let mut next = self
                .timers
                .upcoming()
                .filter_map(|s| self.slab.get(s as usize));
            if let Some(r) = next.next() {
                self.tw_index.prefetch(r.tuple_hash());
                memory::prefetch(&self.per_port[usize::from(r.lport)]);
            }
            if let Some(r) = next.next() {
                memory::prefetch_all(r);
            }
        }
        due
    }

    /// No TIME_WAIT timer is due before this; `None` when none is armed.
    pub fn next_time_wait_timer(&self) -> Option<u64> {
        Some(self.timers.not_before()).filter(|&t| t != u64::MAX)
    }

    /// Every record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.slab
            .iter()
            .enumerate()
            .filter(|&(slot, _)| !self.slots.is_vacant(slot as u32))
            .map(|(_, r)| r)
    }

    /// The records a live dump's absence judges (see [`Store::live_word`]):
    /// every live record out of TIME_WAIT proper, listeners among them. A
    /// walk of a bitset, so on a host holding mostly TIME_WAIT and finished
    /// records it reads few of them.
    pub fn open_records(&self) -> impl Iterator<Item = &Record> {
        (0..self.live_words()).flat_map(move |w| {
            let mut bits = self.live_word(w);
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let slot = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    &self.slab[slot]
                })
            })
        })
    }

    /// The slot of `cookie`.
    pub fn slot(&self, cookie: u64) -> Option<u32> {
        self.index.get(cookie)
    }

    /// Ask the CPU for the cookie index's entry of `cookie` and, with a
    /// tuple fingerprint, the TIME_WAIT tuple index's entry of it.
    pub fn prefetch_lookups(&self, cookie: u64, tuple: Option<u64>) {
        self.index.prefetch(cookie);
        if let Some(h) = tuple {
            self.tw_index.prefetch(h);
        }
    }

    /// Ask the CPU for the record of `cookie`, when tracked. Reads the
    /// cookie index's entry: ask for that first ([`Store::prefetch_lookups`]).
    pub fn prefetch_record(&self, cookie: u64) {
        if let Some(slot) = self.index.get(cookie) {
            memory::prefetch_all(&self.slab[slot as usize]);
        }
    }

    /// One past the highest slot: a walk over every record goes through
    /// `0..slots()` and skips the free ones ([`Store::get`]).
    pub fn slots(&self) -> u32 {
        self.slab.len() as u32
    }

    /// Words of the live-judged bitset: slots `64 * w ..` are in word `w`.
    pub fn live_words(&self) -> usize {
        self.live_judged.words()
    }

    /// Word `w` of the bitset of records a live dump's absence judges:
    /// live and not in TIME_WAIT proper (orphaned FIN_WAIT2 ones are in).
    /// Bit `b` is slot `64 * w + b`.
    pub fn live_word(&self, w: usize) -> u64 {
        self.live_judged.word(w)
    }

    /// The record in `slot`; `None` when the slot is free.
    pub fn get(&self, slot: u32) -> Option<&Record> {
        self.slab
            .get(slot as usize)
            .filter(|_| !self.slots.is_vacant(slot))
    }

    /// The record in `slot`.
    pub fn rec(&self, slot: u32) -> &Record {
        &self.slab[slot as usize]
    }

    /// Whether any live timewait record has local port `port`: false
    /// means no TIME_WAIT tuple with that port can be taken over.
    pub fn time_wait_tuples_on_port(&self, port: u16) -> bool {
        self.tuple_ports.get(u32::from(port))
    }

    /// The cookie of the TIME_WAIT record with this tuple fingerprint.
    pub fn time_wait_with_tuple(&self, hash: u64) -> Option<u64> {
        self.tw_index.get(hash)
    }

    /// Change the record in `slot` through `f`, then bring counts, lists and
    /// the tuple index up to date with what changed.
    pub fn update<R>(&mut self, slot: u32, f: impl FnOnce(&mut Record) -> R) -> R {
        let i = slot as usize;
        let r = &self.slab[i];
        if !r.has(flag::FINISHED | flag::TW) {
            // A record open and out of TIME_WAIT, the commonest: all it
            // contributes is its state's count in its namespace. A change
            // that keeps it so (a handshake, the first steps of a close)
            // moves that count and nothing else.
            let (state, netns) = (r.state, r.netns);
            let out = f(&mut self.slab[i]);
            let r = &self.slab[i];
            if !r.has(flag::FINISHED | flag::TW) && r.netns == netns {
                if r.state != state {
                    let after = r.state;
                    self.move_count(netns, state, after);
                }
                return out;
            }
            self.reaccounted(slot, Acct::open(state, netns));
            return out;
        }
        let before = acct(&self.slab[i]);
        let out = f(&mut self.slab[i]);
        self.reaccounted(slot, before);
        out
    }

    /// The record in `slot` changed from what `before` says it contributed:
    /// bring counts, lists, the tuple index and its timer up to date.
    fn reaccounted(&mut self, slot: u32, before: Acct) {
        let i = slot as usize;
        if self.slab[i].has(flag::FINISHED) {
            // A finished record is out of TIME_WAIT by definition.
            self.slab[i].set(flag::TW, false);
        }
        let after = acct(&self.slab[i]);
        if before != after {
            self.reaccount(slot, before, after);
            if before.timer != after.timer {
                if let Some(base) = before.timer {
                    self.cancel_timer(slot, base);
                }
                if after.timer.is_some() {
                    self.arm_timer(slot);
                }
            } else if let Some(base) = after.timer
                && before.unconfirmed
                && !after.unconfirmed
            {
                let (slab, clock) = (&self.slab, self.clock.as_ref());
                self.timers
                    .confirmed(slot, base, &|s| timer_at(slab, s, clock));
            }
        }
    }

    /// Set or clear bookkeeping flags of the record in `slot`: those that
    /// no count, list, index or timer depends on (`SEEN`, `MISSING`,
    /// `HALF_CLOSED`, `BOUND`), so nothing needs bringing up to date. A reconcile
    /// marks every record a dump lists and then clears the marks: through
    /// [`Store::update`] that took four accounting snapshots, each hashing
    /// a TIME_WAIT record's tuple.
    pub fn mark(&mut self, slot: u32, f: u16, on: bool) {
        debug_assert_eq!(
            f & !(flag::SEEN
                | flag::MISSING
                | flag::ORPHAN_MISSING
                | flag::HALF_CLOSED
                | flag::BOUND),
            0,
            "only bookkeeping flags are marked"
        );
        self.slab[slot as usize].set(f, on);
    }

    /// Insert a record for a cookie that is not present. At the cap, first
    /// evict the oldest finished record, else (when `evict_time_wait`) the
    /// oldest in TIME_WAIT; returns `None` when nothing could make room.
    /// Other live records are never evicted: the long-lived ones are what
    /// leak detection needs, so a new socket goes untracked instead.
    pub fn insert(
        &mut self,
        rec: Record,
        evict_time_wait: bool,
        obs: &mut impl Observer,
    ) -> Option<u32> {
        debug_assert!(self.index.get(rec.cookie).is_none());
        if self.len() >= self.max && !self.evict_one(evict_time_wait, obs) {
            return None;
        }
        let cookie = rec.cookie;
        let slot = match self.slots.take() {
            Some(slot) => {
                self.slab[slot as usize] = rec;
                // Retention freed the next slot without reading it: ask
                // for it a few events before the next new socket writes it.
                if let Some(next) = self.slots.peek() {
                    memory::prefetch_all(&self.slab[next as usize]);
                }
                slot
            }
            None => {
                if self.slab.len() == self.slab.capacity() {
                    // Grow by an eighth rather than doubling: the slab is most
                    // of the memory, and this keeps its slack near 12 %.
                    let room = self.max - self.slab.len();
                    self.slab
                        .reserve_exact((self.slab.len() / 8).max(64).min(room));
                }
                self.slab.push(rec);
                (self.slab.len() - 1) as u32
            }
        };
        self.index.insert(cookie, slot);
        let a = acct(&self.slab[slot as usize]);
        self.account(slot, a);
        if a.timer.is_some() {
            self.arm_timer(slot);
        }
        Some(slot)
    }

    /// Drop the oldest finished record, else (when `time_wait_too`) the
    /// oldest in TIME_WAIT. Returns false when there was none.
    pub fn evict_one(&mut self, time_wait_too: bool, obs: &mut impl Observer) -> bool {
        let (slot, live) = if let Some(f) = self.finished_head() {
            (f.slot, false)
        } else if !time_wait_too {
            return false;
        } else {
            let (slab, clock) = (&self.slab, self.clock.as_ref());
            match self.timers.earliest(&|s| timer_at(slab, s, clock)) {
                Some(slot) => (slot, true),
                None => return false,
            }
        };
        let cookie = self.remove(slot);
        self.evictions += 1;
        obs.evicted(cookie, live);
        true
    }

    /// Drop finished records whose finish time is at or before `cutoff_ns`,
    /// oldest first. Returns how many.
    pub fn expire(&mut self, cutoff_ns: u64) -> usize {
        let mut n = 0;
        while let Some(f) = self.finished_head()
            && f.since_ns <= cutoff_ns
        {
            // The next records to go were last touched seconds ago: ask
            // for the next entry's index line ahead.
            if let Some(next) = self.finished.get(1) {
                self.index.prefetch(next.cookie);
            }
            self.pop_finished();
            self.drop_finished(f);
            n += 1;
        }
        n
    }

    /// The front entry of the finished queue, after popping the blank
    /// ones before it.
    fn finished_head(&mut self) -> Option<Finished> {
        while let Some(&f) = self.finished.front() {
            if f.slot != NIL {
                return Some(f);
            }
            self.pop_finished();
        }
        None
    }

    fn pop_finished(&mut self) {
        self.finished.pop_front();
        self.finished_front = self.finished_front.wrapping_add(1);
    }

    /// Remove the finished record of a popped entry without reading it: a
    /// finished record is counted nowhere else, has no timer and is not
    /// live-judged (see `acct`).
    fn drop_finished(&mut self, f: Finished) {
        debug_assert!(self.slab[f.slot as usize].has(flag::FINISHED));
        debug_assert_eq!(self.slab[f.slot as usize].cookie, f.cookie);
        debug_assert_ne!(self.fired, f.slot);
        self.index.remove(f.cookie);
        self.slots.release(f.slot);
    }

    /// Remove the record in `slot`; returns its cookie.
    pub fn remove(&mut self, slot: u32) -> u64 {
        let a = acct(&self.slab[slot as usize]);
        self.unaccount(slot, a);
        if let Some(base) = a.timer {
            self.cancel_timer(slot, base);
        }
        let cookie = self.slab[slot as usize].cookie;
        self.index.remove(cookie);
        self.slots.release(slot);
        cookie
    }

    /// Queue the timer of the record in `slot`.
    fn arm_timer(&mut self, slot: u32) {
        let (slab, clock) = (&self.slab, self.clock.as_ref());
        self.timers.push(slot, &|s| timer_at(slab, s, clock));
    }

    /// Drop the timer entry of the record in `slot`, based at `base`.
    fn cancel_timer(&mut self, slot: u32, base: u64) {
        if self.fired == slot {
            // `pop_time_wait_timer` took the entry already.
            self.fired = NIL;
        } else {
            let found = self.timers.remove(slot, base);
            debug_assert!(found, "no timer for slot {slot}");
        }
    }
}
