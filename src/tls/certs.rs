//! Loading certificates and keys from PEM files into rustls configurations.
//!
//! Every error names the file and what is wrong with it, never key material.
//! Loading builds a new `Arc<ServerConfig>` and touches nothing else, so a
//! reload that fails leaves the configuration in use as it was: the caller
//! keeps the old `Arc` and logs the error. Connections hold their own `Arc`,
//! so a successful reload does not disturb them either.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::verify_server_name;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::resolver::{Entry, SniResolver};
use super::san;

/// The one application protocol the gateway speaks over TLS.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// One certificate the server may present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// PEM file with the leaf certificate first, then its intermediates.
    pub chain: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Server names this certificate answers, exact (`api.example.com`) or
    /// one-label wildcards (`*.example.com`); each must be covered by the
    /// certificate. Empty: the DNS names of the leaf's subjectAltName.
    pub names: Vec<String>,
}

/// The server configuration for `specs`; the first spec is the default
/// certificate (no SNI, or a name no spec lists). TLS 1.2 and 1.3, ALPN
/// `http/1.1`, ring crypto.
pub fn load_server_config(specs: &[CertSpec]) -> Result<Arc<ServerConfig>, String> {
    if specs.is_empty() {
        return Err("TLS needs at least one certificate".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let entries = specs
        .iter()
        .map(|spec| load_entry(spec, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS server configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(entries)));
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // An upgrade carries TLS 1.3 sessions to the new process by their
    // traffic keys (`TlsServer::into_secrets`).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The client configuration runners use to dial the gateway: the system's
/// root certificates when `ca` is `None`, else only the certificates in that
/// PEM file. ALPN `http/1.1`.
pub fn load_client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca {
        Some(path) => file_roots(path)?,
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

fn load_entry(spec: &CertSpec, provider: &CryptoProvider) -> Result<Entry, String> {
    let chain_path = spec.chain.display().to_string();
    let chain = read_chain(&spec.chain)?;
    let key = PrivateKeyDer::from_pem_file(&spec.key)
        .map_err(|e| pem_error(&spec.key, "private key", e))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "private key {} does not match the certificate in {chain_path}",
            spec.key.display()
        ),
        e => format!("private key {}: {e}", spec.key.display()),
    })?;
    let names = names_for(spec, &certified.cert[0])?;
    Ok(Entry {
        key: Arc::new(certified),
        chain_path,
        names,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, "certificate chain", e))?;
    if chain.is_empty() {
        return Err(pem_error(
            path,
            "certificate chain",
            pem::Error::NoItemsFound,
        ));
    }
    Ok(chain)
}

/// The names `spec` answers: its own, checked against the leaf, or the
/// leaf's DNS names.
fn names_for(spec: &CertSpec, leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let path = spec.chain.display();
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|e| format!("certificate chain {path}: first certificate: {e}"))?;
    if spec.names.is_empty() {
        let names = san::dns_names(leaf);
        if names.is_empty() {
            return Err(format!(
                "certificate chain {path}: no DNS names in the certificate; list the names"
            ));
        }
        return Ok(names);
    }
    for name in &spec.names {
        if !covers(&parsed, name) {
            return Err(format!(
                "certificate chain {path}: the certificate is not valid for {name}"
            ));
        }
    }
    Ok(spec.names.clone())
}

/// Whether the certificate is valid for `name`; a wildcard `*.example.com`
/// is checked with a name one label under `example.com`.
fn covers(cert: &ParsedCertificate<'_>, name: &str) -> bool {
    let probe = match name.strip_prefix("*.") {
        Some(parent) => format!("tether-wildcard-probe.{parent}"),
        None => name.to_owned(),
    };
    ServerName::try_from(probe)
        .is_ok_and(|server_name| verify_server_name(cert, &server_name).is_ok())
}

fn file_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no usable system root certificates ({}); give a CA file",
            why.join("; ")
        ));
    }
    Ok(roots)
}

/// `what` in `path`: the reason without the file's content (the PEM
/// errors that quote a line are reduced to their kind).
fn pem_error(path: &Path, what: &str, e: pem::Error) -> String {
    let why = match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => "no PEM section of the expected kind".to_owned(),
        pem::Error::MissingSectionEnd { .. } => "PEM section without END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "malformed PEM BEGIN line".to_owned(),
        pem::Error::Base64Decode(_) => "PEM section is not valid base64".to_owned(),
        _ => "malformed PEM".to_owned(),
    };
    format!("{what} {}: {why}", path.display())
}
