//! Every serverless pool's state, shared by all workers: runners are
//! (their tunnels reach every worker), so the runners starting and live,
//! the backoff and the last error are one per pool, under one mutex. It
//! is taken on demand (an actor no runner could take), when a runner
//! registers or a start ends, and by one worker's sweep every
//! `TICK` — never per message.
//!
//! A started runner's `Lifetime` is shared by its start task (which waits
//! for its registration) and its tunnels (whose worker drains them once
//! it retires): two atomics, read by each worker's sweep.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use atomic_waker::AtomicWaker;

use super::core::{Limits, PoolCore, StartOrder};
use crate::config::{Config, FunctionUrl, ServerlessPool};
use crate::server::tunnels::load::RunnerLoad;

/// How often the pools' timers (retirements, overdue starts, starts ahead
/// of a retirement) are looked at, by whichever worker's sweep comes first.
const TICK: Duration = Duration::from_millis(100);

/// (namespace, pool)
pub(crate) type PoolKey = (String, String);

/// One started runner, from its `/start` to the end of that request.
pub(crate) struct Lifetime {
    pub pool: PoolKey,
    pub key: String,
    registered: AtomicBool,
    retire: AtomicBool,
    waker: AtomicWaker,
    /// Its actors across workers (set when it registers; `None` before).
    load: Mutex<Option<Weak<RunnerLoad>>>,
}

impl Lifetime {
    fn new(pool: PoolKey, key: String) -> Lifetime {
        Lifetime {
            pool,
            key,
            registered: AtomicBool::new(false),
            retire: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            load: Mutex::new(None),
        }
    }

    /// Whether its workers must drain it (lifespan up, or idle).
    pub fn is_retiring(&self) -> bool {
        self.retire.load(Ordering::Relaxed)
    }

    /// Resolves once its runner registered.
    pub async fn registered(&self) {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.registered.load(Ordering::Acquire) {
                true => std::task::Poll::Ready(()),
                false => std::task::Poll::Pending,
            }
        })
        .await
    }

    /// Its actors, or `None` once every tunnel of it is gone (a runner
    /// not yet attached to a load counts as connected, with none).
    pub(crate) fn placed(&self) -> Option<u32> {
        let load = self.load.lock().unwrap_or_else(|e| e.into_inner());
        match &*load {
            None => Some(0),
            Some(weak) => weak.upgrade().map(|l| l.placed()),
        }
    }
}

