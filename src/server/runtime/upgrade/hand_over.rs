//! A worker of the old process hands its client connections over.
//!
//! 1. It stopped accepting (the caller). No actor starts again: a
//!    handshake waiting for one, or asking for one later, gets 503 with
//!    Retry-After (its client comes back to the next process); those still
//!    sending their request get a short grace.
//! 2. Every actor on a runner is stopped there, gracefully: the runner
//!    acknowledges what it handled, then confirms.
//! 3. The runner tunnels close with 1012: the runners reconnect, and the
//!    next process accepts them.
//! 4. Only now (nothing more can come from a runner) every client session
//!    is poked (a parked one resumes); between messages, with nothing left
//!    to write, it stops and is sent on with its record (a TLS 1.3
//!    session's keys included; TLS 1.2 is closed with 1012). A link whose client closed
//!    before its actor could be told goes as a record without a socket.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{info, warn};

use super::Export;
use crate::handover::TlsState;
use crate::server::conn::stream::Detached;
use crate::server::edge::Handed;
use crate::server::runtime::worker::Worker;
use crate::ws::CloseCode;

/// How often the worker looks again while it waits on the steps above.
const POLL: Duration = Duration::from_millis(5);
/// How long a client still sending its upgrade request may take.
const HANDSHAKE_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn hand_over(worker: &Rc<Worker>, exports: &Sender<Export>) {
    let config = worker.env.config();
    worker.actors.begin_handover();
    // A handshake in progress is answered 503 (Retry-After) as soon as it
    // asks for its actor; one still sending its request is cut after a grace.
    let handshakes = config.client.handshake_timeout.min(HANDSHAKE_GRACE);
    if !until(handshakes, || no_handshakes(worker)).await {
        warn!(
            worker = worker.id,
            "upgrade: handshakes still in progress; going on"
        );
    }
    let stops = config.actors.stop_timeout + Duration::from_secs(1);
    if !until(stops, || worker.actors.all_off_runners()).await {
        warn!(
            worker = worker.id,
            "upgrade: actors still on runners; going on"
        );
    }
    let reason = "gateway upgrading: reconnect";
    worker
        .actors
        .close_tunnels(|_| true, CloseCode::SERVICE_RESTART, reason);
    worker.actors.release_sessions();
    // Other nodes' clients are not handed over: they leave the actors here
    // now, and their nodes move them (with no disconnect) once the links
    // drop with this process (meanwhile those nodes keep what they send).
    worker.actors.drop_all_relayed("node upgrading");
    worker.env.registry.poke_all();
    let sessions = config.client.send_timeout + config.client.close_timeout;
    let mut sent = 0;
    // Done when only links without a session are left (clients that
    // closed before their actor could be told).
    let all_sent = until(sessions, || {
        sent += send_handed(worker, exports);
        worker.actors.linked() == worker.actors.closed_links().len()
    })
    .await;
    sent += send_closed(worker, exports);
    if !all_sent {
        let left = worker.actors.linked();
        warn!(
            worker = worker.id,
            left, "upgrade: connections not handed over in time are closed"
        );
    }
    info!(
        worker = worker.id,
        connections = sent,
        "upgrade: connections handed over"
    );
    let _ = exports.send(Export::WorkerDone);
}

/// No client connection of any worker is mid-handshake, and none here
/// waits for a runner's accept.
fn no_handshakes(worker: &Worker) -> bool {
    let all = worker.admin.all_stats.iter();
    all.map(|s| s.handshakes.load(Ordering::Relaxed))
        .sum::<u64>()
        == 0
        && worker.actors.opening() == 0
}

/// Checks `done` every few milliseconds until it holds (true) or `limit`
/// has passed (false).
fn until(limit: Duration, mut done: impl FnMut() -> bool) -> impl Future<Output = bool> {
    let deadline = Instant::now() + limit;
    async move {
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            monoio::time::sleep(POLL).await;
        }
    }
}

/// Sends on every session handed over since the last call; returns how many.
fn send_handed(worker: &Worker, exports: &Sender<Export>) -> usize {
    let handed = std::mem::take(&mut *worker.edge.handed.borrow_mut());
    let mut sent = 0;
    for h in handed {
        sent += usize::from(send_one(worker, h, exports));
    }
    sent
}

/// Sends on the links whose client closed: their actor sees their
/// messages, then their close, in the next process.
fn send_closed(worker: &Worker, exports: &Sender<Export>) -> usize {
    let mut sent = 0;
    for conn_id in worker.actors.closed_links() {
        if let Some(record) = worker.actors.export_conn(conn_id, 0, Bytes::new()) {
            sent += usize::from(exports.send(Export::Conn(Box::new(record), None)).is_ok());
        }
    }
    sent
}

fn send_one(worker: &Worker, h: Handed, exports: &Sender<Export>) -> bool {
    let Handed {
        conn_id,
        next_index,
        stream,
        mut unread,
        registration,
    } = h;
    let unread_bytes = Bytes::copy_from_slice(&unread);
    unread.clear();
    worker.env.pool.give_back(unread);
    // The socket and its TLS keys first: without them the connection is
    // lost, and its actor must hear so (a close the next process delivers).
    let taken = stream.detach().ok().and_then(|Detached { fd, tls }| {
        let tls = tls.map(|t| t.into_moved()).transpose().ok()?;
        Some((fd, tls))
    });
    let Some((fd, tls)) = taken else {
        warn!(
            worker = worker.id,
            conn_id, "upgrade: a connection could not be handed over"
        );
        worker
            .actors
            .client_closed(conn_id, CloseCode::ABNORMAL, "lost in an upgrade");
        return false;
    };
    let Some(mut record) = worker.actors.export_conn(conn_id, next_index, unread_bytes) else {
        return false;
    };
    record.tls = tls.map(|(secrets, incoming)| TlsState {
        secrets,
        incoming: incoming.freeze(),
    });
    drop(registration);
    exports
        .send(Export::Conn(Box::new(record), Some(fd)))
        .is_ok()
}
