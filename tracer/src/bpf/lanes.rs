//! The event lanes of `EVENTS`, two per CPU, read through a shared mapping.
//!
//! The kernel side of the protocol is in `tracer_common::Slot` and
//! `tracer_common::LaneLayout`: each CPU writes its own lanes, and commits
//! each slot by storing its index plus one into the slot's `seq`. This side
//! reads every lane's committed slots, merges the lanes by the events'
//! timestamps, and hands slots back by advancing the lane's `consumed`.
//!
//! aya reads BPF ring buffers but not mmapable arrays, so the mapping and
//! the reading are here; they are a few loads and stores on shared memory.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use tracer_common::{Event, LaneHead, LaneLayout, Slot};

/// Bytes of one slot, and of a lane's head.
pub const SLOT_BYTES: usize = size_of::<Slot>();

/// The fewest slots a lane gets, however small `--ring-bytes` is.
pub const MIN_LANE_SLOTS: u32 = 16;

/// The other hooks' lane is this fraction of the state lane: retransmits
/// and resets are rarer than state changes on every workload measured, and
/// 8,192 slots per CPU (the default) still hold 160,000 of them a second
/// between drains.
const OTHER_SHARE: u32 = 4;

/// How `ring_bytes` is shared out between `cpus` CPUs' two lanes each: the
/// largest power of two of state slots whose lane and the other lane (a
/// quarter as many) fit in one CPU's share, each at least
/// [`MIN_LANE_SLOTS`]. `state_alone` as `LaneLayout` says.
pub fn layout(ring_bytes: u32, cpus: u32, state_alone: bool) -> LaneLayout {
    let cpus = cpus.max(1);
    // One element of each lane is its head.
    let share = u64::from(ring_bytes) / SLOT_BYTES as u64 / u64::from(cpus);
    let fit = (share.saturating_sub(2) * u64::from(OTHER_SHARE) / u64::from(OTHER_SHARE + 1))
        .max(u64::from(MIN_LANE_SLOTS));
    let state = u32::try_from(1u64 << (63 - fit.leading_zeros())).unwrap_or(1 << 31);
    let other = (state / OTHER_SHARE).max(MIN_LANE_SLOTS);
    LaneLayout {
        state_slots: state,
        other_slots: other,
        other_base: cpus * (state + 1),
        state_alone: u32::from(state_alone),
    }
}

/// One lane's place in the mapping.
#[derive(Clone, Copy)]
struct Lane {
    /// Its head's element.
    head: usize,
    /// Its slots, a power of two.
    slots: u64,
}