/// A start to make: what the start task needs, whole.
pub(crate) struct StartJob {
    pub lifetime: Arc<Lifetime>,
    pub order: StartOrder,
    pub url: FunctionUrl,
    pub pool: ServerlessPool,
    /// The gateway's `x-tether-*` headers.
    pub headers: Vec<(&'static str, String)>,
}

/// How a start ended.
pub(crate) enum Outcome {
    /// The runner registered, and its request has ended since.
    Ended,
    /// It never served: cause (`core::FAILURE_CAUSES`) and reason.
    Failed(usize, String),
}

struct Entry {
    core: PoolCore,
    pool: ServerlessPool,
    /// The token and key prefix its function gets; `Err`: none usable.
    token: Result<(String, String), String>,
    lifetimes: HashMap<String, Arc<Lifetime>>,
}

/// What `/metrics` shows of a pool.
#[derive(Debug)]
pub(crate) struct PoolView {
    pub pool: PoolKey,
    pub starting: u32,
    pub live: u32,
    pub retiring: u32,
    pub waiting: u32,
    pub counters: super::core::Counters,
}

pub(crate) struct Pools {
    inner: Mutex<HashMap<PoolKey, Entry>>,
    workers: usize,
    /// Started runners whose request has not ended, in every pool.
    active: AtomicUsize,
    serial: AtomicU64,
    /// When a sweep last ticked the pools (ms since `epoch`).
    last_tick: AtomicU64,
    epoch: Instant,
    /// The runner listener a function dials when its pool names none.
    gateway_url: Mutex<String>,
    /// Some pool keeps runners with no demand (`min_idle_runners`).
    keep_idle: AtomicBool,
}

impl Pools {
    pub fn new(config: &Config, workers: usize) -> Pools {
        let pools = Pools {
            inner: Mutex::new(HashMap::new()),
            workers,
            active: AtomicUsize::new(0),
            serial: AtomicU64::new(0),
            last_tick: AtomicU64::new(0),
            epoch: Instant::now(),
            gateway_url: Mutex::new(String::new()),
            keep_idle: AtomicBool::new(false),
        };
        pools.configure(config);
        pools
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The runner listener as bound (its port may have been 0 in the file):
    /// `ws://` or `wss://` (with `tls`) to it, for pools with no gateway_url.
    pub fn set_runner_listener(&self, addr: SocketAddr, tls: bool) {
        let host = match addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let scheme = if tls { "wss" } else { "ws" };
        *self.gateway_url.lock().unwrap_or_else(|e| e.into_inner()) =
            format!("{scheme}://{host}:{}", addr.port());
    }

    /// Puts a configuration's pools in force (start-up, reload): new pools
    /// appear, changed ones take their new settings for what comes next;
    /// a pool no longer configured is marked removed: it starts nothing
    /// more, its live runners are retired (drained), and it is forgotten
    /// once they are gone (`tick`).
    pub fn configure(&self, config: &Config) {
        let keep_idle = config.serverless.iter().any(|p| p.min_idle_runners > 0);
        self.keep_idle.store(keep_idle, Ordering::Relaxed);
        let mut inner = self.lock();
        for (key, entry) in inner.iter_mut() {
            let kept = config
                .serverless
                .iter()
                .any(|p| p.namespace == key.0 && p.pool == key.1);
            if !kept {
                tracing::info!(pool = %format!("{}/{}", key.0, key.1), "serverless pool removed: retiring its runners");
                entry.core.remove();
            }
        }
        for pool in &config.serverless {
            let key = (pool.namespace.clone(), pool.pool.clone());
            let token = config.pool_runner(pool).map(|r| (r.token, r.key_prefix));
            let limits = Limits::of(pool);
            let entry = inner.entry(key).or_insert_with(|| Entry {
                core: PoolCore::new(limits, self.workers),
                pool: pool.clone(),
                token: token.clone(),
                lifetimes: HashMap::new(),
            });
            entry.core.limits = limits;
            entry.core.restore();
            entry.pool = pool.clone();
            entry.token = token;
        }
    }

    /// Whether some pool keeps `min_idle_runners` (workers tick for it).
    pub fn keeps_idle_runners(&self) -> bool {
        self.keep_idle.load(Ordering::Relaxed)
    }

    /// Started runners whose request has not ended (workers tick while any).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Worker `worker` has `waiting` actors of `pool` that no runner could
    /// take: the starts that needs, to be made by the caller.
    pub fn demand(
        &self,
        worker: usize,
        pool: &PoolKey,
        waiting: u32,
        now: Instant,
    ) -> Vec<StartJob> {
        let mut inner = self.lock();
        let Some(entry) = inner.get_mut(pool) else {
            return Vec::new();
        };
        entry.core.report_waiting(worker, waiting);
        self.plan(pool, entry, now)
    }

    /// Why actors waiting on `pool` should give up now (a start failed
    /// and the pool backs off), if they should.
    pub fn failing(&self, pool: &PoolKey, now: Instant) -> Option<String> {
        let inner = self.lock();
        let entry = inner.get(pool)?;
        if let Err(e) = &entry.token {
            return Some(format!("serverless pool {}/{}: {e}", pool.0, pool.1));
        }
        entry.core.failing(now).map(str::to_owned)
    }

    fn plan(&self, pool: &PoolKey, entry: &mut Entry, now: Instant) -> Vec<StartJob> {
        let Ok((token, prefix)) = entry.token.clone() else {
            return Vec::new();
        };
        // Checked with the configuration; before the plan, which records
        // its starts as made.
        let Ok(url) = FunctionUrl::parse(&entry.pool.url) else {
            return Vec::new();
        };
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let serial = &self.serial;
        let name = &pool.1;
        let orders = entry.core.plan(now, || {
            let n = serial.fetch_add(1, Ordering::Relaxed);
            format!("{prefix}{name}-{stamp:x}-{n}")
        });
        if orders.is_empty() {
            return Vec::new();
        }
        let gateway = match entry.pool.gateway_url.as_str() {
            "" => self
                .gateway_url
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            url => url.to_owned(),
        };
        orders
            .into_iter()
            .map(|order| {
                let lifetime = Arc::new(Lifetime::new(pool.clone(), order.key.clone()));
                entry.lifetimes.insert(order.key.clone(), lifetime.clone());
                self.active.fetch_add(1, Ordering::Relaxed);
                use crate::http::serverless::headers as h;
                StartJob {
                    headers: vec![
                        (h::GATEWAY, gateway.clone()),
                        (h::TOKEN, token.clone()),
                        (h::POOL, pool.1.clone()),
                        (h::RUNNER_KEY, order.key.clone()),
                    ],
                    lifetime,
                    order,
                    url: url.clone(),
                    pool: entry.pool.clone(),
                }
            })
            .collect()
    }

    /// A runner's hello named `key` in `pool`: if it is a start of ours,
    /// its lifetime and the slots it may take. `None` for a pool the
    /// gateway starts runners for is a tunnel to refuse (counted).
    pub fn registered(
        &self,
        pool: &PoolKey,
        key: &str,
        now: Instant,
    ) -> Option<(Arc<Lifetime>, u32)> {
        let mut inner = self.lock();
        let entry = inner.get_mut(pool)?;
        let lifetime = entry.lifetimes.get(key).cloned();
        let Some(lifetime) = lifetime.filter(|_| entry.core.registered(key, now)) else {
            entry.core.counters.refused += 1;
            return None;
        };
        lifetime.registered.store(true, Ordering::Release);
        lifetime.waker.wake();
        Some((lifetime, entry.core.limits.slots))
    }

    /// Its tunnel's load: the pool counts the runner's actors with it.
    pub fn attach_load(&self, lifetime: &Lifetime, load: &Arc<RunnerLoad>) {
        *lifetime.load.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(load));
    }

