//! A load-test scenario: what to connect to, how many clients, what they
//! send, and the chaos to inflict. Read from TOML (`scenarios/*.toml`, built
//! into the binary) and overridden field by field from the command line.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::net::Sources;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// Each message comes back to its sender.
    Echo,
    /// Each message goes to every member of the lobby, the sender included.
    Chat,
    /// `inc` increments; every member sees every new value.
    Counter,
}

impl ActorKind {
    pub fn parse(s: &str) -> Result<ActorKind, String> {
        match s {
            "echo" => Ok(ActorKind::Echo),
            "chat" => Ok(ActorKind::Chat),
            "counter" => Ok(ActorKind::Counter),
            other => Err(format!("unknown actor `{other}` (echo, chat or counter)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ActorKind::Echo => "echo",
            ActorKind::Chat => "chat",
            ActorKind::Counter => "counter",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChaosAction {
    /// SIGKILL one of the runners this load test started.
    Kill,
    /// SIGTERM one of them: it drains its actors to the others and exits.
    Drain,
    /// Every client stays silent for `for`, so that actors can fall asleep,
    /// then each sends its next message at a random moment within
    /// `wake_spread`: those messages measure wake latency.
    Hibernate,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosEvent {
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub at: Duration,
    pub action: ChaosAction,
    /// Which started runner (`kill`, `drain`).
    #[serde(default)]
    pub runner: usize,
    /// How long clients stay silent (`hibernate`).
    #[serde(
        default,
        rename = "for",
        deserialize_with = "duration",
        serialize_with = "show_duration"
    )]
    pub silent_for: Duration,
    #[serde(
        default,
        deserialize_with = "duration",
        serialize_with = "show_duration"
    )]
    pub wake_spread: Duration,
}

impl ChaosEvent {
    /// `kill@5s`, `drain:1@8s`, `hibernate@10s/40s/5s` (at / silent for / wake spread).
    pub fn parse(s: &str) -> Result<ChaosEvent, String> {
        let (what, when) = s
            .split_once('@')
            .ok_or_else(|| format!("chaos `{s}`: expected ACTION[:RUNNER]@TIME"))?;
        let (action, runner) = match what.split_once(':') {
            Some((a, r)) => (
                a,
                r.parse()
                    .map_err(|_| format!("chaos `{s}`: runner must be a number"))?,
            ),
            None => (what, 0),
        };
        let action = match action {
            "kill" => ChaosAction::Kill,
            "drain" => ChaosAction::Drain,
            "hibernate" => ChaosAction::Hibernate,
            other => return Err(format!("chaos `{s}`: unknown action `{other}`")),
        };
        let mut times = when.split('/');
        let mut next = |default: Duration| -> Result<Duration, String> {
            match times.next() {
                Some(t) => {
                    tether::config::parse_duration(t).map_err(|e| format!("chaos `{s}`: {e}"))
                }
                None => Ok(default),
            }
        };
        let at = next(Duration::ZERO)?;
        let silent_for = next(Duration::from_secs(40))?;
        let wake_spread = next(Duration::from_secs(5))?;
        Ok(ChaosEvent {
            at,
            action,
            runner,
            silent_for,
            wake_spread,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// `ws://host:port` or `wss://host:port` (TLS; the port defaults to 80
    /// or 443); clients open `{url}/actors/{actor}/{key}`.
    pub url: String,
    pub actor: ActorKind,
    /// Distinct actor keys; client `c` joins key `c % actors`.
    pub actors: usize,
    pub clients: usize,
    /// New connections per second across all clients; 0 = as fast as possible.
    pub connect_rate: f64,
    pub message_bytes: usize,
    /// Messages per second per client; 0 = closed loop (send the next one
    /// when the previous one came back).
    pub rate: f64,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub warmup: Duration,
    /// Measured time, after the warm-up.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub duration: Duration,
    /// How long to wait at the end for messages still on their way.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub drain_timeout: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub connect_timeout: Duration,
    /// Close and reconnect after this many messages per connection; 0 = never.
    pub reconnect_every: u64,
    /// TLS even though `url` says `ws://` (`wss://` implies it).
    pub tls: bool,
    /// TLS: a PEM file of the certificates the gateway's must chain to
    /// (for the clients, and the runners this load test starts); empty:
    /// the system's trusted roots.
    pub ca: String,
    /// Client threads, one monoio runtime each; 0 = one per CPU.
    pub threads: usize,
    /// Reference runners to start (child processes of the load test).
    pub runners: usize,
    pub runner_url: String,
    pub runner_token: String,
    /// Local addresses the clients connect from (`127.0.0.2`,
    /// `127.0.0.2-127.0.0.9`, or a comma-separated list), in turn; empty:
    /// the kernel chooses. Each 127.0.0.x is a distinct client address to
    /// the gateway, with ephemeral ports of its own.
    pub source: String,
    pub chaos: Vec<ChaosEvent>,
    /// An abusive group from other addresses, from `flood.at` on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<Flood>,
}

/// An abusive group of clients from addresses other than the scenario's
/// (`scenarios/flood.toml`): connect/close storms to fresh actor keys,
/// idle connections held open, connections that never send a request
/// head, and message floods. The scenario's own clients are the
/// well-behaved group: their round trips sent before `at` are the quiet
/// baseline, those sent from `at` on are measured under the flood.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flood {
    /// When the flood starts, from the start of the run (after the warm-up,
    /// before the end of the measured time).
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub at: Duration,
    /// Client threads of the abusive group (their own monoio runtimes, so
    /// that they do not delay the well-behaved clients' event loops).
    pub threads: usize,
    /// Storm: each client connects, upgrades to a fresh actor key (a new
    /// actor each time) and closes at once, over and over.
    pub storm_source: String,
    pub storm_clients: usize,
    /// New connections per second of the whole storm; 0 = as fast as it can.
    pub storm_rate: f64,
    /// Idle: upgraded connections held open until the end (refused ones
    /// retry after a second).
    pub idle_source: String,
    pub idle_clients: usize,
    /// Actor keys the idle connections share.
    pub idle_actors: usize,
    /// Silent: TCP connections that never send a request head (they hold a
    /// handshake slot until `client.handshake_timeout`, then reconnect).
    pub silent_source: String,
    pub silent_clients: usize,
    /// Spam: upgraded connections that send messages without waiting for
    /// the echoes (read and discarded).
    pub spam_source: String,
    pub spam_clients: usize,
    pub spam_actors: usize,
    /// Messages per second per spam connection; 0 = as fast as it can.
    pub spam_rate: f64,
    pub spam_bytes: usize,
    /// A well-behaved newcomer: one new connection (from the scenario's
    /// source, to an existing actor) this often, to see whether new
    /// connections still get in. 0 = none.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub probe_every: Duration,
    /// The run fails if the well-behaved p50 or p99 under the flood exceeds
    /// its baseline by more than this factor; 0 = only report the ratio.
    pub max_slowdown: f64,
    /// The gateway's admin listener (`http://127.0.0.1:9090`), to read its
    /// refusal counters from /metrics; empty = not read.
    pub admin_url: String,
    /// Bearer token for /metrics (the gateway's `admin.token`).
    pub admin_token: String,
    /// Where the abusive groups connect (`host:port`); empty = the gateway
    /// under test. Another gateway here makes a control run: the same load
    /// on the machine, none of it on the gateway the well-behaved clients use.
    pub target: String,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            at: Duration::from_secs(10),
            threads: 1,
            storm_source: String::new(),
            storm_clients: 0,
            storm_rate: 0.0,
            idle_source: String::new(),
            idle_clients: 0,
            idle_actors: 10,
            silent_source: String::new(),
            silent_clients: 0,
            spam_source: String::new(),
            spam_clients: 0,
            spam_actors: 10,
            spam_rate: 0.0,
            spam_bytes: 64,
            probe_every: Duration::ZERO,
            max_slowdown: 0.0,
            admin_url: String::new(),
            admin_token: String::new(),
            target: String::new(),
        }
    }
}

impl Flood {
    /// The abusive groups: name, source, clients.
    pub fn groups(&self) -> [(&'static str, &str, usize); 4] {
        [
            ("storm", &self.storm_source, self.storm_clients),
            ("idle", &self.idle_source, self.idle_clients),
            ("silent", &self.silent_source, self.silent_clients),
            ("spam", &self.spam_source, self.spam_clients),
        ]
    }

    fn validate(&self, s: &Scenario) -> Result<(), String> {
        if !self.target.is_empty() && self.target.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "flood.target {:?} is not an ip:port address",
                self.target
            ));
        }
        if self.at <= s.warmup || self.at >= s.warmup + s.duration {
            return Err(format!(
                "flood.at ({:?}) must fall after the warm-up ({:?}) and before the end of the measured time ({:?})",
                self.at,
                s.warmup,
                s.warmup + s.duration
            ));
        }
        if self.threads == 0 {
            return Err("flood.threads must be at least 1".into());
        }
        let own = Sources::parse(&s.source)?;
        for (name, source, clients) in self.groups() {
            let sources = Sources::parse(source).map_err(|e| format!("flood.{name}_{e}"))?;
            if clients == 0 {
                continue;
            }
            if sources.is_empty() {
                return Err(format!(
                    "flood.{name}_source: the abusive clients need addresses of their own (e.g. \"127.0.0.3\")"
                ));
            }
            if let Some(a) = sources
                .addresses()
                .iter()
                .find(|a| own.addresses().contains(a))
            {
                return Err(format!(
                    "flood.{name}_source shares {a} with the well-behaved clients' source"
                ));
            }
        }
        if self.idle_clients > 0 && self.idle_actors == 0
            || self.spam_clients > 0 && self.spam_actors == 0
        {
            return Err("flood.idle_actors and flood.spam_actors must be at least 1".into());
        }
        if self.storm_rate < 0.0 || self.spam_rate < 0.0 || self.max_slowdown < 0.0 {
            return Err("flood rates and max_slowdown cannot be negative".into());
        }
        if self.spam_bytes < 1 {
            return Err("flood.spam_bytes must be at least 1".into());
        }
        if !self.admin_url.is_empty() && !self.admin_url.starts_with("http://") {
            return Err(format!(
                "flood.admin_url `{}` must start with http://",
                self.admin_url
            ));
        }
        Ok(())
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "custom".into(),
            description: String::new(),
            url: "ws://127.0.0.1:8080".into(),
            actor: ActorKind::Echo,
            actors: 10,
            clients: 100,
            connect_rate: 0.0,
            message_bytes: 64,
            rate: 0.0,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            reconnect_every: 0,
            tls: false,
            ca: String::new(),
            threads: 0,
            runners: 0,
            runner_url: "ws://127.0.0.1:8081".into(),
            runner_token: tether::config::DEV_RUNNER_TOKEN.into(),
            source: String::new(),
            chaos: Vec::new(),
            flood: None,
        }
    }
}

