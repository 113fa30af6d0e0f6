//! Sequence checking, sans-IO: every stream of numbered messages (a client's
//! echoes, one sender's messages as one chat member sees them, a counter's
//! values) must arrive complete, once each, in order.

use std::collections::BTreeSet;

use serde::Serialize;

/// Problems seen, by kind. Any non-zero count fails the run.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// Skipped in a stream and never seen, or never answered by the end.
    pub lost: u64,
    pub duplicated: u64,
    /// Arrived after a later one.
    pub reordered: u64,
    /// Another client's message where only one's own belongs (echo).
    pub foreign: u64,
    /// Not a load-test message.
    pub malformed: u64,
    /// TCP connect or upgrade failed (refusals by status are `refused`).
    pub connect_failed: u64,
    pub refused: u64,
    /// The server closed or reset a connection the client did not close.
    pub closed: u64,
    /// The server broke the WebSocket protocol.
    pub protocol: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.reordered
            + self.foreign
            + self.malformed
            + self.connect_failed
            + self.refused
            + self.closed
            + self.protocol
    }

    pub fn add(&mut self, o: &Errors) {
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.foreign += o.foreign;
        self.malformed += o.malformed;
        self.connect_failed += o.connect_failed;
        self.refused += o.refused;
        self.closed += o.closed;
        self.protocol += o.protocol;
    }

    /// `lost 2, closed 1`, or `none`.
    pub fn describe(&self) -> String {
        let all = [
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("reordered", self.reordered),
            ("foreign", self.foreign),
            ("malformed", self.malformed),
            ("connect failed", self.connect_failed),
            ("refused", self.refused),
            ("closed by server", self.closed),
            ("protocol", self.protocol),
        ];
        let parts: Vec<String> = all
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Gaps remembered per stream, to tell a late message from a duplicate.
const MAX_MISSING: usize = 4096;

/// One stream of consecutive numbers.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    next: Option<u64>,
    missing: BTreeSet<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    InOrder,
    /// Numbers were skipped (counted as lost until they turn up).
    AfterGap(u64),
    Duplicate,
    Late,
}

impl Stream {
    /// A stream whose first number must be `first`.
    pub fn starting_at(first: u64) -> Stream {
        Stream {
            next: Some(first),
            missing: BTreeSet::new(),
        }
    }

    /// The next number this stream expects (`None`: nothing seen yet and no start given).
    pub fn expected(&self) -> Option<u64> {
        self.next
    }

    pub fn observe(&mut self, n: u64, errors: &mut Errors) -> Seen {
        let Some(next) = self.next else {
            self.next = Some(n + 1);
            return Seen::InOrder;
        };
        if n == next {
            self.next = Some(n + 1);
            Seen::InOrder
        } else if n > next {
            let skipped = n - next;
            errors.lost += skipped;
            for m in next..n {
                if self.missing.len() >= MAX_MISSING {
                    break;
                }
                self.missing.insert(m);
            }
            self.next = Some(n + 1);
            Seen::AfterGap(skipped)
        } else if self.missing.remove(&n) {
            errors.lost -= 1;
            errors.reordered += 1;
            Seen::Late
        } else {
            errors.duplicated += 1;
            Seen::Duplicate
        }
    }

    /// At the end: everything up to `last` (inclusive) should have arrived.
    pub fn finish(&mut self, last: u64, errors: &mut Errors) {
        if let Some(next) = self.next {
            if last >= next {
                errors.lost += last + 1 - next;
                self.next = Some(last + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seq: &[u64], last: u64) -> Errors {
        let mut e = Errors::default();
        let mut s = Stream::starting_at(0);
        for &n in seq {
            s.observe(n, &mut e);
        }
        s.finish(last, &mut e);
        e
    }

    #[test]
    fn a_clean_stream_has_no_errors() {
        assert_eq!(run(&[0, 1, 2, 3], 3), Errors::default());
    }

    #[test]
    fn loss_duplication_and_reordering_are_told_apart() {
        let lost = run(&[0, 1, 3], 3);
        assert_eq!((lost.lost, lost.total()), (1, 1));
        let dup = run(&[0, 1, 1, 2], 2);
        assert_eq!((dup.duplicated, dup.total()), (1, 1));
        let late = run(&[0, 2, 1, 3], 3);
        assert_eq!((late.reordered, late.lost, late.total()), (1, 0, 1));
        let tail = run(&[0, 1], 4);
        assert_eq!((tail.lost, tail.total()), (3, 3));
    }

    #[test]
    fn a_stream_joined_late_starts_where_it_is_first_seen() {
        let mut e = Errors::default();
        let mut s = Stream::default();
        for n in [17, 18, 19] {
            assert_eq!(s.observe(n, &mut e), Seen::InOrder);
        }
        s.finish(19, &mut e);
        assert_eq!(e.total(), 0);
        assert_eq!(s.observe(5, &mut e), Seen::Duplicate);
    }
}
