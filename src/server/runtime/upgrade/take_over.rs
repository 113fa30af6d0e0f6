//! A worker of the new process takes the connections the old one handed
//! over: each gets its link to its actor (asleep here until every one is
//! in) and a session; then the actors that were awake wake, and the worker
//! starts accepting.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tracing::{info, warn};

use super::Inherited;
use crate::handover::ConnRecord;
use crate::server::conn::stream::{attach_fd, Stream};
use crate::server::runtime::handoff::HandoffQueues;
use crate::server::runtime::worker::Worker;

pub(crate) async fn take_over(worker: &Rc<Worker>, inbox: Arc<HandoffQueues<Inherited>>) {
    let mut taken = 0;
    worker.actors.begin_take_over();
    while let Inherited::Conn(record, fd) = inbox.receive(worker.id).await {
        taken += usize::from(adopt(worker, *record, fd));
    }
    worker.actors.wake_imported();
    info!(
        worker = worker.id,
        connections = taken,
        "upgrade: connections taken over"
    );
}

fn adopt(worker: &Worker, record: ConnRecord, fd: Option<OwnedFd>) -> bool {
    let registration = worker.env.registry.register(Instant::now());
    let control = registration.control.clone();
    let Some(fd) = fd else {
        // Closed by its client: only its actor needs to hear of it.
        return worker.actors.import_conn(&record, control).is_ok();
    };
    let stream = match stream_of(fd, &record) {
        Ok(stream) => stream,
        Err(e) => {
            warn!(worker = worker.id, error = %e, "upgrade: cannot take a connection over");
            return false;
        }
    };
    match worker.actors.import_conn(&record, control) {
        Ok(conn_id) => {
            let unread = BytesMut::from(&record.unread[..]);
            let next = record.next_index;
            worker
                .edge
                .resume_handed(conn_id, next, stream, unread, registration);
            true
        }
        Err(why) => {
            warn!(worker = worker.id, %why, "upgrade: connection dropped");
            false
        }
    }
}

/// The socket back in monoio, with its TLS session resumed if it had one.
fn stream_of(fd: OwnedFd, record: &ConnRecord) -> Result<Stream, String> {
    let tcp = attach_fd(fd).map_err(|e| e.to_string())?;
    match &record.tls {
        None => Ok(Stream::plain(tcp)),
        Some(tls) => {
            Stream::resumed(tcp, &tls.secrets, &tls.incoming).map_err(|e| e.reason().to_string())
        }
    }
}
