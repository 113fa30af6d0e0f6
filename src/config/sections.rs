//! The sections of the configuration file (`[server]`, `[client]`,
//! `[runners]`, `[actors]`, `[admin]`) and their defaults.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::units::{
    duration, entries, log_filter, positive, positive_duration, positive_u32, size,
};
use super::{IpNet, DEV_RUNNER_TOKEN};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnersConfig {
    pub listen: SocketAddr,
    pub token: String,
    #[serde(deserialize_with = "size")]
    pub max_message_bytes: usize,
    #[serde(deserialize_with = "size")]
    pub max_send_queue_bytes: usize,
    /// Tunnel keepalive: the gateway pings a quiet tunnel this often…
    #[serde(deserialize_with = "positive_duration")]
    pub ping_interval: Duration,
    /// …and fails it over (its actors move) when no answer comes within this.
    #[serde(deserialize_with = "positive_duration")]
    pub ping_timeout: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub close_timeout: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub send_timeout: Duration,
    /// Runners with an identity of their own (`runners.token` is the
    /// "default" identity's). A runner key is held by the identity that
    /// registered it: only the same identity may take it over.
    pub identities: Vec<RunnerIdentity>,
    /// TLS certificates (`[[runners.tls]]`), as for the client listener.
    pub tls: Vec<TlsCertificate>,
    /// Tunnels open at once for one runner identity (a runner opens one per
    /// worker). Past it: 429.
    #[serde(deserialize_with = "positive")]
    pub max_tunnels_per_identity: usize,
    /// Actors placed on one runner at most, whatever capacity it declares.
    #[serde(deserialize_with = "positive_u32")]
    pub max_actors_per_runner: u32,
}

/// A certificate chain and its key, PEM files, for the names it serves
/// (empty: the DNS names the certificate itself lists).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    pub chain: std::path::PathBuf,
    pub key: std::path::PathBuf,
    #[serde(default)]
    pub names: Vec<String>,
}

/// One runner identity: its token and where it may register.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerIdentity {
    pub name: String,
    pub token: String,
    /// Pools it may register in; empty: any.
    #[serde(default)]
    pub pools: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorsConfig {
    #[serde(deserialize_with = "positive_duration")]
    pub start_timeout: Duration,
    /// A running actor with no traffic for this long is put to sleep, if all
    /// its connections can hibernate. "0s" disables idle sleep.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Actor names whose connections hibernate unless the runner says otherwise.
    pub hibernatable: Vec<String>,
    #[serde(deserialize_with = "size")]
    pub max_attachment_bytes: usize,
    #[serde(deserialize_with = "size")]
    pub wake_buffer_bytes: usize,
    /// A close frame from a hibernated client wakes its actor so it sees the close.
    pub wake_on_close: bool,
    /// Per connection: messages the actor has not acknowledged plus those
    /// held while it moves to another runner. Past it the client stops
    /// being read while the actor runs, and is closed with 1013 while it moves.
    #[serde(deserialize_with = "size")]
    pub migration_buffer_bytes: usize,
    /// How long a runner has to confirm it stopped an actor (to sleep or to
    /// move it) before the gateway treats that runner as lost for it.
    #[serde(deserialize_with = "positive_duration")]
    pub stop_timeout: Duration,
    /// Wait before restarting an actor that failed twice in a row; doubles
    /// with each further failure up to `crash_backoff_max`. (The first
    /// failure restarts at once.)
    #[serde(deserialize_with = "positive_duration")]
    pub crash_backoff: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub crash_backoff_max: Duration,
    /// Failures further apart than this do not count as a loop.
    #[serde(deserialize_with = "positive_duration")]
    pub crash_reset_after: Duration,
    /// Actor name → runner pool. Names not listed run in pool "default".
    pub pools: std::collections::BTreeMap<String, String>,
    /// New actors one client address may create per second (sustained)…
    #[serde(deserialize_with = "positive")]
    pub new_per_second_per_address: usize,
    /// …and at once (a token bucket of this size). Past it: 429.
    #[serde(deserialize_with = "positive")]
    pub new_burst_per_address: usize,
    /// Client connections of one actor. Past it: 503.
    #[serde(deserialize_with = "positive")]
    pub max_connections_per_actor: usize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[serde(rename = "text")]
    Text,
    /// One JSON object per line, for log shippers.
    #[serde(rename = "json")]
    Json,
}

