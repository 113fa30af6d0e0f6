//! The cluster's actor directory as the workers see it: two threads of
//! its own talk to etcd (through `etcd`, blocking), the workers never do.
//!
//! - `tether-etcd` (requests): holds the node's lease (granted at start,
//!   kept alive every TTL/4, replaced after a loss), runs claims and
//!   releases one at a time, and keeps the fence deadline workers read;
//! - `tether-etcd-watch`: watches everything under `model::PREFIX` and
//!   turns deleted claims and node records into events.
//!
//! Workers hand requests over through one bounded lock-free queue (refused
//! when full: a worker never waits on etcd) and get answers and events in
//! an inbox each (see `inbox`). The fence is an atomic deadline, so a
//! worker's sweep checks it without any lock or message.

mod inbox;
mod requests;
mod watcher;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

pub use inbox::{Inbox, INBOX_CAPACITY};

use super::etcd::{Client, Counters};
use super::model::{self, ActorPath, NodeRecord};
use crate::config::ClusterConfig;

/// Claims and releases waiting for the request thread.
pub const REQUEST_QUEUE: usize = 4096;
/// The most workers a directory serves.
pub const MAX_WORKERS: usize = 1024;
/// How long `start` waits for the lease and the node record.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `shutdown` and drop wait for the threads.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// What a claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimResult {
    /// This node holds the actor (also when it already did, under its
    /// current lease); `revision` is the claim's create_revision.
    /// `members`: the other nodes holding a member key of the actor (they
    /// have clients of it, and forward them here once they learn the
    /// owner), sorted.
    Won { revision: i64, members: Vec<String> },
    /// Another node holds it; `address` is where that node advertises its
    /// node-to-node tunnel (None if its node record is unreadable). `node`
    /// is this node's own id only for a claim left by a lease it lost and
    /// could not revoke: it goes when that lease expires.
    Owned {
        node: String,
        address: Option<String>,
        revision: i64,
    },
    /// No answer (etcd unreachable, this node fenced, …); try again later.
    Failed(String),
}

/// What a worker's inbox receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryEvent {
    /// The answer to `claim`, on the claiming worker's inbox.
    Claimed {
        actor: ActorPath,
        outcome: ClaimResult,
    },
    /// The actor's claim was deleted (released, or its owner's lease
    /// ended); on the actor's home worker only.
    ClaimGone {
        actor: ActorPath,
        /// The revision that deleted it: a claim created after it (a newer
        /// one) is not what went.
        revision: i64,
    },
    /// A node record appeared or changed; every worker.
    NodeUp { node: String, address: String },
    /// A node record went (its lease ended); every worker.
    NodeGone { node: String },
    /// This node's lease could not be renewed in time or was lost: every
    /// claim it held is gone, or will be before anyone else can take it.
    Fenced,
    /// A new lease holds the node record again (claims start from none).
    Renewed,
    /// Events may have been missed (a full inbox, a compacted watch):
    /// drop whatever was cached from the directory and any claim awaiting
    /// an answer.
    Resync,
}

/// `claim` or `release` found the request queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Requests sent to etcd since start, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestCounts {
    pub grants: u64,
    pub keepalives: u64,
    pub revokes: u64,
    /// Transactions: claims and releases.
    pub txns: u64,
    pub claims: u64,
    pub releases: u64,
    /// Member keys deleted by a node whose clients of an actor owned
    /// elsewhere all left.
    pub leaves: u64,
    /// Claims rewritten to name the runner the actor was placed on.
    pub placements: u64,
    /// `runners/…` records written or deleted.
    pub runner_records: u64,
    pub ranges: u64,
    pub puts: u64,
    pub auths: u64,
    pub watch_opens: u64,
    pub total: u64,
}

enum Request {
    Claim {
        worker: usize,
        actor: ActorPath,
    },
    Release {
        actor: ActorPath,
        revision: i64,
    },
    Leave {
        actor: ActorPath,
    },
    Placed {
        actor: ActorPath,
        revision: i64,
        runner: String,
    },
    RunnerUp {
        namespace: String,
        runner: String,
    },
    RunnerDown {
        namespace: String,
        runner: String,
    },
}

/// Names the worker that serves an actor (its `ClaimGone` goes there).
pub type Home = Box<dyn Fn(&ActorPath) -> usize + Send + Sync>;

