//! The tunnel protocol between the gateway and runners (docs/PROTOCOL.md),
//! without IO: frames in, frames out.

pub mod codec;
pub mod wire;

pub use codec::{
    decode_frames, encode_frame, encode_http_body, encode_message, features, Frame, HttpRequest,
    HttpResponse, MessageKind, Recipients, TunnelError,
};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
