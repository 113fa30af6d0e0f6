//! The shared throwaway CA (`tether-testkit`), handing out leaves as the
//! gateway's `TlsCertificate`s.

use std::path::{Path, PathBuf};

use tether::config::TlsCertificate;
use tether_testkit::ThrowawayPki;

pub struct Pki(ThrowawayPki);

impl Pki {
    pub fn new() -> Pki {
        Pki(ThrowawayPki::new("tests"))
    }

    pub fn ca_path(&self) -> PathBuf {
        self.0.ca_path()
    }

    pub fn dir(&self) -> &Path {
        self.0.dir()
    }

    /// `{stem}.crt` and `{stem}.key` for these DNS names (or IPs), signed by the CA.
    pub fn leaf(&self, stem: &str, sans: &[&str]) -> TlsCertificate {
        let leaf = self.0.leaf(stem, sans);
        TlsCertificate {
            chain: leaf.chain,
            key: leaf.key,
            names: Vec::new(),
        }
    }
}
