//! Configuration: TOML with every option defaulted, unknown keys refused, and
//! errors reported with their line and column.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub mod diff;
mod ipnet;
mod namespace;
pub mod reload;
pub use ipnet::IpNet;
pub use namespace::{
    is_namespace_name, NamespaceConfig, NamespaceRunner, DEFAULT_NAMESPACE, MAX_NAMESPACE_BYTES,
};

/// The documented example configuration, `config/tether.toml`. A test keeps
/// it equal to the defaults below, so the file is the documentation.
pub const EXAMPLE_TOML: &str = include_str!("../config/tether.toml");

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub client: ClientConfig,
    pub runners: RunnersConfig,
    pub actors: ActorsConfig,
    pub admin: AdminConfig,
    /// Tenants: `[[namespaces]]`. Without one named "default", the default
    /// namespace is implicit and open (loopback only).
    pub namespaces: Vec<NamespaceConfig>,
}

/// The most worker threads: ids of connections and actors carry the worker
/// index in their top 8 bits (`server::actors::ids`).
pub const MAX_WORKERS: usize = 256;

/// `client.max_message_bytes` must stay below this: a held message's length
/// is kept in 32 bits, and a gigabyte is already far past any sane message.
pub const MAX_MESSAGE_LIMIT: usize = 1 << 30;

/// The runner token of the embedded defaults: fine on loopback, refused by
/// `check-config` (and at start-up) on any other address.
pub const DEV_RUNNER_TOKEN: &str = "tether-dev-token";

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
        }
    }
}

