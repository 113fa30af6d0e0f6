//! Where a runner keeps its actors' durable state, so that an actor that
//! wakes or moves to another runner (or process) continues where it left
//! off.
//!
//! What is saved per actor is a record: the index of the last message the
//! actor handled on each of its connections, then the actor's own state.
//! The indices are what makes delivery exactly-once across a crash: a
//! message replayed by the gateway that the saved state already reflects is
//! dropped instead of applied twice.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::actor::ConnId;
use crate::tunnel::wire::{put_varint, Reader};

/// A place to keep actor state, shared by the runners that may run the same
/// actors (and, for a directory, by their processes on one host).
pub trait StateStore: Send + Sync + 'static {
    /// The record saved last for this actor, if any.
    fn load(&self, name: &str, key: &[String]) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the actor's record; returns once it is as durable as the
    /// store promises (see each store).
    fn save(&self, name: &str, key: &[String], record: &[u8]) -> io::Result<()>;

    /// Saves several actors' records at once (a runner's batch), each
    /// result in order. A store may make them durable together (one sync
    /// for all: group commit); by default each is saved on its own.
    fn save_batch(&self, records: &[SaveRequest<'_>]) -> Vec<io::Result<()>> {
        records
            .iter()
            .map(|r| self.save(r.name, r.key, r.record))
            .collect()
    }
}

/// One actor's record to save (see [`StateStore::save_batch`]).
pub struct SaveRequest<'a> {
    pub name: &'a str,
    pub key: &'a [String],
    pub record: &'a [u8],
}

/// What a [`DirStore`] save survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The runner process being killed (`kill -9`): the file is written and
    /// renamed into place, not synced. A crash of the host may lose the
    /// last saves (whatever the kernel had not written out yet).
    #[default]
    Process,
    /// The host crashing or losing power: a batch's files are synced to
    /// disk before they are renamed into place, and the renames before the
    /// save returns (two `syncfs` per batch, however many actors it holds:
    /// group commit).
    Host,
}

