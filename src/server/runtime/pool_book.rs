//! The serverless pools made through the admin API, and the configuration
//! in force that they join (the file's, with those pools added where the
//! file does not name them). A reload (SIGHUP) and an API change both go
//! through here, one at a time, so neither undoes the other: a reload
//! keeps the API's pools, an API change keeps the file last reloaded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use super::Reloader;
use crate::config::{read_pool_state, write_pool_state, Config, PoolSource, ServerlessPool};
use crate::server::admin::{PoolChanges, PoolPut, PoolRefusal};
use crate::server::serverless::fetch_metadata_blocking;

pub(crate) struct PoolBook {
    /// The configuration last put in force (API pools included).
    pub effective: Config,
    /// The API's pools, as in the state file (shadowed ones included).
    pub api: Vec<ServerlessPool>,
    pub state_file: Option<PathBuf>,
}

pub(crate) type SharedBook = Arc<Mutex<PoolBook>>;

impl PoolBook {
    /// `file` with the pools of its state file (if it names one) added.
    /// A state file that cannot be read stops the start.
    pub fn open(file: Config) -> Result<PoolBook, String> {
        let state_file =
            Some(PathBuf::from(&file.admin.state_file)).filter(|p| !p.as_os_str().is_empty());
        let api = match &state_file {
            Some(path) => read_pool_state(path).map_err(|e| format!("admin.state_file {e}"))?,
            None => Vec::new(),
        };
        let effective = joined(file, &api);
        Ok(PoolBook {
            effective,
            api,
            state_file,
        })
    }
}

/// `file` with `api` added, saying which API pools no longer fit.
fn joined(file: Config, api: &[ServerlessPool]) -> Config {
    let (config, left_out) = file.with_api_pools(api);
    for why in left_out {
        warn!(%why, "serverless pool of the admin API left out");
    }
    config
}

fn lock(book: &SharedBook) -> MutexGuard<'_, PoolBook> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reloader {
    /// Puts the file's configuration `file` in force with the API's pools
    /// added (see [`Reloader::put_in_force`] for what the answer means).
    pub fn apply(&self, file: &Config) -> bool {
        let mut book = lock(&self.book);
        let config = joined(file.clone(), &book.api);
        let applied = self.put_in_force(&config);
        book.effective = config;
        applied
    }

    /// Keeps `api` in the state file, then puts it in force.
    fn commit(&self, book: &mut PoolBook, api: Vec<ServerlessPool>) -> Result<(), PoolRefusal> {
        let path = book.state_file.as_ref().ok_or(PoolRefusal::NoStateFile)?;
        write_pool_state(path, &api)
            .map_err(|e| PoolRefusal::Failed(format!("cannot write {}: {e}", path.display())))?;
        let config = joined(book.effective.clone(), &api);
        if !self.put_in_force(&config) {
            warn!("serverless pools changed: a worker has not taken the change yet; it will at its next turn");
        }
        book.effective = config;
        book.api = api;
        Ok(())
    }
}

impl PoolChanges for Reloader {
    fn put(&self, pool: ServerlessPool) -> Result<PoolPut, PoolRefusal> {
        let mut book = lock(&self.book);
        if book.state_file.is_none() {
            return Err(PoolRefusal::NoStateFile);
        }
        let same = |p: &ServerlessPool| p.namespace == pool.namespace && p.pool == pool.pool;
        let in_file = |p: &ServerlessPool| same(p) && p.source == PoolSource::File;
        if book.effective.serverless.iter().any(in_file) {
            return Err(PoolRefusal::SetInFile);
        }
        // Asked with the book held: a reload meanwhile waits (at most the
        // metadata call's timeout) rather than cross this change.
        fetch_metadata_blocking(&pool).map_err(PoolRefusal::Refused)?;
        let mut api = book.api.clone();
        let put = match api.iter_mut().find(|p| same(p)) {
            Some(old) => {
                *old = pool;
                PoolPut::Replaced
            }
            None => {
                api.push(pool);
                PoolPut::Created
            }
        };
        if api.len() > crate::config::MAX_SERVERLESS_POOLS {
            let why = "as many serverless pools as the gateway keeps already";
            return Err(PoolRefusal::Refused(why.into()));
        }
        self.commit(&mut book, api)?;
        Ok(put)
    }

    fn delete(&self, ns: &str, pool: &str) -> Result<(), PoolRefusal> {
        let mut book = lock(&self.book);
        if book.state_file.is_none() {
            return Err(PoolRefusal::NoStateFile);
        }
        let same = |p: &ServerlessPool| p.namespace == ns && p.pool == pool;
        if !book.api.iter().any(same) {
            let in_file = book.effective.serverless.iter().any(same);
            return Err(match in_file {
                true => PoolRefusal::SetInFile,
                false => PoolRefusal::NotFound,
            });
        }
        let api = book.api.iter().filter(|p| !same(p)).cloned().collect();
        self.commit(&mut book, api)
    }
}
