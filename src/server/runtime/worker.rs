//! One worker: a thread with its own monoio runtime, listeners, connections,
//! tunnels, actors, buffer pool and copy of the configuration. Shared with
//! other workers: the shutdown and reload signals, the hand-off queues, the
//! counts that span workers (limits, runner loads) and the stats counters.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::handoff::HandoffQueues;
use super::reload::ReloadSignal;
use super::shutdown::ShutdownSignal;
use super::tls::TlsListeners;
use crate::config::Config;
use crate::server::actors::{Actors, Feed, SharedLimits};
use crate::server::admin::{AdminSide, Hub};
use crate::server::conn::admission::Admission;
use crate::server::conn::env::{ConnEnv, SessionLimits};
use crate::server::conn::stats::{GatewayStats, WorkerStats};
use crate::server::conn::stopping::Stopping;
use crate::server::edge::{EdgeSide, Parker};
use crate::server::runners::{RunnerSide, TunnelQuota};
use crate::ws::CloseCode;

pub(crate) struct Worker {
    pub id: usize,
    pub worker_count: usize,
    pub env: Rc<ConnEnv>,
    pub actors: Rc<Actors>,
    pub edge: Rc<EdgeSide>,
    pub runners: Rc<RunnerSide>,
    pub admin: Rc<AdminSide>,
    pub handoffs: Arc<HandoffQueues>,
    pub stats: Arc<WorkerStats>,
    /// Client connections' places, shared by all workers.
    pub admission: Arc<Admission>,
    pub tls: Arc<TlsListeners>,
    /// Where reloaded configurations arrive.
    pub reloads: Arc<ReloadSignal>,
    /// What this worker tells the inspector.
    pub feed: Arc<Feed>,
    /// Set when the worker stops accepting (shutdown, upgrade).
    pub no_accept: Stopping,
    /// Set when the worker stops taking hand-offs, after `no_accept`.
    pub stopping: Rc<Stopping>,
    /// Set when the worker is done: the sweep ends.
    pub finished: Stopping,
}

/// What a worker thread is handed when it starts.
pub(crate) struct WorkerSeed {
    pub id: usize,
    pub worker_count: usize,
    pub config: Arc<Config>,
    pub handoffs: Arc<HandoffQueues>,
    pub shutdown: Arc<ShutdownSignal>,
    /// Triggered when an upgrade takes this process's connections.
    pub upgrade: Arc<ShutdownSignal>,
    /// Where connections go during an upgrade.
    pub exports: std::sync::mpsc::Sender<super::upgrade::Export>,
    /// In the new process of an upgrade: the connections it takes over.
    pub inherit: Option<Arc<HandoffQueues<super::upgrade::Inherited>>>,
    pub stats: Arc<WorkerStats>,
    /// Every worker's counters (for the admin API's /metrics).
    pub all_stats: Arc<[Arc<WorkerStats>]>,
    /// The process's counters (reloads, upgrades; for /metrics).
    pub gateway_stats: Arc<GatewayStats>,
    /// Every worker's inspector feed, by worker id.
    pub feeds: Arc<[Arc<Feed>]>,
    /// Counts that span workers (runner loads, per-address limits).
    pub shared: Arc<SharedLimits>,
    /// Tunnels per runner identity, shared by all workers.
    pub tunnel_quota: Arc<TunnelQuota>,
    /// The listeners' TLS settings (reloadable).
    pub tls: Arc<TlsListeners>,
    /// Changes to the admin API's serverless pools (made off the worker
    /// that received the request, one at a time gateway-wide).
    pub pool_changes: Arc<dyn crate::server::admin::PoolChanges>,
    /// Where reloaded configurations arrive.
    pub reloads: Arc<ReloadSignal>,
    /// Set once every worker serves.
    pub serving: Arc<std::sync::atomic::AtomicBool>,
    pub driver: super::Driver,
    /// Told once the worker serves, or why it cannot.
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
    /// The cluster directory, when `[cluster]` is set.
    pub directory: Option<Arc<crate::cluster::directory::Directory>>,
}