/// One problem in a configuration file, located where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl Config {
    /// Parses a complete or partial file: sections and keys left out keep
    /// their defaults. Returns every error found.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => line_and_column(text, span.start),
                None => (None, None),
            };
            vec![ConfigError {
                line,
                column,
                message: e.message().trim().to_owned(),
            }]
        })?;
        let errors = config.cross_checks(text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                line: None,
                column: None,
                message: format!("cannot read {}: {e}", path.display()),
            }]
        })?;
        Config::parse(&text)
    }

    /// Rules that involve more than one key.
    fn cross_checks(&self, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let listeners = [
            ("client", self.client.listen),
            ("runners", self.runners.listen),
            ("admin", self.admin.listen),
        ];
        for (i, (a, addr_a)) in listeners.iter().enumerate() {
            for (b, addr_b) in &listeners[i + 1..] {
                if addr_a == addr_b {
                    errors.push(located(
                        text,
                        b,
                        "listen",
                        &format!("{b}.listen must differ from {a}.listen"),
                    ));
                }
            }
        }
        if self.runners.token.is_empty() {
            errors.push(located(
                text,
                "runners",
                "token",
                "runners.token must not be empty",
            ));
        } else if self.runners.token == DEV_RUNNER_TOKEN && !self.runners.listen.ip().is_loopback()
        {
            errors.push(located(
                text,
                "runners",
                "token",
                "runners.listen is not a loopback address but runners.token is the development token: set a secret token",
            ));
        }
        if self.runners.max_message_bytes < self.client.max_message_bytes + 64 {
            errors.push(located(
                text,
                "runners",
                "max_message_bytes",
                "runners.max_message_bytes must exceed client.max_message_bytes (a client message travels in one tunnel message)",
            ));
        }
        errors.extend(self.identity_checks(text));
        errors.extend(self.namespace_checks(text));
        if self.server.workers > MAX_WORKERS {
            errors.push(located(
                text,
                "server",
                "workers",
                &format!(
                    "server.workers is {}, more than the {MAX_WORKERS} workers connection and actor ids can tell apart",
                    self.server.workers
                ),
            ));
        }
        if self.client.max_message_bytes >= MAX_MESSAGE_LIMIT {
            errors.push(located(
                text,
                "client",
                "max_message_bytes",
                "client.max_message_bytes must be below 1 GiB",
            ));
        }
        if self.client.read_buffer_bytes < 512 {
            errors.push(located(
                text,
                "client",
                "read_buffer_bytes",
                "client.read_buffer_bytes must be at least 512",
            ));
        }
        errors
    }

    /// Identities have distinct names and distinct, non-empty tokens (none
    /// the default identity's).
    fn identity_checks(&self, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let ids = &self.runners.identities;
        for (i, id) in ids.iter().enumerate() {
            let problem = if id.name.is_empty() || id.name == "default" || id.name.contains('/') {
                Some(format!(
                    "runners.identities: name {:?} is empty, reserved or contains /",
                    id.name
                ))
            } else if id.token.is_empty() || id.token == self.runners.token {
                Some(format!(
                    "runners.identities: {} needs a token of its own",
                    id.name
                ))
            } else if ids[..i]
                .iter()
                .any(|o| o.name == id.name || o.token == id.token)
            {
                Some(format!(
                    "runners.identities: {} repeats a name or token",
                    id.name
                ))
            } else {
                None
            };
            errors.extend(problem.map(|m| located(text, "runners", "identities", &m)));
        }
        errors
    }

    fn namespace_checks(&self, text: &str) -> Vec<ConfigError> {
        let mut other: Vec<&str> = vec![self.runners.token.as_str()];
        other.extend(self.runners.identities.iter().map(|i| i.token.as_str()));
        if !self.admin.token.is_empty() {
            other.push(&self.admin.token);
        }
        let mut errors: Vec<ConfigError> = namespace::check_namespaces(&self.namespaces, &other)
            .iter()
            .map(|m| located(text, "namespaces", "name", m))
            .collect();
        let explicit_default = self.namespaces.iter().any(|n| n.name == DEFAULT_NAMESPACE);
        if !explicit_default && !self.client.listen.ip().is_loopback() {
            errors.push(located(
                text,
                "client",
                "listen",
                "client.listen is not a loopback address but the default namespace is implicit (open to anyone): add [[namespaces]] name = \"default\" with publishable_tokens or connect_token_secrets, or open = true to serve anyone",
            ));
        }
        errors
    }

    /// The namespace `name`, if it exists (the default one always does).
    pub fn namespace(&self, name: &str) -> Option<&NamespaceConfig> {
        static IMPLICIT_DEFAULT: std::sync::LazyLock<NamespaceConfig> =
            std::sync::LazyLock::new(NamespaceConfig::implicit_default);
        match self.namespaces.iter().find(|n| n.name == name) {
            Some(ns) => Some(ns),
            None if name == DEFAULT_NAMESPACE => Some(&IMPLICIT_DEFAULT),
            None => None,
        }
    }

    /// The runner pool of actor `name` in namespace `ns`.
    pub fn pool_of<'a>(&'a self, ns: &str, name: &str) -> &'a str {
        let pools = match self.namespaces.iter().find(|n| n.name == ns) {
            Some(n) if ns != DEFAULT_NAMESPACE || !n.pools.is_empty() => &n.pools,
            _ => &self.actors.pools,
        };
        pools.get(name).map_or("default", String::as_str)
    }

    /// The number of worker threads to run: `workers`, or one per CPU (at
    /// most [`MAX_WORKERS`]) when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS),
            n => n,
        }
    }
}

fn line_and_column(text: &str, offset: usize) -> (Option<usize>, Option<usize>) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (Some(line), Some(column))
}

/// An error about `section.key`, placed at the key's line when the file sets it.
fn located(text: &str, section: &str, key: &str, message: &str) -> ConfigError {
    let mut current = "";
    let mut offset = 0;
    let mut found = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            current = name.trim();
        } else if let Some((k, _)) = trimmed.split_once('=') {
            let k = k.trim();
            let dotted = format!("{section}.{key}");
            if (current == section && k == key) || (current.is_empty() && k == dotted) {
                found = Some(offset + (line.len() - line.trim_start().len()));
            }
        }
        offset += line.len();
    }
    let (line, column) = found.map_or((None, None), |o| line_and_column(text, o));
    ConfigError {
        line,
        column,
        message: message.to_owned(),
    }
}

