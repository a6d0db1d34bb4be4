//! How long events wait before a projection has applied them: from the
//! event's `recorded_at` to the commit of the page that applied it, counted
//! per projection in fixed buckets. The API exports it as a histogram and
//! `ledgerdesk project` prints its percentiles when it stops, so the lag
//! under load is measured where the work is done, whichever process does it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the buckets, in milliseconds; one more bucket holds the
/// rest.
pub const LAG_BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 60_000,
];

/// Counts of events by lag for one projection.
#[derive(Debug, Default)]
pub(super) struct LagCounts {
    buckets: [AtomicU64; LAG_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
}

impl LagCounts {
    /// Count the events of a page recorded at `recorded_at_us`, applied at
    /// `now_us`. A clock step back counts as no lag.
    pub(super) fn record(&self, now_us: i64, recorded_at_us: impl Iterator<Item = i64>) {
        for at in recorded_at_us {
            let lag_us = now_us.saturating_sub(at).max(0) as u64;
            // The first bucket whose bound is not below the lag; past the
            // last bound, the overflow bucket.
            let i = LAG_BUCKETS_MS.partition_point(|&bound_ms| bound_ms * 1_000 < lag_us);
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
            self.sum_us.fetch_add(lag_us, Ordering::Relaxed);
        }
    }

    pub(super) fn snapshot(&self, name: &'static str) -> LagHistogram {
        LagHistogram {
            projection: name,
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: Duration::from_micros(self.sum_us.load(Ordering::Relaxed)),
        }
    }
}

/// One projection's lag counts: `counts[i]` events waited at most
/// `LAG_BUCKETS_MS[i]` (and more than the bucket before); the last count
/// is everything longer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LagHistogram {
    /// The projection.
    pub projection: &'static str,
    /// Events per bucket.
    pub counts: Vec<u64>,
    /// All their lags added up.
    pub sum: Duration,
}

impl LagHistogram {
    /// Events counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): "at
    /// least `q` of the events waited at most this long". `None` when
    /// nothing was counted or the quantile lies beyond the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LAG_BUCKETS_MS.get(i).map(|ms| Duration::from_millis(*ms));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_fall_in_their_buckets_and_quantiles_read_them_back() {
        let counts = LagCounts::default();
        let now = 10_000_000;
        // 98 events 3 ms late, one 150 ms, one 3 s.
        counts.record(now, std::iter::repeat_n(now - 3_000, 98));
        counts.record(now, [now - 150_000, now - 3_000_000].into_iter());
        // A clock that stepped back is no lag.
        counts.record(now, std::iter::once(now + 5_000));
        let h = counts.snapshot("audit");
        assert_eq!(h.total(), 101);
        assert_eq!(h.counts[0], 1, "the future event");
        assert_eq!(h.counts[2], 98, "3 ms is in the 5 ms bucket");
        assert_eq!(h.quantile_bound(0.5), Some(Duration::from_millis(5)));
        assert_eq!(h.quantile_bound(0.99), Some(Duration::from_millis(200)));
        assert_eq!(h.quantile_bound(1.0), Some(Duration::from_millis(5_000)));
        assert_eq!(LagCounts::default().snapshot("x").quantile_bound(0.5), None);
    }
}