/// How a failed WebSocket handshake is reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HandshakeErrors {
    /// A plain HTTP status (what non-browser clients expect).
    #[serde(rename = "http")]
    Http,
    /// Complete the upgrade, then close with 4000 + status and a reason,
    /// because browsers show every failed handshake as close 1006.
    #[serde(rename = "close")]
    Close,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub workers: usize,
    pub io_driver: IoDriver,
    #[serde(deserialize_with = "entries")]
    pub io_uring_entries: u32,
    #[serde(deserialize_with = "log_filter")]
    pub log_level: String,
    /// "text" (colours only on a terminal) or "json" (one object per line).
    pub log_format: LogFormat,
    #[serde(deserialize_with = "duration")]
    pub shutdown_drain: Duration,
    /// Return freed memory to the OS at once (mimalloc purge delay 0).
    pub return_freed_memory: bool,
    /// Where the serving process writes its pid ("" = nowhere): `tether
    /// upgrade` finds the gateway there, and learns the new one's pid.
    pub pid_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum IoDriver {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "io_uring")]
    IoUring,
    #[serde(rename = "epoll")]
    Epoll,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "size")]
    pub max_header_bytes: usize,
    #[serde(deserialize_with = "positive")]
    pub max_headers: usize,
    #[serde(deserialize_with = "positive_duration")]
    pub handshake_timeout: Duration,
    #[serde(deserialize_with = "size")]
    pub max_message_bytes: usize,
    #[serde(deserialize_with = "positive_duration")]
    pub ping_interval: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub ping_timeout: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub close_timeout: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub send_timeout: Duration,
    #[serde(deserialize_with = "size")]
    pub read_buffer_bytes: usize,
    pub buffer_pool_buffers: usize,
    #[serde(deserialize_with = "size")]
    pub max_send_queue_bytes: usize,
    pub handshake_errors: HandshakeErrors,
    /// Client connections per worker not yet upgraded (sending their
    /// request head, or waiting for their actor). Past it, a new connection
    /// gets 503 at once.
    #[serde(deserialize_with = "positive")]
    pub max_handshakes: usize,
    /// Client connections open at once, all workers together. Past it: 503.
    #[serde(deserialize_with = "positive")]
    pub max_connections: usize,
    /// Client connections open at once from one address (an IPv6 /64).
    /// Past it: 429.
    #[serde(deserialize_with = "positive_u32")]
    pub max_connections_per_address: u32,
    /// TLS certificates (`[[client.tls]]`): when any is set, the listener
    /// speaks TLS only (wss://). The first is the default for clients that
    /// send no SNI or an unknown name.
    pub tls: Vec<TlsCertificate>,
    /// L4 balancers whose connections start with a PROXY protocol header
    /// (v1 or v2) naming the real client; that address then counts for
    /// limits and is what the runner gets. Connections from elsewhere are
    /// taken as they come (a PROXY header from them is refused).
    pub trusted_proxies: Vec<IpNet>,
    /// New connections one address may open per second (sustained)…
    #[serde(deserialize_with = "positive")]
    pub new_per_second_per_address: usize,
    /// …and at once (a token bucket of this size). Past it: 429.
    #[serde(deserialize_with = "positive")]
    pub new_burst_per_address: usize,
    /// Largest request body forwarded to an actor (PROTOCOL §7b). Past it: 413.
    #[serde(deserialize_with = "size")]
    pub max_request_body_bytes: usize,
    /// A kept-alive HTTP connection with no request, or a request body
    /// that makes no progress, for this long is closed.
    #[serde(deserialize_with = "positive_duration")]
    pub http_idle_timeout: Duration,
    /// An actor's response head must come within this long of its
    /// request (its body included). Else: 504.
    #[serde(deserialize_with = "positive_duration")]
    pub http_response_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token for the admin API (every route but `/healthz`,
    /// `/readyz` and the inspector page itself). Empty: they answer 403.
    pub token: String,
    /// `/readyz` answers 503 until at least one runner is connected.
    pub ready_needs_runner: bool,
    /// Inspector streams (`GET /events`) open at once; past it: 503.
    pub max_event_streams: usize,
    /// Where serverless pools made through the admin API are kept (JSON),
    /// so they survive restarts. Empty: the API cannot change pools (503).
    pub state_file: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 0,
            io_driver: IoDriver::Auto,
            io_uring_entries: 1024,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            shutdown_drain: Duration::from_secs(5),
            return_freed_memory: true,
            pid_file: String::new(),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: 16 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(30),
            read_buffer_bytes: 16 * 1024,
            buffer_pool_buffers: 256,
            max_send_queue_bytes: 4 * 1024 * 1024,
            handshake_errors: HandshakeErrors::Http,
            max_handshakes: 4096,
            max_connections: 1_000_000,
            tls: Vec::new(),
            trusted_proxies: Vec::new(),
            max_connections_per_address: 10_000,
            new_per_second_per_address: 1_000,
            new_burst_per_address: 2_000,
            max_request_body_bytes: 16 * 1024 * 1024,
            http_idle_timeout: Duration::from_secs(60),
            http_response_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for RunnersConfig {
    fn default() -> Self {
        RunnersConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: DEV_RUNNER_TOKEN.to_owned(),
            max_message_bytes: 64 * 1024 * 1024,
            max_send_queue_bytes: 8 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(30),
            identities: Vec::new(),
            max_tunnels_per_identity: 4096,
            tls: Vec::new(),
            max_actors_per_runner: 10_000,
        }
    }
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig {
            start_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            hibernatable: Vec::new(),
            max_attachment_bytes: 2 * 1024,
            wake_buffer_bytes: 1024 * 1024,
            wake_on_close: true,
            migration_buffer_bytes: 1024 * 1024,
            stop_timeout: Duration::from_secs(5),
            crash_backoff: Duration::from_millis(100),
            crash_backoff_max: Duration::from_secs(30),
            crash_reset_after: Duration::from_secs(60),
            pools: Default::default(),
            new_per_second_per_address: 20,
            new_burst_per_address: 100,
            max_connections_per_actor: 10_000,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: String::new(),
            ready_needs_runner: false,
            max_event_streams: 4,
            state_file: String::new(),
        }
    }
}
