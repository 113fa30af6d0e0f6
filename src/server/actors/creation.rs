//! How many new actors a client address may create: a token bucket per
//! address (`actors.new_per_second_per_address`, `new_burst_per_address`),
//! shared by every worker because an address's keys land on all of them.
//! Taken only when a connection names a key with no actor — never per
//! message. Time is a parameter.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Addresses remembered at most; past it, full buckets (addresses idle
/// long enough to have refilled) are forgotten first.
const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub(crate) struct CreationLimits {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl CreationLimits {
    pub fn new(per_second: usize, burst: usize) -> Self {
        CreationLimits {
            per_second: per_second as f64,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `addr` at `now`; false if it has none left.
    pub fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&addr) {
            buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
            if buckets.len() >= MAX_ADDRESSES {
                return false; // under a flood from that many addresses: refuse newcomers
            }
        }
        let bucket = buckets.entry(addr).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(*bucket, now);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_sustained_rate_per_address() {
        let limits = CreationLimits::new(2, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!((0..3).all(|_| limits.allow(a, t0)));
        assert!(!limits.allow(a, t0), "the burst is spent");
        assert!(limits.allow(b, t0), "another address has its own");
        assert!(
            limits.allow(a, t0 + Duration::from_millis(500)),
            "one refilled"
        );
        assert!(!limits.allow(a, t0 + Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..5).filter(|_| limits.allow(a, later)).count(),
            3,
            "never past the burst"
        );
    }
}
