//! The timer queue's invariants, checked by the store's and the queue's
//! tests.
use super::super::super::record::NIL;
use super::{Timer, TimerQueue, live, serial};
use std::cmp::Ordering;

impl TimerQueue {
    /// Panic unless the queues are in order and every live entry matches
    /// its record; returns the `(slot, tick)` of every live entry (tests
    /// only).
    pub fn check<K>(&self, key: &K) -> Vec<(u32, u32)>
    where
        K: Fn(u32) -> Option<Timer>,
    {
        let mut all = Vec::new();
        for (name, q) in [("queue", &self.queue), ("grace", &self.grace)] {
            let (mut prev_tick, mut prev) = (None, None);
            for (i, &e) in q.iter().enumerate() {
                if let Some(p) = prev_tick {
                    assert_ne!(
                        serial(p, e.tick),
                        Ordering::Greater,
                        "{name}: tick order at {i}"
                    );
                }
                prev_tick = Some(e.tick);
                if e.slot == NIL {
                    continue;
                }
                let t = live(e, key).unwrap_or_else(|| panic!("{name}: entry {i} is stale"));
                assert!(prev < Some(t.order()), "{name}: order at {i}");
                assert!(name == "queue" || t.grace, "grace: entry {i} is confirmed");
                let next = if name == "queue" {
                    t.end_ns
                } else {
                    t.deadline_ns()
                };
                assert!(
                    next >= self.idle_until,
                    "{name}: entry {i} before idle_until"
                );
                prev = Some(t.order());
                all.push((e.slot, e.tick));
            }
        }
        for &e in &self.late {
            let t = live(e, key).expect("late: stale entry");
            assert!(t.end_ns >= self.idle_until, "late: entry before idle_until");
            all.push((e.slot, e.tick));
        }
        all
    }
}
