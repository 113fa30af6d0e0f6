//! One worker: a thread with its own monoio runtime, listeners, connections,
//! tunnels, actors and buffer pool. Nothing here is shared with other workers
//! except the read-only config, the shutdown signal, the hand-off queues and
//! the stats counters.

use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpListener;
use tracing::{info, warn};

use super::client::{serve_handoff, serve_http};
use super::handoff::{HandoffQueues, Listener};
use super::mux::Mux;
use super::parker::Parker;
use super::pool::BufferPool;
use super::registry::{sleep_until_due, sweep_tick, Registry};
use super::shutdown::ShutdownSignal;
use super::stopping::Stopping;
use crate::config::Config;
use crate::ws::keepalive::KeepalivePolicy;
use crate::ws::CloseCode;

/// Counters a worker publishes for tests, benchmarks and (later) metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Connections accepted on this worker's client listener.
    pub accepted: AtomicU64,
    /// The OS thread id the worker runs on (gettid).
    pub thread_id: AtomicU64,
    /// Hibernated connections parked now (no task, no buffer, no timer).
    pub parked: AtomicU64,
    /// Actors moved off a runner on purpose (drain, operator).
    pub migrations: AtomicU64,
    /// Actors restarted elsewhere because their runner failed them.
    pub failovers: AtomicU64,
    /// Restarts of actors that were crash-looping at the time.
    pub crash_loop_restarts: AtomicU64,
}

pub(crate) struct Worker {
    pub id: usize,
    pub worker_count: usize,
    pub config: Arc<Config>,
    pub pool: BufferPool,
    pub registry: Rc<Registry>,
    pub mux: Mux,
    pub handoffs: Arc<HandoffQueues>,
    pub stats: Arc<WorkerStats>,
    /// Every worker's counters (for the admin API's /metrics).
    pub all_stats: Arc<[Arc<WorkerStats>]>,
    pub keepalive: KeepalivePolicy,
    /// Holds hibernated connections without tasks (None if io_uring is unavailable).
    pub parker: Option<Rc<Parker>>,
    pub stopping: Stopping,
    /// Set when the worker is done: the sweep ends.
    pub finished: Stopping,
}

/// What a worker thread is handed when it starts.
pub(crate) struct WorkerSeed {
    pub id: usize,
    pub worker_count: usize,
    pub config: Arc<Config>,
    pub client_listener: std::net::TcpListener,
    pub runner_listener: std::net::TcpListener,
    pub admin_listener: Option<std::net::TcpListener>,
    pub handoffs: Arc<HandoffQueues>,
    pub shutdown: Arc<ShutdownSignal>,
    pub stats: Arc<WorkerStats>,
    /// Every worker's counters (for the admin API's /metrics).
    pub all_stats: Arc<[Arc<WorkerStats>]>,
    pub driver: super::Driver,
    /// Told once the worker serves, or why it cannot.
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
}

