//! Which of an actor's saved records each connection was a member of, so
//! that kept output sent again (`kept.rs`) reaches only those its
//! broadcasts reached: not a connection that joined later, nor one that was
//! away (closed, then restored when its node came back).
//!
//! A connection's membership is a list of spans of record numbers,
//! `[from, to)`, the last one open while it is a member. What a record
//! carries is only what the kept outputs need: connections that were
//! members of every kept record and still are go without spans (they are
//! in the record's `handled`).

use std::collections::HashMap;

use crate::runner::actor::ConnId;

/// The end of a span still open.
pub(crate) const OPEN: u64 = u64::MAX;

/// Membership spans per connection (see the module).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Members {
    spans: HashMap<ConnId, Vec<(u64, u64)>>,
}

impl Members {
    /// As a record saved as number `seq` left them: its `handled`
    /// connections without spans were members of every record up to it,
    /// and none is a member of anything later until it is restored here.
    pub fn load(
        seq: u64,
        handled: &[(ConnId, u64)],
        spans: Vec<(ConnId, Vec<(u64, u64)>)>,
    ) -> Self {
        let mut members = Members::default();
        for (conn, _) in handled {
            members.spans.insert(*conn, vec![(0, OPEN)]);
        }
        members.spans.extend(spans);
        let end = seq.saturating_add(1);
        for spans in members.spans.values_mut() {
            for span in spans.iter_mut().filter(|s| s.1 == OPEN) {
                span.1 = end;
            }
        }
        members
    }

    /// `conn` is a member from record `at` on (opened or restored).
    pub fn join(&mut self, conn: ConnId, at: u64) {
        let spans = self.spans.entry(conn).or_default();
        match spans.last_mut() {
            Some(last) if last.1 == OPEN => {}
            // Back with no record missed: one span.
            Some(last) if last.1 >= at => last.1 = OPEN,
            _ => spans.push((at, OPEN)),
        }
    }

    /// `conn` left before record `at` (closed).
    pub fn leave(&mut self, conn: ConnId, at: u64) {
        let Some(spans) = self.spans.get_mut(&conn) else {
            return;
        };
        if let Some(last) = spans.last_mut().filter(|s| s.1 == OPEN) {
            last.1 = at;
        }
        spans.retain(|(from, to)| from < to);
        if spans.is_empty() {
            self.spans.remove(&conn);
        }
    }

    /// Whether record `seq`'s broadcasts to all were for `conn`.
    #[cfg(test)]
    pub fn member_of(&self, conn: ConnId, seq: u64) -> bool {
        covers(self.spans_of(conn), seq)
    }

    pub fn spans_of(&self, conn: ConnId) -> &[(u64, u64)] {
        self.spans.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// What a record whose oldest kept output is `oldest` carries: the
    /// spans that reach it, except a member's single span covering them
    /// all (`handled` says that one).
    pub fn to_record(&self, oldest: u64) -> Vec<(ConnId, Vec<(u64, u64)>)> {
        self.spans
            .iter()
            .filter_map(|(conn, spans)| {
                // Spans are in order: an open one from before `oldest` is
                // the only one reaching it (most members: no allocation).
                if matches!(spans.last(), Some(&(from, OPEN)) if from <= oldest) {
                    return None;
                }
                let reaching: Vec<(u64, u64)> =
                    spans.iter().copied().filter(|s| s.1 > oldest).collect();
                (!reaching.is_empty()).then_some((*conn, reaching))
            })
            .collect()
    }

    /// Forgets spans that end before the oldest kept output.
    pub fn prune(&mut self, oldest: u64) {
        self.spans.retain(|_, spans| {
            spans.retain(|s| s.1 > oldest);
            !spans.is_empty()
        });
    }
}

/// Whether `spans` hold record `seq`.
pub(super) fn covers(spans: &[(u64, u64)], seq: u64) -> bool {
    spans.iter().any(|(from, to)| *from <= seq && seq < *to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_of_the_saved_record_is_one_again_only_once_restored() {
        let mut m = Members::load(4, &[(7, 3)], vec![(8, vec![(3, OPEN)])]);
        assert!(m.member_of(7, 1) && m.member_of(7, 4) && !m.member_of(7, 5));
        assert!(!m.member_of(8, 2) && m.member_of(8, 3) && !m.member_of(8, 5));
        m.join(7, 5);
        assert_eq!(m.spans_of(7), [(0, OPEN)], "restored at once: no gap");
        m.join(8, 7);
        assert_eq!(m.spans_of(8), [(3, 5), (7, OPEN)], "restored late: a gap");
        assert!(!m.member_of(8, 6) && m.member_of(8, 9));
        assert!(!m.member_of(9, 1), "unknown: a member of nothing");
    }

    #[test]
    fn leaving_and_coming_back_leaves_a_gap() {
        let mut m = Members::default();
        m.join(5, 2);
        m.leave(5, 4);
        m.join(5, 6);
        assert_eq!(m.spans_of(5), [(2, 4), (6, OPEN)]);
        assert!(m.member_of(5, 3) && !m.member_of(5, 4) && !m.member_of(5, 5));
        m.join(6, 4);
        m.leave(6, 4);
        assert_eq!(
            m.spans_of(6),
            [] as [(u64, u64); 0],
            "never a member of a record"
        );
    }

    #[test]
    fn a_record_carries_only_the_spans_its_kept_outputs_need() {
        let mut m = Members::default();
        m.join(1, 1); // a member of everything kept
        m.join(2, 5); // joined after the oldest kept record
        m.join(3, 1);
        m.leave(3, 3); // left before it
        m.join(4, 1);
        m.leave(4, 6); // left after it
        let mut carried = m.to_record(4);
        carried.sort();
        assert_eq!(carried, [(2, vec![(5, OPEN)]), (4, vec![(1, 6)])]);
        m.prune(4);
        assert!(m.spans_of(3).is_empty() && !m.spans_of(4).is_empty());
    }
}
