//! A worker's run loop: register its listeners, start its tasks (accept
//! loops, hand-offs, the parker, the timer sweep), and on shutdown stop
//! accepting, drain and end.

use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use monoio::net::TcpListener;
use tracing::info;

use super::accept::{accept_loop, receive_handoffs};
use super::handoff::Listener;
use super::upgrade::hand_over::hand_over;
use super::upgrade::take_over::take_over;
use super::worker::{Worker, WorkerSeed};
use crate::server::conn::wakeups::sweep_tick;

/// The listening sockets a worker is given (the admin one goes to one worker).
pub(crate) struct SeedListeners {
    pub client: std::net::TcpListener,
    pub runner: std::net::TcpListener,
    pub admin: Option<std::net::TcpListener>,
}

/// The listeners of one worker, registered with its runtime.
struct Listeners {
    client: TcpListener,
    runner: TcpListener,
    admin: Option<TcpListener>,
}

impl Listeners {
    fn register(seed: SeedListeners) -> io::Result<Listeners> {
        Ok(Listeners {
            client: TcpListener::from_std(seed.client)?,
            runner: TcpListener::from_std(seed.runner)?,
            admin: seed.admin.map(TcpListener::from_std).transpose()?,
        })
    }
}

/// The worker's whole life; returns when shutdown has completed.
pub(crate) async fn run(seed: WorkerSeed, listeners: SeedListeners) -> io::Result<()> {
    let listeners = match Listeners::register(listeners) {
        Ok(l) => l,
        Err(e) => {
            let why = format!("worker {}: cannot register listeners: {e}", seed.id);
            let _ = seed.ready.send(Err(why));
            return Err(e);
        }
    };
    let worker = Rc::new(Worker::assemble(&seed));
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    worker.stats.thread_id.store(tid, Ordering::Relaxed);
    if let Some(directory) = seed.directory.clone() {
        super::cluster::join(&worker, directory, &seed.config);
    }
    if let Some(parker) = &worker.edge.parker {
        parker.clone().start(worker.edge.clone());
    }
    let handoffs = monoio::spawn(receive_handoffs(worker.clone()));
    let sweeper = monoio::spawn(sweep_timers(worker.clone()));
    let reloads = monoio::spawn(super::reload::follow_reloads(worker.clone()));
    monoio::spawn(super::feed::publish_snapshots(worker.clone()));
    if let Some(watchdog) = super::notify::watchdog_interval() {
        let period = super::notify::heartbeat_period(watchdog);
        monoio::spawn(heartbeat(worker.clone(), period));
    }
    // Ready once everything the worker holds exists (its parking ring and
    // eventfd too), not merely once its listeners are registered.
    let _ = seed.ready.send(Ok(()));
    // Runners may come at once (during an upgrade, they reconnect while
    // the old process still hands its connections over).
    let runners = accept_loop(worker.clone(), listeners.runner, Listener::Runner);
    let runners = monoio::spawn(runners);
    if let Some(inbox) = seed.inherit.clone() {
        // An upgrade: every connection the old process hands over is in
        // before a client or admin request is accepted (a new client of an
        // actor must find it with its connections).
        take_over(&worker, inbox).await;
    }
    if let Some(admin) = listeners.admin {
        monoio::spawn(accept_loop(worker.clone(), admin, Listener::Admin));
    }
    let clients = accept_loop(worker.clone(), listeners.client, Listener::Client);
    let clients = monoio::spawn(clients);
    info!(worker = seed.id, driver = %seed.driver, "worker serving");
    let upgrading = monoio::select! {
        _ = seed.shutdown.wait(worker.id) => false,
        _ = seed.upgrade.wait(worker.id) => true,
    };
    // The listeners close when their loops return: no new connections.
    worker.no_accept.set();
    clients.await;
    runners.await;
    if upgrading {
        hand_over(&worker, &seed.exports).await;
    }
    worker.stopping.set();
    handoffs.await;
    worker.drain().await;
    worker.finished.set();
    sweeper.await;
    reloads.await;
    Ok(())
}

/// The worker's only periodic timer: wakes connections whose deadline passed.
/// Counts turns of the worker's loop for the systemd watchdog (only when
/// systemd watches: otherwise an idle worker never wakes). A worker stuck
/// in a blocking call or a busy loop stops counting.
async fn heartbeat(worker: Rc<Worker>, period: std::time::Duration) {
    loop {
        monoio::select! {
            _ = worker.finished.wait() => return,
            _ = monoio::time::sleep(period) => {
                worker.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The sweep's tick for the session limits in force (a reload may change them).
fn tick_of(worker: &Worker) -> std::time::Duration {
    let (c, r) = (worker.edge.limits.get(), worker.runners.limits.get());
    sweep_tick(&[
        c.keepalive.interval,
        c.keepalive.timeout,
        c.close_timeout,
        c.send_timeout,
        r.keepalive.interval,
        r.keepalive.timeout,
        r.close_timeout,
        r.send_timeout,
    ])
}

async fn sweep_timers(worker: Rc<Worker>) {
    let wakeups = &worker.env.wakeups;
    let mut last = Instant::now();
    loop {
        let tick = tick_of(&worker);
        // Sleep until something is due (at most one sweep per tick); while
        // actors run, their idle and start timers need a sweep every tick,
        // and while the buffer pool holds more than it keeps, its trim.
        let ticking = worker.actors.needs_ticks() || worker.env.pool.has_surplus();
        let limit = ticking.then_some(last + tick);
        monoio::select! {
            _ = worker.finished.wait() => return,
            _ = wakeups.sleep_until_due(last + tick, limit) => {
                let now = Instant::now();
                last = now;
                worker.env.registry.sweep(now);
                worker.actors.sweep(now);
                worker.env.pool.trim(now);
            }
        }
    }
}
