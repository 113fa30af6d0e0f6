//! A message body as it arrives: bytes in, `Data` and `End` out.
//!
//! Like `ws::Decoder`, pure state over the caller's `BytesMut`: data is
//! split off that buffer (no copy), framing bytes are consumed, and nothing
//! past the body is touched. What is held between calls is a few counters,
//! so a 100 MiB upload costs no more memory than the read buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::line::{find_line, parse_size_line, parse_trailer_line, TrailerLine};
use super::{BodyError, BodyLimits, Framing};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEvent {
    /// The next piece of the body (never empty).
    Data(Bytes),
    /// The body is complete; trailers, if any, were read and dropped.
    End,
}

#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    limits: BodyLimits,
    /// Body bytes announced so far (chunk sizes, or bytes until close),
    /// checked against the limit before any of them is handed out.
    announced: u64,
    /// Chunk-extension bytes seen so far.
    extension_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length {
        remaining: u64,
    },
    UntilClose,
    /// `scanned`: bytes of the partial line already searched for its LF.
    SizeLine {
        scanned: usize,
    },
    ChunkData {
        remaining: u64,
    },
    ChunkEnd,
    /// `used`: trailer bytes consumed, against `max_trailer_bytes`.
    Trailers {
        scanned: usize,
        used: usize,
    },
    Done,
}

/// What one step of chunked decoding did.
enum Step {
    Event(BodyEvent),
    /// Consumed framing; try again.
    Again,
    NeedMore,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`. A declared length over the
    /// limit is refused here, before any of the body is read.
    pub fn new(framing: Framing, limits: BodyLimits) -> Result<Self, BodyError> {
        let state = match framing {
            Framing::Length(n) if n > limits.max_body_bytes => return Err(BodyError::TooLarge),
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::SizeLine { scanned: 0 },
            Framing::UntilClose => State::UntilClose,
        };
        Ok(Self {
            state,
            limits,
            announced: 0,
            extension_bytes: 0,
        })
    }

    /// True once `End` has been returned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next event out of `buf`. `Ok(None)`: read more (or, once
    /// done, nothing more will come). After an error the decoder must not be
    /// fed again, and the connection must close: where the body ends is lost.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BodyEvent>, BodyError> {
        loop {
            let step = match self.state {
                State::Done => return Ok(None),
                State::Length { remaining: 0 } => {
                    self.state = State::Done;
                    Step::Event(BodyEvent::End)
                }
                State::Length { remaining } => {
                    self.data(buf, remaining, |r| State::Length { remaining: r })
                }
                State::UntilClose => self.until_close(buf)?,
                State::SizeLine { scanned } => self.size_line(buf, scanned)?,
                State::ChunkData { remaining } => self.data(buf, remaining, |r| match r {
                    0 => State::ChunkEnd,
                    r => State::ChunkData { remaining: r },
                }),
                State::ChunkEnd => chunk_end(buf)?.map_or(Step::NeedMore, |()| {
                    self.state = State::SizeLine { scanned: 0 };
                    Step::Again
                }),
                State::Trailers { scanned, used } => self.trailer(buf, scanned, used)?,
            };
            match step {
                Step::Event(event) => return Ok(Some(event)),
                Step::Again => continue,
                Step::NeedMore => return Ok(None),
            }
        }
    }

    /// The connection closed (after `decode` took what it could). `End` for
    /// a body that runs until close; an error if any other body was cut short.
    pub fn at_eof(&mut self) -> Result<Option<BodyEvent>, BodyError> {
        match self.state {
            State::Done => Ok(None),
            State::UntilClose => {
                self.state = State::Done;
                Ok(Some(BodyEvent::End))
            }
            _ => Err(BodyError::Truncated),
        }
    }

    /// Splits up to `remaining` bytes off the front of `buf`; `next` is the
    /// state for what is left of them.
    fn data(&mut self, buf: &mut BytesMut, remaining: u64, next: fn(u64) -> State) -> Step {
        if buf.is_empty() {
            return Step::NeedMore;
        }
        let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        self.state = next(remaining - n as u64);
        Step::Event(BodyEvent::Data(buf.split_to(n).freeze()))
    }

    fn until_close(&mut self, buf: &mut BytesMut) -> Result<Step, BodyError> {
        if buf.is_empty() {
            return Ok(Step::NeedMore);
        }
        self.announce(buf.len() as u64)?;
        Ok(Step::Event(BodyEvent::Data(buf.split().freeze())))
    }

    fn size_line(&mut self, buf: &mut BytesMut, mut scanned: usize) -> Result<Step, BodyError> {
        let max = self.limits.max_chunk_line_bytes;
        let Some(len) = find_line(buf, &mut scanned, max).map_err(|()| BodyError::LineTooLong)?
        else {
            self.state = State::SizeLine { scanned };
            return Ok(Step::NeedMore);
        };
        let (size, extension) = parse_size_line(&buf[..len])?;
        self.extension_bytes = self.extension_bytes.saturating_add(extension);
        if self.extension_bytes > self.limits.max_extension_bytes {
            return Err(BodyError::LineTooLong);
        }
        self.announce(size)?;
        buf.advance(len);
        self.state = match size {
            0 => State::Trailers {
                scanned: 0,
                used: 0,
            },
            size => State::ChunkData { remaining: size },
        };
        Ok(Step::Again)
    }

    fn trailer(
        &mut self,
        buf: &mut BytesMut,
        mut scanned: usize,
        used: usize,
    ) -> Result<Step, BodyError> {
        let budget = self.limits.max_trailer_bytes.saturating_sub(used);
        let found =
            find_line(buf, &mut scanned, budget).map_err(|()| BodyError::TrailersTooLarge)?;
        let Some(len) = found else {
            self.state = State::Trailers { scanned, used };
            return Ok(Step::NeedMore);
        };
        let line = parse_trailer_line(&buf[..len])?;
        buf.advance(len);
        self.state = match line {
            TrailerLine::End => State::Done,
            TrailerLine::Field => State::Trailers {
                scanned: 0,
                used: used + len,
            },
        };
        Ok(match line {
            TrailerLine::End => Step::Event(BodyEvent::End),
            TrailerLine::Field => Step::Again,
        })
    }

    /// Counts `n` more body bytes against the limit, before they are taken.
    fn announce(&mut self, n: u64) -> Result<(), BodyError> {
        match self.announced.checked_add(n) {
            Some(total) if total <= self.limits.max_body_bytes => {
                self.announced = total;
                Ok(())
            }
            _ => Err(BodyError::TooLarge),
        }
    }
}

/// The CRLF after a chunk's data. `Ok(None)`: not all of it is here yet.
fn chunk_end(buf: &mut BytesMut) -> Result<Option<()>, BodyError> {
    match buf.get(..2) {
        Some(b"\r\n") => {
            buf.advance(2);
            Ok(Some(()))
        }
        None if buf.first().is_none_or(|&b| b == b'\r') => Ok(None),
        _ => Err(BodyError::Malformed("chunk data not followed by CRLF")),
    }
}
