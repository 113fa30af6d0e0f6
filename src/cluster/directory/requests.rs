//! The `tether-etcd` thread: the node's lease, its keep-alives, the fence
//! deadline, and the claims and releases workers queue, one at a time.
//!
//! The fence follows `model::LeaseFence`: each confirmed keep-alive moves
//! the deadline to its *send* instant plus the TTL etcd answered, minus a
//! margin. Calls made while holding a lease never wait past that deadline,
//! so a dead etcd is noticed (and `Fenced` sent) before the lease could
//! have expired on etcd's side and let another node claim our actors.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ClaimResult, DirectoryEvent, Request, Shared, START_TIMEOUT};
use crate::cluster::etcd::{Client, Error, Kv};
use crate::cluster::model::{self, ActorPath, ClaimRecord, LeaseFence, LeaseId, NodeRecord};

/// Requests handled between two looks at the lease.
const BATCH: usize = 64;
/// The longest the thread parks with nothing to do.
const TICK: Duration = Duration::from_millis(100);
/// How long a revoke at shutdown may take.
const REVOKE_TIMEOUT: Duration = Duration::from_millis(800);

struct Requests {
    shared: Arc<Shared>,
    client: Client,
    ttl: Duration,
    lease: Option<LeaseId>,
    /// A lost lease, revoked (best effort) before the next is granted so
    /// that claims made under it cannot outlive the `Fenced` sent for them.
    stale: Option<LeaseId>,
    fence: LeaseFence,
    next_keepalive: Instant,
    retry_at: Instant,
}

/// The thread's body: registers (telling `start` how that went), then
/// serves until told to stop.
pub(super) fn run(shared: Arc<Shared>, client: Client, started: SyncSender<Result<(), String>>) {
    let now = Instant::now();
    let mut r = Requests {
        ttl: shared.config.lease_ttl,
        shared,
        client,
        lease: None,
        stale: None,
        fence: LeaseFence::new(),
        next_keepalive: now,
        retry_at: now,
    };
    let first = r.register(Instant::now() + START_TIMEOUT);
    let ok = first.is_ok();
    let _ = started.send(first.map_err(|e| e.to_string()));
    if ok {
        r.serve();
    }
}

impl Requests {
    /// Grants a lease and writes the node record under it.
    fn register(&mut self, deadline: Instant) -> Result<(), Error> {
        let sent = Instant::now();
        let lease = self
            .client
            .lease_grant(self.shared.config.lease_ttl_secs(), deadline)?;
        let key =
            model::node_key(&self.shared.config.node_id).map_err(|e| Error::Bad(e.0.into()))?;
        let value = model::encode_value(&self.shared.node).map_err(|e| Error::Bad(e.0.into()))?;
        self.client
            .put(key.as_bytes(), &value, lease.id, deadline)?;
        self.lease = Some(lease.id);
        self.confirmed(sent, lease.ttl);
        Ok(())
    }

    fn confirmed(&mut self, sent: Instant, ttl_secs: i64) {
        self.fence
            .confirmed(sent, Duration::from_secs(ttl_secs.max(0) as u64));
        self.shared.set_fence(self.fence.valid_until());
        self.next_keepalive = sent + self.ttl / 4;
    }

    fn serve(&mut self) {
        while !self.shared.stopping() {
            let now = Instant::now();
            if self.lease.is_some() && !self.fence.alive(now) {
                self.fenced();
            }
            if self.lease.is_none() && now >= self.retry_at {
                self.renew();
            } else if self.lease.is_some() && now >= self.next_keepalive {
                self.keep_alive();
            }
            for _ in 0..BATCH {
                let Some(request) = self.shared.requests.pop() else {
                    break;
                };
                self.handle(request);
            }
            if self.shared.requests.is_empty() {
                std::thread::park_timeout(self.idle(Instant::now()));
            }
        }
        if self.shared.revoke_on_stop.load(Ordering::Acquire) {
            if let Some(lease) = self.lease.take() {
                let _ = self
                    .client
                    .lease_revoke(lease, Instant::now() + REVOKE_TIMEOUT);
            }
        }
    }

    /// How long to park: until the next thing due, at most a tick.
    fn idle(&self, now: Instant) -> Duration {
        let due = if self.lease.is_some() {
            self.next_keepalive
        } else {
            self.retry_at
        };
        due.saturating_duration_since(now).min(TICK)
    }

