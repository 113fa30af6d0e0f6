//! The running gateway: worker threads, their listeners, and shutdown.

mod accept;
pub mod driver;
mod feed;
mod handoff;
mod handshake_slot;
pub mod listener;
pub mod notify;
mod run;
mod shutdown;
pub mod signals;
mod tls;
mod worker;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tracing::{error, info};

pub use driver::Driver;

use crate::config::{Config, MAX_WORKERS};
use crate::server::actors::SharedLimits;
use crate::server::conn::stats::WorkerStats;
use crate::server::runners::TunnelQuota;
use run::SeedListeners;
use shutdown::ShutdownSignal;
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
    tls: Arc<tls::TlsListeners>,
    admission: Arc<crate::server::conn::admission::Admission>,
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
}

impl Gateway {
    /// Binds every listener, starts the workers and returns once all of them
    /// are serving, or with the first error.
    pub fn start(config: Config) -> Result<Gateway, String> {
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
        let bound = Bound::bind(&config, count, driver)?;
        let local = |l: &std::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
        let (client_addr, runner_addr) = (local(&bound.client[0])?, local(&bound.runner[0])?);
        let admin_addr = local(&bound.admin)?;
        let tls = Arc::new(tls::TlsListeners::load(&config)?);
        let config = Arc::new(config);
        let shutdown = Arc::new(ShutdownSignal::new(count));
        let stats: Vec<Arc<WorkerStats>> = (0..count).map(|_| Arc::default()).collect();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let common = WorkerSeed {
            id: 0,
            config: config.clone(),
            worker_count: count,
            handoffs: Arc::new(handoff::HandoffQueues::new(count, HANDOFF_QUEUE)),
            shutdown: shutdown.clone(),
            stats: stats[0].clone(),
            all_stats: stats.clone().into(),
            feeds: (0..count).map(|_| Arc::default()).collect(),
            shared: Arc::new(SharedLimits::new(&config)),
            tunnel_quota: Arc::new(TunnelQuota::new(config.runners.max_tunnels_per_identity)),
            tls: tls.clone(),
            serving: Arc::default(),
            ready: ready_tx,
            driver,
        };
        let admission = common.shared.admission.clone();
        let serving = common.serving.clone();
        let workers = spawn_workers(&common, bound)?;
        drop(common);
        wait_until_serving(&ready_rx, count).inspect_err(|_| shutdown.trigger())?;
        serving.store(true, std::sync::atomic::Ordering::Relaxed);
        info!(client = %client_addr, runners = %runner_addr, admin = %admin_addr, workers = count, %driver, "tether is serving");
        if config.runners.token == crate::config::DEV_RUNNER_TOKEN {
            info!(
                token = crate::config::DEV_RUNNER_TOKEN,
                "runners authenticate with the development token (loopback only)"
            );
        }
        Ok(Gateway {
            client_addr,
            runner_addr,
            admin_addr,
            driver,
            shutdown,
            workers,
            stats,
            tls,
            admission,
        })
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
        self.tls.reload(config);
    }

    /// Per-worker counters, indexed by worker id.
    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// Stops accepting, drains, closes remaining clients with 1001, and
    /// returns when every worker has finished.
    pub fn shutdown(self) {
        self.shutdown.trigger();
        self.join();
    }

    /// Waits for the workers to finish (after someone triggered shutdown).
    pub fn join(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }

    /// A handle that reloads the TLS certificates from another thread.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.tls.clone())
    }

    /// A handle that can trigger shutdown from another thread (signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shutdown.clone())
    }
}

/// Reloads a gateway's TLS certificates (see [`Gateway::reload_tls`]).
#[derive(Clone)]
pub struct Reloader(Arc<tls::TlsListeners>);

impl Reloader {
    pub fn reload(&self, config: &Config) {
        self.0.reload(config);
    }
}

/// Triggers a gateway's shutdown.
#[derive(Clone)]
pub struct Stopper(Arc<ShutdownSignal>);

impl Stopper {
    pub fn stop(&self) {
        self.0.trigger();
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