    /// A start task ended with `outcome`.
    pub fn finished(&self, lifetime: &Lifetime, outcome: Outcome, now: Instant) {
        let mut inner = self.lock();
        let Some(entry) = inner.get_mut(&lifetime.pool) else {
            return;
        };
        if entry.lifetimes.remove(&lifetime.key).is_none() {
            return;
        }
        self.active.fetch_sub(1, Ordering::Relaxed);
        // Whatever happened, its tunnels must not take actors any more.
        lifetime.retire.store(true, Ordering::Relaxed);
        match outcome {
            Outcome::Ended => entry.core.ended(&lifetime.key),
            Outcome::Failed(cause, why) => {
                let reason = format!(
                    "serverless pool {}/{}: {why}",
                    lifetime.pool.0, lifetime.pool.1
                );
                tracing::warn!(runner = %lifetime.key, %reason, "serverless start failed");
                entry.core.start_failed(&lifetime.key, cause, reason, now);
            }
        }
    }

    /// The pools' timers, at most once per `TICK` across workers: runners
    /// retired (their `Lifetime` says so to every worker), starts for
    /// replacements and `min_idle_runners`, to be made by the caller.
    pub fn tick(&self, now: Instant) -> Vec<StartJob> {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let last = self.last_tick.load(Ordering::Relaxed);
        if ms < last + TICK.as_millis() as u64
            || self
                .last_tick
                .compare_exchange(last, ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Vec::new();
        }
        let mut inner = self.lock();
        let keys: Vec<PoolKey> = inner.keys().cloned().collect();
        let mut jobs = Vec::new();
        for key in keys {
            let Some(entry) = inner.get_mut(&key) else {
                continue;
            };
            for r in &mut entry.core.runners {
                if let Some(l) = entry.lifetimes.get(&r.key) {
                    let placed = l.placed();
                    r.placed = placed.unwrap_or(0);
                    r.connected = placed.is_some();
                }
            }
            for (runner, why) in entry.core.retirements(now) {
                if let Some(l) = entry.lifetimes.get(&runner) {
                    tracing::info!(%runner, ?why, "serverless runner retired: draining it");
                    l.retire.store(true, Ordering::Relaxed);
                }
            }
            if entry.core.is_gone() && entry.lifetimes.is_empty() {
                inner.remove(&key);
                continue;
            }
            jobs.extend(self.plan(&key, entry, now));
        }
        jobs
    }

    /// Every pool, for `/metrics` and status.
    pub fn views(&self) -> Vec<PoolView> {
        let inner = self.lock();
        let mut views: Vec<PoolView> = inner
            .iter()
            .map(|(key, e)| {
                let (starting, live, retiring) = e.core.counts();
                PoolView {
                    pool: key.clone(),
                    starting,
                    live,
                    retiring,
                    waiting: e.core.waiting(),
                    counters: e.core.counters.clone(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.pool.cmp(&b.pool));
        views
    }
}
