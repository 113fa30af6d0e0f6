//! The WebSocket protocol (RFC 6455) without IO: frames, messages, close codes,
//! the opening handshake and keepalive bookkeeping.

pub mod close;
pub mod decoder;
pub mod dial;
pub mod frame;
pub mod handshake;
pub mod keepalive;
pub mod utf8;

pub use close::{CloseCode, CloseFrame, ProtocolError};
pub use decoder::{Decoder, Event};
pub use frame::OpCode;
