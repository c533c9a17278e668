//! The store's invariants, checked after every step of the engine tests.
use std::collections::HashMap;

use super::super::record::{NIL, flag};
use super::acct::{time_wait_deadline, timer, timer_at};
use super::slots::SlotBits;
use super::{Store, TIME_WAIT, TUPLES, timers};
use crate::tcp::TcpState;

impl Store {
    /// Panic unless every index agrees with the records (tests only).
    #[cfg(test)]
    pub fn check(&self) {
        assert!(
            self.len() <= self.max,
            "{} records over the cap {}",
            self.len(),
            self.max
        );
        assert_eq!(self.index.len(), self.len());
        self.slots.check(self.slab.len());
        let mut counts = [0u64; TcpState::COUNT];
        let (mut tw, mut unconfirmed) = (0, 0);
        assert_eq!(self.fired, NIL, "a popped timer's record kept its deadline");
        let mut timers = HashMap::new();
        for (slot, tick) in self
            .timers
            .check(&|s| timer_at(&self.slab, s, self.clock.as_ref()))
        {
            assert!(timers.insert(slot, tick).is_none(), "two timers for {slot}");
        }
        for (i, r) in self.slab.iter().enumerate() {
            if self.slots.is_vacant(i as u32) {
                continue;
            }
            assert!(
                !r.has(flag::SEEN),
                "slot {i}: still marked seen after a reconcile"
            );
            assert_eq!(
                self.index.get(r.cookie),
                Some(i as u32),
                "index of {:#x}",
                r.cookie
            );
            assert!(
                !(r.has(flag::FINISHED) && r.has(flag::TW)),
                "finished record in TIME_WAIT"
            );
            if let Some(deadline) = time_wait_deadline(r, self.clock.as_ref()) {
                let t = timer(r, self.clock.as_ref()).expect("a deadline has a timer");
                assert_eq!(t.deadline_ns(), deadline);
                assert_eq!(
                    timers.remove(&(i as u32)),
                    Some(timers::tick(t.base_ns)),
                    "no timer for {:#x}",
                    r.cookie
                );
                unconfirmed += u64::from(!r.has(flag::TW_CONFIRMED));
            }
            if !r.has(flag::FINISHED) {
                counts[r.state.index()] += 1;
                if r.has(flag::TW) {
                    tw += 1;
                    assert!(matches!(r.state, TcpState::TimeWait | TcpState::FinWait2));
                }
            } else {
                assert_eq!(r.state, TcpState::Close);
            }
        }
        assert!(timers.is_empty(), "timers without a deadline: {timers:?}");
        let bits = self.live_words() * 64;
        for slot in 0..bits.max(self.slots() as usize) as u32 {
            let want = self.get(slot).is_some_and(|r| {
                !(r.has(flag::FINISHED) || r.has(flag::TW) && r.state == TcpState::TimeWait)
            });
            let bit = (slot as usize) < bits
                && self.live_word(slot as usize / 64) >> (slot % 64) & 1 == 1;
            assert_eq!(bit, want, "slot {slot}: live-judged bit");
        }
        assert_eq!(counts, self.counts, "per-state counts drifted");
        assert_eq!(unconfirmed, self.unconfirmed, "unconfirmed count drifted");
        assert!(self.tw_index.len() <= tw);
        let mut per_netns: HashMap<u32, u32> = HashMap::new();
        let mut per_port = vec![[0u32; 2]; 1 << 16];
        let mut tuple_ports = SlotBits::default();
        for r in self
            .records()
            .filter(|r| !r.has(flag::FINISHED) && r.has(flag::TW))
        {
            *per_netns.entry(r.netns).or_default() += 1;
            let c = &mut per_port[usize::from(r.lport)];
            c[TUPLES] += 1;
            c[TIME_WAIT] += u32::from(r.state == TcpState::TimeWait);
            tuple_ports.set(u32::from(r.lport), true);
        }
        assert!(*per_port == *self.per_port, "counts per port drifted");
        for w in 0..tuple_ports.words().max(self.tuple_ports.words()) {
            let word = |b: &SlotBits| if w < b.words() { b.word(w) } else { 0 };
            assert_eq!(
                word(&tuple_ports),
                word(&self.tuple_ports),
                "the tuple bits of ports {}..",
                w * 64
            );
        }
        assert_eq!(
            per_netns.len(),
            self.tw_per_netns.len(),
            "timewait namespaces"
        );
        let mut live: HashMap<u32, [u32; TcpState::COUNT]> = HashMap::new();
        for r in self.records().filter(|r| !r.has(flag::FINISHED)) {
            live.entry(r.netns).or_default()[r.state.index()] += 1;
        }
        assert_eq!(live.len(), self.live_per_netns.len(), "live namespaces");
        for (netns, c) in live {
            assert_eq!(Some(&c), self.live_per_netns.get(&netns), "live in {netns}");
        }
        for (netns, n) in per_netns {
            assert_eq!(self.time_wait_in(netns), n, "timewait records of {netns}");
        }
        for (h, c) in self.tw_index.iter() {
            let r = &self.slab[self.index.get(c).expect("indexed") as usize];
            assert!(r.has(flag::TW) && r.tuple_hash() == h);
        }
        // Every finished record has one entry, the one its `fin_seq`
        // names, carrying its cookie and finish time; every other entry is
        // blank.
        let mut queued = 0;
        for (at, f) in self.finished.iter().enumerate() {
            if f.slot == NIL {
                continue;
            }
            assert!(!self.slots.is_vacant(f.slot), "a queued slot is free");
            let r = &self.slab[f.slot as usize];
            assert!(r.has(flag::FINISHED), "a live record is queued");
            assert_eq!((r.cookie, r.since_ns), (f.cookie, f.since_ns));
            assert_eq!(
                r.fin_seq.wrapping_sub(self.finished_front) as usize,
                at,
                "the entry of {:#x} is not where its fin_seq says",
                r.cookie
            );
            queued += 1;
        }
        let want = self.records().filter(|r| r.has(flag::FINISHED)).count();
        assert_eq!(queued, want, "finished records queued");
    }
}