/// What the lanes' memory belongs to.
enum Memory {
    /// A shared mapping of the map, which stays open as long as it is read.
    Mapped(#[allow(dead_code)] MapData),
    /// Memory of our own, for tests.
    #[cfg(test)]
    Owned(#[allow(dead_code)] Vec<u64>),
}

/// The events map, mapped into this process.
pub struct Lanes {
    memory: Memory,
    base: NonNull<u8>,
    len: usize,
    lanes: Vec<Lane>,
    /// Per lane: the next index to read. Mirrors the lane's `consumed`.
    next: Vec<u64>,
    /// Per lane: the timestamp of the next slot to hand out, or `u64::MAX`
    /// when it is not committed yet or is newer than the drain's horizon.
    ready: Vec<u64>,
}

// SAFETY: the mapping is owned by this value alone and only read or written
// through `&mut self`; the kernel side synchronises through atomics.
unsafe impl Send for Lanes {}

impl Lanes {
    /// Map `map`, an `EVENTS` array laid out for `cpus` CPUs as `layout`
    /// says.
    pub fn open(map: MapData, cpus: u32, layout: LaneLayout) -> io::Result<Lanes> {
        if !layout.state_slots.is_power_of_two() || !layout.other_slots.is_power_of_two() {
            return Err(io::Error::other("lane size is not a power of two"));
        }
        let elements = layout.elements(cpus) as usize;
        let page = page_size();
        let len = (elements * SLOT_BYTES).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // that `len` lies within the map.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap"))?;
        Ok(Lanes::at(
            Memory::Mapped(map),
            base,
            len,
            &lane_sizes(cpus, layout),
        ))
    }

    /// Lanes of `sizes[k]` slots each, one after another from `base`.
    fn at(memory: Memory, base: NonNull<u8>, len: usize, sizes: &[u32]) -> Lanes {
        let mut head = 0;
        let lanes: Vec<Lane> = sizes
            .iter()
            .map(|&slots| {
                let lane = Lane {
                    head,
                    slots: u64::from(slots),
                };
                head += slots as usize + 1;
                lane
            })
            .collect();
        Lanes {
            memory,
            base,
            len,
            next: vec![0; lanes.len()],
            ready: vec![u64::MAX; lanes.len()],
            lanes,
        }
    }

    /// As a CPU's program does: take `lane`'s next index, write `event`
    /// there and, when `commit`, store the index plus one into `seq`. False
    /// when the lane is full.
    #[cfg(test)]
    pub(crate) fn write(&mut self, lane: usize, event: Event, commit: bool) -> bool {
        let head = self.head(lane);
        // SAFETY: test memory laid out as the kernel's.
        unsafe {
            let i = (*head).reserved;
            if i - (*head).consumed >= self.lanes[lane].slots {
                return false;
            }
            (*head).reserved = i + 1;
            let slot = self.slot(lane, i);
            (*slot).event = event;
            if commit {
                (*slot).seq = i + 1;
            }
        }
        true
    }

    /// Lanes of `sizes[k]` slots each in memory of their own, zeroed as
    /// the kernel creates them.
    #[cfg(test)]
    pub(crate) fn owned(sizes: &[u32]) -> Lanes {
        let elements: usize = sizes.iter().map(|&s| s as usize + 1).sum();
        let words = elements * SLOT_BYTES / 8;
        let mut buf = vec![0u64; words];
        let base = NonNull::new(buf.as_mut_ptr().cast::<u8>()).expect("a Vec's pointer");
        Lanes::at(Memory::Owned(buf), base, words * 8, sizes)
    }

    fn element(&self, lane: usize, k: u64) -> *mut u8 {
        let at = (self.lanes[lane].head + k as usize) * SLOT_BYTES;
        // SAFETY: lane < lanes and k <= its slots, so `at` is inside the
        // mapping.
        unsafe { self.base.as_ptr().add(at) }
    }

    fn head(&self, lane: usize) -> *mut LaneHead {
        self.element(lane, 0).cast()
    }

    fn slot(&self, lane: usize, i: u64) -> *mut Slot {
        self.element(lane, 1 + (i & (self.lanes[lane].slots - 1)))
            .cast()
    }

    /// The timestamp of slot `i` of `lane` if it is committed and older than
    /// `before_ns`; `u64::MAX` otherwise.
    fn ready_ts(&self, lane: usize, i: u64, before_ns: u64) -> u64 {
        let slot = self.slot(lane, i);
        // SAFETY: `seq` is 8-aligned in the mapping; the kernel writes it
        // after the event (see `tracer_common::Slot`).
        let seq = unsafe { AtomicU64::from_ptr(&raw mut (*slot).seq) }.load(Ordering::Acquire);
        if seq != i + 1 {
            return u64::MAX;
        }
        // SAFETY: committed, and not reused before we advance `consumed`.
        let ts = unsafe { std::ptr::read_volatile(&raw const (*slot).event.ts_ns) };
        if ts < before_ns { ts } else { u64::MAX }
    }

    /// Events all the lanes hold when full.
    pub fn capacity(&self) -> usize {
        self.lanes.iter().map(|l| l.slots as usize).sum()
    }

    /// The largest share of a lane that waits to be read, from 0 to 1.
    pub fn fill(&self) -> f64 {
        (0..self.lanes.len())
            .map(|lane| {
                let head = self.head(lane);
                // SAFETY: the head's `reserved` is written by the kernel
                // through atomics.
                let reserved = unsafe { AtomicU64::from_ptr(&raw mut (*head).reserved) }
                    .load(Ordering::Relaxed);
                reserved.wrapping_sub(self.next[lane]) as f64 / self.lanes[lane].slots as f64
            })
            .fold(0.0, f64::max)
    }

    /// Hand every committed event stamped before `before_ns` to `f`, as its
    /// bytes, oldest first across lanes, at most `limit` of them; then give
    /// the slots back. Returns how many were handed out.
    pub fn drain(&mut self, before_ns: u64, limit: usize, mut f: impl FnMut(&[u8])) -> usize {
        for lane in 0..self.lanes.len() {
            self.ready[lane] = self.ready_ts(lane, self.next[lane], before_ns);
        }
        let mut n = 0;
        while n < limit {
            // The lane whose next event is oldest; lanes are few (two per
            // CPU), so a scan beats a heap.
            let mut lane = usize::MAX;
            let mut oldest = u64::MAX;
            for (l, &ts) in self.ready.iter().enumerate() {
                if ts < oldest {
                    oldest = ts;
                    lane = l;
                }
            }
            if lane == usize::MAX {
                break;
            }
            let i = self.next[lane];
            let slot = self.slot(lane, i);
            // The kernel wrote the lane on its CPU since the last drain:
            // ask for the slots a few ahead, as a drain reads several lanes
            // in turn and the CPU's own prefetcher follows few streams.
            crate::memory::prefetch_all(self.slot(lane, i + LOOKAHEAD));
            // SAFETY: committed (its `seq` was read with acquire) and ours
            // until `consumed` passes it.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&raw const (*slot).event).cast::<u8>(),
                    size_of::<Event>(),
                )
            };
            f(bytes);
            n += 1;
            self.next[lane] = i + 1;
            self.ready[lane] = self.ready_ts(lane, i + 1, before_ns);
        }
        for lane in 0..self.lanes.len() {
            // SAFETY: only user space writes `consumed`; the kernel reads it
            // before reusing a slot, so the store releases the slots read.
            let consumed = unsafe { AtomicU64::from_ptr(&raw mut (*self.head(lane)).consumed) };
            // A lane nothing was read from keeps its head's line unwritten:
            // its CPU's program writes `reserved` beside it.
            if consumed.load(Ordering::Relaxed) != self.next[lane] {
                consumed.store(self.next[lane], Ordering::Release);
            }
        }
        n
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        if matches!(self.memory, Memory::Mapped(_)) {
            // SAFETY: the mapping made in `open`, unmapped once.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        }
    }
}

/// How many slots ahead of the one it reads a drain asks for.
const LOOKAHEAD: u64 = 4;

/// Slots of each lane of `EVENTS` in memory order: every CPU's state lane,
/// then every CPU's lane of the other hooks.
fn lane_sizes(cpus: u32, layout: LaneLayout) -> Vec<u32> {
    let state = std::iter::repeat_n(layout.state_slots, cpus as usize);
    let other = std::iter::repeat_n(layout.other_slots, cpus as usize);
    state.chain(other).collect()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(4096)
}

#[cfg(test)]
mod tests {
    use tracer_common::{Event, Slot};

