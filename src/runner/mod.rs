//! The Rust runner library: dial out to a gateway, keep one tunnel per
//! gateway worker, run actors as handlers, reconnect with backoff.
//!
//! ```no_run
//! use tether::runner::{Runner, RunnerOptions, BuiltinActors};
//! let runner = Runner::start(RunnerOptions::new("ws://127.0.0.1:8081", "tether-dev-token"), BuiltinActors);
//! // ... later
//! runner.stop();
//! ```

mod actor;
mod builtin;
pub mod http;
pub mod serverless;
mod slots;
mod state;
mod tunnel_client;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use actor::{Actor, ActorFactory, ConnId, ConnInfo, Ctx, Message, OpenDecision};
pub use builtin::{BuiltinActors, Chat, Counter, Echo, CHAT_HISTORY};
pub use http::{HttpRequest, RequestId, ResponseBody};
pub use state::{DirStore, Durability, MemoryStore, SaveRequest, StateStore};

#[derive(Clone)]
pub struct RunnerOptions {
    /// The gateway's runner listener, e.g. `ws://127.0.0.1:8081`, or
    /// `wss://gateway.example:8081` for TLS.
    pub gateway: String,
    /// For `wss://`: the CA (PEM file) the gateway's certificate must chain
    /// to. `None`: the system's trusted roots.
    pub tls_ca: Option<std::path::PathBuf>,
    pub token: String,
    pub pool: String,
    /// Unique per runner process; a new connection with the same key replaces the old one.
    pub key: String,
    /// Most actors this runner runs at once (across all its tunnels).
    pub capacity: u32,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// The longest a connect to the gateway, or one read or write of the
    /// TLS and WebSocket handshakes, may take (10 s).
    pub handshake_timeout: Duration,
    /// Where actors' durable state is kept (`None`: nowhere; an actor that
    /// moves or wakes starts from scratch). The reference runner uses a
    /// `DirStore` shared by the runners of one host.
    pub state: Option<Arc<dyn StateStore>>,
}

impl std::fmt::Debug for RunnerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerOptions")
            .field("gateway", &self.gateway)
            .field("pool", &self.pool)
            .field("key", &self.key)
            .field("capacity", &self.capacity)
            .field("state", &self.state.is_some())
            .finish_non_exhaustive()
    }
}

impl RunnerOptions {
    pub fn new(gateway: &str, token: &str) -> Self {
        RunnerOptions {
            gateway: gateway.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            pool: "default".into(),
            key: format!(
                "runner-{}-{}",
                std::process::id(),
                NEXT_KEY.fetch_add(1, Ordering::Relaxed)
            ),
            capacity: 10_000,
            max_backoff: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            state: None,
            tls_ca: None,
        }
    }
}

static NEXT_KEY: AtomicUsize = AtomicUsize::new(1);

/// State shared by a runner's tunnel threads.
pub(crate) struct Shared {
    pub options: RunnerOptions,
    pub factory: Box<dyn ActorFactory>,
    pub stopped: AtomicBool,
    /// Actors running now, across tunnels (checked against capacity).
    pub running: AtomicUsize,
    /// Tunnels connected (and welcomed) now.
    pub connected: AtomicUsize,
    /// Tunnel 0 has been welcomed: `spawned` is the gateway's worker count.
    pub welcomed: AtomicBool,
    /// How many tunnels exist (learned from the gateway's welcome).
    pub spawned: AtomicUsize,
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    /// The runner asked to leave: every tunnel sends `Drain`.
    pub draining: AtomicBool,
    /// Tunnels the gateway told that nothing runs there any more.
    pub drained: AtomicUsize,
    /// Die now: drop every tunnel without a close, an ack or a reply.
    pub killed: AtomicBool,
}

impl Shared {
    pub(crate) fn new(options: RunnerOptions, factory: Box<dyn ActorFactory>) -> Shared {
        Shared {
            options,
            factory,
            stopped: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            welcomed: AtomicBool::new(false),
            spawned: AtomicUsize::new(1),
            threads: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            drained: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
        }
    }
}

/// A running runner: threads, one per tunnel, until `stop`.
pub struct Runner {
    shared: Arc<Shared>,
}

impl Runner {
    pub fn start(options: RunnerOptions, factory: impl ActorFactory) -> Runner {
        let shared = Arc::new(Shared::new(options, Box::new(factory)));
        tunnel_client::spawn_tunnel(&shared, 0);
        Runner { shared }
    }

    /// Tunnels currently connected.
    pub fn connected_tunnels(&self) -> usize {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Actors currently running on this runner.
    pub fn running_actors(&self) -> usize {
        self.shared.running.load(Ordering::Acquire)
    }

    /// Blocks until every tunnel of the gateway is connected, or `timeout`.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            let spawned = self.shared.spawned.load(Ordering::Acquire);
            if self.shared.welcomed.load(Ordering::Acquire) && self.connected_tunnels() >= spawned {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Asks the gateway to move this runner's actors elsewhere (their clients
    /// stay connected) and waits until it says nothing runs here any more,
    /// or `timeout`. Returns whether the drain completed; `stop` next.
    pub fn drain(&self, timeout: Duration) -> bool {
        self.shared.draining.store(true, Ordering::Release);
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if self.is_drained() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// The gateway has drained every tunnel (asked by the runner or by an
    /// operator): nothing runs here and nothing will be placed here.
    pub fn is_drained(&self) -> bool {
        let spawned = self.shared.spawned.load(Ordering::Acquire);
        self.shared.welcomed.load(Ordering::Acquire)
            && self.shared.drained.load(Ordering::Acquire) >= spawned
    }

    /// Dies like a killed process: every tunnel is dropped at once, with no
    /// close frame, and nothing handled since the last batch is answered.
    pub fn kill(self) {
        self.kill_switch().kill();
        self.stop();
    }

    /// A handle that kills this runner from anywhere (an actor, say).
    pub fn kill_switch(&self) -> KillSwitch {
        KillSwitch(self.shared.clone())
    }

    /// Closes every tunnel and waits for the threads to end.
    pub fn stop(self) {
        self.shared.stopped.store(true, Ordering::Release);
        loop {
            let handle = self.shared.threads.lock().ok().and_then(|mut t| t.pop());
            match handle {
                Some(h) => {
                    let _ = h.join();
                }
                None => break,
            }
        }
    }
}

/// Kills a runner (see `Runner::kill`).
#[derive(Clone)]
pub struct KillSwitch(Arc<Shared>);

impl KillSwitch {
    pub fn kill(&self) {
        self.0.killed.store(true, Ordering::Release);
        self.0.stopped.store(true, Ordering::Release);
    }
}
