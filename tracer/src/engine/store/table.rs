//! The store's hashed tables: the TIME_WAIT tuple index (`fingerprint ->
//! cookie`), and in the cookie index (`cookies.rs`) the span directory and
//! the cookies of sparse spans. Open addressing with linear probing over
//! one array of `(key, value)` entries, keys `u64`.
//!
//! Why not `HashMap` (hashbrown): on a busy host most lookups are of cold
//! keys (a socket's first event, a TIME_WAIT record a minute old), and a
//! hashbrown lookup of a cold key misses the cache twice, once for its
//! control bytes and once for the bucket. Here the key's home entry is the
//! first and usually the only line read, and [`Table::prefetch`] asks for
//! that line ahead of time where the store knows which keys it will touch
//! next (the next TIME_WAIT timers, the next finished records to drop).
//!
//! Neighbouring keys share a cache line. The kernel hands out socket
//! cookies from one counter (per CPU, in batches), in the order sockets are
//! first seen, so sockets born together, whose events come together, have
//! neighbouring cookies. A key's home keeps its lowest bits and hashes the
//! rest: the [`GROUP`] keys that differ only in those bits fill one
//! 64-byte line, found already cached by all but the first, while groups
//! are spread over the table as by any hash. (Fingerprints are hashes
//! already, so it changes nothing for them.)
//!
//! Key 0 marks an empty entry; its value, if any, is kept aside. Removal
//! shifts the entries after the hole back (no tombstones), so a lookup
//! stops at the first empty entry. The table doubles at 3/4 full.
use super::super::hash::K;
use crate::memory::prefetch;

/// One entry; `key == 0` is empty.
#[derive(Clone, Copy, Debug)]
struct Entry<V> {
    key: u64,
    val: V,
}

/// Keys that differ only in their lowest bits below this share a home
/// line: as many entries as fill one.
const GROUP: usize = 4;

/// [`GROUP`] entries on one cache line of their own.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line<V>([Entry<V>; GROUP]);

const _: () = assert!(size_of::<Line<u32>>() == 64 && size_of::<Line<u64>>() == 64);

/// A `u64 -> V` table. See the module docs.
#[derive(Debug)]
pub(super) struct Table<V> {
    lines: Box<[Line<V>]>,
    /// Keys held in `lines` (key 0 not included).
    len: usize,
    /// `64 - log2(entries)`: a key's group is its Fibonacci hash's top bits.
    shift: u32,
    /// The value of key 0.
    zero: Option<V>,
}

/// Fewest entries an allocated table has.
const MIN_ENTRIES: usize = 16;

impl<V: Copy + Default> Table<V> {
    /// An empty table; allocates nothing until the first insert.
    pub fn new() -> Table<V> {
        Table {
            lines: Box::new([]),
            len: 0,
            shift: 64,
            zero: None,
        }
    }

