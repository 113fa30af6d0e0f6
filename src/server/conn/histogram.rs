//! A latency histogram one worker records into and any thread reads:
//! fixed buckets of relaxed atomics, so an observation is a bucket search
//! over a dozen integers and two atomic adds — no lock, no allocation.
//! `/metrics` sums every worker's [`Snapshot`] into one.
//!
//! The count is not kept apart: it is the sum of the buckets, so a scrape
//! racing an observation never shows a count below its buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (1 ms … 30 s: a wake or a
/// move takes a runner round trip at least, a start at most
/// `actors.start_timeout`). Anything longer lands in the last (+Inf) bucket.
pub(crate) const BOUNDS_MICROS: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// One bucket per bound, and one past the last.
const BUCKETS: usize = BOUNDS_MICROS.len() + 1;

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// What a histogram held when read (or several, summed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Observations per bucket (not cumulative); the last is past every bound.
    pub buckets: [u64; BUCKETS],
    pub sum_micros: u64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }

    /// Adds another worker's observations.
    pub fn add(&mut self, other: &Snapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_micros += other.sum_micros;
    }

    /// `(upper bound in seconds, observations)` per bucket, the last
    /// bound infinite: what a Prometheus encoder takes.
    pub fn buckets_in_seconds(&self) -> [(f64, u64); BUCKETS] {
        std::array::from_fn(|i| {
            let bound = BOUNDS_MICROS
                .get(i)
                .map_or(f64::INFINITY, |&b| b as f64 / 1e6);
            (bound, self.buckets[i])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let h = Histogram::default();
        h.observe(Duration::ZERO);
        h.observe(MS); // on the bound: that bucket ("le" is inclusive)
        h.observe(MS + Duration::from_micros(1));
        h.observe(Duration::from_secs(3600));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[BUCKETS - 1], 1, "past every bound");
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_micros, 3_600_000_000 + 2_001);
    }

    #[test]
    fn workers_histograms_sum_bucket_by_bucket() {
        let (w0, w1) = (Histogram::default(), Histogram::default());
        w0.observe(3 * MS);
        w0.observe(40 * MS);
        w1.observe(3 * MS);
        w1.observe(Duration::from_secs(2));
        let mut total = Snapshot::default();
        for w in [&w0, &w1] {
            total.add(&w.snapshot());
        }
        assert_eq!(total.count(), 4);
        assert_eq!(total.sum_micros, 2_046_000);
        assert!((total.sum_seconds() - 2.046).abs() < 1e-9);
        let buckets = total.buckets_in_seconds();
        let at = |bound: f64| buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.005), 2, "3 ms from both workers");
        assert_eq!(at(0.05), 1);
        assert_eq!(at(2.5), 1);
        assert_eq!(buckets[BUCKETS - 1], (f64::INFINITY, 0));
        assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), 4);
    }
}
