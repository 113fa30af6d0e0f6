//! `TlsServer` and the configuration loaders against rustls's own client,
//! with certificates generated per test.

mod failures;
mod handshake;
mod loading;
mod moved;
mod pair;
mod pki;
mod sni;
mod split;
