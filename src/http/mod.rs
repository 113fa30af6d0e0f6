//! HTTP/1.1 without IO: request and response heads, message bodies,
//! routes, the few responses the gateway writes itself, and what a
//! serverless function and the gateway say to each other.

pub mod body;
pub mod client;
pub mod credential;
pub mod forward;
pub mod proxy_header;
pub mod request;
pub mod response;
pub mod response_head;
pub mod route;
pub mod serverless;
pub mod token;

pub use request::{HeadError, HeadReader, RequestHead};
pub use response::Status;
