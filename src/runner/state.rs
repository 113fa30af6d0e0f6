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
    /// Replaces the actor's record; returns once it would survive the
    /// process being killed.
    fn save(&self, name: &str, key: &[String], record: &[u8]) -> io::Result<()>;
}

/// One file per actor in a directory. A save writes a new file and renames
/// it over the old one, so a process killed mid-save leaves the previous
/// record whole. (Files survive the process, not the host: no fsync.)
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<DirStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(DirStore { dir })
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
        std::fs::rename(&tmp, &file)
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