    use super::{Lanes, MIN_LANE_SLOTS, layout};

    /// An event stamped `ts_ns` about `cookie`, written into `lane`.
    fn write(lanes: &mut Lanes, lane: usize, ts_ns: u64, cookie: u64, commit: bool) -> bool {
        let event = Event {
            ts_ns,
            cookie,
            ..Event::ZERO
        };
        lanes.write(lane, event, commit)
    }

    fn commit(lanes: &mut Lanes, lane: usize, i: u64) {
        let slot: *mut Slot = lanes.slot(lane, i);
        // SAFETY: test memory laid out as the kernel's.
        unsafe { (*slot).seq = i + 1 };
    }

    /// Drain before `horizon`, as (ts, cookie) pairs.
    fn drain(lanes: &mut Lanes, horizon: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        lanes.drain(horizon, usize::MAX, |b| {
            let ts = u64::from_le_bytes(b[8..16].try_into().unwrap());
            let cookie = u64::from_le_bytes(b[16..24].try_into().unwrap());
            out.push((ts, cookie));
        });
        out
    }

    #[test]
    fn lanes_share_the_ring_bytes_in_powers_of_two() {
        // 8 MiB over 2 CPUs: 43,690 elements each, of which a state lane of
        // 32,768 slots and a lane of 8,192 for the other hooks.
        let l = layout(8 << 20, 2, true);
        assert_eq!((l.state_slots, l.other_slots), (32_768, 8_192));
        assert_eq!(l.other_base, 2 * 32_769);
        assert_eq!(l.state_alone, 1);
        assert!(u64::from(l.elements(2)) * 96 <= 8 << 20);
        let l = layout(8 << 20, 64, false);
        assert_eq!(
            (l.state_slots, l.other_slots, l.state_alone),
            (1_024, 256, 0)
        );
        assert!(u64::from(l.elements(64)) * 96 <= 8 << 20);
        // Too small a share still gets the minimum, in both lanes.
        for cpus in [2, 512] {
            let l = layout(4096, cpus, true);
            assert_eq!(
                (l.state_slots, l.other_slots),
                (MIN_LANE_SLOTS, MIN_LANE_SLOTS)
            );
        }
        let l = layout(256 << 20, 1, true);
        assert_eq!((l.state_slots, l.other_slots), (1 << 21, 1 << 19));
    }

