//! A worker's part of the inspector: while an inspector watches, a
//! snapshot of the worker's runners and actors every second, put where
//! the admin worker reads it (`actors::Feed`). While nobody watches, the
//! task waits on the feed without a timer, so an idle worker stays asleep.

use std::rc::Rc;
use std::time::Duration;

use super::worker::Worker;

/// How often a watched worker publishes its snapshot.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Actors per worker in one snapshot (the page shows a bounded table).
pub(crate) const SNAPSHOT_ACTORS: usize = 200;

pub(super) async fn publish_snapshots(worker: Rc<Worker>) {
    let feed = worker.feed.clone();
    loop {
        monoio::select! {
            _ = worker.finished.wait() => return,
            _ = feed.until_watched() => {}
        }
        while feed.is_watched() {
            feed.publish(worker.actors.snapshot(SNAPSHOT_ACTORS));
            monoio::select! {
                _ = worker.finished.wait() => return,
                _ = monoio::time::sleep(SNAPSHOT_EVERY) => {}
            }
        }
    }
}