impl Worker {
    /// The worker's whole life; returns when shutdown has completed.
    pub async fn run(seed: WorkerSeed) -> io::Result<()> {
        let listeners = (|| {
            Ok::<_, io::Error>((
                TcpListener::from_std(seed.client_listener)?,
                TcpListener::from_std(seed.runner_listener)?,
                seed.admin_listener.map(TcpListener::from_std).transpose()?,
            ))
        })();
        let (client_listener, runner_listener, admin_listener) = match listeners {
            Ok(l) => l,
            Err(e) => {
                let _ = seed.ready.send(Err(format!(
                    "worker {}: cannot register listeners: {e}",
                    seed.id
                )));
                return Err(e);
            }
        };
        let _ = seed.ready.send(Ok(()));
        info!(worker = seed.id, driver = %seed.driver, "worker serving");
        let cfg = &seed.config;
        let worker = Rc::new(Worker {
            id: seed.id,
            worker_count: seed.worker_count,
            pool: BufferPool::new(cfg.client.read_buffer_bytes, cfg.client.buffer_pool_buffers),
            registry: Rc::new(Registry::default()),
            mux: Mux::new(seed.id, seed.config.clone(), seed.stats.clone()),
            handoffs: seed.handoffs,
            stats: seed.stats.clone(),
            all_stats: seed.all_stats.clone(),
            keepalive: KeepalivePolicy {
                interval: cfg.client.ping_interval,
                timeout: cfg.client.ping_timeout,
            },
            parker: match Parker::new(1024, seed.stats.clone()) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(worker = seed.id, error = %e, "no io_uring for parking: hibernated sockets keep their tasks");
                    None
                }
            },
            stopping: Stopping::default(),
            finished: Stopping::default(),
            config: seed.config,
        });
        if let Some(p) = &worker.parker {
            super::parker::install(p);
            monoio::spawn(p.clone().run(worker.clone()));
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u64;
        worker.stats.thread_id.store(tid, Ordering::Relaxed);
        if let Some(admin) = admin_listener {
            monoio::spawn(accept_loop(worker.clone(), admin, Listener::Admin));
        }
        let clients = monoio::spawn(accept_loop(
            worker.clone(),
            client_listener,
            Listener::Client,
        ));
        let runners = monoio::spawn(accept_loop(
            worker.clone(),
            runner_listener,
            Listener::Runner,
        ));
        let handoffs = monoio::spawn(receive_handoffs(worker.clone()));
        let sweeper = monoio::spawn(sweep_timers(worker.clone()));
        seed.shutdown.wait(worker.id).await;
        worker.stopping.set();
        // The listeners close when their loops return: no new connections.
        clients.await;
        runners.await;
        handoffs.await;
        worker.drain().await;
        worker.finished.set();
        sweeper.await;
        Ok(())
    }

    /// After accepting stopped: give clients `shutdown_drain` to leave, then
    /// close the rest with 1001 and wait (bounded) for their close handshakes.
    async fn drain(&self) {
        let drain = self.config.server.shutdown_drain;
        if self.registry.len() > 0 {
            info!(
                worker = self.id,
                connections = self.registry.len(),
                ?drain,
                "draining"
            );
        }
        self.wait_until_empty(drain).await;
        self.registry
            .close_all(CloseCode::GOING_AWAY, "server shutting down");
        let c = &self.config.client;
        self.wait_until_empty(c.close_timeout + c.send_timeout.min(Duration::from_secs(1)))
            .await;
    }

    async fn wait_until_empty(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.registry.len() > 0 && std::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The worker's only periodic timer: wakes connections whose deadline passed.
async fn sweep_timers(worker: Rc<Worker>) {
    let c = &worker.config.client;
    let tick = sweep_tick(&[
        c.ping_interval,
        c.ping_timeout,
        c.close_timeout,
        c.send_timeout,
    ]);
    let mut last = std::time::Instant::now();
    loop {
        // Sleep until something is due (at most one sweep per tick); while
        // actors run, their idle and start timers need a sweep every tick.
        let limit = worker.mux.needs_ticks().then_some(last + tick);
        monoio::select! {
            _ = worker.finished.wait() => return,
            _ = sleep_until_due(last + tick, limit) => {
                let now = std::time::Instant::now();
                last = now;
                worker.registry.sweep(now);
                worker.mux.sweep(now);
            }
        }
    }
}

/// Serves connections other workers accepted for this one.
async fn receive_handoffs(worker: Rc<Worker>) {
    loop {
        let handoff = monoio::select! {
            _ = worker.stopping.wait() => return,
            h = worker.handoffs.receive(worker.id) => h,
        };
        monoio::spawn(serve_handoff(worker.clone(), handoff));
    }
}

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, kind: Listener) {
    loop {
        // Wait for readiness rather than racing accept() against shutdown:
        // an abandoned in-flight accept can leak the socket it accepted.
        monoio::select! {
            _ = worker.stopping.wait() => return,
            ready = listener.readable(false) => {
                if let Err(e) = ready {
                    warn!(worker = worker.id, ?kind, error = %e, "listener failed");
                    return;
                }
            }
        }
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                match kind {
                    Listener::Client => {
                        worker.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        monoio::spawn(serve_http(worker.clone(), stream, kind));
                    }
                    Listener::Runner | Listener::Admin => {
                        monoio::spawn(serve_http(worker.clone(), stream, kind));
                    }
                }
            }
            Err(e) if is_out_of_fds(&e) => {
                // Spinning on EMFILE burns the core; back off and let connections close.
                warn!(worker = worker.id, error = %e, "accept failed: out of file descriptors");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => warn!(worker = worker.id, error = %e, "accept failed"),
        }
    }
}

fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