/// What the handle and both threads share.
struct Shared {
    config: ClusterConfig,
    node: NodeRecord,
    /// `fence_until` counts from here.
    base: Instant,
    /// Nanoseconds after `base` until which this node may serve, plus 1;
    /// 0: it may not.
    fence_until: AtomicU64,
    requests: ArrayQueue<Request>,
    inboxes: Vec<Inbox>,
    home: Home,
    stop: AtomicBool,
    revoke_on_stop: AtomicBool,
    request_thread: OnceLock<Thread>,
    counters: Arc<Counters>,
    claims: AtomicU64,
    releases: AtomicU64,
    leaves: AtomicU64,
    /// Claims rewritten to name their runner, and runner records written
    /// or deleted.
    placements: AtomicU64,
    runner_records: AtomicU64,
    /// Bumped by the request thread when it lost etcd: the watch may be
    /// hanging on a dead connection too, so it reopens.
    watch_epoch: AtomicU64,
    /// Node → advertised address, as the watch last saw it.
    addresses: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn new(
        config: &ClusterConfig,
        node: NodeRecord,
        workers: usize,
        home: Home,
        counters: Arc<Counters>,
    ) -> Shared {
        Shared {
            config: config.clone(),
            node,
            base: Instant::now(),
            fence_until: AtomicU64::new(0),
            requests: ArrayQueue::new(REQUEST_QUEUE),
            inboxes: (0..workers).map(|_| Inbox::new(INBOX_CAPACITY)).collect(),
            home,
            stop: AtomicBool::new(false),
            revoke_on_stop: AtomicBool::new(false),
            request_thread: OnceLock::new(),
            counters,
            claims: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            leaves: AtomicU64::new(0),
            placements: AtomicU64::new(0),
            runner_records: AtomicU64::new(0),
            watch_epoch: AtomicU64::new(0),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    fn to(&self, worker: usize, event: DirectoryEvent) {
        self.inboxes[worker % self.inboxes.len()].push(event);
    }

    fn broadcast(&self, event: DirectoryEvent) {
        for inbox in &self.inboxes {
            inbox.push(event.clone());
        }
    }

    fn home_of(&self, actor: &ActorPath) -> usize {
        (self.home)(actor) % self.inboxes.len()
    }

    /// Publishes the fence; after a stop it stays closed, whatever a
    /// late keep-alive answer says.
    fn set_fence(&self, until: Option<Instant>) {
        let until = until.filter(|_| !self.stopping());
        let nanos = until.map_or(0, |u| {
            let n = u.saturating_duration_since(self.base).as_nanos();
            u64::try_from(n).unwrap_or(u64::MAX - 1) + 1
        });
        self.fence_until.store(nanos, Ordering::Release);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps up to `d`, waking early to stop.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

pub struct Directory {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Directory {
    /// Grants the node's lease and writes its record, then starts both
    /// threads; Err (with etcd's reason) if that did not succeed within
    /// [`START_TIMEOUT`]: the gateway then refuses to start. `home` names
    /// the worker that serves an actor (taken modulo `workers`).
    pub fn start(
        config: &ClusterConfig,
        node: NodeRecord,
        workers: usize,
        home: Home,
    ) -> Result<Arc<Directory>, String> {
        if workers == 0 || workers > MAX_WORKERS {
            return Err(format!("a directory serves 1–{MAX_WORKERS} workers"));
        }
        model::node_key(&config.node_id).map_err(|e| format!("cluster.node_id: {}", e.0))?;
        model::encode_value(&node).map_err(|e| format!("node record: {}", e.0))?;
        let counters = Arc::new(Counters::default());
        let client = Client::new(config, counters.clone())?;
        let watch_client = Client::new(config, counters.clone())?;
        let shared = Arc::new(Shared::new(config, node, workers, home, counters));
        let dir = Arc::new(Directory {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
        });
        // On any error below, dropping `dir` stops what was started.
        let (started, rx) = std::sync::mpsc::sync_channel(1);
        let s = shared.clone();
        let t = dir.spawn("tether-etcd", move || requests::run(s, client, started))?;
        let _ = shared.request_thread.set(t);
        // The thread answers within START_TIMEOUT; a little more covers a
        // slow scheduler, not a slow etcd.
        match rx.recv_timeout(START_TIMEOUT + Duration::from_millis(500)) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(format!("etcd: {why}")),
            Err(_) => return Err(format!("etcd: no lease within {START_TIMEOUT:?}")),
        }
        let s = shared.clone();
        dir.spawn("tether-etcd-watch", move || watcher::run(s, watch_client))?;
        Ok(dir)
    }

    /// Starts a named thread the directory stops and joins.
    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<Thread, String> {
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| format!("cannot start thread {name}: {e}"))?;
        let thread = t.thread().clone();
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t);
        Ok(thread)
    }

    fn wake(&self) {
        if let Some(t) = self.shared.request_thread.get() {
            t.unpark();
        }
    }

    /// Claims `actor` for this node; the answer comes to `worker`'s inbox
    /// as `Claimed`. Never waits.
    pub fn claim(&self, worker: usize, actor: ActorPath) -> Result<(), Full> {
        let worker = worker % self.shared.inboxes.len();
        self.shared
            .requests
            .push(Request::Claim { worker, actor })
            .map_err(|_| Full)?;
        self.wake();
        Ok(())
    }

    /// Records in the claim made at `revision` the runner the actor was
    /// placed on (`actors/…` then names owner and runner).
    pub fn placed(&self, actor: ActorPath, revision: i64, runner: String) -> Result<(), Full> {
        self.submit(Request::Placed {
            actor,
            revision,
            runner,
        })
    }

    /// Writes `runners/{namespace}/{runner}` → this node, under its lease.
    pub fn runner_up(&self, namespace: String, runner: String) -> Result<(), Full> {
        self.submit(Request::RunnerUp { namespace, runner })
    }

    /// Deletes that record.
    pub fn runner_down(&self, namespace: String, runner: String) -> Result<(), Full> {
        self.submit(Request::RunnerDown { namespace, runner })
    }

    fn submit(&self, request: Request) -> Result<(), Full> {
        self.shared.requests.push(request).map_err(|_| Full)?;
        self.wake();
        Ok(())
    }

    /// Deletes the actor's claim if it is still the one made at
    /// `revision`, and this node's member key of it either way.
    /// Unanswered; a refused release may be retried.
    pub fn release(&self, actor: ActorPath, revision: i64) -> Result<(), Full> {
        self.shared
            .requests
            .push(Request::Release { actor, revision })
            .map_err(|_| Full)?;
        self.wake();
        Ok(())
    }

    /// This node no longer has clients of `actor` (owned by another
    /// node): its member key goes. Unanswered.
    pub fn leave(&self, actor: ActorPath) -> Result<(), Full> {
        self.submit(Request::Leave { actor })
    }

    /// Worker `worker`'s inbox (taken modulo the number of workers).
    pub fn inbox(&self, worker: usize) -> &Inbox {
        &self.shared.inboxes[worker % self.shared.inboxes.len()]
    }

    /// Whether this node may still serve its actors at `now`: until the
    /// last confirmed keep-alive's send instant plus the TTL, minus a
    /// margin (`model::LeaseFence`). Lock-free.
    pub fn fence_alive(&self, now: Instant) -> bool {
        let until = self.shared.fence_until.load(Ordering::Acquire);
        let at = now.saturating_duration_since(self.shared.base).as_nanos();
        until != 0 && at < u128::from(until - 1)
    }

    pub fn requests(&self) -> RequestCounts {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RequestCounts {
            grants: get(&c.grants),
            keepalives: get(&c.keepalives),
            revokes: get(&c.revokes),
            txns: get(&c.txns),
            claims: get(&self.shared.claims),
            releases: get(&self.shared.releases),
            leaves: get(&self.shared.leaves),
            placements: get(&self.shared.placements),
            runner_records: get(&self.shared.runner_records),
            ranges: get(&c.ranges),
            puts: get(&c.puts),
            auths: get(&c.auths),
            watch_opens: get(&c.watch_opens),
            total: get(&c.total),
        }
    }

    /// Leaves the cluster: revokes the lease (best effort; every claim of
    /// this node goes with it) and stops both threads, waiting at most
    /// [`STOP_TIMEOUT`].
    pub fn shutdown(&self) {
        self.shared.revoke_on_stop.store(true, Ordering::Release);
        self.stop();
    }

    fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.wake();
        let until = Instant::now() + STOP_TIMEOUT;
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A thread stuck in a call past its deadline is left to finish on
        // its own: it only touches `shared`, which it keeps alive.
        for t in threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.shared.set_fence(None);
        for inbox in &self.shared.inboxes {
            inbox.close();
        }
    }
}

impl Drop for Directory {
    /// Stops without revoking, as a crash would: the lease expires on its
    /// own. Call `shutdown` first to leave at once.
    fn drop(&mut self) {
        self.stop();
    }
}
