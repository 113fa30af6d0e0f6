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
    per_second: f64,
    burst: f64,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
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
            per_second: per_second as f64,
            burst: burst as f64,
            table: Mutex::new(Table::default()),
        }
    }

    /// Takes a token for `addr` at `now`; false if it has none left.
    pub fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let addr = counted_as(addr);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.buckets.len() >= MAX_ADDRESSES && !table.buckets.contains_key(&addr) {
            self.forget_idle(&mut table, now);
            if table.buckets.len() >= MAX_ADDRESSES {
                return false; // under a flood from that many addresses: refuse newcomers
            }
        }
        let bucket = table.buckets.entry(addr).or_insert(Bucket {
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

    /// Forgets addresses whose bucket has refilled (at most once a second:
    /// the scan is over every address remembered).
    fn forget_idle(&self, table: &mut Table, now: Instant) {
        if table
            .swept
            .is_some_and(|t| now.saturating_duration_since(t).as_secs() < 1)
        {
            return;
        }
        table.swept = Some(now);
        table.buckets.retain(|_, b| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.per_second)
                < self.burst
        });
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
