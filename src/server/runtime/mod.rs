//! The running gateway: worker threads, their listeners, and shutdown.

mod accept;
mod cluster;
pub mod driver;
mod feed;
mod handoff;
mod handshake_slot;
pub mod listener;
pub mod notify;
pub mod pidfile;
mod pool_book;
mod reload;
mod run;
mod shutdown;
pub mod signals;
mod tls;
pub mod upgrade;
mod worker;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info};

pub use driver::Driver;

use crate::config::{Config, MAX_WORKERS};
use crate::server::actors::SharedLimits;
use crate::server::conn::stats::{GatewayStats, WorkerStats};
use crate::server::runners::TunnelQuota;
use handoff::HandoffQueues;
use reload::ReloadSignal;
use run::SeedListeners;
use shutdown::ShutdownSignal;
use upgrade::old::Upgrader;
use upgrade::Inherited;
use worker::WorkerSeed;

/// Connections handed from one worker to another, waiting, per worker.
const HANDOFF_QUEUE: usize = 4096;

/// A started gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    pub client_addr: SocketAddr,
    pub runner_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub driver: Driver,
    shutdown: Arc<ShutdownSignal>,
    workers: Vec<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
    gateway_stats: Arc<GatewayStats>,
    admission: Arc<crate::server::conn::admission::Admission>,
    reloader: Reloader,
    upgrader: Upgrader,
    /// This node's registration in the cluster (`[cluster]`): its lease is
    /// revoked when the workers are done, so other nodes take its actors
    /// over at once instead of after the lease's time.
    directory: Option<Arc<crate::cluster::directory::Directory>>,
}

/// Every listening socket of the gateway, bound before any worker starts.
struct Bound {
    client: Vec<std::net::TcpListener>,
    runner: Vec<std::net::TcpListener>,
    admin: std::net::TcpListener,
}

impl Bound {
    fn bind(config: &Config, count: usize, driver: Driver) -> Result<Bound, String> {
        let nonblocking = driver == Driver::Epoll;
        let shared = |addr, what| listener::bind_shared(addr, count, nonblocking, what);
        Ok(Bound {
            client: shared(config.client.listen, "client").map_err(|e| e.to_string())?,
            runner: shared(config.runners.listen, "runner").map_err(|e| e.to_string())?,
            admin: listener::bind_exclusive(config.admin.listen, nonblocking, "admin")
                .map_err(|e| e.to_string())?,
        })
    }

    /// The listeners the process before an upgrade handed over: client
    /// ×`split.0`, runner ×`split.1`, then the admin one. Their addresses
    /// must be the configured ones (a changed address needs a restart).
    fn inherit(
        fds: Vec<OwnedFd>,
        split: (u32, u32),
        config: &Config,
        driver: Driver,
    ) -> Result<Bound, String> {
        let nonblocking = driver == Driver::Epoll;
        let mut listeners = Vec::with_capacity(fds.len());
        for fd in fds {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(nonblocking).map_err(|e| e.to_string())?;
            listeners.push(l);
        }
        let admin = listeners.pop().ok_or("upgrade: no admin listener")?;
        let runner = listeners.split_off(split.0 as usize);
        let bound = Bound {
            client: listeners,
            runner,
            admin,
        };
        bound.check_addresses(config)?;
        Ok(bound)
    }

    fn check_addresses(&self, config: &Config) -> Result<(), String> {
        let wanted = [
            ("client.listen", config.client.listen, &self.client[0]),
            ("runners.listen", config.runners.listen, &self.runner[0]),
            ("admin.listen", config.admin.listen, &self.admin),
        ];
        for (key, want, listener) in wanted {
            let have = listener.local_addr().map_err(|e| e.to_string())?;
            if want.port() != 0 && have != want {
                return Err(format!(
                    "upgrade: {key} changed ({have} → {want}): restart instead"
                ));
            }
        }
        Ok(())
    }

    /// Copies of every listener, kept for a later upgrade.
    fn copies(&self) -> Result<Vec<OwnedFd>, String> {
        let all = self.client.iter().chain(&self.runner).chain([&self.admin]);
        all.map(|l| l.try_clone().map(OwnedFd::from))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot keep the listeners for upgrades: {e}"))
    }
}

