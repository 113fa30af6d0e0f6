//! The TLS settings of the client and runner listeners: loaded at start
//! (a bad certificate stops the start with why), reloaded on SIGHUP (a bad
//! new certificate keeps the old one, and says why). A connection takes
//! the current settings once, when it is accepted; sessions already
//! running keep theirs, so a reload drops no connection.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use tracing::{info, warn};

use super::handoff::Listener;
use crate::config::{Config, TlsCertificate};
use crate::tls::{load_server_config, CertSpec};

/// `None` per listener: plain TCP.
type Current = RwLock<Option<Arc<ServerConfig>>>;

#[derive(Default)]
pub(crate) struct TlsListeners {
    client: Current,
    runners: Current,
}

fn specs(certs: &[TlsCertificate]) -> Vec<CertSpec> {
    certs
        .iter()
        .map(|c| CertSpec {
            chain: c.chain.clone(),
            key: c.key.clone(),
            names: c.names.clone(),
        })
        .collect()
}

fn load(certs: &[TlsCertificate]) -> Result<Option<Arc<ServerConfig>>, String> {
    if certs.is_empty() {
        return Ok(None);
    }
    load_server_config(&specs(certs)).map(Some)
}

impl TlsListeners {
    /// The settings `config` names; an error says which file is wrong.
    pub fn load(config: &Config) -> Result<TlsListeners, String> {
        let client = load(&config.client.tls).map_err(|e| format!("client.tls: {e}"))?;
        let runners = load(&config.runners.tls).map_err(|e| format!("runners.tls: {e}"))?;
        Ok(TlsListeners {
            client: RwLock::new(client),
            runners: RwLock::new(runners),
        })
    }

    /// What a connection accepted on `listener` now gets.
    pub fn current(&self, listener: Listener) -> Option<Arc<ServerConfig>> {
        let slot = match listener {
            Listener::Client => &self.client,
            Listener::Runner => &self.runners,
            Listener::Admin => return None,
        };
        slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the certificate files `config` names. A listener whose
    /// certificates fail to load keeps its current ones. A listener cannot
    /// switch between plain and TLS without a restart.
    pub fn reload(&self, config: &Config) {
        for (name, certs, slot) in [
            ("client.tls", &config.client.tls, &self.client),
            ("runners.tls", &config.runners.tls, &self.runners),
        ] {
            let mut current = slot.write().unwrap_or_else(|e| e.into_inner());
            if current.is_some() == certs.is_empty() {
                warn!(
                    setting = name,
                    "turning TLS on or off needs a restart: kept as it was"
                );
                continue;
            }
            match load(certs) {
                Ok(Some(fresh)) => {
                    *current = Some(fresh);
                    info!(setting = name, "certificates reloaded");
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(setting = name, error = %e, "certificates not reloaded: kept the previous ones")
                }
            }
        }
    }
}
