//! A request body on its way to the actor: decoded from the client's read
//! buffer (zero-copy slices of it) and forwarded in pieces of at most
//! 64 KiB within the runner's credit. What the credit does not allow yet
//! waits here, and nothing more is read meanwhile: a 100 MiB upload holds
//! at most a read buffer and a credit window in the gateway. A runner whose
//! tunnel is congested (`runners.max_send_queue_bytes`) gets nothing more
//! until it drains, as for WebSocket clients.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::http::body::{BodyDecoder, BodyError, BodyEvent, BodyLimits, Framing};
use crate::server::actors::{Actors, Exchange, MAX_PIECE};
use crate::server::conn::control::ConnControl;

/// Why forwarding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The body is complete (`HttpEnd` sent), or there was none.
    Done,
    /// More bytes must be read from the client.
    NeedRead,
    /// The runner's credit is used up, or its tunnel is congested: wait.
    NoCredit,
}

pub(super) struct RequestBody {
    decoder: Option<BodyDecoder>,
    /// Decoded, not forwarded yet.
    pending: Bytes,
    complete: bool,
}

impl RequestBody {
    /// A body framed as `framing` (a declared length over the limit was
    /// refused before: here it would be `TooLarge`).
    pub fn new(framing: Framing, limits: BodyLimits) -> Result<Self, BodyError> {
        let none = framing == Framing::Length(0);
        Ok(RequestBody {
            decoder: (!none)
                .then(|| BodyDecoder::new(framing, limits))
                .transpose()?,
            pending: Bytes::new(),
            complete: none,
        })
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Forwards what `buf` holds, as far as the credit goes.
    pub fn forward(
        &mut self,
        buf: &mut BytesMut,
        exchange: &Exchange,
        (actors, control): (&Actors, &Rc<ConnControl>),
    ) -> Result<Stop, BodyError> {
        loop {
            if self.complete {
                return Ok(Stop::Done);
            }
            if self.pending.is_empty() {
                let Some(decoder) = self.decoder.as_mut() else {
                    return Ok(Stop::Done);
                };
                match decoder.decode(buf)? {
                    Some(BodyEvent::Data(data)) => self.pending = data,
                    Some(BodyEvent::End) => {
                        actors.http_end(exchange);
                        self.complete = true;
                        continue;
                    }
                    None => return Ok(Stop::NeedRead),
                }
            }
            let credit = usize::try_from(exchange.credit_left()).unwrap_or(usize::MAX);
            let n = credit.min(self.pending.len()).min(MAX_PIECE);
            if n == 0 || actors.http_congested(exchange, control) {
                return Ok(Stop::NoCredit);
            }
            actors.http_body(exchange, self.pending.split_to(n));
        }
    }
}
