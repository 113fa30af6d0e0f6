//! What a client connection sent that its actor has not acknowledged yet.
//!
//! One buffer per connection serves both hibernation and migration: every
//! client message is appended here before it goes to the runner, and is
//! dropped when the runner acknowledges its index. Messages the runner has
//! not been sent yet (the actor is starting, waking or moving) are the
//! "unsent" tail. When a runner is lost, everything becomes unsent again
//! and is replayed, in order, to the actor's next runner (which drops what
//! it had already handled, by index).
//!
//! Payloads lie back to back in one `BytesMut` that is reused as messages
//! are acknowledged: no allocation per message once it has grown.
//!
//! What is held is counted as its payload plus [`ENTRY_COST`] per message,
//! so that empty messages cannot be held without limit: the hold and
//! backlog limits (`wake_buffer_bytes`, `migration_buffer_bytes`) bound the
//! number of messages too (1 MiB: at most 16,384 messages).

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

use crate::tunnel::MessageKind;

/// What one held message costs beyond its payload: its entry and its share
/// of the bookkeeping, rounded up.
pub(crate) const ENTRY_COST: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    index: u64,
    kind: MessageKind,
    len: u32,
}

#[derive(Default)]
pub(crate) struct Outstanding {
    data: BytesMut,
    entries: VecDeque<Entry>,
    /// `entries[..sent]` are with the runner, the rest wait for one.
    sent: usize,
    sent_bytes: usize,
    /// The highest index ever handed to a runner: acknowledgements beyond
    /// it are bogus (a runner cannot have handled what it never got).
    sent_index: u64,
    /// The client's close, to deliver after the messages (boxed: rare, and
    /// every connection that sent anything holds this struct).
    pub close: Option<Box<(u16, String)>>,
}

impl Outstanding {
    /// Appends a message; it counts as unsent until `mark_sent`.
    pub fn push(&mut self, index: u64, kind: MessageKind, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.entries.push_back(Entry {
            index,
            kind,
            len: payload.len() as u32,
        });
    }

    /// What is held, counted against the hold and backlog limits.
    pub fn cost(&self) -> usize {
        self.data.len() + self.entries.len() * ENTRY_COST
    }

    /// The highest index a runner was given.
    pub fn sent_index(&self) -> u64 {
        self.sent_index
    }

    pub fn has_unsent(&self) -> bool {
        self.sent < self.entries.len()
    }

    /// Nothing held and no close waiting: the buffer can be dropped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.close.is_none()
    }

    /// The runner handled everything up to `index`.
    pub fn ack(&mut self, index: u64) {
        while let Some(e) = self.entries.front() {
            if e.index > index {
                break;
            }
            let len = e.len as usize;
            self.entries.pop_front();
            self.data.advance(len);
            if self.sent > 0 {
                self.sent -= 1;
                self.sent_bytes -= len;
            }
        }
        if self.entries.is_empty() {
            // Back to the start of the allocation, so it is reused.
            self.data.clear();
        }
    }

    /// The unsent messages, in order, with their indices.
    pub fn unsent(&self) -> impl Iterator<Item = (u64, MessageKind, &[u8])> {
        let mut at = self.sent_bytes;
        self.entries.iter().skip(self.sent).map(move |e| {
            let payload = &self.data[at..at + e.len as usize];
            at += e.len as usize;
            (e.index, e.kind, payload)
        })
    }

    /// Every message held, sent or not, in order, with its index.
    pub fn all(&self) -> impl Iterator<Item = (u64, MessageKind, &[u8])> {
        let mut at = 0;
        self.entries.iter().map(move |e| {
            let payload = &self.data[at..at + e.len as usize];
            at += e.len as usize;
            (e.index, e.kind, payload)
        })
    }

    /// Everything unsent has been given to the runner.
    pub fn mark_sent(&mut self) {
        self.sent = self.entries.len();
        self.sent_bytes = self.data.len();
        if let Some(last) = self.entries.back() {
            self.sent_index = self.sent_index.max(last.index);
        }
    }

    /// The runner that had them is gone: all of them go again.
    pub fn resend_all(&mut self) {
        self.sent = 0;
        self.sent_bytes = 0;
    }

    /// Capacity kept for reuse; a large one is worth freeing when idle.
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsent(o: &Outstanding) -> Vec<(u64, Vec<u8>)> {
        o.unsent().map(|(i, _, p)| (i, p.to_vec())).collect()
    }

    #[test]
    fn acks_drop_the_acknowledged_prefix() {
        let mut o = Outstanding::default();
        for i in 1..=4u64 {
            o.push(i, MessageKind::Text, format!("m{i}").as_bytes());
        }
        o.mark_sent();
        assert!(!o.has_unsent());
        o.ack(2);
        assert_eq!(o.cost(), 4 + 2 * ENTRY_COST);
        o.resend_all();
        assert_eq!(unsent(&o), vec![(3, b"m3".to_vec()), (4, b"m4".to_vec())]);
    }

    #[test]
    fn unsent_tail_follows_sent_messages() {
        let mut o = Outstanding::default();
        o.push(1, MessageKind::Binary, b"a");
        o.mark_sent();
        o.push(2, MessageKind::Binary, b"bb");
        o.push(3, MessageKind::Binary, b"ccc");
        assert_eq!(unsent(&o), vec![(2, b"bb".to_vec()), (3, b"ccc".to_vec())]);
        // An ack of a sent message keeps the unsent tail intact.
        o.ack(1);
        assert_eq!(unsent(&o), vec![(2, b"bb".to_vec()), (3, b"ccc".to_vec())]);
        o.mark_sent();
        o.ack(3);
        assert!(o.is_empty());
        assert_eq!(o.cost(), 0);
    }

    #[test]
    fn stale_and_repeated_acks_change_nothing() {
        let mut o = Outstanding::default();
        o.push(5, MessageKind::Text, b"x");
        o.mark_sent();
        o.ack(4);
        o.ack(0);
        assert_eq!(o.cost(), 1 + ENTRY_COST);
        o.ack(5);
        o.ack(5);
        assert!(o.is_empty());
    }

    #[test]
    fn empty_messages_cost_their_entry() {
        let mut o = Outstanding::default();
        for i in 1..=100 {
            o.push(i, MessageKind::Text, b"");
        }
        assert_eq!(o.cost(), 100 * ENTRY_COST);
    }

    #[test]
    fn the_highest_index_given_to_a_runner_is_known() {
        let mut o = Outstanding::default();
        o.push(1, MessageKind::Text, b"a");
        o.push(2, MessageKind::Text, b"b");
        assert_eq!(o.sent_index(), 0);
        o.mark_sent();
        o.push(3, MessageKind::Text, b"c");
        assert_eq!(o.sent_index(), 2, "3 is held, not sent");
        o.ack(2);
        o.resend_all();
        assert_eq!(o.sent_index(), 2, "a replay does not forget it");
    }

    #[test]
    fn buffer_is_reused_after_everything_is_acknowledged() {
        let mut o = Outstanding::default();
        o.push(1, MessageKind::Binary, &[0u8; 1000]);
        let cap = o.capacity();
        let at = o.data.as_ptr();
        o.mark_sent();
        o.ack(1);
        o.push(2, MessageKind::Binary, &[0u8; 1000]);
        assert_eq!((o.capacity(), o.data.as_ptr()), (cap, at));
    }
}
