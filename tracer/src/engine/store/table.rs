//! The store's two indexes, `cookie -> slot` and `TIME_WAIT tuple
//! fingerprint -> cookie`: open addressing with linear probing over one
//! array of `(key, value)` entries, keys `u64`.
//!
//! Why not `HashMap` (hashbrown): on a busy host most lookups are of cold
//! keys (a socket's first event, a TIME_WAIT record a minute old), and a
//! hashbrown lookup of a cold key misses the cache twice, once for its
//! control bytes and once for the bucket. Here the key's home entry is the
//! first and usually the only line read, and [`Table::prefetch`] asks for
//! that line ahead of time where the store knows which keys it will touch
//! next (the next TIME_WAIT timers, the next finished records to drop).
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

/// A `u64 -> V` table. See the module docs.
#[derive(Debug)]
pub(super) struct Table<V> {
    entries: Box<[Entry<V>]>,
    /// Keys held in `entries` (key 0 not included).
    len: usize,
    /// `64 - log2(entries.len())`: a key's home is its Fibonacci hash's top bits.
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
            entries: Box::new([]),
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
        self.entries.len() * size_of::<Entry<V>>()
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// The index `key`'s probe starts at; only for an allocated table.
    fn home(&self, key: u64) -> usize {
        // Cookies come from one kernel counter: multiplying spreads
        // neighbours far apart, and the top bits are the best mixed.
        (key.wrapping_mul(K) >> self.shift) as usize
    }

    /// The index of `key`'s entry, if present (`key != 0`).
    fn find(&self, key: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.entries[i].key {
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
        self.find(key).map(|i| self.entries[i].val)
    }

    /// Set `key` to `val`; returns the value it replaced.
    pub fn insert(&mut self, key: u64, val: V) -> Option<V> {
        if key == 0 {
            return self.zero.replace(val);
        }
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let e = &mut self.entries[i];
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
        let val = self.entries[hole].val;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let k = self.entries[j].key;
            if k == 0 {
                break;
            }
            // The entry at `j` may fill the hole when the hole lies
            // between its home and `j`: a lookup from its home still
            // passes no empty entry before reaching it.
            let home = self.home(k);
            if hole.wrapping_sub(home) & mask < j.wrapping_sub(home) & mask {
                self.entries[hole] = self.entries[j];
                hole = j;
            }
        }
        self.entries[hole] = Entry {
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
            self.entries
                .iter()
                .filter(|e| e.key != 0)
                .map(|e| (e.key, e.val)),
        )
    }

    /// Ask the CPU to bring `key`'s home entry into the cache: a lookup
    /// soon after finds it there. Changes nothing.
    pub fn prefetch(&self, key: u64) {
        if !self.entries.is_empty() {
            prefetch(&self.entries[self.home(key)]);
        }
    }

    fn grow(&mut self) {
        let n = (self.entries.len() * 2).max(MIN_ENTRIES);
        let empty = Entry {
            key: 0,
            val: V::default(),
        };
        let old = std::mem::replace(&mut self.entries, vec![empty; n].into_boxed_slice());
        self.shift = 64 - n.trailing_zeros();
        self.len = 0;
        for e in old.iter().filter(|e| e.key != 0) {
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
