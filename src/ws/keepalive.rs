//! When to ping a peer and when to give up on it. Time is always a parameter.
//!
//! The timer is lazy: traffic only records when the peer was last heard, and
//! the deadline is re-read when the timer fires, so a busy connection does not
//! re-arm a timer per message.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
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
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            last_heard: now,
            ping_sent_at: None,
        }
    }

    /// Anything received from the peer proves it alive.
    pub fn heard_from_peer(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// When the caller should next call [`Keepalive::on_timer`].
    pub fn deadline(&self) -> Instant {
        match self.ping_sent_at {
            Some(sent) => sent + self.timeout,
            None => self.last_heard + self.interval,
        }
    }

    pub fn on_timer(&mut self, now: Instant) -> KeepaliveAction {
        if let Some(sent) = self.ping_sent_at {
            if self.last_heard >= sent {
                self.ping_sent_at = None;
            } else if now >= sent + self.timeout {
                return KeepaliveAction::PeerDead;
            } else {
                return KeepaliveAction::Nothing;
            }
        }
        if now >= self.last_heard + self.interval {
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
        let mut k = Keepalive::new(t0, 10 * S, 5 * S);
        assert_eq!(k.on_timer(t0 + 9 * S), KeepaliveAction::Nothing);
        assert_eq!(k.deadline(), t0 + 10 * S);
        assert_eq!(k.on_timer(t0 + 10 * S), KeepaliveAction::SendPing);
        assert_eq!(k.deadline(), t0 + 15 * S);
        assert_eq!(k.on_timer(t0 + 14 * S), KeepaliveAction::Nothing);
        assert_eq!(k.on_timer(t0 + 15 * S), KeepaliveAction::PeerDead);
    }

    #[test]
    fn an_answer_resets_the_cycle() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0, 10 * S, 5 * S);
        assert_eq!(k.on_timer(t0 + 10 * S), KeepaliveAction::SendPing);
        k.heard_from_peer(t0 + 11 * S);
        assert_eq!(k.on_timer(t0 + 15 * S), KeepaliveAction::Nothing);
        assert_eq!(k.deadline(), t0 + 21 * S);
        assert_eq!(k.on_timer(t0 + 21 * S), KeepaliveAction::SendPing);
    }

    #[test]
    fn traffic_postpones_the_ping() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0, 10 * S, 5 * S);
        k.heard_from_peer(t0 + 8 * S);
        assert_eq!(k.on_timer(t0 + 10 * S), KeepaliveAction::Nothing);
        assert_eq!(k.deadline(), t0 + 18 * S);
    }
}