    #[test]
    fn lanes_of_two_sizes_merge_and_wrap_each_at_its_own_size() {
        // A CPU's state lane of 32 slots and its other lane of 16, as
        // `layout` lays them out.
        let mut l = Lanes::owned(&[32, 16]);
        assert_eq!(l.capacity(), 48);
        for lap in 0..3u64 {
            for k in 0..16 {
                let ts = lap * 1_000 + k * 2;
                assert!(write(&mut l, 0, ts, ts, true));
                assert!(write(&mut l, 1, ts + 1, ts + 1, true));
            }
            // The small lane is full; the big one still has room.
            assert!(!write(&mut l, 1, lap * 1_000 + 99, 0, true));
            let got = drain(&mut l, u64::MAX);
            let want: Vec<(u64, u64)> = (0..32)
                .map(|k| (lap * 1_000 + k, lap * 1_000 + k))
                .collect();
            assert_eq!(got, want, "lap {lap}");
        }
    }

    #[test]
    fn events_of_all_lanes_come_out_oldest_first() {
        let mut l = Lanes::owned(&[16; 3]);
        for (lane, ts) in [(0, 10), (1, 5), (2, 7), (0, 11), (1, 12), (2, 8)] {
            assert!(write(&mut l, lane, ts, ts * 100, true));
        }
        let got = drain(&mut l, u64::MAX);
        let ts: Vec<u64> = got.iter().map(|&(t, _)| t).collect();
        assert_eq!(ts, [5, 7, 8, 10, 11, 12]);
        assert!(got.iter().all(|&(t, c)| c == t * 100), "{got:?}");
        assert!(drain(&mut l, u64::MAX).is_empty(), "each event once");
    }

    #[test]
    fn a_limited_drain_takes_the_oldest_and_leaves_the_rest() {
        let mut l = Lanes::owned(&[16; 2]);
        for (lane, ts) in [(0, 3), (1, 1), (0, 4), (1, 2)] {
            assert!(write(&mut l, lane, ts, ts, true));
        }
        let mut first = Vec::new();
        let n = l.drain(u64::MAX, 3, |b| first.push(b[8]));
        assert_eq!((n, first), (3, vec![1, 2, 3]));
        assert_eq!(drain(&mut l, u64::MAX), [(4, 4)], "the rest, once");
    }

    #[test]
    fn a_slot_not_committed_yet_holds_back_its_lane_only() {
        let mut l = Lanes::owned(&[16; 2]);
        write(&mut l, 0, 1, 1, true);
        write(&mut l, 0, 2, 2, false);
        write(&mut l, 0, 3, 3, true);
        write(&mut l, 1, 4, 4, true);
        // Lane 0 stops at its uncommitted index 1; lane 1 goes on.
        assert_eq!(drain(&mut l, u64::MAX), [(1, 1), (4, 4)]);
        commit(&mut l, 0, 1);
        assert_eq!(drain(&mut l, u64::MAX), [(2, 2), (3, 3)]);
    }

    #[test]
    fn events_at_or_past_the_horizon_wait_for_the_next_drain() {
        let mut l = Lanes::owned(&[16; 2]);
        write(&mut l, 0, 100, 1, true);
        write(&mut l, 1, 200, 2, true);
        write(&mut l, 0, 300, 3, true);
        assert_eq!(drain(&mut l, 200), [(100, 1)]);
        assert_eq!(drain(&mut l, 1_000), [(200, 2), (300, 3)]);
    }

    #[test]
    fn a_full_lane_refuses_until_the_reader_hands_slots_back_then_wraps() {
        let mut l = Lanes::owned(&[16; 1]);
        for ts in 0..16 {
            assert!(write(&mut l, 0, ts, ts, true));
        }
        assert!(!write(&mut l, 0, 99, 99, true), "full");
        assert_eq!(drain(&mut l, u64::MAX).len(), 16);
        // Around the lane twice more: each slot's `seq` tells this lap's
        // event from the last one's.
        for lap in 1..3u64 {
            for k in 0..16 {
                assert!(write(&mut l, 0, lap * 100 + k, k, true));
            }
            let got = drain(&mut l, u64::MAX);
            assert_eq!(got.len(), 16);
            assert_eq!(got[0], (lap * 100, 0));
            assert_eq!(got[15], (lap * 100 + 15, 15));
        }
        assert!(l.fill() < f64::EPSILON);
    }
}
