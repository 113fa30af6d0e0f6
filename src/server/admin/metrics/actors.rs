//! Actors by state, and how long their clients wait while they wake or move.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::families::family;
use super::Workers;
use crate::server::actors::ActorState;
use crate::server::conn::histogram::{Histogram, Snapshot};
use crate::server::conn::stats::{WorkerStats, ACTOR_STATES};

#[derive(Debug)]
pub(super) struct Actors(pub Workers);

impl Collector for Actors {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let mut counts = [0; ACTOR_STATES];
        for s in self.0.each() {
            s.actors.add_to(&mut counts);
        }
        let series = ActorState::NAMES
            .into_iter()
            .zip(counts)
            .map(|(state, n)| ([("state", state)], n));
        let help = "Actors now, by state (stopping: to sleep; migrating: stopping to move).";
        family(&mut e, MetricType::Gauge, "tether_actors", help, series)?;
        let help = "From a wake's trigger (a message, close or client for an asleep actor) to the actor running again.";
        let name = "tether_actor_wake_latency_seconds";
        self.histogram(&mut e, name, help, |s| &s.wake_latency)?;
        let help = "From an actor's stop on its runner for a move (drain, operator) to it running on the next: its clients' messages are held meanwhile.";
        let name = "tether_actor_migration_pause_seconds";
        self.histogram(&mut e, name, help, |s| &s.migration_pause)
    }
}

impl Actors {
    /// Every worker's histogram, summed bucket by bucket.
    fn histogram(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        of: fn(&WorkerStats) -> &Histogram,
    ) -> fmt::Result {
        let mut total = Snapshot::default();
        for s in self.0.each() {
            total.add(&of(s).snapshot());
        }
        let mut metric = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
        let buckets = total.buckets_in_seconds();
        metric.encode_histogram::<NoLabelSet>(total.sum_seconds(), total.count(), &buckets, None)
    }
}