/// The driver and worker count `config` asks for, after the process-wide
/// settings it makes.
fn prepare(config: &Config) -> Result<(Driver, usize), String> {
    let driver = driver::choose(config.server.io_driver)?;
    if config.server.return_freed_memory {
        crate::allocator::return_freed_memory_at_once();
    }
    let count = config.worker_count();
    if count > MAX_WORKERS {
        return Err(format!(
            "server.workers is {count}, more than the {MAX_WORKERS} workers ids can tell apart"
        ));
    }
    grow_descriptor_table();
    Ok((driver, count))
}

impl Gateway {
    /// Binds every listener, starts the workers and returns once all of them
    /// are serving, or with the first error.
    pub fn start(config: Config) -> Result<Gateway, String> {
        crate::server::serverless::check_functions(&config)?;
        let (driver, count) = prepare(&config)?;
        let bound = Bound::bind(&config, count, driver)?;
        Gateway::launch(config, driver, bound, None)
    }

    /// Starts the workers on the listeners an upgrading process handed
    /// over; they accept once every connection it sends is in `inbox`.
    pub(crate) fn start_inheriting(
        config: Config,
        fds: Vec<OwnedFd>,
        split: (u32, u32),
        inbox: Arc<HandoffQueues<Inherited>>,
    ) -> Result<Gateway, String> {
        // The pools were checked when they were configured: a function
        // that is down now must not block the upgrade (its starts back
        // off and say why, as they would in the old process).
        if let Err(e) = crate::server::serverless::check_functions(&config) {
            tracing::warn!(error = %e, "upgrade: a serverless pool's function does not answer /metadata; going on");
        }
        let (driver, _) = prepare(&config)?;
        let bound = Bound::inherit(fds, split, &config, driver)?;
        Gateway::launch(config, driver, bound, Some(inbox))
    }

    fn launch(
        config: Config,
        driver: Driver,
        bound: Bound,
        inherit: Option<Arc<HandoffQueues<Inherited>>>,
    ) -> Result<Gateway, String> {
        let count = bound.client.len();
        let local = |l: &std::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
        let (client_addr, runner_addr) = (local(&bound.client[0])?, local(&bound.runner[0])?);
        let admin_addr = local(&bound.admin)?;
        let copies = bound.copies()?;
        let tls = Arc::new(tls::TlsListeners::load(&config)?);
        let book = pool_book::PoolBook::open(config)?;
        let config = Arc::new(book.effective.clone());
        let shared = Arc::new(SharedLimits::new(&config));
        let directory = cluster::start_directory(&config, count)?;
        let quota = Arc::new(TunnelQuota::new(config.runners.max_tunnels_per_identity));
        let shutdown = Arc::new(ShutdownSignal::new(count));
        let upgrade = Arc::new(ShutdownSignal::new(count));
        let (exports_tx, exports_rx) = mpsc::channel();
        let stats: Vec<Arc<WorkerStats>> = (0..count).map(|_| Arc::default()).collect();
        let gateway_stats = Arc::<GatewayStats>::default();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let reloads = Arc::new(ReloadSignal::new(count));
        let reloader = Reloader {
            tls: tls.clone(),
            shared: shared.clone(),
            quota: quota.clone(),
            reloads: reloads.clone(),
            shutdown: shutdown.clone(),
            stats: gateway_stats.clone(),
            book: Arc::new(Mutex::new(book)),
        };
        let common = WorkerSeed {
            id: 0,
            config: config.clone(),
            worker_count: count,
            handoffs: Arc::new(handoff::HandoffQueues::new(count, HANDOFF_QUEUE)),
            shutdown: shutdown.clone(),
            upgrade: upgrade.clone(),
            exports: exports_tx,
            inherit,
            stats: stats[0].clone(),
            all_stats: stats.clone().into(),
            gateway_stats: gateway_stats.clone(),
            feeds: (0..count).map(|_| Arc::default()).collect(),
            shared,
            tunnel_quota: quota,
            tls,
            reloads,
            pool_changes: Arc::new(reloader.clone()),
            serving: Arc::default(),
            ready: ready_tx,
            driver,
            directory: directory.clone(),
        };
        let runner_tls = !config.runners.tls.is_empty();
        common
            .shared
            .pools
            .set_runner_listener(runner_addr, runner_tls);
        let admission = common.shared.admission.clone();
        let serving = common.serving.clone();
        let workers = spawn_workers(&common, bound)?;
        drop(common);
        wait_until_serving(&ready_rx, count).inspect_err(|_| shutdown.trigger())?;
        serving.store(true, Ordering::Relaxed);
        info!(client = %client_addr, runners = %runner_addr, admin = %admin_addr, workers = count, %driver, "tether is serving");
        if config.runners.token == crate::config::DEV_RUNNER_TOKEN {
            info!(
                token = crate::config::DEV_RUNNER_TOKEN,
                "runners authenticate with the development token (loopback only)"
            );
        }
        let upgrader = Upgrader {
            listeners: Arc::new(Mutex::new(copies)),
            split: (count as u32, count as u32),
            signal: upgrade,
            exports: Arc::new(Mutex::new(Some(exports_rx))),
            workers: count,
        };
        Ok(Gateway {
            client_addr,
            runner_addr,
            admin_addr,
            driver,
            shutdown,
            workers,
            stats,
            gateway_stats,
            admission,
            reloader,
            upgrader,
            directory,
        })
    }

