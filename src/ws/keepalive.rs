//! When to ping a peer and when to give up on it. Time is always a parameter.
//!
//! The timer is lazy: traffic only records when the peer was last heard, and
//! the deadline is re-read when the timer fires, so a busy connection does not
//! re-arm a timer per message.

use std::time::{Duration, Instant};

/// How often to ping and how long to wait for an answer (from config,
/// shared by all connections so each connection stores only two instants).
#[derive(Debug, Clone, Copy)]
pub struct KeepalivePolicy {
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Keepalive {
    last_heard: Instant,
    ping_sent_at: Option<Instant>,
}

/// A [`Keepalive`] in 16 bytes instead of 32, for connections that keep
/// it a long time without using it (parked ones): nanoseconds since an
/// epoch of the holder's choosing, 0 for no ping.
#[derive(Debug, Clone, Copy)]
pub struct PackedKeepalive {
    last_heard: u64,
    ping_sent_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    Nothing,
    SendPing,
    /// No sign of life within the timeout after a ping.
    PeerDead,
}

impl Keepalive {
    pub fn new(now: Instant) -> Self {
        Self {
            last_heard: now,
            ping_sent_at: None,
        }
    }

    /// Anything received from the peer proves it alive.
    pub fn heard_from_peer(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// Packs it relative to `epoch` (an instant before both of its own;
    /// an earlier one is read as `epoch`). Exact to the nanosecond.
    pub fn pack(&self, epoch: Instant) -> PackedKeepalive {
        let since = |t: Instant| t.saturating_duration_since(epoch).as_nanos() as u64;
        PackedKeepalive {
            last_heard: since(self.last_heard),
            // +1: 0 stands for no ping.
            ping_sent_at: self.ping_sent_at.map_or(0, |t| since(t) + 1),
        }
    }

    /// Unpacks what [`Keepalive::pack`] made with the same `epoch`.
    pub fn unpack(p: PackedKeepalive, epoch: Instant) -> Self {
        let at = |ns: u64| epoch + Duration::from_nanos(ns);
        Keepalive {
            last_heard: at(p.last_heard),
            ping_sent_at: (p.ping_sent_at != 0).then(|| at(p.ping_sent_at - 1)),
        }
    }

    /// When the caller should next call [`Keepalive::on_timer`].
    pub fn deadline(&self, policy: &KeepalivePolicy) -> Instant {
        match self.ping_sent_at {
            Some(sent) => sent + policy.timeout,
            None => self.last_heard + policy.interval,
        }
    }

    pub fn on_timer(&mut self, now: Instant, policy: &KeepalivePolicy) -> KeepaliveAction {
        if let Some(sent) = self.ping_sent_at {
            if self.last_heard >= sent {
                self.ping_sent_at = None;
            } else if now >= sent + policy.timeout {
                return KeepaliveAction::PeerDead;
            } else {
                return KeepaliveAction::Nothing;
            }
        }
        if now >= self.last_heard + policy.interval {
            self.ping_sent_at = Some(now);
            KeepaliveAction::SendPing
        } else {
            KeepaliveAction::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pings_after_silence_and_declares_death_after_timeout() {
        let t0 = Instant::now();
        let p = KeepalivePolicy {
            interval: 10 * S,
            timeout: 5 * S,
        };
        let mut k = Keepalive::new(t0);
        assert_eq!(k.on_timer(t0 + 9 * S, &p), KeepaliveAction::Nothing);
        assert_eq!(k.deadline(&p), t0 + 10 * S);
        assert_eq!(k.on_timer(t0 + 10 * S, &p), KeepaliveAction::SendPing);
        assert_eq!(k.deadline(&p), t0 + 15 * S);
        assert_eq!(k.on_timer(t0 + 14 * S, &p), KeepaliveAction::Nothing);
        assert_eq!(k.on_timer(t0 + 15 * S, &p), KeepaliveAction::PeerDead);
    }

    #[test]
    fn an_answer_resets_the_cycle() {
        let t0 = Instant::now();
        let p = KeepalivePolicy {
            interval: 10 * S,
            timeout: 5 * S,
        };
        let mut k = Keepalive::new(t0);
        assert_eq!(k.on_timer(t0 + 10 * S, &p), KeepaliveAction::SendPing);
        k.heard_from_peer(t0 + 11 * S);
        assert_eq!(k.on_timer(t0 + 15 * S, &p), KeepaliveAction::Nothing);
        assert_eq!(k.deadline(&p), t0 + 21 * S);
        assert_eq!(k.on_timer(t0 + 21 * S, &p), KeepaliveAction::SendPing);
    }

    #[test]
    fn packing_keeps_both_instants() {
        let t0 = Instant::now();
        let p = KeepalivePolicy {
            interval: 10 * S,
            timeout: 5 * S,
        };
        let mut k = Keepalive::new(t0 + Duration::from_nanos(7));
        let epoch = t0;
        let k2 = Keepalive::unpack(k.pack(epoch), epoch);
        assert_eq!(k2.deadline(&p), k.deadline(&p));
        assert_eq!(k.on_timer(t0 + 11 * S, &p), KeepaliveAction::SendPing);
        let mut k3 = Keepalive::unpack(k.pack(epoch), epoch);
        assert_eq!(k3.deadline(&p), t0 + 16 * S);
        assert_eq!(k3.on_timer(t0 + 16 * S, &p), KeepaliveAction::PeerDead);
        assert_eq!(std::mem::size_of::<PackedKeepalive>(), 16);
    }

    #[test]
    fn traffic_postpones_the_ping() {
        let t0 = Instant::now();
        let p = KeepalivePolicy {
            interval: 10 * S,
            timeout: 5 * S,
        };
        let mut k = Keepalive::new(t0);
        k.heard_from_peer(t0 + 8 * S);
        assert_eq!(k.on_timer(t0 + 10 * S, &p), KeepaliveAction::Nothing);
        assert_eq!(k.deadline(&p), t0 + 18 * S);
    }
}
