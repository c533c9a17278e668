//! Which slots of the store's slab are free, and which one a new record
//! takes: one near the slots taken just before it.
//!
//! Slots are grouped in chunks of 64, one word of the `vacant` bitset
//! (7 KiB of records, two pages). A new record takes a free slot of the
//! chunk the last one came from while it has any; then of the oldest chunk
//! that had [`ROOMY`] free slots or more; then of any chunk, found by a
//! scan that goes on where the last one stopped. So records made together
//! share pages. The scan looks at a second bitset first, one bit per chunk
//! with a free slot, so it skips 64 full chunks a word: where frees come
//! one by one and each is taken at once, no chunk ever grows roomy, every
//! few new records start a scan, and a scan of the slot bits alone walked
//! a slab of hundreds of thousands of records in thousands of words (57%
//! of the engine's time in `cargo bench`'s `engine/pipeline_host`).
//! A socket's events come within milliseconds of its birth,
//! and the sockets born together end together a minute later (TIME_WAIT
//! timers); on a busy host each of those touches of a record found at
//! random in a slab of a hundred megabytes waited for the CPU to translate
//! its address, and the slot freed last, reused first, was at random too.
use std::collections::VecDeque;

/// One bit per slot of the slab, in words of 64: bit `b` of word `w` is
/// slot `64 * w + b`. Grows when a bit past its end is set.
#[derive(Debug, Default)]
pub(super) struct SlotBits(Vec<u64>);

impl SlotBits {
    /// Whether the bit of `slot` is set.
    pub fn get(&self, slot: u32) -> bool {
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        self.0.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Set (`on`) or clear the bit of `slot`.
    pub fn set(&mut self, slot: u32, on: bool) {
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        if word >= self.0.len() {
            if !on {
                return;
            }
            self.0.resize(word + 1, 0);
        }
        if on {
            self.0[word] |= bit;
        } else {
            self.0[word] &= !bit;
        }
    }

    /// Words held.
    pub fn words(&self) -> usize {
        self.0.len()
    }

    /// Word `w`.
    pub fn word(&self, w: usize) -> u64 {
        self.0[w]
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity() * size_of::<u64>()
    }
}

/// A chunk with this many free slots is queued for reuse.
pub(super) const ROOMY: u32 = 32;

/// Free slots of the slab.
#[derive(Debug, Default)]
pub(super) struct Slots {
    /// Set while the slot is free.
    vacant: SlotBits,
    /// Bit `w` set while word `w` of `vacant` is not zero: the chunks
    /// with a free slot, which a scan looks for.
    roomful: SlotBits,
    /// Bits set in `vacant`.
    free: usize,
    /// The chunk new records take slots from; `None` before the first.
    cursor: Option<usize>,
    /// Chunks that reached [`ROOMY`] free slots, oldest first (a chunk may
    /// be here twice, or have been used up since).
    roomy: VecDeque<u32>,
    /// Where the next scan for any free slot starts.
    scan: usize,
}

impl Slots {
    /// Free slots.
    pub fn free(&self) -> usize {
        self.free
    }

    /// Whether `slot` is free.
    pub fn is_vacant(&self, slot: u32) -> bool {
        self.vacant.get(slot)
    }

    /// Free `slot` (taken until now).
    pub fn release(&mut self, slot: u32) {
        debug_assert!(!self.vacant.get(slot), "slot {slot} freed twice");
        self.vacant.set(slot, true);
        self.free += 1;
        let word = slot as usize / 64;
        self.roomful.set(word as u32, true);
        if self.vacant.word(word).count_ones() == ROOMY && self.cursor != Some(word) {
            self.roomy.push_back(word as u32);
        }
    }

    /// Take a free slot, near the last one taken; `None` when none is free.
    pub fn take(&mut self) -> Option<u32> {
        if self.free == 0 {
            return None;
        }
        let word = match self.cursor.filter(|&w| self.vacant.word(w) != 0) {
            Some(w) => w,
            None => self.next_chunk(),
        };
        self.cursor = Some(word);
        let slot = (word * 64) as u32 + self.vacant.word(word).trailing_zeros();
        self.vacant.set(slot, false);
        if self.vacant.word(word) == 0 {
            self.roomful.set(word as u32, false);
        }
        self.free -= 1;
        Some(slot)
    }

    /// The slot [`Slots::take`] gives next, if it stays in the same chunk.
    pub fn peek(&self) -> Option<u32> {
        let word = self.cursor?;
        let w = self.vacant.word(word);
        (w != 0).then(|| (word * 64) as u32 + w.trailing_zeros())
    }

    /// A chunk with a free slot, when one exists (`free > 0`): the oldest
    /// roomy one, else the next one a scan finds.
    fn next_chunk(&mut self) -> usize {
        while let Some(w) = self.roomy.pop_front() {
            // Used up since it was queued, or queued twice: half roomy is
            // still worth moving to.
            if self.vacant.word(w as usize).count_ones() >= ROOMY / 2 {
                return w as usize;
            }
        }
        let w = self.first_with_room(self.scan);
        self.scan = (w + 1) % self.vacant.words();
        w
    }

