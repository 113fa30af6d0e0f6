//! Serverless pools (issue 15): runners each pool has starting, live and
//! retiring, actors waiting for one, starts and their failures by cause,
//! retirements by reason. Read from the pools' shared state once per scrape.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::families::family;
use crate::server::serverless::{PoolView, FAILURE_CAUSES};

#[derive(Debug)]
pub(super) struct Serverless(pub Vec<PoolView>);

impl Collector for Serverless {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let e = &mut e;
        let by = |v: &PoolView, what: &'static str, which: &'static str, n: u64| {
            let (ns, pool) = (v.pool.0.clone(), v.pool.1.clone());
            (
                [("namespace", ns), ("pool", pool), (what, which.to_owned())],
                n,
            )
        };
        let runners = self.0.iter().flat_map(|v| {
            [
                ("starting", v.starting),
                ("live", v.live),
                ("retiring", v.retiring),
            ]
            .map(|(phase, n)| by(v, "phase", phase, n.into()))
        });
        let help = "Runners the gateway started for each serverless pool, by phase: starting (/start sent, not registered), live, retiring (draining).";
        family(
            e,
            MetricType::Gauge,
            "tether_serverless_runners",
            help,
            runners,
        )?;
        let failures = self.0.iter().flat_map(|v| {
            FAILURE_CAUSES
                .iter()
                .zip(v.counters.failures)
                .map(move |(cause, n)| by(v, "cause", cause, n))
        });
        let help = "Failed starts by cause: http (non-2xx), connect, timeout (no answer or no registration within start_timeout), protocol (not HTTP, a bound broken, TLS).";
        family(
            e,
            MetricType::Counter,
            "tether_serverless_start_failures",
            help,
            failures,
        )?;
        let retirements = self.0.iter().flat_map(|v| {
            let c = &v.counters;
            [
                ("lifespan", c.lifespan_drains),
                ("idle", c.idle_retirements),
                ("died", c.died_early),
            ]
            .map(|(why, n)| by(v, "reason", why, n))
        });
        let help = "Started runners that ended: drained before their lifespan (lifespan), retired with no actor (idle), or whose request ended before either (died).";
        family(
            e,
            MetricType::Counter,
            "tether_serverless_retirements",
            help,
            retirements,
        )?;
        let pool = |v: &PoolView| [("namespace", v.pool.0.clone()), ("pool", v.pool.1.clone())];
        let starts = self.0.iter().map(|v| (pool(v), v.counters.starts));
        let help = "GET /start calls made for each serverless pool.";
        family(
            e,
            MetricType::Counter,
            "tether_serverless_starts",
            help,
            starts,
        )?;
        let refused = self.0.iter().map(|v| (pool(v), v.counters.refused));
        let help = "Runner tunnels refused (close 4403): their hello named the serverless pool with a runner key that is none of its starts.";
        family(
            e,
            MetricType::Counter,
            "tether_serverless_runners_refused",
            help,
            refused,
        )?;
        let waiting = self.0.iter().map(|v| (pool(v), u64::from(v.waiting)));
        let help =
            "Actors waiting for a runner of each serverless pool, as the workers last reported.";
        family(
            e,
            MetricType::Gauge,
            "tether_serverless_waiting_actors",
            help,
            waiting,
        )
    }
}
