//! Where the load is (each worker's share, the runners of each pool), and
//! what the process did (reloads, upgrades).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::families::{counter, family};
use super::Workers;
use crate::server::conn::stats::{GatewayStats, WorkerStats, ACTOR_STATES};

#[derive(Debug)]
pub(super) struct Load {
    pub workers: Workers,
    /// Runners with a tunnel up, by namespace and pool.
    pub runners: BTreeMap<(String, String), u64>,
    pub gateway: Arc<GatewayStats>,
}

impl Collector for Load {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.per_worker(&mut e)?;
        let runners = self.runners.iter().map(|((namespace, pool), n)| {
            let labels = [("namespace", namespace.as_str()), ("pool", pool.as_str())];
            (labels, *n)
        });
        let help = "Runners with a tunnel up, by namespace and pool (a runner counts once, however many workers it reached).";
        family(&mut e, MetricType::Gauge, "tether_runners", help, runners)?;
        self.process(&mut e)
    }
}

impl Load {
    fn per_worker(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let actors = |s: &WorkerStats| (0..ACTOR_STATES).map(|i| s.actors.get(i)).sum();
        let read = |counter: fn(&WorkerStats) -> &AtomicU64| {
            move |s: &WorkerStats| counter(s).load(Ordering::Relaxed)
        };
        let help = "Client WebSockets each worker serves now (active and hibernated).";
        let name = "tether_worker_client_connections";
        self.gauge_per_worker(e, name, help, read(|s| &s.client_links))?;
        let help = "Actors each worker holds now (any state).";
        self.gauge_per_worker(e, "tether_worker_actors", help, actors)?;
        let help = "Runner tunnels connected to each worker now.";
        let name = "tether_worker_runner_tunnels";
        self.gauge_per_worker(e, name, help, read(|s| &s.tunnels))
    }

    fn gauge_per_worker(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&WorkerStats) -> u64,
    ) -> fmt::Result {
        let series = self
            .workers
            .each()
            .enumerate()
            .map(|(id, s)| ([("worker", id)], value(s)));
        family(e, MetricType::Gauge, name, help, series)
    }

    fn process(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let g = &self.gateway;
        let reloads = [
            ("applied", g.reloads_applied.load(Ordering::Relaxed)),
            ("invalid", g.reloads_invalid.load(Ordering::Relaxed)),
        ]
        .map(|(result, n)| ([("result", result)], n));
        let help = "SIGHUP reloads: applied (a valid file), invalid (it did not read or parse: nothing changed).";
        family(e, MetricType::Counter, "tether_reloads", help, reloads)?;
        let help = "Upgrades of the running gateway to a new binary.";
        let upgrades = g.upgrades.load(Ordering::Relaxed);
        counter(e, "tether_upgrades", help, upgrades)
    }
}
