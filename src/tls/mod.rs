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
//! - [`TlsSession`]: a live rustls session, or one resumed from its traffic
//!   keys in another process after an upgrade ([`ResumedSession`], TLS 1.3).

mod certs;
mod error;
mod resolver;
mod resumed;
mod san;
mod server;
mod session;

#[cfg(test)]
mod tests;

pub use certs::{load_client_config, load_server_config, CertSpec, ALPN_HTTP11};
pub use error::TlsError;
pub use resumed::{DirectionSecrets, ResumedSession, SessionSecrets, Suite};
pub use server::{Progress, TlsServer};
pub use session::TlsSession;
