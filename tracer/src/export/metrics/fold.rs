//! Counts the engine's observers keep in plain memory and fold into the
//! exported series once per drain ([`crate::engine::Observer::flush`]).
//!
//! Every outcome of every event used to update a series directly: a
//! locked atomic add for a counter, and for a histogram prometheus-client's
//! mutex, its native-histogram checks and a linear search of the buckets.
//! At 100,000 events a second that was about 6% of the agent's CPU. Here
//! an outcome adds to a local count, and a flush adds the counts to the
//! series, one atomic or one lock per series that moved.
//!
//! prometheus-client's `Histogram` takes one observation at a time, so
//! the exported histogram is this module's [`Histogram`]: the same
//! exposition, filled in bulk.
use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric, counter::Counter},
};

/// A counter counted locally: [`Tally::flush`] adds the count to the
/// series. Clones share the series and copy the count.
#[derive(Clone, Debug)]
pub struct Tally {
    /// `None` until a [`Tally::deferred`] one first flushes a count.
    series: Option<Counter>,
    pending: u64,
}

impl Tally {
    /// Count into `series`.
    pub fn new(series: Counter) -> Tally {
        Tally {
            series: Some(series),
            pending: 0,
        }
    }

    /// Count into a series made by the first [`Tally::flush_making`] with
    /// something to add: for label values too rare to show at 0 from the
    /// start.
    pub fn deferred() -> Tally {
        Tally {
            series: None,
            pending: 0,
        }
    }

    /// One more.
    pub fn inc(&mut self) {
        self.pending += 1;
    }

    /// Add what was counted since the last flush to the series. A deferred
    /// tally without its series keeps its count for [`Tally::flush_making`].
    pub fn flush(&mut self) {
        if self.pending > 0
            && let Some(series) = &self.series
        {
            series.inc_by(std::mem::take(&mut self.pending));
        }
    }

    /// [`Tally::flush`], first making the series with `make` when this is
    /// a deferred tally's first count.
    pub fn flush_making(&mut self, make: impl FnOnce() -> Counter) {
        if self.pending > 0 && self.series.is_none() {
            self.series = Some(make());
        }
        self.flush();
    }
}

/// A histogram series filled in bulk, exposed as prometheus-client's own.
/// Clones share the series.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    inner: Arc<Mutex<Totals>>,
}

