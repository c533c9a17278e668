//! Wall-clock time beside the kernel's monotonic nanoseconds.
//!
//! Every timestamp the kernel programs record is CLOCK_MONOTONIC
//! (`bpf_ktime_get_ns`), which cannot be lined up with application logs.
//! [`WallClock`] holds the offset from CLOCK_MONOTONIC to CLOCK_REALTIME,
//! read as a tight pair; [`Wall`] is one instant, printed as RFC 3339 in
//! UTC with nanoseconds. Whoever converts takes a fresh [`WallClock`] per
//! batch (an event loop turn, an API request), so a step of the wall clock
//! (NTP, an operator) shows from the next batch on; instants are converted
//! with the offset in force when they are printed.
use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; both clocks exist
    // on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`, which
/// stamps every event.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

impl WallClock {
    /// The offset now: of three (monotonic, realtime, monotonic) readings,
    /// the one whose monotonic pair is closest, against its midpoint.
    pub fn now() -> WallClock {
        let mut best = (i128::MAX, 0);
        for _ in 0..3 {
            let before = clock_ns(libc::CLOCK_MONOTONIC);
            let real = clock_ns(libc::CLOCK_REALTIME);
            let after = clock_ns(libc::CLOCK_MONOTONIC);
            let spread = after - before;
            if spread < best.0 {
                best = (spread, real - (before + after) / 2);
            }
        }
        WallClock { offset_ns: best.1 }
    }

    /// A clock with a given offset (tests, replays).
    pub fn from_offset_ns(offset_ns: i128) -> WallClock {
        WallClock { offset_ns }
    }

    /// The wall-clock instant of monotonic time `mono_ns`.
    pub fn at(&self, mono_ns: u64) -> Wall {
        let ns = (i128::from(mono_ns) + self.offset_ns).max(0);
        let secs = (ns / 1_000_000_000) as u64;
        let nanos = (ns % 1_000_000_000) as u32;
        Wall(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    /// [`WallClock::at`], except 0 ("never", "unknown") stays `None`.
    pub fn at_known(&self, mono_ns: u64) -> Option<Wall> {
        (mono_ns != 0).then(|| self.at(mono_ns))
    }
}

/// One instant of wall-clock time, serialized as RFC 3339 in UTC with
/// nanoseconds (`2026-11-30T05:12:03.123456789Z`), without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wall(pub SystemTime);

impl fmt::Display for Wall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_nanos(self.0).fmt(f)
    }
}

impl Serialize for Wall {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Wall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Wall, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339(&s)
            .map(Wall)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_converts_to_the_system_clock() {
        let clock = WallClock::now();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let wall = clock.at(mono).0;
        let sys = SystemTime::now();
        let diff = sys.duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }

    #[test]
    fn rfc3339_in_utc_with_nanoseconds_and_back() {
        let clock = WallClock::from_offset_ns(1_764_479_523_000_000_000);
        let w = clock.at(123_456_789);
        assert_eq!(w.to_string(), "2025-11-30T05:12:03.123456789Z");
        let json = serde_json::to_string(&w).expect("json");
        assert_eq!(json, "\"2025-11-30T05:12:03.123456789Z\"");
        let back: Wall = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, w);
        assert!(serde_json::from_str::<Wall>("\"yesterday\"").is_err());
    }

    #[test]
    fn a_step_of_the_wall_clock_shows_in_the_next_clock() {
        let before = WallClock::from_offset_ns(1_000_000_000_000_000_000);
        let stepped = WallClock::from_offset_ns(1_000_000_000_000_000_000 - 3_600_000_000_000);
        let mono = 42_000_000_000;
        let d = before
            .at(mono)
            .0
            .duration_since(stepped.at(mono).0)
            .expect("earlier");
        assert_eq!(d, Duration::from_secs(3600));
        assert_eq!(before.at_known(0), None);
        assert_eq!(before.at_known(mono), Some(before.at(mono)));
    }
}
