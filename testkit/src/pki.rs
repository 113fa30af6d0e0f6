//! A throwaway certificate authority and the certificates it signs,
//! generated at run time (rcgen) as PEM files in a temporary directory that
//! is removed on drop: no key material is ever committed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

pub struct ThrowawayPki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate signed by the CA, written as `{stem}.crt` / `{stem}.key`.
pub struct Leaf {
    pub chain: PathBuf,
    pub key: PathBuf,
    /// The certificate in DER, to compare with what a peer presented.
    pub der: Vec<u8>,
}

impl ThrowawayPki {
    /// A CA in a fresh directory (`ca.crt` in it); `tag` names the directory.
    pub fn new(tag: &str) -> ThrowawayPki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tether-pki-{tag}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write ca.crt");
        ThrowawayPki { dir, ca }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM), for clients to trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// A certificate for these DNS names (or IP addresses), signed by the CA.
    pub fn leaf(&self, stem: &str, sans: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(sans)
            .expect("leaf parameters")
            .signed_by(&key, &self.ca)
            .expect("leaf certificate");
        let chain = self.dir.join(format!("{stem}.crt"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&chain, cert.pem()).expect("write the chain");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        Leaf {
            chain,
            key: key_path,
            der: cert.der().to_vec(),
        }
    }

    /// Writes `contents` into the directory as `name`.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write a PKI file");
        path
    }
}

impl Drop for ThrowawayPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
