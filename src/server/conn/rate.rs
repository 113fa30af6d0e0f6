//! How often a client address may do something costly: a token bucket per
//! address, shared by every worker because an address's connections land
//! on all of them. Used for new connections (`client.new_per_second_per_address`)
//! and new actors (`actors.new_per_second_per_address`): once per
//! connection at most, never per message. Time is a parameter. IPv6
//! clients count by /64 (one host usually has a whole /64 to pick
//! addresses from); IPv4-mapped addresses count as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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

pub(crate) struct AddressRate {
    table: Mutex<Table>,
}

/// The rate and burst live under the table's lock (taken anyway), so that
/// a reload can change them without another shared word.
struct Table {
    per_second: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
    /// When full buckets were last forgotten (at most once a second).
    swept: Option<Instant>,
}

/// The address a client is counted under.
pub(crate) fn counted_as(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

impl AddressRate {
    pub fn new(per_second: usize, burst: usize) -> Self {
        AddressRate {
            table: Mutex::new(Table {
                per_second: per_second as f64,
                burst: burst as f64,
                buckets: HashMap::new(),
                swept: None,
            }),
        }
    }

    /// New limits (a reload). Buckets keep their tokens, never more than
    /// the new burst once they refill.
    pub fn set(&self, per_second: usize, burst: usize) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.per_second = per_second as f64;
        table.burst = burst as f64;
    }

    /// Takes a token for `addr` at `now`; false if it has none left.
    pub fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let addr = counted_as(addr);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.buckets.len() >= MAX_ADDRESSES && !table.buckets.contains_key(&addr) {
            table.forget_idle(now);
            if table.buckets.len() >= MAX_ADDRESSES {
                return false; // under a flood from that many addresses: refuse newcomers
            }
        }
        let (per_second, burst) = (table.per_second, table.burst);
        let bucket = table.buckets.entry(addr).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = refilled(*bucket, now, per_second, burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }
}

impl Table {
    /// Forgets addresses whose bucket has refilled (at most once a second:
    /// the scan is over every address remembered).
    fn forget_idle(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|t| now.saturating_duration_since(t).as_secs() < 1)
        {
            return;
        }
        self.swept = Some(now);
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets
            .retain(|_, b| refilled(*b, now, per_second, burst) < burst);
    }
}

fn refilled(b: Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * per_second).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_sustained_rate_per_address() {
        let limits = AddressRate::new(2, 3);
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

    #[test]
    fn new_limits_apply_to_the_next_request() {
        let limits = AddressRate::new(1, 5);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(limits.allow(a, t0));
        limits.set(1, 2);
        assert!(
            limits.allow(a, t0),
            "4 tokens left, more than the new burst"
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..5).filter(|_| limits.allow(a, later)).count(), 2);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_mapped_ipv4_as_ipv4() {
        let limits = AddressRate::new(1, 1);
        let t0 = Instant::now();
        assert!(limits.allow("2001:db8::1".parse().unwrap(), t0));
        assert!(
            !limits.allow("2001:db8::ffff:2".parse().unwrap(), t0),
            "same /64"
        );
        assert!(
            limits.allow("2001:db8:0:1::1".parse().unwrap(), t0),
            "another /64"
        );
        assert!(limits.allow("10.0.0.9".parse().unwrap(), t0));
        assert!(
            !limits.allow("::ffff:10.0.0.9".parse().unwrap(), t0),
            "mapped: the same host"
        );
    }
}
