//! A throwaway CA and leaf certificates, generated per test and written as
//! PEM files into a temporary directory removed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

use crate::tls::{CertSpec, ALPN_HTTP11};

/// A directory under the system temp dir, unique per test, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "tether-tls-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).expect("create temp dir");
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, and a directory for the certificates it signs.
pub(crate) struct Pki {
    pub(crate) dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf written to disk, with its DER to compare with what a client saw.
pub(crate) struct Leaf {
    pub(crate) spec: CertSpec,
    pub(crate) der: CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Self {
            dir: TempDir::new(),
            ca,
        };
        pki.write("ca.crt", &pki.ca.pem());
        pki
    }

    /// `{stem}.crt` and `{stem}.key` for a leaf with these DNS/IP SANs; the
    /// spec lists no names (they come from the certificate).
    pub(crate) fn leaf(&self, stem: &str, sans: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        let chain = self.write(&format!("{stem}.crt"), &cert.pem());
        let key = self.write(&format!("{stem}.key"), &key.serialize_pem());
        Leaf {
            spec: CertSpec {
                chain,
                key,
                names: Vec::new(),
            },
            der: cert.der().clone(),
        }
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A client trusting only this CA, offering `http/1.1`.
    pub(crate) fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
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
