//! `GET /events`: the inspector's live feed, as server-sent events — a
//! `snapshot` (runners, actors, connection counts, message totals and
//! rate) once a second, an `event` per thing that happened (open, close,
//! start, sleep, wake, migrate, failover, drain), and `lagged` when this
//! stream fell so far behind that events were skipped.
//!
//! A stream is a long-lived admin connection: at most
//! `admin.max_event_streams` are open (503 past it); each holds only the
//! bytes of its current write, which must progress within
//! `client.send_timeout` or the stream ends; all end when the gateway
//! stops. The page reads it with `fetch()`, so the token travels in the
//! `Authorization` header like every other admin request.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::AdminSide;
use crate::http::Status;
use crate::server::conn::io::write_all_or_stall;
use crate::server::conn::reply::Refusal;
use crate::server::conn::stream::Stream;

/// How often a stream sends what is new: events reach the page within this.
const SEND_EVERY: Duration = Duration::from_millis(250);

/// The response head; the body runs until either side closes.
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-store\r\n\
X-Content-Type-Options: nosniff\r\n\
Connection: close\r\n\
\r\n\
: tether inspector\n\n";

/// Streams until the client goes away, stops reading, or the gateway
/// stops; `Some` only to refuse.
pub(super) async fn stream(side: &AdminSide, stream: &mut Stream) -> Option<Refusal> {
    let Some((_watching, mut cursor)) = side.hub.join() else {
        let reason = format!(
            "{} inspector streams are open already (admin.max_event_streams)",
            side.hub.max_streams()
        );
        return Some(Refusal::new(Status::SERVICE_UNAVAILABLE, reason));
    };
    let stall = side.env.config().client.send_timeout;
    let mut out = BytesMut::from(HEAD);
    loop {
        match write_all_or_stall(stream, out, stall).await {
            Ok(mut written) => {
                written.clear();
                out = written;
            }
            Err(_) => return None, // gone, or not reading
        }
        monoio::select! {
            _ = side.stopping.wait() => return None,
            _ = monoio::time::sleep(SEND_EVERY) => {}
        }
        side.hub.pump(Instant::now(), parked(side));
        side.hub.unsent(&mut cursor, &mut out);
    }
}

/// Hibernated sockets held by every worker's parker.
fn parked(side: &AdminSide) -> u64 {
    let all = side.all_stats.iter();
    all.map(|s| s.parked.load(Ordering::Relaxed)).sum()
}
