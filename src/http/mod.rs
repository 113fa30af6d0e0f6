//! HTTP/1.1 without IO: request heads, routes and the few responses the
//! gateway writes itself.

pub mod body;
pub mod credential;
pub mod proxy_header;
pub mod request;
pub mod response;
pub mod route;
pub mod token;

pub use request::{HeadError, HeadReader, RequestHead};
pub use response::Status;
