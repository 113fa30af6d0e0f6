//! The shared throwaway CA (`tether-testkit`), with what these unit tests
//! need on top: a `CertSpec` per leaf, and clients pinned to one version.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tether_testkit::ThrowawayPki;

use crate::tls::{CertSpec, ALPN_HTTP11};

pub(crate) struct Pki(ThrowawayPki);

/// A leaf written to disk, with its DER to compare with what a client saw.
pub(crate) struct Leaf {
    pub(crate) spec: CertSpec,
    pub(crate) der: CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new() -> Self {
        Pki(ThrowawayPki::new("tls-unit"))
    }

    pub(crate) fn dir(&self) -> &Path {
        self.0.dir()
    }

    /// `{stem}.crt` and `{stem}.key` for a leaf with these DNS/IP SANs; the
    /// spec lists no names (they come from the certificate).
    pub(crate) fn leaf(&self, stem: &str, sans: &[&str]) -> Leaf {
        let leaf = self.0.leaf(stem, sans);
        Leaf {
            spec: CertSpec {
                chain: leaf.chain,
                key: leaf.key,
                names: Vec::new(),
            },
            der: CertificateDer::from(leaf.der),
        }
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        self.0.write(name, contents)
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        self.0.ca_path()
    }

    /// A client trusting only this CA, offering `http/1.1`.
    pub(crate) fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        self.client_with(versions, rustls::crypto::ring::default_provider())
    }

    /// As [`client`](Self::client), with `provider`'s cipher suites only.
    pub(crate) fn client_with(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        provider: rustls::crypto::CryptoProvider,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(self.0.ca_der())).unwrap();
        let provider = Arc::new(provider);
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Arc::new(config)
    }
}

pub(crate) const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
pub(crate) const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