    /// The deadline for a call: a third of the TTL, and never past the
    /// fence while a lease is held.
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        let mut d = now + self.ttl / 3;
        if let Some(u) = self.fence.valid_until().filter(|_| self.lease.is_some()) {
            d = d.min(u.max(now + Duration::from_millis(50)));
        }
        d
    }

    fn keep_alive(&mut self) {
        let Some(lease) = self.lease else { return };
        let sent = Instant::now();
        match self.client.lease_keepalive(lease, self.deadline()) {
            Ok(l) if l.ttl > 0 => self.confirmed(sent, l.ttl),
            Ok(_) => self.fenced(), // etcd says the lease is gone
            Err(e) => {
                tracing::debug!(error = %e, "etcd keep-alive failed");
                self.next_keepalive =
                    Instant::now() + (self.ttl / 10).min(Duration::from_millis(200));
            }
        }
    }

    /// The lease is lost or unconfirmable: stop serving at once.
    fn fenced(&mut self) {
        self.stale = self.lease.take().or(self.stale);
        self.fence.lost();
        self.shared.set_fence(None);
        self.shared.watch_epoch.fetch_add(1, Ordering::AcqRel);
        tracing::warn!("cluster lease lost or unconfirmed: fenced");
        self.shared.broadcast(DirectoryEvent::Fenced);
        self.retry_at = Instant::now();
    }

    /// After a loss: revoke the old lease, get a new one.
    fn renew(&mut self) {
        let deadline = self.deadline();
        if let Some(old) = self.stale {
            match self.client.lease_revoke(old, deadline) {
                Ok(()) | Err(Error::Etcd { .. }) => self.stale = None,
                Err(_) => {}
            }
        }
        match self.register(deadline) {
            Ok(()) => {
                tracing::info!("cluster lease renewed");
                self.shared.broadcast(DirectoryEvent::Renewed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "etcd lease grant failed");
                self.retry_at = Instant::now() + (self.ttl / 4).min(Duration::from_secs(1));
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Claim { worker, actor } => {
                let outcome = match self.lease {
                    Some(lease) => self.claim(&actor, lease),
                    None => ClaimResult::Failed("this node holds no lease (fenced)".into()),
                };
                self.shared
                    .to(worker, DirectoryEvent::Claimed { actor, outcome });
            }
            Request::Release { actor, revision } => {
                self.shared.releases.fetch_add(1, Ordering::Relaxed);
                let txn = model::release_txn(&actor, revision, &self.shared.config.node_id);
                if let Err(e) = txn
                    .map_err(|e| Error::Bad(e.0.into()))
                    .and_then(|t| self.client.txn(&t, self.deadline()))
                {
                    tracing::debug!(error = %e, "etcd release failed");
                }
            }
            // Without a lease (fenced), every member key of this node is
            // under a lost lease and goes with it: etcd is not asked.
            Request::Leave { .. } if self.lease.is_none() => {}
            Request::Leave { actor } => {
                self.shared.leaves.fetch_add(1, Ordering::Relaxed);
                let txn = model::leave_txn(&actor, &self.shared.config.node_id);
                if let Err(e) = txn
                    .map_err(|e| Error::Bad(e.0.into()))
                    .and_then(|t| self.client.txn(&t, self.deadline()))
                {
                    // It goes with the lease, or with the next release.
                    tracing::debug!(error = %e, "etcd member key not deleted");
                }
            }
            Request::Placed {
                actor,
                revision,
                runner,
            } => self.placed(&actor, revision, runner),
            Request::RunnerUp { namespace, runner } => self.runner_up(&namespace, &runner),
            Request::RunnerDown { namespace, runner } => {
                self.shared.runner_records.fetch_add(1, Ordering::Relaxed);
                let txn = model::runner_gone_txn(&namespace, &runner);
                if let Err(e) = txn
                    .map_err(|e| Error::Bad(e.0.into()))
                    .and_then(|t| self.client.txn(&t, self.deadline()))
                {
                    tracing::debug!(error = %e, "etcd runner record delete failed");
                }
            }
        }
    }

    /// Names the runner in the claim (only if it is still ours).
    fn placed(&mut self, actor: &ActorPath, revision: i64, runner: String) {
        if self.lease.is_none() {
            return;
        }
        self.shared.placements.fetch_add(1, Ordering::Relaxed);
        let record = ClaimRecord {
            node: self.shared.config.node_id.clone(),
            runner,
        };
        let txn = model::placed_txn(actor, revision, &record);
        let result = txn
            .map_err(|e| Error::Bad(e.0.into()))
            .and_then(|t| self.client.txn(&t, self.deadline()));
        if let Err(e) = result {
            tracing::debug!(error = %e, "etcd claim's runner not recorded");
        }
    }

    /// `runners/{ns}/{runner}` → this node, under its lease (it goes with
    /// the node).
    fn runner_up(&mut self, namespace: &str, runner: &str) {
        let Some(lease) = self.lease else { return };
        self.shared.runner_records.fetch_add(1, Ordering::Relaxed);
        let record = model::RunnerRecord {
            node: self.shared.config.node_id.clone(),
        };
        let put = model::runner_key(namespace, runner)
            .and_then(|k| Ok((k, model::encode_value(&record)?)))
            .map_err(|e| Error::Bad(e.0.into()))
            .and_then(|(k, v)| self.client.put(k.as_bytes(), &v, lease, self.deadline()));
        if let Err(e) = put {
            tracing::debug!(error = %e, "etcd runner record not written");
        }
    }

    fn claim(&mut self, actor: &ActorPath, lease: LeaseId) -> ClaimResult {
        self.shared.claims.fetch_add(1, Ordering::Relaxed);
        let record = ClaimRecord {
            node: self.shared.config.node_id.clone(),
            runner: String::new(),
        };
        let txn = match model::claim_txn(actor, &record, lease) {
            Ok(t) => t,
            Err(e) => return ClaimResult::Failed(e.0.into()),
        };
        let reply = match self.client.txn(&txn, self.deadline()) {
            Ok(r) => r,
            Err(e) => return ClaimResult::Failed(e.to_string()),
        };
        // The members' range is the last range of either branch.
        let members = self.members(actor, reply.ranges.last());
        if reply.succeeded {
            // The put created the key: its create_revision is the txn's.
            return ClaimResult::Won {
                revision: reply.revision,
                members,
            };
        }
        // The failure branch: [member put, claim get, members range].
        let claim = (reply.ranges.len() == 2).then(|| reply.ranges[0].first());
        let Some(kv) = claim.flatten() else {
            return ClaimResult::Failed("the claim vanished meanwhile; try again".into());
        };
        let Some(owner) = kv
            .value
            .as_deref()
            .and_then(model::decode_value::<ClaimRecord>)
        else {
            return ClaimResult::Failed("the actor's claim record is unreadable".into());
        };
        if owner.node == self.shared.config.node_id && kv.lease == lease {
            return ClaimResult::Won {
                revision: kv.create_revision,
                members,
            };
        }
        ClaimResult::Owned {
            address: self.address_of(&owner.node),
            node: owner.node,
            revision: kv.create_revision,
        }
    }

    /// The nodes other than this one that hold a member key of `actor`,
    /// from a range of its members prefix (sorted, as etcd returns keys).
    fn members(&self, actor: &ActorPath, range: Option<&Vec<Kv>>) -> Vec<String> {
        let me = self.shared.config.node_id.as_str();
        range
            .into_iter()
            .flatten()
            .filter_map(|kv| model::member_of(actor, std::str::from_utf8(&kv.key).ok()?))
            .filter(|node| *node != me)
            .map(str::to_owned)
            .collect()
    }

    /// Where `node` advertises itself: the watch's cache, else its record.
    fn address_of(&mut self, node: &str) -> Option<String> {
        if node == self.shared.config.node_id {
            return Some(self.shared.node.advertise.clone());
        }
        let cached = self.shared.addresses.lock().ok()?.get(node).cloned();
        if cached.is_some() {
            return cached;
        }
        let key = model::node_key(node).ok()?;
        let range = self
            .client
            .range(key.as_bytes(), None, self.deadline())
            .ok()?;
        let value = range.kvs.first()?.value.as_deref()?;
        Some(model::decode_value::<NodeRecord>(value)?.advertise)
    }
}
