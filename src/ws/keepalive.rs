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
