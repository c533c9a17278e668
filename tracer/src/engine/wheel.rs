//! When the kernel removes a timewait socket.
//!
//! `tcp_time_wait()` arms the socket's timer at `jiffies + 60 * HZ`, and the
//! timer wheel (`kernel/time/timer.c`) files a timer that far out in a level
//! whose buckets are `8^level` jiffies wide, rounding its expiry *up* to the
//! next bucket boundary so that it never fires early. At `HZ=250` a 60 s
//! timer lands in level 3: buckets of 512 jiffies (2.048 s), so a socket
//! lives between 60 and 62.048 s, and every socket closed within one
//! bucket's span vanishes at the same tick. `ss` shows exactly that, and a
//! gauge that ends each stay at `since + 60 s` is ahead of it by up to two
//! seconds of closes.
//!
//! [`TimeWaitClock`] is that arithmetic. Jiffies advance on the tick grid
//! of the monotonic clock (`jiffies(t) = (t - phase) / tick + offset`), so
//! with `HZ`, the grid's phase and the offset read once at start (see
//! `pipeline::clock`), the engine computes each socket's end from the
//! monotonic time of its close, to within the softirq's latency.
use super::{NS_PER_SEC, TCP_TIMEWAIT_LEN_NS};

/// The timer wheel's levels: each is `2^LVL_CLK_SHIFT` times coarser.
const LVL_CLK_SHIFT: u32 = 3;
/// Buckets per level (`LVL_SIZE`).
const LVL_SIZE: u64 = 64;

/// The kernel's clock as the timer wheel sees it. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWaitClock {
    /// Nanoseconds per jiffy (`TICK_NSEC`).
    tick_ns: u64,
    /// Where the tick grid lies: tick boundaries are at `phase + k * tick`.
    phase_ns: u64,
    /// `jiffies` at the boundary `phase` (may be taken as wrapping).
    offset: u64,
    /// `TCP_TIMEWAIT_LEN` in jiffies.
    len: u64,
    /// log2 of the bucket width of the level a 60 s timer lands in.
    shift: u32,
}

impl TimeWaitClock {
    /// The clock of a kernel with `hz` ticks per second whose tick grid
    /// has `phase_ns` (mod the tick) and where `jiffies` read `jiffies` at
    /// monotonic `at_ns`. `None` for an `hz` the kernel cannot have.
    pub fn new(hz: u64, phase_ns: u64, at_ns: u64, jiffies: u64) -> Option<TimeWaitClock> {
        if !(24..=10_000).contains(&hz) || !NS_PER_SEC.is_multiple_of(hz) {
            return None;
        }
        let tick_ns = NS_PER_SEC / hz;
        let phase_ns = phase_ns % tick_ns;
        let len = TCP_TIMEWAIT_LEN_NS / tick_ns;
        // calc_wheel_index(): the first level whose range holds the delta.
        let mut level = 0;
        while level < 8 && len >= (LVL_SIZE - 1) << (level * LVL_CLK_SHIFT) {
            level += 1;
        }
        let ticks = at_ns.checked_sub(phase_ns)? / tick_ns;
        Some(TimeWaitClock {
            tick_ns,
            phase_ns,
            offset: jiffies.wrapping_sub(ticks),
            len,
            shift: level * LVL_CLK_SHIFT,
        })
    }

    /// `HZ`.
    pub fn hz(&self) -> u64 {
        NS_PER_SEC / self.tick_ns
    }

    /// When the timer of a timewait socket made at `since_ns` fires: the
    /// start of the tick whose jiffies reach its rounded-up bucket.
    pub fn end_ns(&self, since_ns: u64) -> u64 {
        let ticks = since_ns.saturating_sub(self.phase_ns) / self.tick_ns;
        let expires = ticks.wrapping_add(self.offset).wrapping_add(self.len);
        // calc_index(): round up to the next bucket boundary.
        let fire = ((expires >> self.shift) + 1) << self.shift;
        let fire_ticks = fire.wrapping_sub(self.offset);
        self.phase_ns
            .saturating_add(fire_ticks.saturating_mul(self.tick_ns))
            .max(since_ns.saturating_add(TCP_TIMEWAIT_LEN_NS))
    }
}