    /// A handle that hands this gateway over to a new binary (SIGUSR2).
    pub fn upgrader(&self) -> Upgrader {
        self.upgrader.clone()
    }

    /// What the systemd watchdog and STATUS lines read.
    pub fn vitals(&self) -> notify::Vitals {
        notify::Vitals {
            stats: self.stats.clone(),
            admission: self.admission.clone(),
        }
    }

    /// Re-reads the TLS certificates `config` names (SIGHUP): connections
    /// accepted from now on get the new ones; a certificate that does not
    /// load is kept as it was, with a warning saying why.
    pub fn reload_tls(&self, config: &Config) {
        self.reloader.tls.reload(config);
    }

    /// Puts `config` in force (see [`Reloader::apply`]).
    pub fn reload(&self, config: &Config) -> bool {
        self.reloader.apply(config)
    }

    /// Per-worker counters, indexed by worker id.
    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// The process's own counters (reloads, upgrades).
    pub fn gateway_stats(&self) -> &Arc<GatewayStats> {
        &self.gateway_stats
    }

    /// Stops accepting, drains, closes remaining clients with 1001, and
    /// returns when every worker has finished.
    pub fn shutdown(self) {
        self.stopper().stop();
        self.join();
    }

    /// Waits for the workers to finish (after someone triggered shutdown).
    pub fn join(self) {
        for w in self.workers {
            let _ = w.join();
        }
        if let Some(directory) = &self.directory {
            directory.shutdown();
        }
    }

    /// A handle that reloads the configuration from another thread.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// A handle that can trigger shutdown from another thread (signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shutdown.clone(), self.upgrader.listeners.clone())
    }
}

/// Puts a new configuration in force on a running gateway.
#[derive(Clone)]
pub struct Reloader {
    tls: Arc<tls::TlsListeners>,
    shared: Arc<SharedLimits>,
    quota: Arc<TunnelQuota>,
    reloads: Arc<ReloadSignal>,
    shutdown: Arc<ShutdownSignal>,
    /// Counts reloads (`tether_reloads_total`).
    stats: Arc<GatewayStats>,
    /// The admin API's serverless pools and the configuration in force.
    book: pool_book::SharedBook,
}

/// How long a reload waits for every worker to run on the new configuration.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

