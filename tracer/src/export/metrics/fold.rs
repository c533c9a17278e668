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
#[derive(Clone, Debug, Default)]
pub struct Tally {
    series: Counter,
    pending: u64,
}

impl Tally {
    /// Count into `series`.
    pub fn new(series: Counter) -> Tally {
        Tally { series, pending: 0 }
    }

    /// One more.
    pub fn inc(&mut self) {
        self.pending += 1;
    }

    /// Add what was counted since the last flush to the series.
    pub fn flush(&mut self) {
        if self.pending > 0 {
            self.series.inc_by(std::mem::take(&mut self.pending));
        }
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
/// their sum and count.
#[derive(Debug)]
struct Totals {
    buckets: Vec<u64>,
    sum: f64,
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
                sum: 0.0,
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
            (t.sum, t.count, buckets)
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Observations made locally: [`Spread::flush`] adds them to the series.
/// Clones share the series and copy the observations.
#[derive(Clone, Debug)]
pub struct Spread {
    series: Histogram,
    buckets: Box<[u64]>,
    sum: f64,
    count: u64,
}

impl Spread {
    /// Observe into `series`.
    pub fn new(series: Histogram) -> Spread {
        let buckets = vec![0; series.bounds.len() + 1].into_boxed_slice();
        Spread {
            series,
            buckets,
            sum: 0.0,
            count: 0,
        }
    }

    /// One observation: it goes in the first bucket whose bound is at
    /// least `v` (NaN in `+Inf`, as prometheus-client does).
    pub fn observe(&mut self, v: f64) {
        let i = self.series.bounds.partition_point(|&b| b < v);
        // A NaN compares false: partition_point gives 0; count it in +Inf.
        let i = if v.is_nan() {
            self.buckets.len() - 1
        } else {
            i
        };
        self.buckets[i] += 1;
        self.sum += v;
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
        t.sum += std::mem::take(&mut self.sum);
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
        for v in [0.05, 0.1, 0.5, 1.0, 7.0, 11.0, f64::NAN] {
            s.observe(v);
            theirs.observe(v);
        }
        assert!(text(&r).contains("ours_count 0"));
        s.flush();
        s.flush();
        let out = text(&r);
        let lines = |name: &str| -> Vec<String> {
            out.lines()
                .filter(|l| l.starts_with(name))
                .map(|l| l[name.len()..].to_string())
                .collect()
        };
        assert_eq!(lines("ours"), lines("theirs"), "{out}");
        assert!(out.contains("ours_bucket{le=\"1.0\"} 4"), "{out}");
        assert!(out.contains("ours_count 7"), "{out}");
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
        s.observe(2.0);
        s.flush();
        let out = text(&r);
        assert!(out.contains("f_bucket{le=\"10.0\",k=\"v\"} 1"), "{out}");
    }
}
