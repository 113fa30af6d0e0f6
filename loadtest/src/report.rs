//! The end-of-run report: in words for a person, as JSON for machines.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::Errors;
use crate::flood::GroupStats;
use crate::scenario::{ChaosAction, Scenario};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        })
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} µs ({} samples)",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    pub clients: usize,
    /// Successful upgrades (more than `clients` when the scenario reconnects).
    pub opened: u64,
    pub per_second: f64,
    pub connect_us: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Messages {
    /// After the warm-up, over `measured_seconds`.
    pub sent: u64,
    pub received: u64,
    pub sent_per_second: f64,
    pub received_per_second: f64,
    pub sent_mib_per_second: f64,
    pub received_mib_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pause {
    pub action: ChaosAction,
    pub runner: usize,
    pub at_ms: u64,
    /// Per client: the longest it heard nothing of its own traffic around the event.
    pub longest_silence_us: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayUsage {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// CPU per message received by clients (deliveries), over the whole run.
    pub cpu_us_per_message: f64,
    pub rss_kib_start: u64,
    pub rss_kib_peak: u64,
    pub rss_kib_end: u64,
    /// (peak − start) / clients.
    pub rss_bytes_per_connection: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: usize,
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub threads: usize,
    pub io_driver: String,
    pub measured_seconds: f64,
    pub connections: Connections,
    pub messages: Messages,
    pub round_trip_us: Option<Percentiles>,
    pub wake_us: Option<Percentiles>,
    pub pauses: Vec<Pause>,
    pub errors: Errors,
    pub error_notes: Vec<String>,
    pub gateway: Option<GatewayUsage>,
    /// Round trips by the second they completed in, from the start (warm-up included).
    pub timeline: Vec<Second>,
    /// A flood scenario: the well-behaved group before and under the flood.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<FloodReport>,
    /// Nothing lost, duplicated, reordered or refused, and messages flowed.
    pub ok: bool,
}

impl Report {
    pub fn text(&self) -> String {
        let mut t = String::new();
        let s = &self.scenario;
        let mut line = |l: String| {
            t.push_str(&l);
            t.push('\n');
        };
        line(format!(
            "scenario {} against {} — {} clients, {} {} actors, {} B messages, {}, {} threads ({})",
            s.name,
            s.url,
            s.clients,
            s.actors,
            s.actor.name(),
            s.message_bytes,
            if s.rate > 0.0 {
                format!("{} msg/s per client", s.rate)
            } else {
                "closed loop".into()
            },
            self.threads,
            self.io_driver
        ));
        let c = &self.connections;
        line(format!(
            "connections: {} opened ({:.0}/s){}",
            c.opened,
            c.per_second,
            c.connect_us
                .as_ref()
                .map(|p| format!(", connect {}", p.line()))
                .unwrap_or_default()
        ));
        let m = &self.messages;
        line(format!(
            "messages over {:.1} s: sent {} ({:.0}/s, {:.2} MiB/s), received {} ({:.0}/s, {:.2} MiB/s)",
            self.measured_seconds,
            m.sent,
            m.sent_per_second,
            m.sent_mib_per_second,
            m.received,
            m.received_per_second,
            m.received_mib_per_second
        ));
        if let Some(r) = &self.round_trip_us {
            line(format!("round trip: {}", r.line()));
        }
        if let Some(w) = &self.wake_us {
            line(format!("wake: {}", w.line()));
        }
        for p in &self.pauses {
            line(format!(
                "{:?} runner {} at {} ms — longest silence per client: {}",
                p.action,
                p.runner,
                p.at_ms,
                p.longest_silence_us
                    .as_ref()
                    .map(|x| x.line())
                    .unwrap_or_else(|| "no client was active".into())
            ));
        }
        if let Some(g) = &self.gateway {
            line(format!(
                "gateway pid {}: {:.2} CPU-s ({:.2} µs per message received), RSS {} → peak {} → {} KiB ({:.0} B per connection)",
                g.pid,
                g.cpu_seconds,
                g.cpu_us_per_message,
                g.rss_kib_start,
                g.rss_kib_peak,
                g.rss_kib_end,
                g.rss_bytes_per_connection
            ));
        }
        if let Some(f) = &self.flood {
            for l in f.lines() {
                line(l);
            }
        }
        line(format!("errors: {}", self.errors.describe()));
        for n in &self.error_notes {
            line(format!("  {n}"));
        }
        line(if self.ok {
            "result: OK — nothing lost, duplicated or reordered".into()
        } else {
            "result: FAILED".into()
        });
        t
    }
}

/// Per-second summaries of the timeline histograms.
pub fn timeline(per_second: &[Histogram<u64>]) -> Vec<Second> {
    per_second
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.is_empty())
        .map(|(second, h)| Second {
            second,
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
        .collect()
}

/// CPU used during a phase, in cores (CPU seconds per second).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseCpu {
    /// The gateway (`--gateway-pid`) and its direct children.
    pub gateway: Option<f64>,
    /// The runners this load test started.
    pub runners: f64,
    /// This process's well-behaved client threads.
    pub clients: f64,
    /// This process's abusive threads.
    pub flood: f64,
}

/// The well-behaved group in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub seconds: f64,
    /// Round trips of messages sent in this phase.
    pub round_trip_us: Option<Percentiles>,
    /// The well-behaved newcomer's connect + upgrade, when it got in.
    pub newcomer_connect_us: Option<Percentiles>,
    /// The well-behaved newcomer refused, by status.
    pub newcomer_refused: BTreeMap<u16, u64>,
    pub newcomer_failed: u64,
    pub cpu: Option<PhaseCpu>,
}

/// One abusive group.
#[derive(Debug, Clone, Serialize)]
pub struct FloodGroup {
    pub name: String,
    pub source: String,
    pub clients: usize,
    /// Most connections of the group open at once (idle, silent, spam).
    pub peak_open: u64,
    #[serde(flatten)]
    pub stats: GroupStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    pub at_ms: u64,
    pub baseline: Phase,
    pub under_flood: Phase,
    /// Under the flood / baseline.
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    /// From the scenario (0: not checked).
    pub max_slowdown: f64,
    pub groups: Vec<FloodGroup>,
    /// Counters of the gateway's /metrics over the flood phase (from its
    /// start to the end of the measured time), `name{labels}` → increase.
    pub gateway_counters: BTreeMap<String, f64>,
    /// The gateway's gauges at their highest during the flood (sampled twice a second).
    pub gateway_gauge_peaks: BTreeMap<String, f64>,
    /// Why /metrics could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
}

fn ratio(
    a: &Option<Percentiles>,
    b: &Option<Percentiles>,
    pick: fn(&Percentiles) -> u64,
) -> Option<f64> {
    let (a, b) = (a.as_ref()?, b.as_ref()?);
    (pick(a) > 0).then(|| (pick(b) as f64 / pick(a) as f64 * 100.0).round() / 100.0)
}

impl FloodReport {
    pub fn new(
        at_ms: u64,
        baseline: Phase,
        under_flood: Phase,
        max_slowdown: f64,
        groups: Vec<FloodGroup>,
    ) -> FloodReport {
        FloodReport {
            at_ms,
            p50_ratio: ratio(&baseline.round_trip_us, &under_flood.round_trip_us, |p| {
                p.p50
            }),
            p99_ratio: ratio(&baseline.round_trip_us, &under_flood.round_trip_us, |p| {
                p.p99
            }),
            baseline,
            under_flood,
            max_slowdown,
            groups,
            gateway_counters: BTreeMap::new(),
            gateway_gauge_peaks: BTreeMap::new(),
            metrics_error: None,
        }
    }

    /// What fails the run: the slowdown past `max_slowdown`, a well-behaved
    /// newcomer refused or failed. Each in words.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_slowdown > 0.0 {
            for (what, r) in [("p50", self.p50_ratio), ("p99", self.p99_ratio)] {
                match r {
                    Some(r) if r > self.max_slowdown => out.push(format!(
                        "well-behaved {what} under the flood is {r}× its quiet baseline (limit {}×)",
                        self.max_slowdown
                    )),
                    None => out.push(format!("no well-behaved {what} in one of the phases")),
                    _ => {}
                }
            }
        }
        for (name, p) in [
            ("quiet", &self.baseline),
            ("under the flood", &self.under_flood),
        ] {
            let refused: u64 = p.newcomer_refused.values().sum();
            if refused + p.newcomer_failed > 0 {
                out.push(format!(
                    "{name}: well-behaved newcomers refused {refused} times ({}), failed {}",
                    status_line(&p.newcomer_refused),
                    p.newcomer_failed
                ));
            }
        }
        out
    }

    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "flood from {} ms — the well-behaved group's round trips, by when they were sent:",
            self.at_ms
        )];
        for (name, p) in [
            ("quiet      ", &self.baseline),
            ("under flood", &self.under_flood),
        ] {
            out.push(format!(
                "  {name} ({:.1} s): {}",
                p.seconds,
                p.round_trip_us
                    .as_ref()
                    .map_or("no samples".into(), |r| r.line())
            ));
            if let Some(c) = &p.newcomer_connect_us {
                out.push(format!(
                    "    newcomers: connect p50 {} · p99 {} · max {} µs ({} in), refused {}, failed {}",
                    c.p50,
                    c.p99,
                    c.max,
                    c.count,
                    status_line(&p.newcomer_refused),
                    p.newcomer_failed
                ));
            } else if !p.newcomer_refused.is_empty() || p.newcomer_failed > 0 {
                out.push(format!(
                    "    newcomers: none got in, refused {}, failed {}",
                    status_line(&p.newcomer_refused),
                    p.newcomer_failed
                ));
            }
        }
        let show = |r: Option<f64>| r.map_or("?".to_string(), |r| format!("{r}×"));
        out.push(format!(
            "  slowdown under the flood: p50 {}, p99 {}{}",
            show(self.p50_ratio),
            show(self.p99_ratio),
            if self.max_slowdown > 0.0 {
                format!(" (limit {}×)", self.max_slowdown)
            } else {
                String::new()
            }
        ));
        for g in &self.groups {
            if g.clients == 0 {
                continue;
            }
            let s = &g.stats;
            let mut l = format!(
                "  {} ({} clients from {}): {} attempts, {} {}, refused {}, failed {}, closed by the server {}",
                g.name,
                g.clients,
                g.source,
                s.attempts,
                s.opened,
                if g.name == "silent" { "connected" } else { "upgraded" },
                s.refused_line(),
                s.failed,
                s.closed_by_server
            );
            if g.peak_open > 0 {
                l.push_str(&format!(", at most {} open at once", g.peak_open));
            }
            if s.messages_sent > 0 {
                l.push_str(&format!(
                    ", {} messages sent, {} echoed",
                    s.messages_sent, s.messages_received
                ));
            }
            out.push(l);
            for n in &s.notes {
                out.push(format!("    {n}"));
            }
        }
        if let Some(e) = &self.metrics_error {
            out.push(format!("  gateway /metrics not read: {e}"));
        } else if !self.gateway_counters.is_empty() {
            let refusals: Vec<String> = self
                .gateway_counters
                .iter()
                .filter(|(k, v)| k.starts_with("tether_connections_refused_total") && **v > 0.0)
                .map(|(k, v)| {
                    let reason = k
                        .split_once("reason=\"")
                        .and_then(|(_, r)| r.split_once('"'))
                        .map_or(k.as_str(), |(r, _)| r);
                    format!("{reason} {v}")
                })
                .collect();
            out.push(format!(
                "  gateway refusals during the flood (/metrics): {}",
                if refusals.is_empty() {
                    "none".into()
                } else {
                    refusals.join(", ")
                }
            ));
            let peaks: Vec<String> = self
                .gateway_gauge_peaks
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if !peaks.is_empty() {
                out.push(format!(
                    "  gateway gauges at their peak: {}",
                    peaks.join(", ")
                ));
            }
        }
        if let (Some(a), Some(b)) = (&self.baseline.cpu, &self.under_flood.cpu) {
            let g = match (a.gateway, b.gateway) {
                (Some(a), Some(b)) => format!("gateway {a:.2} → {b:.2}, "),
                _ => String::new(),
            };
            out.push(format!(
                "  CPU in cores, quiet → flood: {g}runners {:.2} → {:.2}, well-behaved clients {:.2} → {:.2}, abusive clients {:.2} → {:.2}",
                a.runners, b.runners, a.clients, b.clients, a.flood, b.flood
            ));
        }
        out
    }
}

/// `429 ×3, 503 ×1`, or `none`.
pub fn status_line(by_status: &BTreeMap<u16, u64>) -> String {
    if by_status.is_empty() {
        return "none".into();
    }
    by_status
        .iter()
        .map(|(s, n)| format!("{s} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