/// Parses "250ms", "30s", "5m", "1h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("duration `{s}` needs a unit (ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration `{s}`"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s, m, h)")),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("duration `{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte count: 65536, "64KiB", "16MiB", "1GiB" (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num.parse().map_err(|_| format!("invalid size `{s}`"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB)"
            ))
        }
    };
    value
        .checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("size `{s}` is out of range"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = duration(d)?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("must be greater than zero"));
    }
    Ok(v)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Number(u64),
    Text(String),
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = match SizeRepr::deserialize(d)? {
        SizeRepr::Number(n) => usize::try_from(n).map_err(serde::de::Error::custom)?,
        SizeRepr::Text(s) => parse_size(&s).map_err(serde::de::Error::custom)?,
    };
    if v == 0 {
        return Err(serde::de::Error::custom("must be greater than zero"));
    }
    Ok(v)
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be greater than zero"));
    }
    Ok(v)
}

fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be greater than zero"));
    }
    Ok(v)
}

fn entries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if !(8..=32768).contains(&v) || !v.is_power_of_two() {
        return Err(serde::de::Error::custom(
            "must be a power of two from 8 to 32768",
        ));
    }
    Ok(v)
}

fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    tracing_subscriber::EnvFilter::builder()
        .parse(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid log filter: {e}")))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_states_the_defaults() {
        assert_eq!(Config::parse(EXAMPLE_TOML).unwrap(), Config::default());
    }

    #[test]
    fn empty_and_partial_files_use_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse("[client]\nping_interval = \"5s\"\n").unwrap();
        assert_eq!(c.client.ping_interval, Duration::from_secs(5));
        assert_eq!(c.client.ping_timeout, Duration::from_secs(20));
    }

    #[test]
    fn unknown_keys_are_errors_with_positions() {
        let errs = Config::parse("[client]\nlisten = \"127.0.0.1:1\"\npingg_interval = \"5s\"\n")
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(3));
        assert_eq!(errs[0].column, Some(1));
        assert!(
            errs[0].message.contains("pingg_interval"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn bad_values_are_located() {
        let errs = Config::parse("[client]\nping_timeout = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("unit"), "{}", errs[0].message);
        let errs = Config::parse("[server]\nio_driver = \"kqueue\"\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2));
        let errs = Config::parse("[admin]\nlisten = \"127.0.0.1:8080\"\n").unwrap_err();
        assert_eq!((errs[0].line, errs[0].column), (Some(2), Some(1)));
    }

    #[test]
    fn more_workers_than_ids_can_carry_are_refused() {
        let errs = Config::parse("[server]\nworkers = 257\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("256"), "{}", errs[0].message);
        assert!(Config::parse("[server]\nworkers = 256\n").is_ok());
        assert!(Config::default().worker_count() <= MAX_WORKERS);
    }

    #[test]
    fn message_sizes_that_would_not_fit_are_refused() {
        let text =
            "[client]\nmax_message_bytes = \"4GiB\"\n[runners]\nmax_message_bytes = \"5GiB\"\n";
        let errs = Config::parse(text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("below 1 GiB"),
            "{}",
            errs[0].message
        );
        assert_eq!(errs[0].line, Some(2));
    }

    #[test]
    fn runner_identities_need_their_own_names_and_tokens() {
        let ok = "[[runners.identities]]\nname = \"a\"\ntoken = \"ta\"\n[[runners.identities]]\nname = \"b\"\ntoken = \"tb\"\npools = [\"x\"]\n";
        let c = Config::parse(ok).unwrap();
        assert_eq!(c.runners.identities[1].pools, ["x"]);
        for bad in [
            "[[runners.identities]]\nname = \"a\"\ntoken = \"\"\n",
            "[[runners.identities]]\nname = \"default\"\ntoken = \"t\"\n",
            "[[runners.identities]]\nname = \"a\"\ntoken = \"tether-dev-token\"\n",
            "[[runners.identities]]\nname = \"a\"\ntoken = \"t\"\n[[runners.identities]]\nname = \"b\"\ntoken = \"t\"\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1ZiB").is_err());
    }
}
