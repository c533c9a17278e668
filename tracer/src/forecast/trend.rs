//! How fast each endpoint's ports fill: the ports in use at each reconcile,
//! kept over a sliding window, give the net growth (connects minus ports
//! released, TIME_WAIT ends included) in ports per second. A client that
//! connects steadily while its old TIME_WAIT sockets expire as fast does
//! not grow, and is given no exhaustion time: only one that outruns them.
//! Derived from successive dumps' counts, so nothing is done per event.
use std::collections::{HashMap, VecDeque};

use super::ports::Endpoint;

/// Growth is measured over this window.
pub const WINDOW_NS: u64 = 60 * 1_000_000_000;
/// No growth figure until the history spans this long.
pub const MIN_SPAN_NS: u64 = 10 * 1_000_000_000;
/// Samples kept per endpoint, at most (one per reconcile).
const MAX_SAMPLES: usize = 128;

/// Per-endpoint (ns, ports in use) samples over the last [`WINDOW_NS`],
/// for at most `cap` endpoints.
#[derive(Debug)]
pub struct Trend {
    cap: usize,
    history: HashMap<Endpoint, VecDeque<(u64, u32)>>,
}

impl Trend {
    /// A trend following at most `cap` endpoints.
    pub fn new(cap: usize) -> Trend {
        Trend {
            cap,
            history: HashMap::new(),
        }
    }

    /// Endpoints followed.
    pub fn len(&self) -> usize {
        self.history.len()
    }

    /// True when none is followed.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// Record `now`'s counts of the endpoints given (the busiest, at most
    /// the cap); forget the others.
    pub fn sample(&mut self, now_ns: u64, counts: &[(Endpoint, u32)]) {
        self.history
            .retain(|k, _| counts.iter().any(|(e, _)| e == k));
        for &(e, in_use) in counts {
            let len = self.history.len();
            let hist = match self.history.entry(e) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(_) if len >= self.cap => continue,
                std::collections::hash_map::Entry::Vacant(v) => v.insert(VecDeque::new()),
            };
            if hist.back().is_some_and(|&(t, _)| t >= now_ns) {
                continue;
            }
            hist.push_back((now_ns, in_use));
            // Keep one sample at or before the window start as the baseline.
            while hist.len() >= 2 && hist[1].0 <= now_ns.saturating_sub(WINDOW_NS) {
                hist.pop_front();
            }
            while hist.len() > MAX_SAMPLES {
                hist.pop_front();
            }
        }
    }

    /// Ports per second over the window and over the last
    /// [`MIN_SPAN_NS`], whichever is faster ([`faster_growth`]); `None`
    /// until the history spans [`MIN_SPAN_NS`].
    pub fn growth_per_second(&self, e: &Endpoint) -> Option<f64> {
        let hist = self.history.get(e)?;
        faster_growth(hist, *hist.back()?, MIN_SPAN_NS, MIN_SPAN_NS, 0)
    }
}

/// Growth per second of a count sampled as `samples` (ns, count), oldest
/// first, to `now` (ns, count): the faster of the growth since the oldest
/// sample and since the newest at least `recent_ns` before `now`, so that
/// a burst after a quiet spell is not averaged down with the quiet (a
/// forecast of an outage errs early, not late). With `min_rise`, the recent
/// growth counts only once it is that many: counts move in whole units,
/// and a slow rise's single step is no speed-up. `None` until `samples`
/// span `min_span_ns` to `now`.
pub fn faster_growth(
    samples: &VecDeque<(u64, u32)>,
    (t1, n1): (u64, u32),
    min_span_ns: u64,
    recent_ns: u64,
    min_rise: u32,
) -> Option<f64> {
    let &oldest = samples.front()?;
    let slope =
        |(t, n): (u64, u32)| (f64::from(n1) - f64::from(n)) / (t1.saturating_sub(t) as f64 / 1e9);
    if t1.saturating_sub(oldest.0) < min_span_ns {
        return None;
    }
    let recent = samples
        .iter()
        .rev()
        .find(|&&(t, _)| t1.saturating_sub(t) >= recent_ns)
        .copied()
        .unwrap_or(oldest);
    if min_rise > 0 && n1 < recent.1.saturating_add(min_rise) {
        return Some(slope(oldest));
    }
    Some(slope(oldest).max(slope(recent)))
}

/// Seconds until no port is free, at `growth` ports per second: 0 when
/// none is free now, `None` when not growing.
pub fn seconds_left(free: u32, growth_per_second: Option<f64>) -> Option<f64> {
    if free == 0 {
        return Some(0.0);
    }
    let g = growth_per_second.filter(|g| g.is_finite() && *g > 0.0)?;
    Some(f64::from(free) / g)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn e(port: u16) -> Endpoint {
        Endpoint {
            netns: 1,
            remote: format!("10.0.0.1:{port}").parse().expect("remote"),
            local: "10.0.0.9".parse().expect("local"),
        }
    }

    #[test]
    fn steady_growth_gives_its_rate_after_the_minimum_span() {
        let mut t = Trend::new(4);
        for s in 0..=9 {
            t.sample(s * S, &[(e(443), (2 * s) as u32)]);
        }
        assert_eq!(t.growth_per_second(&e(443)), None, "9 s is too short");
        t.sample(10 * S, &[(e(443), 20)]);
        assert_eq!(t.growth_per_second(&e(443)), Some(2.0));
        assert_eq!(seconds_left(44, Some(2.0)), Some(22.0));
    }

    /// A client quiet for most of the minute, then connecting at 4 ports
    /// a second: the minute's average (1/s) would say it runs out four
    /// times later than it does.
    #[test]
    fn a_burst_after_a_quiet_spell_is_not_averaged_down() {
        let mut t = Trend::new(4);
        for s in 0..=60 {
            let n = if s < 45 { 0 } else { 4 * (s - 45) as u32 };
            t.sample(s * S, &[(e(443), n)]);
        }
        assert_eq!(t.growth_per_second(&e(443)), Some(4.0));
        assert_eq!(seconds_left(40, Some(4.0)), Some(10.0));
    }

    #[test]
    fn a_steady_state_does_not_grow_and_is_given_no_time() {
        let mut t = Trend::new(4);
        for s in 0..=20 {
            t.sample(s * S, &[(e(443), 120)]);
        }
        assert_eq!(t.growth_per_second(&e(443)), Some(0.0));
        assert_eq!(seconds_left(100, Some(0.0)), None);
        assert_eq!(seconds_left(0, None), Some(0.0));
    }

    #[test]
    fn the_window_slides_and_endpoints_are_capped_and_forgotten() {
        let mut t = Trend::new(2);
        for s in 0..=120 {
            // Fast for the first minute, flat for the second.
            let n = if s < 60 { s as u32 } else { 60 };
            t.sample(s * S, &[(e(1), n), (e(2), 0), (e(3), 0)]);
        }
        assert_eq!(t.len(), 2, "capped");
        assert_eq!(
            t.growth_per_second(&e(1)),
            Some(0.0),
            "only the last minute counts"
        );
        t.sample(121 * S, &[(e(2), 1)]);
        assert_eq!(t.len(), 1, "endpoints no longer given are forgotten");
    }
}
