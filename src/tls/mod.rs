//! Optional TLS for the client and runner listeners, sans IO.
//!
//! - [`load_server_config`]: certificates and keys from PEM files, several
//!   chosen by SNI (exact names, one-label wildcards, the first as default),
//!   ALPN `http/1.1`, TLS 1.2 and 1.3. Reloading builds a new
//!   `Arc<ServerConfig>`: sessions already running keep theirs, and a load
//!   that fails leaves the caller's current `Arc` in place with an error
//!   that names the file.
//! - [`TlsServer`]: one server session over caller-owned byte buffers,
//!   built on rustls's unbuffered API so that an idle session holds no
//!   buffer, only rustls's session state (about 3.5 KB).
//! - [`load_client_config`]: what runners use to dial the gateway.

mod certs;
mod error;
mod resolver;
mod san;
mod server;

#[cfg(test)]
mod tests;

pub use certs::{load_client_config, load_server_config, CertSpec, ALPN_HTTP11};
pub use error::TlsError;
pub use server::{Progress, TlsServer};
