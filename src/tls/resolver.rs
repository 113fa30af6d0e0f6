//! Chooses a certificate by the client's SNI: exact names first, then a
//! one-label wildcard (`*.example.com` matches `a.example.com`, not
//! `a.b.example.com` nor `example.com`), else the first configured
//! certificate (clients without SNI, or with a name nobody configured).
//!
//! It also tells [`TlsServer`](super::TlsServer) which name the client asked
//! for: rustls's unbuffered server connection does not expose the SNI, so the
//! resolver, which rustls calls synchronously inside `process_tls_records` on
//! the caller's thread, leaves it in a thread-local slot that the
//! `TlsServer` takes right after that call.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

thread_local! {
    /// The SNI of the last ClientHello this thread resolved (`None` inside
    /// when that hello had no SNI).
    static RESOLVED_SNI: Cell<Option<Option<Box<str>>>> = const { Cell::new(None) };
}

/// Takes what the resolver left on this thread since the last take: `None`
/// when it did not run, `Some(None)` when the client sent no SNI.
pub(crate) fn take_resolved_sni() -> Option<Option<Box<str>>> {
    RESOLVED_SNI.with(Cell::take)
}

/// One loaded certificate: its chain and key, and the file it came from
/// (for `Debug` and logs).
pub(crate) struct Entry {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) chain_path: String,
    pub(crate) names: Vec<String>,
}

pub(crate) struct SniResolver {
    entries: Vec<Entry>,
    exact: HashMap<String, usize>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, usize>,
}

impl SniResolver {
    /// `entries` must not be empty: the first one is the default. A name
    /// listed by several entries belongs to the first of them.
    pub(crate) fn new(entries: Vec<Entry>) -> Self {
        assert!(!entries.is_empty(), "at least one certificate");
        let mut exact: HashMap<String, usize> = HashMap::new();
        let mut wildcard: HashMap<String, usize> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            for name in &entry.names {
                let name = name.to_ascii_lowercase();
                let (map, key) = match name.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcard, suffix.to_owned()),
                    None => (&mut exact, name.clone()),
                };
                if let Some(&first) = map.get(&key) {
                    tracing::warn!(
                        "TLS name {name} is in both {} and {}; using {}",
                        entries[first].chain_path,
                        entry.chain_path,
                        entries[first].chain_path
                    );
                    continue;
                }
                map.insert(key, index);
            }
        }
        Self {
            entries,
            exact,
            wildcard,
        }
    }

    /// The index of the entry serving `sni`.
    pub(crate) fn choose(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else { return 0 };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&index) = self.exact.get(&sni) {
            return index;
        }
        sni.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name();
        RESOLVED_SNI.with(|slot| slot.set(Some(sni.map(Box::from))));
        Some(self.entries[self.choose(sni)].key.clone())
    }
}

/// Names and files only: never the key.
impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for entry in &self.entries {
            list.entry(&format_args!("{} {:?}", entry.chain_path, entry.names));
        }
        list.finish()
    }
}
