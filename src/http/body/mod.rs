//! HTTP/1.1 message bodies without IO (RFC 9112 §6–7): how long a body is,
//! decoding it as it arrives, and framing one on the way out.
//!
//! Groundwork for HTTP forwarding (issue 15); nothing in the gateway uses it
//! yet. The decoder never holds a body: data comes out as zero-copy slices
//! of the caller's read buffer, and the bytes after a body (a pipelined next
//! request) stay in that buffer untouched. Every length the peer announces is
//! checked against a limit before anything is taken on trust.

mod decoder;
mod encoder;
mod framing;
mod line;

#[cfg(test)]
mod tests;

pub use decoder::{BodyDecoder, BodyEvent};
pub use encoder::{BodyEncoder, ChunkHead, EncodeError, Framed, LAST_CHUNK};
pub use framing::{request_framing, response_framing, Framing};

use super::response::Status;

/// Bounds on what a peer may make the decoder accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Body bytes in all (413 past it). `u64::MAX` for a stream with no end
    /// in sight, such as an actor's Server-Sent Events.
    pub max_body_bytes: u64,
    /// One chunk-size line with its extensions and CRLF (400 past it).
    pub max_chunk_line_bytes: usize,
    /// Chunk extensions summed over the whole body (400 past it): they are
    /// ignored, so a peer sending kilobytes of them per byte of data only
    /// costs us work.
    pub max_extension_bytes: usize,
    /// The trailer section, with its closing empty line (431 past it).
    pub max_trailer_bytes: usize,
}

impl BodyLimits {
    /// Sensible bounds for framing, with the given body limit.
    pub const fn with_max_body(max_body_bytes: u64) -> Self {
        Self {
            max_body_bytes,
            max_chunk_line_bytes: 4096,
            max_extension_bytes: 16 * 1024,
            max_trailer_bytes: 8192,
        }
    }
}

/// Why a body (or the headers that frame it) cannot be accepted. `status`
/// is what a client gets for its request; a response from an actor that
/// fails any of these is the gateway's 502 to its client instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// `Transfer-Encoding` / `Content-Length` that do not give one
    /// unambiguous length (400): the classic request-smuggling openings.
    BadFraming(&'static str),
    /// A transfer coding before `chunked` that we do not implement (501).
    UnsupportedCoding,
    /// More than `max_body_bytes` announced or sent (413).
    TooLarge,
    /// A chunk-size line, or extensions in all, over their limit (400).
    LineTooLong,
    /// Trailer fields over `max_trailer_bytes` (431).
    TrailersTooLarge,
    /// Chunked framing that breaks the grammar (400).
    Malformed(&'static str),
    /// The connection ended before the body did (400, for the record: there
    /// is nobody left to answer).
    Truncated,
}

impl BodyError {
    pub fn status(self) -> Status {
        match self {
            BodyError::UnsupportedCoding => Status::NOT_IMPLEMENTED,
            BodyError::TooLarge => Status::PAYLOAD_TOO_LARGE,
            BodyError::TrailersTooLarge => Status::HEADER_FIELDS_TOO_LARGE,
            BodyError::BadFraming(_)
            | BodyError::LineTooLong
            | BodyError::Malformed(_)
            | BodyError::Truncated => Status::BAD_REQUEST,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            BodyError::BadFraming(why) | BodyError::Malformed(why) => why,
            BodyError::UnsupportedCoding => "transfer coding not implemented",
            BodyError::TooLarge => "body too large",
            BodyError::LineTooLong => "chunk line too long",
            BodyError::TrailersTooLarge => "trailers too large",
            BodyError::Truncated => "connection closed inside the body",
        }
    }
}