/// Observations so far: per bucket (not cumulative; the last is `+Inf`),
/// their sum (in nanoseconds: exact, and seconds only when shown) and count.
#[derive(Debug)]
struct Totals {
    buckets: Vec<u64>,
    sum_ns: u128,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (finite, increasing);
    /// `+Inf` is added.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            inner: Arc::new(Mutex::new(Totals {
                buckets: vec![0; bounds.len() + 1],
                sum_ns: 0,
                count: 0,
            })),
        }
    }

    fn totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Copied out, so a scrape holds the lock only that long.
        let (sum, count, buckets) = {
            let t = self.totals();
            let buckets: Vec<(f64, u64)> = self
                .bounds
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(t.buckets.iter().copied())
                .collect();
            (t.sum_ns as f64 / 1e9, t.count, buckets)
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Observations made locally: [`Spread::flush`] adds them to the series.
/// Clones share the series and copy the observations.
///
/// Observations are durations in nanoseconds, put in their bucket without
/// a float in sight: a binary search of the bounds in seconds was a chain
/// of five dependent compares for every stay of every socket, about 5% of
/// the agent's CPU at 10,000 connections a second. Here the count's bit
/// length picks the first bucket it can fall in, and a compare or two
/// finishes the job; the sum is kept in nanoseconds.
#[derive(Clone, Debug)]
pub struct Spread {
    series: Histogram,
    /// Per bound, the fewest nanoseconds above it: bucket `i` holds the
    /// counts from `above[i - 1]` to `above[i] - 1`.
    above: Box<[u64]>,
    /// Per bit length of a count (0 to 64), the first bucket a count of
    /// that length can fall in.
    first: [u16; 65],
    buckets: Box<[u64]>,
    sum_ns: u128,
    count: u64,
}

/// The fewest nanoseconds that are more than `bound` seconds, as the
/// series compares them (`ns as f64 / 1e9 > bound`).
fn ns_above(bound: f64) -> u64 {
    let over = |ns: u64| ns as f64 / 1e9 > bound;
    // Within a few of the product; step to the exact edge.
    let mut ns = (bound * 1e9).clamp(0.0, u64::MAX as f64) as u64;
    while ns > 0 && over(ns - 1) {
        ns -= 1;
    }
    while ns < u64::MAX && !over(ns) {
        ns += 1;
    }
    ns
}

impl Spread {
    /// Observe into `series`.
    pub fn new(series: Histogram) -> Spread {
        let above: Box<[u64]> = series.bounds.iter().map(|&b| ns_above(b)).collect();
        let mut first = [0u16; 65];
        for (len, f) in first.iter_mut().enumerate() {
            let least = if len == 0 { 0 } else { 1u64 << (len - 1) };
            *f = above.iter().take_while(|&&a| a <= least).count() as u16;
        }
        let buckets = vec![0; series.bounds.len() + 1].into_boxed_slice();
        Spread {
            series,
            above,
            first,
            buckets,
            sum_ns: 0,
            count: 0,
        }
    }

    /// One observation of `ns` nanoseconds: it goes in the first bucket
    /// whose bound is at least `ns / 1e9` seconds, as prometheus-client
    /// puts the same value in seconds.
    pub fn observe_ns(&mut self, ns: u64) {
        let mut i = self.first[(u64::BITS - ns.leading_zeros()) as usize] as usize;
        while self.above.get(i).is_some_and(|&a| a <= ns) {
            i += 1;
        }
        self.buckets[i] += 1;
        self.sum_ns += u128::from(ns);
        self.count += 1;
    }

    /// Add the observations since the last flush to the series.
    pub fn flush(&mut self) {
        if self.count == 0 {
            return;
        }
        let mut t = self.series.totals();
        for (total, n) in t.buckets.iter_mut().zip(self.buckets.iter_mut()) {
            *total += std::mem::take(n);
        }
        t.sum_ns += std::mem::take(&mut self.sum_ns);
        t.count += std::mem::take(&mut self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::{metrics::family::Family, registry::Registry};

    const BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];

    fn text(r: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, r).unwrap();
        out
    }

    #[test]
    fn a_spread_shows_only_once_flushed_and_matches_prometheus_clients_histogram() {
        let mut r = Registry::default();
        let ours = Histogram::new(&BOUNDS);
        r.register("ours", "", ours.clone());
        let theirs = prometheus_client::metrics::histogram::Histogram::new(BOUNDS);
        r.register("theirs", "", theirs.clone());
        let mut s = Spread::new(ours);
        for ns in [
            50_000_000,
            100_000_000,
            500_000_000,
            1_000_000_000,
            7 << 30,
            11 << 30,
        ] {
            s.observe_ns(ns);
            theirs.observe(ns as f64 / 1e9);
        }
        assert!(text(&r).contains("ours_count 0"));
        s.flush();
        s.flush();
        let out = text(&r);
        let lines = |name: &str| -> Vec<String> {
            out.lines()
                .filter(|l| l.starts_with(name) && !l.contains("_sum"))
                .map(|l| l[name.len()..].to_string())
                .collect()
        };
        assert_eq!(lines("ours"), lines("theirs"), "{out}");
        assert!(out.contains("ours_bucket{le=\"1.0\"} 4"), "{out}");
        assert!(out.contains("ours_count 6"), "{out}");
        let sum = |name: &str| -> f64 {
            let l = out.lines().find(|l| l.starts_with(name)).unwrap();
            l.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!((sum("ours_sum") - sum("theirs_sum")).abs() < 1e-9, "{out}");
    }

    /// The bucket prometheus-client gives `ns` in seconds.
    fn their_bucket(bounds: &[f64], ns: u64) -> usize {
        let v = ns as f64 / 1e9;
        bounds.partition_point(|&b| b < v)
    }

    #[test]
    fn every_count_of_nanoseconds_lands_where_its_seconds_would() {
        use crate::export::metrics::DURATION_BUCKETS;
        let mut s = Spread::new(Histogram::new(&DURATION_BUCKETS));
        // Both sides of every edge, every power of two, and the extremes.
        let mut counts = vec![0, 1, 2, u64::MAX - 1, u64::MAX];
        for &b in &DURATION_BUCKETS {
            let at = (b * 1e9) as u64;
            counts.extend((at.saturating_sub(3)..at.saturating_add(4)).collect::<Vec<_>>());
        }
        for len in 0..64 {
            let p = 1u64 << len;
            counts.extend([p - 1, p, p + 1]);
        }
        // And a spread in between (a fixed sequence, so a failure repeats).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            counts.push(x >> (x % 64));
        }
        for ns in counts {
            s.observe_ns(ns);
            let ours = s.buckets.iter().position(|&n| n == 1).unwrap();
            assert_eq!(ours, their_bucket(&DURATION_BUCKETS, ns), "{ns} ns");
            s.buckets[ours] = 0;
        }
    }

    #[test]
    fn a_tally_adds_what_it_counted_once() {
        let c = Counter::default();
        let mut t = Tally::new(c.clone());
        t.inc();
        t.inc();
        assert_eq!(c.get(), 0);
        t.flush();
        t.flush();
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn a_histogram_works_in_a_family() {
        let mut r = Registry::default();
        let f = Family::<Vec<(String, String)>, Histogram>::new_with_constructor(
            (|| Histogram::new(&BOUNDS)) as fn() -> Histogram,
        );
        r.register("f", "", f.clone());
        let mut s = Spread::new(f.get_or_create_owned(&vec![("k".into(), "v".into())]));
        s.observe_ns(2_000_000_000);
        s.flush();
        let out = text(&r);
        assert!(out.contains("f_bucket{le=\"10.0\",k=\"v\"} 1"), "{out}");
    }
}
