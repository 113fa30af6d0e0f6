//! An admin request's body, read whole within bounds.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::AdminSide;
use crate::http::{RequestHead, Status};
use crate::server::conn::io::{read_before, ReadOutcome};
use crate::server::conn::reply::Refusal;
use crate::server::conn::stream::Stream;

/// The request body (Content-Length, at most `limit` bytes (the setting
/// named beside it), within `client.handshake_timeout`). `Err(None)`: the client went away.
pub(super) async fn read_body(
    side: &AdminSide,
    stream: &mut Stream,
    buf: &mut BytesMut,
    head: &RequestHead,
    (limit, named): (usize, &str),
) -> Result<Bytes, Option<Refusal>> {
    let Some(length) = head
        .header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
    else {
        let reason = "Content-Length required";
        return Err(Some(Refusal::new(Status::LENGTH_REQUIRED, reason)));
    };
    if length > limit {
        let reason = format!("body larger than {named}");
        return Err(Some(Refusal::new(Status::PAYLOAD_TOO_LARGE, reason)));
    }
    let deadline = Instant::now() + side.env.config().client.handshake_timeout;
    while buf.len() < length {
        let room = length - buf.len();
        let (outcome, b) =
            read_before(stream, std::mem::take(buf), room, deadline, &side.env.pool).await;
        *buf = b;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::TimedOut => {
                let timed_out = Refusal::new(Status::REQUEST_TIMEOUT, "body timed out");
                return Err(Some(timed_out));
            }
            ReadOutcome::Eof | ReadOutcome::Failed(_) => return Err(None),
        }
    }
    Ok(buf.split_to(length).freeze())
}
