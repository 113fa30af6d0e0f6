//! The end-of-run report: in words for a person, as JSON for machines.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::Errors;
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

    fn line(&self) -> String {
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
