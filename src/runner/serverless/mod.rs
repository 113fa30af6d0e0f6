//! The runner library on a serverless function (issue 15): a function
//! cannot accept a tunnel and dies on a timer, so the gateway calls it.
//!
//! - `GET /metadata` answers what this runner is ([`ServerlessHandler::metadata_json`]):
//!   the gateway refuses a pool whose function speaks another protocol.
//! - `GET /start` ([`ServerlessHandler::start`]) starts a runner that dials
//!   the gateway named in the request's headers and takes actors until the
//!   gateway drains it; the response is a stream of Server-Sent Events
//!   keepalive comments ([`ServerlessRun`]) so that the platform does not
//!   cut the request as idle, and it ends when the runner does.
//!
//! Both are plain functions over a request's headers, to mount in any HTTP
//! server; [`http::serve`] is a small one (`tether runner --serve-http`).
//!
//! `/start` makes the function dial out and serve actors from its state
//! store: whoever may call it chooses where. So a handler dials only the
//! gateways it allows ([`ServerlessHandler::allow_gateway`]; 403
//! otherwise), and `/start` belongs behind the platform's own
//! authentication (a secret header the pool sends), never open to the
//! public.

pub mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ActorFactory, Runner, RunnerOptions, StateStore};
use crate::http::RequestHead;

pub use crate::http::serverless::{
    headers, PROTOCOL as SERVERLESS_PROTOCOL, VERSION as SERVERLESS_VERSION,
};

/// The longest header value `/start` takes (a URL, a token, a key).
const MAX_HEADER_VALUE: usize = 1024;

/// Serves `/metadata` and `/start` for one kind of function.
#[derive(Clone)]
pub struct ServerlessHandler {
    factory: Arc<dyn ActorFactory>,
    state: Option<Arc<dyn StateStore>>,
    capacity: u32,
    keepalive: Duration,
    /// Gateway URLs `/start` may dial (exactly); empty: any.
    allowed_gateways: Vec<String>,
    tls_ca: Option<std::path::PathBuf>,
    /// The platform's kill, simulated: a started runner dies this long
    /// after its `/start` (tests and benchmarks of the gateway's hand-over).
    lifespan: Option<Duration>,
}

impl ServerlessHandler {
    /// Actors from `factory`; their state in `state` (shared by the
    /// function's instances, or `None`).
    pub fn new(factory: Arc<dyn ActorFactory>, state: Option<Arc<dyn StateStore>>) -> Self {
        ServerlessHandler {
            factory,
            state,
            capacity: 10_000,
            keepalive: Duration::from_secs(15),
            allowed_gateways: Vec::new(),
            tls_ca: None,
            lifespan: None,
        }
    }

    /// Kills each started runner `lifespan` after its `/start`, as a
    /// platform kills a function at its limit: its tunnels drop without a
    /// word and the response ends without `event: end`. For testing a
    /// gateway's lifespan hand-over; a real platform does this itself.
    pub fn lifespan(mut self, lifespan: Duration) -> Self {
        self.lifespan = Some(lifespan);
        self
    }

    /// How often `/start`'s stream says it is alive (15 s by default;
    /// platforms cut idle responses after 30–60 s).
    pub fn keepalive(mut self, every: Duration) -> Self {
        self.keepalive = every;
        self
    }

    /// Lets `/start` dial this gateway URL; once one is allowed, every
    /// other is refused with 403.
    pub fn allow_gateway(mut self, url: &str) -> Self {
        let url = url.trim_end_matches('/').to_owned();
        self.allowed_gateways.push(url);
        self
    }

    /// For `wss://` gateways: the CA (PEM file) their certificates chain to.
    pub fn tls_ca(mut self, ca: Option<std::path::PathBuf>) -> Self {
        self.tls_ca = ca;
        self
    }

    /// Most actors one started runner takes.
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// `/metadata`'s JSON body.
    pub fn metadata_json(&self) -> String {
        serde_json::json!({
            "protocol": SERVERLESS_PROTOCOL,
            "version": SERVERLESS_VERSION,
            "runner": concat!("tether-rust/", env!("CARGO_PKG_VERSION")),
            "actor_names": self.factory.actor_names(),
        })
        .to_string()
    }

