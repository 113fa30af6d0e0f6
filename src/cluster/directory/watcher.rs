//! The `tether-etcd-watch` thread: one watch over everything under
//! `model::PREFIX`, turned into worker events. It first reads the node
//! records (seeding the address cache and announcing each node), then
//! watches from the revision after that read, and reopens from the last
//! revision it saw + 1 whenever the stream ends, so nothing is missed; only
//! when etcd has compacted that revision away are events lost, and then
//! every worker gets `Resync` and the thread starts over from a fresh read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DirectoryEvent, Shared};
use crate::cluster::etcd::reply::{WatchEvent, WatchMessage};
use crate::cluster::etcd::{Client, Error};
use crate::cluster::model::{self, ActorPath, NodeRecord};

/// How long a read waits before looking at the stop flag again.
const POLL: Duration = Duration::from_millis(100);
/// Pause after a failed read or open, so a dead etcd is not hammered.
const BACKOFF: Duration = Duration::from_millis(250);
/// Node addresses cached at most; past it a claim lost to an uncached
/// node reads that node's record instead (whoever writes node keys cannot
/// grow this thread's memory without bound).
const MAX_CACHED_NODES: usize = 4096;

struct Watcher {
    shared: Arc<Shared>,
    client: Client,
    /// Where to resume; None: read the node records and start afresh.
    next: Option<i64>,
}

pub(super) fn run(shared: Arc<Shared>, client: Client) {
    let mut w = Watcher {
        shared,
        client,
        next: None,
    };
    while !w.shared.stopping() {
        if w.next.is_none() && !w.seed() {
            w.shared.nap(BACKOFF);
            continue;
        }
        w.watch();
    }
}

impl Watcher {
    fn deadline(&self) -> Instant {
        Instant::now() + self.shared.config.lease_ttl / 3
    }

    /// Reads every node record: the address cache, `NodeUp` for each, and
    /// the revision to watch from.
    fn seed(&mut self) -> bool {
        let prefix = model::nodes_prefix();
        let end = model::prefix_range_end(&prefix);
        let range = match self
            .client
            .range(prefix.as_bytes(), Some(&end), self.deadline())
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "etcd node read failed");
                return false;
            }
        };
        let mut nodes = Vec::new();
        for kv in range.kvs {
            if let Some(n) = node_of(&kv.key, kv.value.as_deref()) {
                nodes.push(n);
            }
        }
        if let Ok(mut cache) = self.shared.addresses.lock() {
            cache.clear();
            cache.extend(nodes.iter().take(MAX_CACHED_NODES).cloned());
        }
        for (node, address) in nodes {
            self.shared
                .broadcast(DirectoryEvent::NodeUp { node, address });
        }
        self.next = Some(range.revision + 1);
        true
    }

    /// One watch stream, until it ends, must restart, or the thread stops.
    fn watch(&mut self) {
        let epoch = self.shared.watch_epoch.load(Ordering::Acquire);
        let prefix = model::PREFIX.as_bytes();
        let end = model::prefix_range_end(model::PREFIX);
        let mut stream = match self.client.watch(prefix, &end, self.next, self.deadline()) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "etcd watch open failed");
                return self.shared.nap(BACKOFF);
            }
        };
        while !self.shared.stopping() {
            if self.shared.watch_epoch.load(Ordering::Acquire) != epoch {
                return; // the request thread lost etcd: do not trust this stream
            }
            match stream.next(POLL) {
                Ok(None) => {}
                Ok(Some(m)) if m.canceled || m.compact_revision > 0 => return self.lost(m),
                Ok(Some(m)) => self.events(m.events),
                // Reopening at the same revision would read the same
                // unacceptable message again: skip past it, and resync.
                Err(e @ Error::Bad(_)) => {
                    tracing::warn!(error = %e, "unreadable etcd watch message");
                    return self.lost(WatchMessage::default());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "etcd watch ended");
                    return self.shared.nap(BACKOFF);
                }
            }
        }
    }

    /// The watch was cancelled (or its next message is unreadable): events
    /// since `next` may be gone for good.
    fn lost(&mut self, m: WatchMessage) {
        tracing::info!(
            compact_revision = m.compact_revision,
            "etcd watch cancelled: resync"
        );
        self.next = None;
        self.shared.broadcast(DirectoryEvent::Resync);
    }

    fn events(&mut self, events: Vec<WatchEvent>) {
        for e in events {
            if let Some(next) = self.next.as_mut() {
                *next = (*next).max(e.kv.mod_revision + 1);
            }
            self.event(e);
        }
    }

    fn event(&mut self, e: WatchEvent) {
        let Ok(key) = std::str::from_utf8(&e.kv.key) else {
            return;
        };
        if let Some(actor) = ActorPath::from_etcd_key(key) {
            if e.delete {
                let home = self.shared.home_of(&actor);
                let revision = e.kv.mod_revision;
                self.shared
                    .to(home, DirectoryEvent::ClaimGone { actor, revision });
            }
            return;
        }
        let Some(node) = key.strip_prefix(&model::nodes_prefix()) else {
            return;
        };
        if model::node_key(node).is_err() {
            return;
        }
        if e.delete {
            if let Ok(mut cache) = self.shared.addresses.lock() {
                cache.remove(node);
            }
            let node = node.to_owned();
            self.shared.broadcast(DirectoryEvent::NodeGone { node });
        } else if let Some((node, address)) = node_of(&e.kv.key, e.kv.value.as_deref()) {
            if let Ok(mut cache) = self.shared.addresses.lock() {
                if cache.len() < MAX_CACHED_NODES || cache.contains_key(&node) {
                    cache.insert(node.clone(), address.clone());
                }
            }
            self.shared
                .broadcast(DirectoryEvent::NodeUp { node, address });
        }
    }
}

/// A node record's (node, address), if the key and value are ours.
fn node_of(key: &[u8], value: Option<&[u8]>) -> Option<(String, String)> {
    let node = std::str::from_utf8(key)
        .ok()?
        .strip_prefix(&model::nodes_prefix())?;
    model::node_key(node).ok()?;
    let record: NodeRecord = model::decode_value(value?)?;
    Some((node.to_owned(), record.advertise))
}

#[cfg(test)]
mod tests;