impl Reloader {
    /// Puts `config` (validated, API pools included) in force: the TLS certificates it names,
    /// the limits the workers share, then every worker's own copy. Returns
    /// once every worker runs on it: true, or false if one had not within
    /// a few seconds (it will when its loop next turns) or the gateway is
    /// stopping. Every setting of `config` takes effect, so settings that
    /// need a restart must hold their running values (`config::reload`).
    fn put_in_force(&self, config: &Config) -> bool {
        self.stats.reloads_applied.fetch_add(1, Ordering::Relaxed);
        self.tls.reload(config);
        self.shared.apply(config);
        self.quota.set_max(config.runners.max_tunnels_per_identity);
        let applied = self.reloads.publish(&Arc::new(config.clone()));
        let until = Instant::now() + RELOAD_WAIT;
        let mut pending = self.reloads.workers();
        while pending > 0 && !self.shutdown.is_triggered() {
            let left = until.saturating_duration_since(Instant::now());
            match applied.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(_) => pending -= 1,
                Err(_) if left.is_zero() => break,
                Err(_) => {}
            }
        }
        pending == 0
    }

    /// A reload was asked for, but the file did not read or parse:
    /// nothing changed.
    pub fn refused(&self) {
        self.stats.reloads_invalid.fetch_add(1, Ordering::Relaxed);
    }
}

/// Triggers a gateway's shutdown.
#[derive(Clone)]
pub struct Stopper(Arc<ShutdownSignal>, Arc<Mutex<Vec<OwnedFd>>>);

impl Stopper {
    /// Stops accepting (the listeners' copies kept for an upgrade close
    /// too: the ports refuse connections from now on) and drains.
    pub fn stop(&self) {
        self.0.trigger();
        self.1.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Sizes the process's descriptor table for the open-file limit now.
/// The kernel doubles the table as descriptors are opened and, while it
/// does, blocks the thread in an RCU grace period: under a connection
/// flood each doubling stalled a worker for milliseconds. One descriptor
/// duplicated to the highest allowed number (then closed) makes the table
/// full-size once, at start (8 bytes per possible descriptor, in the
/// kernel; at most 2^20 of them).
fn grow_descriptor_table() {
    // SAFETY: getrlimit fills the struct; fcntl/close act on descriptors
    // this function owns (the duplicate), or fail harmlessly.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let highest = limit.rlim_cur.min(1 << 20).saturating_sub(1) as libc::c_int;
        let dup = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, highest);
        if dup >= 0 {
            libc::close(dup);
        }
    }
}

/// One thread per worker, pinned to a CPU, each given its listeners (the
/// admin listener goes to worker 0).
fn spawn_workers(common: &WorkerSeed, bound: Bound) -> Result<Vec<JoinHandle<()>>, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut admin = Some(bound.admin);
    let mut workers = Vec::with_capacity(common.worker_count);
    for (id, (client, runner)) in bound.client.into_iter().zip(bound.runner).enumerate() {
        let listeners = SeedListeners {
            client,
            runner,
            admin: admin.take(),
        };
        let seed = common.for_worker(id);
        let handle = std::thread::Builder::new()
            .name(format!("tether-w{id}"))
            .spawn(move || run_worker_thread(seed, listeners, id % cpus))
            .map_err(|e| format!("cannot spawn worker thread: {e}"))?;
        workers.push(handle);
    }
    Ok(workers)
}

fn run_worker_thread(seed: WorkerSeed, listeners: SeedListeners, cpu: usize) {
    let (id, driver) = (seed.id, seed.driver);
    if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
        tracing::warn!(worker = id, error = ?e, "could not pin worker to a CPU");
    }
    let ready = seed.ready.clone();
    let entries = seed.config.server.io_uring_entries;
    match driver::block_on(driver, entries, run::run(seed, listeners)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(worker = id, error = %e, "worker failed"),
        Err(e) => {
            let why = format!("worker {id}: cannot start the {driver} runtime: {e}");
            let _ = ready.send(Err(why));
        }
    }
}

/// Waits until every worker serves, or for the first that cannot.
fn wait_until_serving(
    ready: &mpsc::Receiver<Result<(), String>>,
    count: usize,
) -> Result<(), String> {
    for _ in 0..count {
        match ready.recv() {
            Ok(result) => result?,
            Err(_) => return Err("a worker exited during start-up".into()),
        }
    }
    Ok(())
}
