//! One worker's actors: where each runs, its life from start to sleep or
//! move, and its client connections — including actors that sleep while
//! the gateway holds their hibernated connections, and actors moving from
//! one runner to another while their clients stay connected.
//!
//! Everything here is owned by one worker thread. A client connection is
//! always served by its actor's home worker, and every runner keeps one
//! tunnel to every worker, so client ↔ actor traffic never crosses cores
//! (docs/ARCHITECTURE.md).
//!
//! `Actors` is one struct; its methods live in files by concern:
//! `lifecycle` (start, place, fail, stop, sleep, wake), `restore` (a
//! started actor gets its connections back), `clients` (messages and closes
//! from clients, delivery to them), `opens` (new connections), `dispatch`
//! (frames from runners), `requests` and `http_frames` (HTTP requests
//! to actors and the runner's answers, PROTOCOL §7b), `tunnel_events` (runners coming, going,
//! draining), `sweep` (timers), `status` (operator requests), `views`
//! (what lists and the inspector show), `events` (what is recorded for
//! the inspector, in the worker's `feed`).

mod actor;
mod backoff;
mod clients;
mod cluster;
#[cfg(test)]
mod cluster_tests;
mod directory;
mod dispatch;
mod events;
mod exchange;
mod feed;
mod handover;
mod home;
mod http_frames;
mod ids;
mod lifecycle;
mod links;
mod opens;
mod outstanding;
mod peers;
#[cfg(test)]
mod peers_tests;
mod placement;
mod requests;
mod restore;
mod serverless;
mod status;
mod sweep;
mod tunnel_events;
mod unavailable;
mod views;

use crate::server::conn::admission::Admission;
use crate::server::conn::live_config::LiveConfig;
use crate::server::conn::rate::AddressRate;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

pub(crate) use actor::{Actor, ActorState};
use backoff::BackoffPolicy;
pub(crate) use cluster::{Claim, ClusterPort};
use directory::Directory;
#[cfg(test)]
pub(crate) use exchange::ResponseHead;
pub(crate) use exchange::{Exchange, Outcome};
#[cfg(test)]
pub(crate) use feed::Event;
pub(crate) use feed::{Feed, FEED_EVENTS};
pub(crate) use home::home_worker;
use ids::Ids;
use links::{ClientLink, PendingOpen};
pub(crate) use links::{LinkView, OpenAnswer, OpenRequest};
pub(crate) use peers::{hash_twin, relayed_conn_id, Relay, RestoredConn};
pub(crate) use requests::{HttpOpen, MAX_PIECE};
pub(crate) use status::{ActorStatus, MigrateOutcome};
pub(crate) use tunnel_events::RunnerHello;
pub(crate) use unavailable::Unavailable;
pub(crate) use views::{
    merge_runners, unix_ms, ActorView, Bounded, ConnCounts, ConnView, RunnerView, WorkerSnapshot,
};

use crate::config::Config;
use crate::server::conn::stats::WorkerStats;
use crate::server::conn::wakeups::Wakeups;
use crate::server::serverless::{Lifetime, PoolKey, Pools};
use crate::server::tunnels::{RunnerLoads, Tunnel, TunnelTable};

pub(crate) struct Actors {
    /// This worker's index, for logs.
    worker_id: usize,
    ids: Ids,
    /// The worker's configuration (its `ConnEnv`'s), swapped by a reload.
    config: Rc<LiveConfig>,
    stats: Arc<WorkerStats>,
    /// Told when an actor needs the timer sweep sooner.
    wakeups: Rc<Wakeups>,
    tunnels: TunnelTable,
    /// Every runner's load, shared by all workers.
    loads: Arc<RunnerLoads>,
    /// New actors per client address, shared by all workers.
    creations: Arc<AddressRate>,
    /// Client connections' places; a link gives its place back when it goes.
    admission: Arc<Admission>,
    directory: Directory,
    // Boxed: a hash table keeps spare buckets (up to half of them), and a
    // spare bucket of a boxed link costs 16 bytes instead of 72 (every
    // hibernated socket has a link).
    links: RefCell<HashMap<u64, Box<ClientLink>>>,
    opens: RefCell<HashMap<u64, PendingOpen>>,
    /// HTTP requests in flight to this worker's actors, by `req_id`.
    requests: RefCell<HashMap<u64, requests::Flight>>,
    /// A coarse clock, advanced by the worker's timer sweep: activity
    /// tracking must not read the clock per message.
    clock: Cell<Instant>,
    /// An upgrade hands this worker's connections to a new process: no
    /// actor starts any more.
    handing_over: Cell<bool>,
    /// Handing over, with nothing left on a runner: sessions may leave.
    sessions_leave: Cell<bool>,
    /// This worker takes an old process's connections over: no actor
    /// starts until every one is in.
    taking_over: Cell<bool>,
    /// Taken over from the process before an upgrade, awake there: woken
    /// once every connection is in.
    to_wake: RefCell<Vec<Rc<actor::Actor>>>,
    /// Where events go while an inspector watches (read by the admin worker).
    feed: Arc<Feed>,
    /// Serverless pools, shared by all workers (`server/serverless`).
    pools: Arc<Pools>,
    /// This worker's tunnels of runners the gateway started.
    started: RefCell<Vec<(Rc<Tunnel>, Arc<Lifetime>)>>,
    /// When this worker last told a serverless pool how many of its actors
    /// wait, and how many.
    reported: RefCell<HashMap<PoolKey, (Instant, u32)>>,
    /// Each serverless pool's failure, looked up once per sweep.
    failing: RefCell<serverless::FailingOnce>,
    /// Set when the node is part of a cluster (`[cluster]`, issue 16).
    cluster: std::cell::OnceCell<cluster::Cluster>,
    /// Connections of another node's clients (`server/peers`): where the
    /// acknowledgements and attachments of their runner go back to.
    relays: RefCell<HashMap<u64, Relay>>,
}