    /// The first chunk with a free slot at or after chunk `from`, going
    /// round to the start past the end (one exists: `free > 0`).
    fn first_with_room(&self, from: usize) -> usize {
        let n = self.roomful.words();
        let (start, bit) = (from / 64, from % 64);
        let at = |i: usize, mask: u64| {
            let word = self.roomful.word(i) & mask;
            (word != 0).then(|| i * 64 + word.trailing_zeros() as usize)
        };
        // Word `start` twice: its chunks from `from` on first, the ones
        // before `from` last, after going round.
        let here = (start < n).then(|| at(start, u64::MAX << bit)).flatten();
        here.or_else(|| (start + 1..n).find_map(|i| at(i, u64::MAX)))
            .or_else(|| (0..=start.min(n - 1)).find_map(|i| at(i, u64::MAX)))
            .unwrap_or_else(|| unreachable!("{} free slots counted and none found", self.free))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.vacant.heap_bytes()
            + self.roomful.heap_bytes()
            + self.roomy.capacity() * size_of::<u32>()
    }

    /// Panic unless the count matches the bits and no bit lies at or past
    /// `slots` (tests only).
    #[cfg(test)]
    pub fn check(&self, slots: usize) {
        let words = (0..self.vacant.words()).map(|w| self.vacant.word(w));
        let bits: usize = words.clone().map(|w| w.count_ones() as usize).sum();
        assert_eq!(bits, self.free, "free slots miscounted");
        for (w, word) in words.enumerate() {
            assert_eq!(
                self.roomful.get(w as u32),
                word != 0,
                "chunk {w}'s room misread"
            );
            for b in 0..64 {
                if word & (1 << b) != 0 {
                    assert!(w * 64 + b < slots, "slot {} past the slab", w * 64 + b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ROOMY, Slots};

    #[test]
    fn a_new_slot_comes_from_the_chunk_of_the_last_then_from_the_oldest_roomy_chunk() {
        let mut s = Slots::default();
        assert_eq!(s.take(), None);
        // Chunks 0, 1 and 2 of a full slab of 192 slots: free a few of
        // chunk 2, then ROOMY of chunk 1, then ROOMY of chunk 0.
        for slot in [130, 131] {
            s.release(slot);
        }
        for slot in 64..64 + ROOMY {
            s.release(slot);
        }
        for slot in 0..ROOMY {
            s.release(slot);
        }
        s.check(192);
        // No cursor yet: the oldest roomy chunk, 1, in order, to the end.
        let first: Vec<u32> = (0..ROOMY).map(|_| s.take().unwrap()).collect();
        assert_eq!(first, (64..64 + ROOMY).collect::<Vec<_>>());
        // A slot freed in chunk 1 meanwhile is taken before moving on.
        s.release(70);
        assert_eq!(s.peek(), Some(70));
        assert_eq!(s.take(), Some(70));
        // Then chunk 0, the next roomy one, not chunk 2's two.
        assert_eq!(s.take(), Some(0));
        for _ in 1..ROOMY {
            s.take().unwrap();
        }
        // Only chunk 2's remain: a scan finds them.
        assert_eq!((s.take(), s.take(), s.take()), (Some(130), Some(131), None));
        assert_eq!(s.free(), 0);
        s.check(192);
    }

    #[test]
    fn a_scan_goes_on_where_the_last_stopped_and_round_past_the_end() {
        let mut s = Slots::default();
        // A full slab of 300 chunks (5 words of chunk bits) but for one
        // free slot in each of chunks 250, 10, 140 and 299: none is roomy.
        for slot in [250 * 64 + 3, 10 * 64 + 63, 140 * 64, 299 * 64 + 63] {
            s.release(slot);
        }
        s.take();
        s.check(300 * 64);
        // The first took chunk 10's, the lowest; the scans go on past it.
        let next: Vec<u32> = std::iter::from_fn(|| s.take()).collect();
        assert_eq!(next, [140 * 64, 250 * 64 + 3, 299 * 64 + 63]);
        // Round past the end: freed behind the scan, found from the start.
        s.release(5 * 64 + 1);
        s.release(298 * 64);
        assert_eq!((s.take(), s.take()), (Some(5 * 64 + 1), Some(298 * 64)));
        s.check(300 * 64);
    }

    #[test]
    fn every_free_slot_is_found_once_in_any_order_of_release() {
        let mut s = Slots::default();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut freed = Vec::new();
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = (x % 10_000) as u32;
            if !s.is_vacant(slot) {
                s.release(slot);
                freed.push(slot);
            }
        }
        s.check(10_000);
        let mut taken: Vec<u32> = std::iter::from_fn(|| s.take()).collect();
        assert_eq!(taken.len(), freed.len());
        taken.sort_unstable();
        freed.sort_unstable();
        assert_eq!(taken, freed);
        assert!(!(0..10_000).any(|slot| s.is_vacant(slot)));
    }
}