    /// Keys held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.lines.len() * size_of::<Line<V>>()
    }

    /// Entries held, taken and empty.
    fn capacity(&self) -> usize {
        self.lines.len() * GROUP
    }

    fn mask(&self) -> usize {
        self.capacity().wrapping_sub(1)
    }

    fn at(&self, i: usize) -> &Entry<V> {
        &self.lines[i / GROUP].0[i % GROUP]
    }

    fn at_mut(&mut self, i: usize) -> &mut Entry<V> {
        &mut self.lines[i / GROUP].0[i % GROUP]
    }

    /// The index `key`'s probe starts at; only for an allocated table.
    fn home(&self, key: u64) -> usize {
        let low = (key % GROUP as u64) as usize;
        // The group's Fibonacci hash: its top bits are the best mixed.
        let group = (key / GROUP as u64).wrapping_mul(K) >> (self.shift + GROUP.ilog2());
        group as usize * GROUP + low
    }

    /// The index of `key`'s entry, if present (`key != 0`).
    fn find(&self, key: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.at(i).key {
                k if k == key => return Some(i),
                0 => return None,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<V> {
        if key == 0 {
            return self.zero;
        }
        self.find(key).map(|i| self.at(i).val)
    }

    /// Set `key` to `val`; returns the value it replaced.
    pub fn insert(&mut self, key: u64, val: V) -> Option<V> {
        if key == 0 {
            return self.zero.replace(val);
        }
        if (self.len + 1) * 4 > self.capacity() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let e = self.at_mut(i);
            if e.key == key {
                return Some(std::mem::replace(&mut e.val, val));
            }
            if e.key == 0 {
                *e = Entry { key, val };
                self.len += 1;
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Remove `key`; returns its value.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        if key == 0 {
            return self.zero.take();
        }
        let mut hole = self.find(key)?;
        let val = self.at(hole).val;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let k = self.at(j).key;
            if k == 0 {
                break;
            }
            // The entry at `j` may fill the hole when the hole lies
            // between its home and `j`: a lookup from its home still
            // passes no empty entry before reaching it.
            let home = self.home(k);
            if hole.wrapping_sub(home) & mask < j.wrapping_sub(home) & mask {
                *self.at_mut(hole) = *self.at(j);
                hole = j;
            }
        }
        *self.at_mut(hole) = Entry {
            key: 0,
            val: V::default(),
        };
        self.len -= 1;
        Some(val)
    }

    /// Every `(key, value)`, in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.zero.map(|v| (0, v)).into_iter().chain(
            self.lines
                .iter()
                .flat_map(|l| l.0.iter())
                .filter(|e| e.key != 0)
                .map(|e| (e.key, e.val)),
        )
    }

    /// Ask the CPU to bring `key`'s home entry into the cache: a lookup
    /// soon after finds it there. Changes nothing.
    pub fn prefetch(&self, key: u64) {
        if !self.lines.is_empty() {
            prefetch(self.at(self.home(key)));
        }
    }

    fn grow(&mut self) {
        let n = (self.capacity() * 2).max(MIN_ENTRIES);
        let empty = Line(
            [Entry {
                key: 0,
                val: V::default(),
            }; GROUP],
        );
        let old = std::mem::replace(&mut self.lines, vec![empty; n / GROUP].into_boxed_slice());
        self.shift = 64 - n.trailing_zeros();
        self.len = 0;
        for e in old.iter().flat_map(|l| l.0.iter()).filter(|e| e.key != 0) {
            self.insert(e.key, e.val);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn holds_what_a_hash_map_holds_through_inserts_and_removals() {
        let mut t = Table::<u32>::new();
        let mut m = HashMap::new();
        // Sequential cookies (one kernel counter), key 0, and keys that
        // share a home: every case of the backward shift.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = match x % 4 {
                0 => u64::from(round % 512),
                1 => x % 64,
                _ => 1_000_000 + (x % 4096),
            };
            if x.is_multiple_of(3) {
                assert_eq!(t.remove(key), m.remove(&key), "remove {key}");
            } else {
                assert_eq!(t.insert(key, round), m.insert(key, round), "insert {key}");
            }
            assert_eq!(t.len(), m.len());
        }
        for (k, v) in &m {
            assert_eq!(t.get(*k), Some(*v));
        }
        let mut listed: Vec<_> = t.iter().collect();
        listed.sort_unstable();
        let mut want: Vec<_> = m.into_iter().collect();
        want.sort_unstable();
        assert_eq!(listed, want);
    }

    #[test]
    fn holds_what_a_hash_map_holds_under_cookie_churn() {
        // Cookies in two interleaved runs (task and softirq counters), most
        // dropped soon, some kept for long; the table grows and wraps.
        let mut t = Table::<u64>::new();
        let mut m = HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut live: std::collections::VecDeque<u64> = Default::default();
        let (mut a, mut b) = (1u64 << 20, 1u64 << 40);
        for round in 0..400_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = if x.is_multiple_of(3) {
                b += 1;
                b
            } else {
                a += 1 + x % 2;
                a
            };
            assert_eq!(t.insert(key, round), m.insert(key, round));
            live.push_back(key);
            while live.len() > 50_000 || (live.len() > 1000 && x.is_multiple_of(7)) {
                let old = live.pop_front().expect("live");
                if !x.is_multiple_of(5) {
                    assert_eq!(t.remove(old), m.remove(&old), "remove {old}");
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            if round % 50_000 == 0 {
                for (k, v) in &m {
                    assert_eq!(t.get(*k), Some(*v), "get {k}");
                }
            }
        }
        assert_eq!(t.len(), m.len());
        for (k, v) in &m {
            assert_eq!(t.get(*k), Some(*v));
        }
    }

    /// How far past its home each key's entry is.
    fn displacements(t: &Table<u64>) -> Vec<usize> {
        t.iter()
            .filter(|&(k, _)| k != 0)
            .map(|(k, _)| t.find(k).expect("held").wrapping_sub(t.home(k)) & t.mask())
            .collect()
    }

    #[test]
    fn neighbouring_keys_share_a_line() {
        let mut t = Table::<u64>::new();
        for k in 1..=100_000u64 {
            t.insert(k, k);
        }
        for k in [4u64, 40_000, 99_996] {
            let homes: Vec<usize> = (k..k + GROUP as u64).map(|k| t.home(k)).collect();
            assert!(
                homes.iter().all(|h| h / GROUP == homes[0] / GROUP),
                "{homes:?}"
            );
            assert_eq!(homes[0] % GROUP, 0);
        }
        // Groups are spread: the next group's line is elsewhere.
        assert_ne!(t.home(4) / GROUP + 1, t.home(8) / GROUP);
    }

    #[test]
    fn runs_of_neighbouring_keys_keep_probes_short() {
        // A pool of long-lived connections born together, then churn that
        // keeps a window of recent cookies live, on around the table many
        // times: the runs that keep their lowest bits must not pile up.
        let mut t = Table::<u64>::new();
        let pool = 20_000u64;
        for k in 1..=pool {
            t.insert(k, k);
        }
        let window = 20_000u64;
        for k in pool + 1..pool + 1 + 300_000 {
            t.insert(k, k);
            if k > pool + window {
                assert_eq!(t.remove(k - window), Some(k - window));
            }
        }
        assert_eq!(t.len(), (pool + window) as usize);
        let d = displacements(&t);
        let mean = d.iter().sum::<usize>() as f64 / d.len() as f64;
        let max = d.iter().copied().max().unwrap_or(0);
        assert!(mean < 3.0 && max < 64, "mean {mean:.2}, max {max}");
    }

    #[test]
    fn stays_under_three_quarters_full_and_starts_empty() {
        let mut t = Table::<u64>::new();
        assert_eq!(t.heap_bytes(), 0);
        assert_eq!(t.get(7), None);
        assert_eq!(t.remove(7), None);
        t.prefetch(7);
        for k in 1..=1000u64 {
            t.insert(k, k * 2);
        }
        assert_eq!(t.heap_bytes(), 2048 * 16, "1000 keys in 2048 entries");
        for k in (1..=1000u64).step_by(2) {
            assert_eq!(t.remove(k), Some(k * 2));
        }
        for k in 1..=1000u64 {
            assert_eq!(t.get(k), (k % 2 == 0).then_some(k * 2));
        }
    }
}