/// What every worker's `Actors` share: counts that span workers because a
/// runner's tunnels and a client address's connections land on all of them.
pub(crate) struct SharedLimits {
    pub loads: Arc<RunnerLoads>,
    pub creations: Arc<AddressRate>,
    pub admission: Arc<Admission>,
    pub pools: Arc<Pools>,
}

impl SharedLimits {
    /// The same counts, for one more worker.
    pub fn for_worker(&self) -> SharedLimits {
        SharedLimits {
            loads: self.loads.clone(),
            creations: self.creations.clone(),
            admission: self.admission.clone(),
            pools: self.pools.clone(),
        }
    }

    /// The limits `config` sets (a reload): for what comes from now on;
    /// what is already admitted or placed stays.
    pub fn apply(&self, config: &Config) {
        let (c, a) = (&config.client, &config.actors);
        let admission = &self.admission;
        admission.set_limits(c.max_connections, c.max_connections_per_address);
        let rate = admission.rate();
        rate.set(c.new_per_second_per_address, c.new_burst_per_address);
        let creations = &self.creations;
        creations.set(a.new_per_second_per_address, a.new_burst_per_address);
        self.loads.set_max(config.runners.max_actors_per_runner);
        self.pools.configure(config);
    }

    pub fn new(config: &Config) -> Self {
        let (c, a) = (&config.client, &config.actors);
        let connections = AddressRate::new(c.new_per_second_per_address, c.new_burst_per_address);
        let admission = Admission::new(
            c.max_connections,
            c.max_connections_per_address,
            connections,
        );
        SharedLimits {
            loads: Arc::new(RunnerLoads::new(config.runners.max_actors_per_runner)),
            creations: Arc::new(AddressRate::new(
                a.new_per_second_per_address,
                a.new_burst_per_address,
            )),
            admission: Arc::new(admission),
            pools: Arc::new(Pools::new(config, config.worker_count())),
        }
    }
}

impl Actors {
    pub fn new(
        worker_id: usize,
        config: Rc<LiveConfig>,
        stats: Arc<WorkerStats>,
        wakeups: Rc<Wakeups>,
        shared: SharedLimits,
        feed: Arc<Feed>,
    ) -> Self {
        Actors {
            worker_id,
            ids: Ids::new(worker_id),
            config,
            stats,
            wakeups,
            tunnels: TunnelTable::default(),
            loads: shared.loads,
            creations: shared.creations,
            admission: shared.admission,
            directory: Directory::default(),
            links: RefCell::new(HashMap::new()),
            opens: RefCell::new(HashMap::new()),
            requests: RefCell::new(HashMap::new()),
            clock: Cell::new(Instant::now()),
            handing_over: Cell::new(false),
            taking_over: Cell::new(false),
            sessions_leave: Cell::new(false),
            to_wake: RefCell::new(Vec::new()),
            feed,
            pools: shared.pools,
            started: RefCell::new(Vec::new()),
            reported: RefCell::new(HashMap::new()),
            failing: RefCell::default(),
            cluster: std::cell::OnceCell::new(),
            relays: RefCell::new(HashMap::new()),
        }
    }

    /// The configuration in force now (a reload may have changed it since
    /// the last look: read it when a setting is used, do not keep it).
    fn config(&self) -> Rc<Config> {
        self.config.get()
    }

    /// The crash backoff as configured now.
    fn backoff(&self) -> BackoffPolicy {
        let a = &self.config().actors;
        BackoffPolicy {
            initial: a.crash_backoff,
            max: a.crash_backoff_max,
            reset_after: a.crash_reset_after,
        }
    }

    /// Reads the real clock (the coarse one may be stale after a long quiet
    /// spell, as sweeps only run when something is due).
    fn now(&self) -> Instant {
        let now = Instant::now();
        self.clock.set(now);
        now
    }
}
