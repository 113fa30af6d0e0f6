//! Whether a new client connection may come in: at most
//! `client.max_connections` in all, `client.max_connections_per_address`
//! from one address, and `client.new_per_second_per_address` new ones a
//! second from one address. Shared by every worker (a connection is
//! accepted on one and served on another); touched once when a connection
//! arrives and once when it ends, never per message.
//!
//! A connection's place is a [`Ticket`] until its WebSocket is linked to
//! its actor; the link then holds the place without a ticket (it already
//! keeps the client's address, so a hibernated socket costs nothing more)
//! and gives it back with [`Admission::release`] when it goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::rate::{counted_as, AddressRate};
use super::reply::Refusal;
use crate::http::Status;

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `client.max_connections` are open: 503.
    Total,
    /// `client.max_connections_per_address` are open from its address: 429.
    PerAddress,
    /// Its address opened too many connections in the last moments: 429.
    Rate,
}

impl Refused {
    /// The label `/metrics` counts it under.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerAddress => "max_connections_per_address",
            Refused::Rate => "new_per_second_per_address",
        }
    }

    /// The answer: 503 when the gateway is full, 429 (with `Retry-After`)
    /// when the client's own address is over a limit.
    pub fn refusal(self) -> Refusal {
        match self {
            Refused::Total => Refusal::new(Status::SERVICE_UNAVAILABLE, self.reason()),
            Refused::PerAddress | Refused::Rate => Refusal {
                status: Status::TOO_MANY_REQUESTS,
                headers: &[("Retry-After", "1")],
                reason: self.reason().to_owned(),
            },
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refused::Total => "the gateway is at its connection limit",
            Refused::PerAddress => "too many connections from your address",
            Refused::Rate => "too many new connections from your address",
        }
    }
}

pub(crate) struct Admission {
    /// Atomics so that a reload can change them; connections already in
    /// keep their places when a limit is lowered.
    max_total: AtomicUsize,
    max_per_address: AtomicU32,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, u32>>,
    rate: AddressRate,
}

impl Admission {
    pub fn new(max_total: usize, max_per_address: u32, rate: AddressRate) -> Self {
        Admission {
            max_total: AtomicUsize::new(max_total),
            max_per_address: AtomicU32::new(max_per_address),
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            rate,
        }
    }

    /// New limits (a reload): for connections that arrive from now on.
    pub fn set_limits(&self, max_total: usize, max_per_address: u32) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_address
            .store(max_per_address, Ordering::Relaxed);
    }

    /// The per-address rate of new connections.
    pub fn rate(&self) -> &AddressRate {
        &self.rate
    }

    /// Lets a connection from `addr` in, or says why not.
    pub fn admit(self: &Arc<Self>, addr: IpAddr, now: Instant) -> Result<Ticket, Refused> {
        let counted = counted_as(addr);
        let max_total = self.max_total.load(Ordering::Relaxed);
        if self.total.fetch_add(1, Ordering::Relaxed) >= max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        if let Err(refused) = self.take_address_place(counted, now) {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(refused);
        }
        Ok(Ticket {
            admission: self.clone(),
            addr: counted,
            armed: true,
        })
    }

    fn take_address_place(&self, counted: IpAddr, now: Instant) -> Result<(), Refused> {
        let mut table = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let open = table.get(&counted).copied().unwrap_or(0);
        if open >= self.max_per_address.load(Ordering::Relaxed) {
            return Err(Refused::PerAddress);
        }
        if !self.rate.allow(counted, now) {
            return Err(Refused::Rate);
        }
        table.insert(counted, open + 1);
        Ok(())
    }

    /// Counts a connection that is already open (taken over from the
    /// process before an upgrade): it holds its place whatever the limits
    /// say; like a linked one, it gives it back with `release`.
    pub fn adopt(&self, addr: IpAddr) {
        let counted = counted_as(addr);
        let mut table = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        *table.entry(counted).or_insert(0) += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection from `addr` that held its place without a ticket ended.
    pub fn release(&self, addr: IpAddr) {
        let counted = counted_as(addr);
        let mut table = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = table.get_mut(&counted) {
            *open -= 1;
            if *open == 0 {
                table.remove(&counted);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Client connections holding a place now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// A connection's place until its WebSocket is linked; dropping it gives
/// the place back.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    addr: IpAddr,
    armed: bool,
}

impl Ticket {
    /// The place now belongs to whatever keeps the connection's address,
    /// which must call [`Admission::release`] with it when it ends.
    pub fn hand_over(mut self) -> IpAddr {
        self.armed = false;
        self.addr
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.armed {
            self.admission.release(self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_address: u32, per_second: usize) -> Arc<Admission> {
        let rate = AddressRate::new(per_second, per_second);
        Arc::new(Admission::new(total, per_address, rate))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_places_come_back_when_tickets_drop() {
        let a = admission(100, 2, 100);
        let now = Instant::now();
        let one = a.admit(ip("10.0.0.1"), now).unwrap();
        let _two = a.admit(ip("10.0.0.1"), now).unwrap();
        assert_eq!(
            a.admit(ip("10.0.0.1"), now).err(),
            Some(Refused::PerAddress)
        );
        assert!(a.admit(ip("10.0.0.2"), now).is_ok(), "others unaffected");
        drop(one);
        assert!(a.admit(ip("10.0.0.1"), now).is_ok());
    }

    #[test]
    fn the_total_counts_every_address_and_a_handed_over_place_until_released() {
        let a = admission(2, 10, 100);
        let now = Instant::now();
        let linked = a.admit(ip("10.0.0.1"), now).unwrap().hand_over();
        let _t = a.admit(ip("10.0.0.2"), now).unwrap();
        assert_eq!(a.admit(ip("10.0.0.3"), now).err(), Some(Refused::Total));
        assert_eq!(a.open(), 2);
        a.release(linked);
        assert_eq!(a.open(), 1);
        assert!(a.admit(ip("10.0.0.3"), now).is_ok());
    }

    #[test]
    fn the_rate_limits_new_connections_not_open_ones() {
        let a = admission(100, 100, 2);
        let now = Instant::now();
        let t1 = a.admit(ip("10.0.0.1"), now).unwrap();
        let _t2 = a.admit(ip("10.0.0.1"), now).unwrap();
        drop(t1);
        assert_eq!(a.admit(ip("10.0.0.1"), now).err(), Some(Refused::Rate));
        assert_eq!(a.open(), 1, "a refused connection holds no place");
    }

    #[test]
    fn a_lowered_limit_keeps_the_places_taken_and_refuses_new_ones() {
        let a = admission(10, 3, 100);
        let now = Instant::now();
        let held: Vec<Ticket> = (0..3)
            .map(|_| a.admit(ip("10.0.0.1"), now).unwrap())
            .collect();
        a.set_limits(10, 2);
        assert_eq!(
            a.admit(ip("10.0.0.1"), now).err(),
            Some(Refused::PerAddress)
        );
        assert_eq!(a.open(), 3, "nobody was let go");
        a.set_limits(2, 10);
        assert_eq!(a.admit(ip("10.0.0.2"), now).err(), Some(Refused::Total));
        drop(held);
        assert!(a.admit(ip("10.0.0.1"), now).is_ok());
    }

    #[test]
    fn a_release_of_an_unknown_address_changes_nothing() {
        let a = admission(10, 10, 10);
        let _t = a.admit(ip("10.0.0.1"), Instant::now()).unwrap();
        a.release(ip("10.0.0.9"));
        assert_eq!(a.open(), 1);
    }
}
