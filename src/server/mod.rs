//! The running gateway: worker threads, their listeners, and shutdown.

mod actor;
mod admin;
mod admin_route;
mod backoff;
mod client;
pub mod driver;
mod handoff;
mod io;
pub mod listener;
mod mux;
mod outbox;
mod outstanding;
mod parker;
mod pool;
mod registry;
mod session;
mod shutdown;
pub mod signals;
mod slot;
mod stopping;
mod tunnel;
mod worker;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tracing::{error, info};

pub use driver::Driver;
pub use worker::WorkerStats;

use crate::config::Config;
use shutdown::ShutdownSignal;
use worker::{Worker, WorkerSeed};

/// A started gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    pub client_addr: SocketAddr,
    pub runner_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub driver: Driver,
    shutdown: Arc<ShutdownSignal>,
    workers: Vec<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
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
        let nonblocking = driver == Driver::Epoll;
        let client = listener::bind_shared(config.client.listen, count, nonblocking, "client")
            .map_err(|e| e.to_string())?;
        let runner = listener::bind_shared(config.runners.listen, count, nonblocking, "runner")
            .map_err(|e| e.to_string())?;
        let admin = listener::bind_exclusive(config.admin.listen, nonblocking, "admin")
            .map_err(|e| e.to_string())?;
        let client_addr = client[0].local_addr().map_err(|e| e.to_string())?;
        let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
        let runner_addr = runner[0].local_addr().map_err(|e| e.to_string())?;
        let handoffs = Arc::new(handoff::HandoffQueues::new(count, 4096));

        let config = Arc::new(config);
        let shutdown = Arc::new(ShutdownSignal::new(count));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let mut admin = Some(admin);
        let mut workers = Vec::with_capacity(count);
        let stats: Vec<Arc<WorkerStats>> = (0..count).map(|_| Arc::default()).collect();
        let all_stats: Arc<[Arc<WorkerStats>]> = stats.clone().into();
        for (id, (client_listener, runner_listener)) in client.into_iter().zip(runner).enumerate() {
            let worker_stats = stats[id].clone();
            let seed = WorkerSeed {
                id,
                config: config.clone(),
                worker_count: count,
                client_listener,
                runner_listener,
                admin_listener: admin.take(),
                handoffs: handoffs.clone(),
                shutdown: shutdown.clone(),
                stats: worker_stats,
                all_stats: all_stats.clone(),
                ready: ready_tx.clone(),
                driver,
            };
            let entries = config.server.io_uring_entries;
            let handle = std::thread::Builder::new()
                .name(format!("tether-w{id}"))
                .spawn(move || {
                    if let Err(e) = monoio::utils::bind_to_cpu_set([id % cpus]) {
                        tracing::warn!(worker = id, error = ?e, "could not pin worker to a CPU");
                    }
                    let ready = seed.ready.clone();
                    match driver::block_on(driver, entries, Worker::run(seed)) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => error!(worker = id, error = %e, "worker failed"),
                        Err(e) => {
                            let _ = ready.send(Err(format!(
                                "worker {id}: cannot start the {driver} runtime: {e}"
                            )));
                        }
                    }
                })
                .map_err(|e| format!("cannot spawn worker thread: {e}"))?;
            workers.push(handle);
        }
        drop(ready_tx);
        for _ in 0..count {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    shutdown.trigger();
                    return Err(e);
                }
                Err(_) => {
                    shutdown.trigger();
                    return Err("a worker exited during start-up".into());
                }
            }
        }
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
        })
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

    /// A handle that can trigger shutdown from another thread (signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shutdown.clone())
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