/// Scenarios shipped with the binary, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("smoke", include_str!("../scenarios/smoke.toml")),
    (
        "echo-throughput",
        include_str!("../scenarios/echo-throughput.toml"),
    ),
    ("chat-fanout", include_str!("../scenarios/chat-fanout.toml")),
    (
        "hibernate-wake",
        include_str!("../scenarios/hibernate-wake.toml"),
    ),
    (
        "migrate-under-load",
        include_str!("../scenarios/migrate-under-load.toml"),
    ),
    (
        "connect-storm",
        include_str!("../scenarios/connect-storm.toml"),
    ),
    ("flood", include_str!("../scenarios/flood.toml")),
    (
        "chat-fanout-large",
        include_str!("../scenarios/chat-fanout-large.toml"),
    ),
    (
        "active-memory",
        include_str!("../scenarios/active-memory.toml"),
    ),
];

impl Scenario {
    /// A shipped scenario by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(text).map_err(|e| format!("scenario {name_or_path}: {e}"));
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            format!(
                "no scenario `{name_or_path}` ({e}); shipped: {}",
                names.join(", ")
            )
        })?;
        Scenario::parse(&text).map_err(|e| format!("{name_or_path}: {e}"))
    }

    pub fn parse(text: &str) -> Result<Scenario, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks the combination; every error says which field and why.
    pub fn validate(&self) -> Result<(), String> {
        if !self.url.starts_with("ws://") && !self.url.starts_with("wss://") {
            return Err(format!(
                "url `{}` must start with ws:// or wss://",
                self.url
            ));
        }
        if self.host().is_empty() {
            return Err(format!("url `{}` has no host", self.url));
        }
        if self.clients == 0 {
            return Err("clients must be at least 1".into());
        }
        if self.actors == 0 {
            return Err("actors must be at least 1".into());
        }
        if self.actor != ActorKind::Counter && self.message_bytes < 32 {
            return Err(
                "message_bytes must be at least 32 (each message carries a client id, a sequence number and a timestamp)"
                    .into(),
            );
        }
        if self.rate < 0.0 || self.connect_rate < 0.0 {
            return Err("rates cannot be negative".into());
        }
        Sources::parse(&self.source)?;
        if let Some(f) = &self.flood {
            f.validate(self)?;
        }
        for e in &self.chaos {
            match e.action {
                ChaosAction::Kill | ChaosAction::Drain if e.runner >= self.runners => {
                    return Err(format!(
                        "chaos {:?} at {:?} names runner {}, but the load test starts {} (set runners)",
                        e.action, e.at, e.runner, self.runners
                    ))
                }
                ChaosAction::Hibernate if e.silent_for.is_zero() => {
                    return Err("chaos hibernate needs `for` > 0".into())
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `host:port` of `url` (as it is written: the port may be missing).
    pub fn authority(&self) -> &str {
        let rest = self
            .url
            .strip_prefix("wss://")
            .or_else(|| self.url.strip_prefix("ws://"))
            .unwrap_or(&self.url);
        rest.split('/').next().unwrap_or(rest)
    }

    /// The clients speak TLS: `wss://`, or `tls = true`.
    pub fn uses_tls(&self) -> bool {
        self.tls || self.url.starts_with("wss://")
    }

    /// The host of `url`, without brackets for IPv6: what TLS asks for (SNI)
    /// and verifies the certificate against.
    pub fn host(&self) -> &str {
        let a = self.authority();
        if let Some(v6) = a.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6);
        }
        a.rsplit_once(':').map_or(a, |(host, _)| host)
    }

    /// `host:port` to resolve: the port defaults to 443 (TLS) or 80.
    pub fn socket_authority(&self) -> String {
        let a = self.authority();
        let port_given = match a.strip_prefix('[') {
            Some(v6) => v6.split_once(']').is_some_and(|(_, p)| p.starts_with(':')),
            None => a.contains(':'),
        };
        match (port_given, self.uses_tls()) {
            (true, _) => a.to_string(),
            (false, true) => format!("{a}:443"),
            (false, false) => format!("{a}:80"),
        }
    }

    /// Hibernation windows: (silent from, silent until, wake spread).
    pub fn silences(&self) -> Vec<(Duration, Duration, Duration)> {
        self.chaos
            .iter()
            .filter(|e| e.action == ChaosAction::Hibernate)
            .map(|e| (e.at, e.at + e.silent_for, e.wake_spread))
            .collect()
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    tether::config::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn show_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses_and_validates() {
        for (name, _) in BUILTIN {
            let s = Scenario::load(name).unwrap();
            assert_eq!(&s.name, name);
            s.validate().unwrap();
        }
    }

    #[test]
    fn unknown_fields_and_bad_values_are_errors() {
        assert!(Scenario::parse("clientz = 3").is_err());
        assert!(Scenario::parse("duration = \"ten\"").is_err());
        let mut s = Scenario::default();
        s.chaos.push(ChaosEvent::parse("kill:2@5s").unwrap());
        assert!(s.validate().unwrap_err().contains("runner 2"));
        s.chaos.clear();
        s.url = "http://x".into();
        assert!(s.validate().unwrap_err().contains("ws:// or wss://"));
    }

    #[test]
    fn urls_give_host_port_and_tls() {
        let mut s = Scenario {
            url: "wss://localhost:8443/".into(),
            ..Scenario::default()
        };
        s.validate().unwrap();
        assert!(s.uses_tls());
        assert_eq!(
            (s.authority(), s.host(), s.socket_authority().as_str()),
            ("localhost:8443", "localhost", "localhost:8443")
        );
        s.url = "wss://gateway.example".into();
        assert_eq!(s.socket_authority(), "gateway.example:443");
        s.url = "ws://[::1]".into();
        assert!(!s.uses_tls());
        assert_eq!(
            (s.host(), s.socket_authority().as_str()),
            ("::1", "[::1]:80")
        );
        s.url = "ws://[::1]:9000".into();
        assert_eq!(
            (s.host(), s.socket_authority().as_str()),
            ("::1", "[::1]:9000")
        );
        s.tls = true;
        assert!(s.uses_tls());
        s.url = "wss://:8443".into();
        assert!(s.validate().unwrap_err().contains("no host"));
    }

    #[test]
    fn a_flood_needs_addresses_of_its_own_and_a_time_inside_the_run() {
        let mut s = Scenario::load("flood").unwrap();
        s.validate().unwrap();
        let f = s.flood.clone().unwrap();
        s.flood.as_mut().unwrap().idle_source = "127.0.0.1-127.0.0.2".into();
        assert!(s.validate().unwrap_err().contains("shares 127.0.0.2"));
        s.flood.as_mut().unwrap().idle_source = String::new();
        assert!(s.validate().unwrap_err().contains("flood.idle_source"));
        s.flood.as_mut().unwrap().idle_clients = 0;
        s.validate().unwrap();
        s.flood = Some(Flood {
            at: s.warmup + s.duration,
            ..f.clone()
        });
        assert!(s.validate().unwrap_err().contains("flood.at"));
        s.flood = Some(Flood {
            storm_source: "127.0.0.x".into(),
            ..f
        });
        assert!(s.validate().unwrap_err().contains("flood.storm_source"));
        s.flood = None;
        s.source = "127.0.0.9-127.0.0.3".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn chaos_from_the_command_line() {
        let e = ChaosEvent::parse("hibernate@10s/35s/3s").unwrap();
        assert_eq!(e.action, ChaosAction::Hibernate);
        assert_eq!(e.at, Duration::from_secs(10));
        assert_eq!(e.silent_for, Duration::from_secs(35));
        assert_eq!(e.wake_spread, Duration::from_secs(3));
        let k = ChaosEvent::parse("drain:1@2500ms").unwrap();
        assert_eq!((k.action, k.runner), (ChaosAction::Drain, 1));
        assert!(ChaosEvent::parse("explode@1s").is_err());
        assert!(ChaosEvent::parse("kill").is_err());
    }
}
