//! Crash-loop backoff for one actor: how long to wait before starting it
//! again after its runner died or it stopped on its own.
//!
//! The first failure restarts at once (a single crash should cost clients
//! as little pause as possible); each further failure within
//! `reset_after` of the previous one doubles the wait from `initial`, up to
//! `max`. Three failures in a row count as crash-looping.

use std::time::{Duration, Instant};

/// Failures in a row from which an actor is reported as crash-looping.
pub(crate) const CRASH_LOOP_AFTER: u32 = 3;

#[derive(Debug, Clone, Copy)]
pub(crate) struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CrashBackoff {
    failures: u32,
    last_failure: Option<Instant>,
}

impl CrashBackoff {
    /// Records a failure at `now`; returns how long to wait before the next start.
    pub fn fail(&mut self, now: Instant, policy: &BackoffPolicy) -> Duration {
        if self
            .last_failure
            .is_some_and(|t| now.duration_since(t) >= policy.reset_after)
        {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(now);
        if self.failures <= 1 {
            return Duration::ZERO;
        }
        let doublings = (self.failures - 2).min(30);
        policy
            .initial
            .saturating_mul(1u32 << doublings)
            .min(policy.max)
    }

    /// Failures in a row so far (as of `now`: old ones are forgiven).
    pub fn failures(&self, now: Instant, policy: &BackoffPolicy) -> u32 {
        match self.last_failure {
            Some(t) if now.duration_since(t) < policy.reset_after => self.failures,
            _ => 0,
        }
    }

    pub fn is_crash_looping(&self, now: Instant, policy: &BackoffPolicy) -> bool {
        self.failures(now, policy) >= CRASH_LOOP_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(60),
    };

    #[test]
    fn first_failure_restarts_at_once_then_doubles_up_to_the_cap() {
        let t = Instant::now();
        let mut b = CrashBackoff::default();
        let waits: Vec<u64> = (0..8)
            .map(|i| b.fail(t + Duration::from_secs(i), &POLICY).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![0, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert!(b.is_crash_looping(t + Duration::from_secs(8), &POLICY));
    }

    #[test]
    fn a_quiet_spell_forgives_earlier_failures() {
        let t = Instant::now();
        let mut b = CrashBackoff::default();
        b.fail(t, &POLICY);
        b.fail(t, &POLICY);
        b.fail(t, &POLICY);
        assert!(b.is_crash_looping(t, &POLICY));
        let later = t + POLICY.reset_after;
        assert!(!b.is_crash_looping(later, &POLICY));
        assert_eq!(b.fail(later, &POLICY), Duration::ZERO);
        assert_eq!(b.failures(later, &POLICY), 1);
    }
}