    /// Starts a runner for a `/start` request, or says why not (a 400 and
    /// its reason: a header missing or unusable).
    pub fn start(&self, head: &RequestHead) -> Result<ServerlessRun, (u16, String)> {
        let gateway = required(head, headers::GATEWAY)?;
        if !gateway.starts_with("ws://") && !gateway.starts_with("wss://") {
            return Err((
                400,
                format!("{} must be a ws:// or wss:// URL", headers::GATEWAY),
            ));
        }
        let url = gateway.trim_end_matches('/');
        if !self.allowed_gateways.is_empty() && !self.allowed_gateways.iter().any(|g| g == url) {
            return Err((403, format!("this function does not dial {url}")));
        }
        let mut options = RunnerOptions::new(&gateway, &required(head, headers::TOKEN)?);
        options.pool = required(head, headers::POOL)?;
        options.key = required(head, headers::RUNNER_KEY)?;
        options.capacity = self.capacity;
        options.state = self.state.clone();
        options.tls_ca = self.tls_ca.clone();
        let runner = Runner::start(options, SharedFactory(self.factory.clone()));
        Ok(ServerlessRun {
            runner: Some(runner),
            keepalive: self.keepalive,
            next: Instant::now() + self.keepalive,
            dies_at: self.lifespan.map(|l| Instant::now() + l),
        })
    }
}

/// A header `/start` cannot go without, as text.
fn required(head: &RequestHead, name: &str) -> Result<String, (u16, String)> {
    let value = head
        .header(name)
        .filter(|v| !v.is_empty() && v.len() <= MAX_HEADER_VALUE)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| v.chars().all(|c| !c.is_control()));
    match value {
        Some(v) => Ok(v.trim().to_owned()),
        None => Err((400, format!("missing or invalid header {name}"))),
    }
}

/// One factory shared by every runner this function starts.
struct SharedFactory(Arc<dyn ActorFactory>);

impl ActorFactory for SharedFactory {
    fn actor_names(&self) -> Vec<String> {
        self.0.actor_names()
    }
    fn create(&self, name: &str, key: &[String]) -> Option<Box<dyn super::Actor>> {
        self.0.create(name, key)
    }
}

/// A runner started by `/start`, and the stream its response carries.
pub struct ServerlessRun {
    runner: Option<Runner>,
    keepalive: Duration,
    next: Instant,
    /// When the simulated platform kills it (`ServerlessHandler::lifespan`).
    dies_at: Option<Instant>,
}

/// The first bytes of `/start`'s response body: an SSE comment, so the
/// response starts (and the platform sees it alive) at once.
pub const SSE_OPENING: &[u8] = b": tether runner started\n\n";
const SSE_KEEPALIVE: &[u8] = b": keepalive\n\n";
/// The last event: the gateway drained this runner (its actors moved).
pub const SSE_END: &[u8] = b"event: end\ndata: drained\n\n";

impl ServerlessRun {
    /// Waits for what the stream says next: a keepalive when one is due,
    /// then `SSE_END` once the gateway has drained the runner, then `None`.
    /// With a lifespan (`ServerlessHandler::lifespan`), the runner is
    /// killed when it is up and `None` comes at once.
    pub fn next_event(&mut self) -> Option<&'static [u8]> {
        loop {
            let runner = self.runner.as_ref()?;
            if runner.is_drained() {
                self.stop();
                return Some(SSE_END);
            }
            let now = Instant::now();
            if self.dies_at.is_some_and(|at| now >= at) {
                if let Some(runner) = self.runner.take() {
                    runner.kill();
                }
                return None;
            }
            if now >= self.next {
                self.next = now + self.keepalive;
                return Some(SSE_KEEPALIVE);
            }
            // The drain is polled: a runner has no way to wake us, and a
            // tenth of a second is nothing to a stream that lives minutes.
            let wake = self.dies_at.map_or(self.next, |at| at.min(self.next));
            std::thread::sleep((wake - now).min(Duration::from_millis(20)));
        }
    }

    /// Tunnels connected now (for tests and logs).
    pub fn connected_tunnels(&self) -> usize {
        self.runner.as_ref().map_or(0, Runner::connected_tunnels)
    }

    /// Ends the runner (the request went away, or it was drained).
    pub fn stop(&mut self) {
        if let Some(runner) = self.runner.take() {
            runner.stop();
        }
    }
}

impl Drop for ServerlessRun {
    fn drop(&mut self) {
        self.stop();
    }
}