/// One file per actor in a directory. A save writes a new file and renames
/// it over the old one, so a save cut short (a killed process, a crashed
/// host) leaves the previous record whole; leftover temporary files are
/// never read. What a save survives is its [`Durability`].
pub struct DirStore {
    dir: PathBuf,
    durability: Durability,
    /// `syncfs` calls made (group commit: two per batch).
    syncs: std::sync::atomic::AtomicU64,
}

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<DirStore> {
        DirStore::with_durability(dir, Durability::Process)
    }

    pub fn with_durability(
        dir: impl Into<PathBuf>,
        durability: Durability,
    ) -> io::Result<DirStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let syncs = std::sync::atomic::AtomicU64::new(0);
        Ok(DirStore {
            dir,
            durability,
            syncs,
        })
    }

    /// `syncfs` calls so far (each batch with host durability makes two).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Flushes everything written to the store's file system to disk.
    fn sync(&self) -> io::Result<()> {
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::fs::File::open(&self.dir)?;
        // SAFETY: syncfs on a descriptor we hold open.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes `record` next to its file; returns the temporary path and
    /// the final one.
    fn write_temporary(
        &self,
        name: &str,
        key: &[String],
        record: &[u8],
    ) -> io::Result<(PathBuf, PathBuf)> {
        let file = self.file(name, key);
        if let Some(parent) = file.parent().filter(|p| *p != self.dir) {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = file.with_extension(format!(
            "tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&tmp, record)?;
        Ok((tmp, file))
    }

    /// The directory the reference runner uses unless told otherwise.
    pub fn default_dir() -> PathBuf {
        std::env::temp_dir().join("tether-actor-state")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The actor's file: its name and key in hex (any key becomes a valid,
    /// unambiguous name). An encoding longer than one file name may be (255
    /// bytes on common file systems) is split into directories of
    /// [`MAX_COMPONENT`] characters, each marked `.d` so that no directory
    /// can be taken for another actor's file (hex has no dot).
    fn file(&self, name: &str, key: &[String]) -> PathBuf {
        let encoded = encoded(name, key);
        let mut path = self.dir.clone();
        let mut rest = encoded.as_str();
        while rest.len() > MAX_COMPONENT {
            let (dir, tail) = rest.split_at(MAX_COMPONENT);
            path.push(format!("{dir}.d"));
            rest = tail;
        }
        path.push(rest);
        path
    }

    /// Where older versions kept every actor: one flat hex name.
    fn flat_file(&self, name: &str, key: &[String]) -> PathBuf {
        self.dir.join(encoded(name, key))
    }
}

/// An actor's name and key in hex, `-` between the parts.
fn encoded(name: &str, key: &[String]) -> String {
    let mut encoded = hex(name.as_bytes());
    for k in key {
        encoded.push('-');
        encoded.push_str(&hex(k.as_bytes()));
    }
    encoded
}

fn read_if_present(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // ENAMETOOLONG for a flat name that never could have been written.
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Longest file-name component written, leaving room for the temporary
/// file's suffix below the usual 255-byte limit.
const MAX_COMPONENT: usize = 200;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl StateStore for DirStore {
    fn load(&self, name: &str, key: &[String]) -> io::Result<Option<Vec<u8>>> {
        match read_if_present(&self.file(name, key))? {
            Some(b) => Ok(Some(b)),
            // Saved before names were split: one flat file (names of 201 to
            // ~250 characters fitted then).
            None => read_if_present(&self.flat_file(name, key)),
        }
    }

    fn save(&self, name: &str, key: &[String], record: &[u8]) -> io::Result<()> {
        let request = SaveRequest { name, key, record };
        self.save_batch(std::slice::from_ref(&request)).remove(0)
    }

    /// Every file written, (with host durability: synced), renamed into
    /// place, (synced again). A record whose write failed is not renamed;
    /// a failed sync fails every record of the batch.
    fn save_batch(&self, records: &[SaveRequest<'_>]) -> Vec<io::Result<()>> {
        let written: Vec<io::Result<(PathBuf, PathBuf)>> = records
            .iter()
            .map(|r| self.write_temporary(r.name, r.key, r.record))
            .collect();
        let host = self.durability == Durability::Host;
        if host && written.iter().any(Result::is_ok) {
            if let Err(e) = self.sync() {
                return written
                    .iter()
                    .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
                    .collect();
            }
        }
        let mut results: Vec<io::Result<()>> = written
            .into_iter()
            .map(|w| w.and_then(|(tmp, file)| std::fs::rename(tmp, file)))
            .collect();
        if host && results.iter().any(Result::is_ok) {
            if let Err(e) = self.sync() {
                results = results
                    .iter()
                    .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
                    .collect();
            }
        }
        results
    }
}

type Records = HashMap<(String, Vec<String>), Vec<u8>>;

/// Kept in memory: shared by runners in one process (tests, embedding).
#[derive(Default, Clone)]
pub struct MemoryStore {
    records: Arc<Mutex<Records>>,
}

impl StateStore for MemoryStore {
    fn load(&self, name: &str, key: &[String]) -> io::Result<Option<Vec<u8>>> {
        let records = self
            .records
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Ok(records.get(&(name.to_owned(), key.to_vec())).cloned())
    }

    fn save(&self, name: &str, key: &[String], record: &[u8]) -> io::Result<()> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        records.insert((name.to_owned(), key.to_vec()), record.to_vec());
        Ok(())
    }
}

/// An actor's saved record: handled indices per connection, and its state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub handled: Vec<(ConnId, u64)>,
    pub state: Bytes,
}

impl Record {
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(16 + self.state.len());
        put_varint(&mut out, self.handled.len() as u64);
        for (conn, index) in &self.handled {
            put_varint(&mut out, *conn);
            put_varint(&mut out, *index);
        }
        out.extend_from_slice(&self.state);
        out
    }

    pub fn decode(bytes: Vec<u8>) -> Option<Record> {
        let mut r = Reader::new(Bytes::from(bytes));
        let n = r.varint().ok()?;
        let mut handled = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            handled.push((r.varint().ok()?, r.varint().ok()?));
        }
        Some(Record {
            handled,
            state: r.rest(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_batch_is_committed_with_two_syncs_whatever_its_size() {
        let dir = fresh_dir("group-commit");
        let store = DirStore::with_durability(&dir, Durability::Host).unwrap();
        let keys: Vec<Vec<String>> = (0..10).map(|i| vec![format!("room{i}")]).collect();
        let records: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 100]).collect();
        let batch: Vec<SaveRequest<'_>> = keys
            .iter()
            .zip(&records)
            .map(|(key, record)| SaveRequest {
                name: "chat",
                key,
                record,
            })
            .collect();
        assert!(store.save_batch(&batch).iter().all(Result::is_ok));
        assert_eq!(store.syncs(), 2, "one before the renames, one after");
        for (key, record) in keys.iter().zip(&records) {
            assert_eq!(store.load("chat", key).unwrap().as_ref(), Some(record));
        }
        store.save("chat", &keys[0], b"one more").unwrap();
        assert_eq!(store.syncs(), 4);
        let plain = DirStore::new(&dir).unwrap();
        plain.save("chat", &keys[0], b"no sync").unwrap();
        assert_eq!(plain.syncs(), 0, "process durability does not sync");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What a crash can leave: a save whose temporary file was written (in
    /// part) but never renamed. The record read is the last whole one, and
    /// a later save goes through.
    #[test]
    fn a_save_cut_short_by_a_crash_leaves_the_previous_record() {
        let dir = fresh_dir("crash-left");
        let store = DirStore::with_durability(&dir, Durability::Host).unwrap();
        let key = vec!["lobby".to_string()];
        store.save("chat", &key, b"acknowledged state").unwrap();
        // The crash: a temporary file of the next save, cut short, beside it.
        let file = store.file("chat", &key);
        std::fs::write(file.with_extension("tmp-4242-ThreadId(7)"), b"half a rec").unwrap();
        let after = DirStore::with_durability(&dir, Durability::Host).unwrap();
        assert_eq!(
            after.load("chat", &key).unwrap().as_deref(),
            Some(&b"acknowledged state"[..])
        );
        after.save("chat", &key, b"next state").unwrap();
        assert_eq!(
            after.load("chat", &key).unwrap().as_deref(),
            Some(&b"next state"[..])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_keys_are_stored_and_kept_apart() {
        let dir = std::env::temp_dir().join(format!("tether-dirstore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = DirStore::new(&dir).unwrap();
        // A 200-byte key was "File name too long" before.
        let long = vec!["k".repeat(200)];
        store.save("counter", &long, b"long").unwrap();
        assert_eq!(
            store.load("counter", &long).unwrap().as_deref(),
            Some(&b"long"[..])
        );
        // A key whose encoding is exactly a directory's prefix stays apart.
        let prefix = vec!["k".repeat(200)[..93].to_owned()];
        store.save("counter", &prefix, b"prefix").unwrap();
        assert_eq!(
            store.load("counter", &prefix).unwrap().as_deref(),
            Some(&b"prefix"[..])
        );
        assert_eq!(
            store.load("counter", &long).unwrap().as_deref(),
            Some(&b"long"[..])
        );
        let short = vec!["a".to_owned()];
        assert_eq!(store.load("counter", &short).unwrap(), None);
        // A record an older version saved flat (a 230-character name) is found.
        let older = vec!["o".repeat(107)];
        std::fs::write(store.flat_file("counter", &older), b"older").unwrap();
        assert_eq!(
            store.load("counter", &older).unwrap().as_deref(),
            Some(&b"older"[..])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let r = Record {
            handled: vec![(1, 5), (u64::MAX, 300)],
            state: Bytes::from_static(b"counter=42"),
        };
        assert_eq!(Record::decode(r.encode().to_vec()), Some(r));
        assert_eq!(Record::decode(vec![0x05]), None);
    }

    #[test]
    fn a_directory_store_replaces_records_and_keeps_keys_apart() {
        let dir = std::env::temp_dir().join(format!("tether-state-test-{}", std::process::id()));
        let store = DirStore::new(&dir).unwrap();
        let k = |s: &str| vec![s.to_owned()];
        assert_eq!(store.load("counter", &k("a")).unwrap(), None);
        store.save("counter", &k("a"), b"1").unwrap();
        store.save("counter", &k("a"), b"2").unwrap();
        store.save("counter", &k("a/b"), b"3").unwrap();
        assert_eq!(store.load("counter", &k("a")).unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            store.load("counter", &k("a/b")).unwrap(),
            Some(b"3".to_vec())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