impl WorkerSeed {
    /// The same seed for worker `id`.
    pub fn for_worker(&self, id: usize) -> WorkerSeed {
        WorkerSeed {
            id,
            config: self.config.clone(),
            worker_count: self.worker_count,
            handoffs: self.handoffs.clone(),
            shutdown: self.shutdown.clone(),
            upgrade: self.upgrade.clone(),
            exports: self.exports.clone(),
            inherit: self.inherit.clone(),
            stats: self.all_stats[id].clone(),
            all_stats: self.all_stats.clone(),
            gateway_stats: self.gateway_stats.clone(),
            feeds: self.feeds.clone(),
            shared: self.shared.clone(),
            tunnel_quota: self.tunnel_quota.clone(),
            tls: self.tls.clone(),
            reloads: self.reloads.clone(),
            pool_changes: self.pool_changes.clone(),
            serving: self.serving.clone(),
            driver: self.driver,
            ready: self.ready.clone(),
            directory: self.directory.clone(),
        }
    }
}

impl Worker {
    /// Builds the worker's layers, each handed what it uses.
    pub(super) fn assemble(seed: &WorkerSeed) -> Worker {
        // The worker's own copy: what it reads per message stays on its core.
        let config = Rc::new(Config::clone(&seed.config));
        let env = Rc::new(ConnEnv::new(config.clone()));
        let wakeups = env.wakeups.clone();
        let stats = seed.stats.clone();
        let actors = Actors::new(
            seed.id,
            env.live.clone(),
            stats,
            wakeups.clone(),
            seed.shared.for_worker(),
            seed.feeds[seed.id].clone(),
        );
        let actors = Rc::new(actors);
        let parker = match Parker::new(wakeups, seed.stats.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(worker = seed.id, error = %e, "no io_uring for parking: hibernated sockets keep their tasks");
                None
            }
        };
        let edge = EdgeSide {
            env: env.clone(),
            actors: actors.clone(),
            stats: seed.stats.clone(),
            limits: Cell::new(SessionLimits::client(&config)),
            parker,
            handed: Default::default(),
            rehome: super::accept::rehome(seed.handoffs.clone(), seed.id, seed.worker_count),
        };
        let runners = RunnerSide {
            env: env.clone(),
            actors: actors.clone(),
            limits: Cell::new(SessionLimits::tunnel(&config)),
            quota: seed.tunnel_quota.clone(),
            stats: seed.stats.clone(),
            worker_id: seed.id,
            worker_count: seed.worker_count,
        };
        let stopping = Rc::new(Stopping::default());
        let admin = AdminSide {
            env: env.clone(),
            actors: actors.clone(),
            all_stats: seed.all_stats.clone(),
            gateway_stats: seed.gateway_stats.clone(),
            hub: Hub::new(seed.feeds.clone(), config.admin.max_event_streams),
            stopping: stopping.clone(),
            admission: seed.shared.admission.clone(),
            serving: seed.serving.clone(),
            worker_id: seed.id,
            worker_count: seed.worker_count,
            pool_changes: seed.pool_changes.clone(),
            directory: seed.directory.clone(),
        };
        Worker {
            id: seed.id,
            worker_count: seed.worker_count,
            env,
            actors,
            edge: Rc::new(edge),
            runners: Rc::new(runners),
            admin: Rc::new(admin),
            handoffs: seed.handoffs.clone(),
            stats: seed.stats.clone(),
            admission: seed.shared.admission.clone(),
            tls: seed.tls.clone(),
            no_accept: Stopping::default(),
            reloads: seed.reloads.clone(),
            feed: seed.feeds[seed.id].clone(),
            stopping,
            finished: Stopping::default(),
        }
    }

    /// After accepting stopped: give clients `shutdown_drain` to leave, then
    /// close the rest with 1001 and wait (bounded) for their close handshakes.
    pub(super) async fn drain(&self) {
        let registry = &self.env.registry;
        let drain = self.env.config().server.shutdown_drain;
        if registry.len() > 0 {
            let connections = registry.len();
            info!(worker = self.id, connections, ?drain, "draining");
        }
        self.wait_until_empty(drain).await;
        registry.close_all(CloseCode::GOING_AWAY, "server shutting down");
        let (client, tunnel) = (self.edge.limits.get(), self.runners.limits.get());
        let close = client.close_timeout.max(tunnel.close_timeout);
        let stalled_write = client.send_timeout.max(tunnel.send_timeout);
        self.wait_until_empty(close + stalled_write.min(Duration::from_secs(1)))
            .await;
    }

    /// Waits until no connection is left, or `limit` has passed.
    async fn wait_until_empty(&self, limit: Duration) {
        monoio::select! {
            _ = self.env.registry.until_empty() => {}
            _ = monoio::time::sleep(limit) => {}
        }
    }
}
