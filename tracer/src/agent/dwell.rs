//! Dwell-time percentiles for `/api/v1/summary`: the most recent completed
//! stays per state, in fixed rings, so recording a stay never allocates.
use crate::tcp::TcpState;

/// Stays kept per state.
pub const WINDOW: usize = 4096;

/// Recent stays per state, in seconds.
pub struct Dwell {
    rings: Vec<Box<[f64; WINDOW]>>,
    next: [usize; TcpState::COUNT],
    len: [usize; TcpState::COUNT],
    total: [u64; TcpState::COUNT],
}

/// Percentiles of one state's recent stays.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Stays completed since the agent started.
    pub count: u64,
    /// Stays the percentiles are computed over (the most recent ones).
    pub window: usize,
    /// Median, seconds.
    pub p50: f64,
    /// 90th percentile, seconds.
    pub p90: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// Longest, seconds.
    pub max: f64,
}

impl Default for Dwell {
    fn default() -> Self {
        Dwell::new()
    }
}

impl Dwell {
    /// Empty rings.
    pub fn new() -> Dwell {
        Dwell {
            rings: (0..TcpState::COUNT)
                .map(|_| Box::new([0.0; WINDOW]))
                .collect(),
            next: [0; TcpState::COUNT],
            len: [0; TcpState::COUNT],
            total: [0; TcpState::COUNT],
        }
    }

    /// Record a completed stay.
    pub fn record(&mut self, state: TcpState, secs: f64) {
        let i = state.index();
        self.rings[i][self.next[i]] = secs;
        self.next[i] = (self.next[i] + 1) % WINDOW;
        self.len[i] = (self.len[i] + 1).min(WINDOW);
        self.total[i] += 1;
    }

    /// Percentiles for `state` (nearest rank), or `None` before any stay.
    pub fn percentiles(&self, state: TcpState) -> Option<Percentiles> {
        let i = state.index();
        Percentiles::of(&self.rings[i][..self.len[i]], self.total[i])
    }
}

impl Percentiles {
    /// Nearest-rank percentiles of `recent`, the latest of `count`
    /// samples; `None` when it is empty.
    pub fn of(recent: &[f64], count: u64) -> Option<Percentiles> {
        let n = recent.len();
        if n == 0 {
            return None;
        }
        let mut v: Vec<f64> = recent.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Percentiles {
            count,
            window: n,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: v[n - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut d = Dwell::new();
        assert!(d.percentiles(TcpState::TimeWait).is_none());
        for i in 1..=100 {
            d.record(TcpState::TimeWait, i as f64);
        }
        let p = d.percentiles(TcpState::TimeWait).unwrap();
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.count),
            (50.0, 90.0, 99.0, 100.0, 100)
        );
        assert!(d.percentiles(TcpState::CloseWait).is_none());
    }

    #[test]
    fn window_keeps_the_most_recent() {
        let mut d = Dwell::new();
        for _ in 0..WINDOW {
            d.record(TcpState::CloseWait, 1000.0);
        }
        for _ in 0..WINDOW {
            d.record(TcpState::CloseWait, 1.0);
        }
        let p = d.percentiles(TcpState::CloseWait).unwrap();
        assert_eq!((p.max, p.window, p.count), (1.0, WINDOW, 2 * WINDOW as u64));
    }
}
