//! The picture the inspector page draws once a second, composed from each
//! worker's latest snapshot: runners merged over workers, actors, counts
//! and message totals summed, and the message rate since the previous
//! picture. Plain values in, a serializable value out.

use std::time::Duration;

use serde::Serialize;

use crate::server::actors::{merge_runners, ActorView, ConnCounts, RunnerView, WorkerSnapshot};

/// Runners and actors in one picture (the page shows bounded tables).
const PICTURE_ITEMS: usize = 200;

#[derive(Serialize)]
pub(super) struct View<'a> {
    pub at_ms: u64,
    /// Workers whose snapshot is in (all of them, after the first second).
    pub workers: usize,
    pub runners: Vec<RunnerView>,
    pub runners_total: usize,
    pub actors: Vec<&'a ActorView>,
    pub actors_total: usize,
    pub connections: Connections,
    pub messages: Messages,
    /// Events the workers dropped because nobody read them in time.
    pub events_dropped: u64,
}

#[derive(Serialize)]
pub(super) struct Connections {
    #[serde(flatten)]
    pub counts: ConnCounts,
    /// Hibernated sockets held by the parker, with no task of their own.
    pub parked: u64,
}

#[derive(Serialize)]
pub(super) struct Messages {
    #[serde(rename = "in")]
    pub inbound: u64,
    #[serde(rename = "out")]
    pub outbound: u64,
    /// In and out together, since the previous picture.
    pub per_second: f64,
}

/// What is not in the workers' snapshots.
pub(super) struct Extras {
    pub at_ms: u64,
    pub parked: u64,
    pub events_dropped: u64,
    /// How long ago the previous picture was, and the messages it counted.
    pub previous: Option<(Duration, u64)>,
}

impl Messages {
    pub fn total(&self) -> u64 {
        self.inbound + self.outbound
    }
}

pub(super) fn compose<'a>(snapshots: &[&'a WorkerSnapshot], extras: Extras) -> View<'a> {
    let mut runners = merge_runners(snapshots.iter().flat_map(|s| s.runners.iter().cloned()));
    let runners_total = runners.len();
    runners.truncate(PICTURE_ITEMS);
    let all_actors = snapshots.iter().flat_map(|s| s.actors.items.iter());
    let mut counts = ConnCounts::default();
    let (mut inbound, mut outbound) = (0, 0);
    for s in snapshots {
        counts.open += s.connections.open;
        counts.hibernated += s.connections.hibernated;
        inbound += s.messages_in;
        outbound += s.messages_out;
    }
    let per_second = extras.previous.map_or(0.0, |(ago, before)| {
        let grew = (inbound + outbound).saturating_sub(before) as f64;
        (grew / ago.as_secs_f64().max(0.001) * 10.0).round() / 10.0
    });
    View {
        at_ms: extras.at_ms,
        workers: snapshots.len(),
        runners,
        runners_total,
        actors: all_actors.take(PICTURE_ITEMS).collect(),
        actors_total: snapshots.iter().map(|s| s.actors.total).sum(),
        connections: Connections {
            counts,
            parked: extras.parked,
        },
        messages: Messages {
            inbound,
            outbound,
            per_second,
        },
        events_dropped: extras.events_dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::actors::Bounded;

    fn snapshot(worker: usize, actors: usize, messages_in: u64) -> WorkerSnapshot {
        WorkerSnapshot {
            worker,
            runners: Vec::new(),
            actors: Bounded {
                items: Vec::new(),
                total: actors,
            },
            connections: ConnCounts {
                open: 2,
                hibernated: 1,
            },
            messages_in,
            messages_out: 5,
        }
    }

    #[test]
    fn workers_are_summed_and_the_rate_counts_from_the_previous_picture() {
        let (a, b) = (snapshot(0, 3, 10), snapshot(1, 4, 20));
        let extras = Extras {
            at_ms: 1,
            parked: 7,
            events_dropped: 2,
            previous: Some((Duration::from_secs(2), 30)),
        };
        let view = compose(&[&a, &b], extras);
        assert_eq!((view.workers, view.actors_total), (2, 7));
        assert_eq!(
            (
                view.connections.counts.open,
                view.connections.counts.hibernated
            ),
            (4, 2)
        );
        assert_eq!(view.messages.total(), 40);
        assert_eq!(view.messages.per_second, 5.0, "10 more in 2 s");
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json["connections"],
            serde_json::json!({"open": 4, "hibernated": 2, "parked": 7})
        );
        assert_eq!(json["messages"]["in"], 30);
    }
}
