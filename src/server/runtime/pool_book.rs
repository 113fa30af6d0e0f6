//! The serverless pools made through the admin API, and the configuration
//! in force that they join (the file's, with those pools added where the
//! file does not name them). A reload (SIGHUP) and an API change both go
//! through here, one at a time, so neither undoes the other: a reload
//! keeps the API's pools, an API change keeps the file last reloaded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use super::Reloader;
use crate::config::{
    read_pool_state, write_pool_state, Config, PoolSource, ServerlessPool,
    MAX_API_POOLS_PER_NAMESPACE, MAX_SERVERLESS_POOLS,
};
use crate::server::admin::{PoolChanges, PoolPut, PoolRefusal};
use crate::server::serverless::fetch_metadata_blocking;

pub(crate) struct PoolBook {
    /// The configuration last put in force (API pools included).
    pub effective: Config,
    /// An API change is being made (its metadata call can take seconds):
    /// another one meanwhile is refused rather than queued behind it.
    changing: Arc<AtomicBool>,
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
            changing: Arc::default(),
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

/// The one API change being made; dropping it lets the next one in.
struct OneChange(Arc<AtomicBool>);

impl OneChange {
    fn begin(book: &SharedBook) -> Result<OneChange, PoolRefusal> {
        let flag = lock(book).changing.clone();
        match flag.swap(true, Ordering::AcqRel) {
            true => Err(PoolRefusal::Busy),
            false => Ok(OneChange(flag)),
        }
    }
}

impl Drop for OneChange {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Whether `api` (the API's pools after a change) stays within the bounds:
/// pools per namespace, and all pools, the file's included.
fn within_bounds(file: &Config, api: &[ServerlessPool], ns: &str) -> Result<(), PoolRefusal> {
    let of_ns = api.iter().filter(|p| p.namespace == ns).count();
    if of_ns > MAX_API_POOLS_PER_NAMESPACE {
        let why = format!(
            "namespace {ns} has {MAX_API_POOLS_PER_NAMESPACE} pools made through the API already"
        );
        return Err(PoolRefusal::Refused(why));
    }
    let from_file = file
        .serverless
        .iter()
        .filter(|p| p.source == PoolSource::File)
        .count();
    if from_file + api.len() > MAX_SERVERLESS_POOLS {
        let why = format!("the gateway keeps {MAX_SERVERLESS_POOLS} serverless pools already");
        return Err(PoolRefusal::Refused(why));
    }
    Ok(())
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
        let _one = OneChange::begin(&self.book)?;
        let mut book = lock(&self.book);
        if book.state_file.is_none() {
            return Err(PoolRefusal::NoStateFile);
        }
        let same = |p: &ServerlessPool| p.namespace == pool.namespace && p.pool == pool.pool;
        let in_file = |p: &ServerlessPool| same(p) && p.source == PoolSource::File;
        if book.effective.serverless.iter().any(in_file) {
            return Err(PoolRefusal::SetInFile);
        }
        let (ns, name) = (pool.namespace.clone(), pool.pool.clone());
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
        within_bounds(&book.effective, &api, &ns)?;
        // Asked with the book held: a reload meanwhile waits (at most the
        // metadata call's timeout) rather than cross this change.
        let put_pool = api.iter().find(|p| p.namespace == ns && p.pool == name);
        if let Some(p) = put_pool {
            fetch_metadata_blocking(p).map_err(PoolRefusal::Refused)?;
        }
        self.commit(&mut book, api)?;
        Ok(put)
    }

    fn delete(&self, ns: &str, pool: &str) -> Result<(), PoolRefusal> {
        let _one = OneChange::begin(&self.book)?;
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
