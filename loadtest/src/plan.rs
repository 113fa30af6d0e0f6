//! A run's timeline and the facts every client thread shares: when the
//! warm-up ends, when sending stops, which silences and chaos windows there
//! are, and each client's final message count (published when it stops
//! sending, so lobby members know what they should have seen).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tether::server::driver::Driver;

use crate::flood::FloodProgress;
use crate::net::Sources;
use crate::scenario::{ActorKind, ChaosAction, Scenario};
use crate::stats::Progress;
use crate::transport::TlsTarget;

/// Not published yet.
const UNKNOWN: u64 = u64::MAX;

/// How far around a kill or drain a client's silence counts as its pause.
pub const PAUSE_BEFORE: Duration = Duration::from_millis(500);
pub const PAUSE_AFTER: Duration = Duration::from_secs(5);

pub struct Silence {
    pub from: Instant,
    pub until: Instant,
    pub spread: Duration,
}

pub struct Plan {
    pub scenario: Scenario,
    pub addr: SocketAddr,
    /// `wss://`: how to speak TLS to the gateway.
    pub tls: Option<TlsTarget>,
    pub start: Instant,
    pub measure_from: Instant,
    pub stop_at: Instant,
    pub drain_until: Instant,
    pub silences: Vec<Silence>,
    /// Kill and drain events, as windows around them.
    pub pause_windows: Vec<(Instant, Instant)>,
    /// Actor keys are `{key_prefix}-{lobby}`: fresh per run, so counters start at 0.
    pub key_prefix: String,
    pub threads: usize,
    pub driver: Driver,
    pub progress: Progress,
    /// Where the clients connect from (the scenario's `source`).
    pub sources: Sources,
    /// When the flood starts (a scenario with `[flood]`).
    pub flood_at: Option<Instant>,
    pub flood_progress: FloodProgress,
    final_sent: Vec<AtomicU64>,
}

impl Plan {
    pub fn new(scenario: Scenario, threads: usize, driver: Driver) -> Result<Plan, String> {
        let sources = Sources::parse(&scenario.source)?;
        let addr = choose_address(&scenario, &sources)?;
        let tls = if scenario.uses_tls() {
            let ca = (!scenario.ca.is_empty()).then(|| std::path::Path::new(&scenario.ca));
            Some(TlsTarget::new(scenario.host(), ca)?)
        } else {
            None
        };
        let start = Instant::now();
        let measure_from = start + scenario.warmup;
        let stop_at = measure_from + scenario.duration;
        let silences = scenario
            .silences()
            .into_iter()
            .map(|(from, until, spread)| Silence {
                from: start + from,
                until: start + until,
                spread,
            })
            .collect();
        let pause_windows = scenario
            .chaos
            .iter()
            .filter(|e| matches!(e.action, ChaosAction::Kill | ChaosAction::Drain))
            .map(|e| {
                let at = start + e.at;
                (at.checked_sub(PAUSE_BEFORE).unwrap_or(at), at + PAUSE_AFTER)
            })
            .collect();
        let nonce = format!(
            "{}{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() % 1_000_000)
                .unwrap_or(0)
        );
        let flood_at = scenario.flood.as_ref().map(|f| start + f.at);
        Ok(Plan {
            addr,
            tls,
            sources,
            flood_at,
            flood_progress: FloodProgress::default(),
            start,
            measure_from,
            stop_at,
            drain_until: stop_at + scenario.drain_timeout,
            silences,
            pause_windows,
            key_prefix: format!("lt{nonce}"),
            threads,
            driver,
            progress: Progress::new(threads),
            final_sent: (0..scenario.clients)
                .map(|_| AtomicU64::new(UNKNOWN))
                .collect(),
            scenario,
        })
    }

    pub fn lobby_of(&self, client: u32) -> usize {
        client as usize % self.scenario.actors
    }

    pub fn path_of(&self, client: u32) -> String {
        format!(
            "/actors/{}/{}-{}",
            self.scenario.actor.name(),
            self.key_prefix,
            self.lobby_of(client)
        )
    }

    /// The other clients of `client`'s lobby (chat and counter share state).
    pub fn lobby_members(&self, client: u32) -> impl Iterator<Item = u32> + '_ {
        let actors = self.scenario.actors;
        (self.lobby_of(client)..self.scenario.clients)
            .step_by(actors)
            .map(|c| c as u32)
            .filter(move |c| *c != client)
    }

    pub fn shares_state(&self) -> bool {
        self.scenario.actor != ActorKind::Echo
    }

    pub fn publish_final_sent(&self, client: u32, sent: u64) {
        self.final_sent[client as usize].store(sent, Ordering::Release);
    }

    /// `None` until that client stopped sending.
    pub fn final_sent(&self, client: u32) -> Option<u64> {
        match self.final_sent[client as usize].load(Ordering::Acquire) {
            UNKNOWN => None,
            n => Some(n),
        }
    }

    /// Microseconds since the run started (the clock messages carry).
    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    /// When client `client` may connect, for the scenario's connect rate.
    pub fn connect_slot(&self, client: u32) -> Instant {
        if self.scenario.connect_rate > 0.0 {
            self.start + Duration::from_secs_f64(client as f64 / self.scenario.connect_rate)
        } else {
            self.start
        }
    }

    /// Which phase a message sent at `sent_us` (µs since the start) counts
    /// in: 0 the quiet baseline, 1 under the flood; `None` without a flood,
    /// in the warm-up or after the end.
    pub fn phase_of(&self, sent_us: u64) -> Option<usize> {
        let flood_at = self.micros(self.flood_at?);
        if sent_us < self.micros(self.measure_from) || sent_us >= self.micros(self.stop_at) {
            None
        } else if sent_us < flood_at {
            Some(0)
        } else {
            Some(1)
        }
    }

    /// The silence `at` falls in, if any.
    pub fn silence_at(&self, at: Instant) -> Option<&Silence> {
        self.silences.iter().find(|s| at >= s.from && at < s.until)
    }
}

/// The address of the url's host; of several (`localhost`: `::1` and
/// `127.0.0.1`), the first of the sources' IP version that accepts a TCP
/// connection, tried once here, so that every client goes where the
/// gateway listens.
fn choose_address(scenario: &Scenario, sources: &Sources) -> Result<SocketAddr, String> {
    let all: Vec<SocketAddr> = scenario
        .socket_authority()
        .to_socket_addrs()
        .map_err(|e| format!("url {}: {e}", scenario.url))?
        .collect();
    let first = *all
        .first()
        .ok_or_else(|| format!("url {}: no address", scenario.url))?;
    let v4 = sources.pick(0).map(|s| s.is_ipv4());
    let candidates: Vec<SocketAddr> = all
        .into_iter()
        .filter(|a| v4.is_none_or(|v4| a.is_ipv4() == v4))
        .collect();
    if candidates.len() < 2 {
        return Ok(candidates.first().copied().unwrap_or(first));
    }
    let patience = scenario.connect_timeout.min(Duration::from_secs(2));
    Ok(candidates
        .iter()
        .find(|a| std::net::TcpStream::connect_timeout(a, patience).is_ok())
        .copied()
        .unwrap_or(candidates[0]))
}