/// When a timewait socket made at `since_ns` ends: by `clock`, or after
/// exactly `TCP_TIMEWAIT_LEN` when the kernel's clock is unknown.
pub fn time_wait_end(clock: Option<&TimeWaitClock>, since_ns: u64) -> u64 {
    match clock {
        Some(c) => c.end_ns(since_ns),
        None => since_ns.saturating_add(TCP_TIMEWAIT_LEN_NS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// This machine's reading: HZ=250, grid at multiples of 4 ms, and
    /// `jiffies - t / 4 ms` = 4294892217.
    fn hz250() -> TimeWaitClock {
        TimeWaitClock::new(250, 0, 11_320_180_779_352, 4_297_722_261).unwrap()
    }

    #[test]
    fn a_60_s_timer_at_250_hz_lands_in_buckets_of_512_jiffies() {
        let c = hz250();
        assert_eq!(c.shift, 9);
        assert_eq!(c.offset, 4_297_722_261 - 11_320_180_779_352 / (4 * MS));
        // Measured against `ss`: a socket closed at this monotonic time
        // vanished 60.857 s later, the prediction was 60.846 s (the 11 ms
        // are the poll interval). Every close within one bucket ends on
        // the same tick.
        let since = 20_000_000_000_000;
        let end = c.end_ns(since);
        assert!(end >= since + TCP_TIMEWAIT_LEN_NS);
        assert!(end <= since + TCP_TIMEWAIT_LEN_NS + 512 * 4 * MS);
        assert_eq!(end % (4 * MS), 0, "ends on a tick");
        let j_end = end / (4 * MS) + c.offset;
        assert_eq!(j_end % 512, 0, "at a bucket boundary");
        // One tick later closes the same bucket, unless it crossed one.
        let next = c.end_ns(since + 4 * MS);
        assert!(next == end || next == end + 512 * 4 * MS);
    }

    #[test]
    fn ends_are_monotonic_and_bounded() {
        let c = hz250();
        let mut last = 0;
        for i in 0..5_000u64 {
            let since = 30_000_000_000_000 + i * 997_000;
            let end = c.end_ns(since);
            assert!(end >= last, "never earlier for a later close");
            assert!(end - since >= TCP_TIMEWAIT_LEN_NS);
            assert!(end - since <= TCP_TIMEWAIT_LEN_NS + 2_048 * MS);
            last = end;
        }
    }

    #[test]
    fn other_hz_values_pick_their_level() {
        // 1000 Hz: 60,000 jiffies is past level 3's range: 4,096-jiffy buckets.
        let c = TimeWaitClock::new(1000, 0, 5 * NS_PER_SEC, 4_294_967_296).unwrap();
        assert_eq!((c.shift, c.hz()), (12, 1000));
        // 100 Hz: 6,000 jiffies, level 3 (512 jiffies, 5.12 s).
        let c = TimeWaitClock::new(100, 0, 5 * NS_PER_SEC, 4_294_967_296).unwrap();
        assert_eq!(c.shift, 9);
        let end = c.end_ns(7 * NS_PER_SEC);
        assert!(end - 7 * NS_PER_SEC <= TCP_TIMEWAIT_LEN_NS + 5_120 * MS);
        assert!(TimeWaitClock::new(0, 0, 0, 0).is_none());
        assert!(TimeWaitClock::new(251, 0, 0, 0).is_none());
    }

    #[test]
    fn a_phase_shifts_the_grid() {
        let c = TimeWaitClock::new(250, 1_500_000, 10 * NS_PER_SEC, 4_294_900_000).unwrap();
        let end = c.end_ns(40 * NS_PER_SEC);
        assert_eq!((end - 1_500_000) % (4 * MS), 0);
    }

    #[test]
    fn without_a_clock_a_stay_is_exactly_60_s() {
        assert_eq!(time_wait_end(None, 5), 5 + TCP_TIMEWAIT_LEN_NS);
        let c = hz250();
        assert_eq!(
            time_wait_end(Some(&c), 9 * NS_PER_SEC),
            c.end_ns(9 * NS_PER_SEC)
        );
    }
}
