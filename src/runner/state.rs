//! Where a runner keeps its actors' durable state, so that an actor that
//! wakes or moves to another runner (or process) continues where it left
//! off.
//!
//! What is saved per actor is a record: the index of the last message the
//! actor handled on each of its connections, what it sent in the batch the
//! record was saved for and in the few saved before it, then the actor's
//! own state. The indices are what
//! makes delivery exactly-once across a crash: a message replayed by the
//! gateway that the saved state already reflects is dropped instead of
//! applied twice; the kept output is sent again if it never left (see
//! `tunnel_client/outbox.rs`).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::actor::ConnId;
use super::slots;
use crate::tunnel::wire::{put_bytes, put_varint, Reader};

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
    /// The runner process being killed (`kill -9`): the slot is written,
    /// not synced. A crash of the host may lose the last saves (whatever
    /// the kernel had not written out yet).
    #[default]
    Process,
    /// The host crashing or losing power: a batch's slots are synced to
    /// disk before the save returns (one `syncfs` per batch, however many
    /// actors it holds: group commit).
    Host,
}

/// Two slot files per actor in a directory, rewritten in turn (`slots.rs`):
/// a save cut short (a killed process, a crashed host) leaves the other
/// slot, the previous record, whole. What a save survives is its
/// [`Durability`].
pub struct DirStore {
    dir: PathBuf,
    durability: Durability,
    /// `syncfs` calls made (group commit: one per batch).
    syncs: std::sync::atomic::AtomicU64,
    /// Per actor file: the newest slot's number and index, once known.
    newest: Mutex<HashMap<PathBuf, (u64, usize)>>,
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
            newest: Mutex::new(HashMap::new()),
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

    /// The directory the reference runner uses unless told otherwise.
    pub fn default_dir() -> PathBuf {
        std::env::temp_dir().join("tether-actor-state")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The actor's two slot files.
    fn slot_paths(file: &Path) -> [PathBuf; 2] {
        [file.with_extension("a"), file.with_extension("b")]
    }

    /// The newest whole slot of `file`: its number, index and record.
    fn read_newest(file: &Path) -> io::Result<Option<(u64, usize, Vec<u8>)>> {
        let [a, b] = DirStore::slot_paths(file);
        let (a, b) = (read_if_present(&a)?, read_if_present(&b)?);
        let found = slots::newest([a.as_deref(), b.as_deref()]);
        Ok(found.map(|(i, seq, record)| (seq, i, record.to_vec())))
    }

    /// Writes `record` over the older slot of its actor's file (no new
    /// file once both exist); returns the file and the slot now newest.
    fn write_slot(
        &self,
        name: &str,
        key: &[String],
        record: &[u8],
    ) -> io::Result<(PathBuf, (u64, usize))> {
        let file = self.file(name, key);
        if let Some(parent) = file.parent().filter(|p| *p != self.dir) {
            std::fs::create_dir_all(parent)?;
        }
        let known = self
            .newest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&file)
            .copied();
        let (seq, newest) = match known {
            Some(k) => k,
            None => DirStore::read_newest(&file)?.map_or((0, 1), |(seq, i, _)| (seq, i)),
        };
        let (next_seq, slot) = (seq + 1, 1 - newest);
        let bytes = slots::encode(next_seq, record);
        let path = &DirStore::slot_paths(&file)[slot];
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        std::io::Write::write_all(&mut out, &bytes)?;
        out.set_len(bytes.len() as u64)?;
        Ok((file, (next_seq, slot)))
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
        let file = self.file(name, key);
        if let Some((seq, slot, record)) = DirStore::read_newest(&file)? {
            let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
            newest.insert(file, (seq, slot));
            return Ok(Some(record));
        }
        // Saved by an older version: one file renamed into place (under
        // the split name, or before names were split, one flat file).
        match read_if_present(&file)? {
            Some(b) => Ok(Some(b)),
            None => read_if_present(&self.flat_file(name, key)),
        }
    }

    fn save(&self, name: &str, key: &[String], record: &[u8]) -> io::Result<()> {
        let request = SaveRequest { name, key, record };
        self.save_batch(std::slice::from_ref(&request)).remove(0)
    }

    /// Every record written over its actor's older slot; with host
    /// durability, then one sync for the whole batch. A failed sync fails
    /// every record of the batch (each slot it wrote may be torn: the
    /// other one stays the newest whole record).
    fn save_batch(&self, records: &[SaveRequest<'_>]) -> Vec<io::Result<()>> {
        let written: Vec<io::Result<(PathBuf, (u64, usize))>> = records
            .iter()
            .map(|r| self.write_slot(r.name, r.key, r.record))
            .collect();
        if self.durability == Durability::Host && written.iter().any(Result::is_ok) {
            if let Err(e) = self.sync() {
                return written
                    .iter()
                    .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
                    .collect();
            }
        }
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        written
            .into_iter()
            .map(|w| {
                w.map(|(file, slot)| {
                    newest.insert(file, slot);
                })
            })
            .collect()
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

/// An actor's saved record: handled indices per connection, what the
/// actor sent in the batch the record was saved for, and its state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Counts the actor's saves: the `OutputMark` its batch's output
    /// carries (0 in records of the older layouts).
    pub seq: u64,
    pub handled: Vec<(ConnId, u64)>,
    /// The batch's output from this actor, as tunnel frames (sent again
    /// if a restore shows it never reached the gateway: `outbox.rs`).
    pub outbox: Bytes,
    /// The outputs of earlier saved batches still kept, oldest first, each
    /// with its record's number (`kept.rs`): several batches may be in
    /// flight when a runner or a gateway dies.
    pub earlier: Vec<(u64, Bytes)>,
    /// Membership spans of the connections that were not members of every
    /// kept output (`tunnel_client/members.rs`): `[from, to)` record
    /// numbers, `to` 0 while still a member.
    pub spans: Vec<(ConnId, Vec<(u64, u64)>)>,
    pub state: Bytes,
}

/// Starts a record that carries an outbox. A record of the older layout
/// (count, indices, state) cannot start with it: it would be a count of
/// connections no record could hold, which never decoded.
const WITH_OUTBOX: u64 = u64::MAX;
/// Starts a record that carries its sequence number, then an outbox.
const WITH_SEQ: u64 = u64::MAX - 1;
/// Starts a record that carries its sequence number, an outbox, the
/// earlier outputs still kept, and per recent connection the first record
/// it could be in (a layout of development builds, still read).
const WITH_EARLIER: u64 = u64::MAX - 2;
/// As `WITH_EARLIER`, with membership spans instead of first records (the
/// layout written now; the four before it are still read).
const WITH_SPANS: u64 = u64::MAX - 3;

impl Record {
    pub fn encode(&self) -> BytesMut {
        let earlier: usize = self.earlier.iter().map(|(_, b)| b.len() + 16).sum();
        let size = 48 + self.outbox.len() + earlier + self.state.len();
        let mut out = BytesMut::with_capacity(size);
        put_varint(&mut out, WITH_SPANS);
        put_varint(&mut out, self.seq);
        put_varint(&mut out, self.handled.len() as u64);
        for (conn, index) in &self.handled {
            put_varint(&mut out, *conn);
            put_varint(&mut out, *index);
        }
        put_bytes(&mut out, &self.outbox);
        put_varint(&mut out, self.earlier.len() as u64);
        for (seq, output) in &self.earlier {
            put_varint(&mut out, *seq);
            put_bytes(&mut out, output);
        }
        put_varint(&mut out, self.spans.len() as u64);
        for (conn, spans) in &self.spans {
            put_varint(&mut out, *conn);
            put_varint(&mut out, spans.len() as u64);
            for (from, to) in spans {
                put_varint(&mut out, *from);
                put_varint(&mut out, if *to == u64::MAX { 0 } else { *to });
            }
        }
        out.extend_from_slice(&self.state);
        out
    }

    pub fn decode(bytes: Vec<u8>) -> Option<Record> {
        let mut r = Reader::new(Bytes::from(bytes));
        let first = r.varint().ok()?;
        let with_spans = first == WITH_SPANS;
        let with_earlier = with_spans || first == WITH_EARLIER;
        let with_seq = with_earlier || first == WITH_SEQ;
        let with_outbox = with_seq || first == WITH_OUTBOX;
        let seq = if with_seq { r.varint().ok()? } else { 0 };
        let n = if with_outbox { r.varint().ok()? } else { first };
        let mut handled = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            handled.push((r.varint().ok()?, r.varint().ok()?));
        }
        let outbox = match with_outbox {
            true => r.bytes().ok()?,
            false => Bytes::new(),
        };
        let (mut earlier, mut spans) = (Vec::new(), Vec::new());
        if with_earlier {
            for _ in 0..r.varint().ok()? {
                earlier.push((r.varint().ok()?, r.bytes().ok()?));
            }
            for _ in 0..r.varint().ok()? {
                let conn = r.varint().ok()?;
                let conn_spans = match with_spans {
                    true => decode_spans(&mut r)?,
                    false => vec![(r.varint().ok()?, u64::MAX)],
                };
                spans.push((conn, conn_spans));
            }
        }
        Some(Record {
            seq,
            handled,
            outbox,
            earlier,
            spans,
            state: r.rest(),
        })
    }
}

/// One connection's spans: count, then `from`, `to` (0: still open).
fn decode_spans(r: &mut Reader) -> Option<Vec<(u64, u64)>> {
    let mut spans = Vec::new();
    for _ in 0..r.varint().ok()? {
        let from = r.varint().ok()?;
        let to = match r.varint().ok()? {
            0 => u64::MAX,
            to => to,
        };
        spans.push((from, to));
    }
    Some(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of the `joined` layout (`WITH_EARLIER`: `(conn, first
    /// record)` pairs) reads as spans from those records on, its state
    /// whole.
    #[test]
    fn a_record_of_the_joined_layout_reads_as_spans() {
        let mut old = BytesMut::new();
        // Marker, number, one handled (7 at index 2), no outbox, no
        // earlier output, one joined (7 from record 4), then the state.
        put_varint(&mut old, WITH_EARLIER);
        for n in [3, 1, 7, 2] {
            put_varint(&mut old, n);
        }
        put_bytes(&mut old, b"");
        for n in [0, 1, 7, 4] {
            put_varint(&mut old, n);
        }
        old.extend_from_slice(b"counter=42");
        let r = Record::decode(old.to_vec()).expect("read");
        assert_eq!(r.spans, [(7, vec![(4, u64::MAX)])]);
        assert_eq!(&r.state[..], b"counter=42");
    }

    fn fresh_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_batch_is_committed_with_one_sync_whatever_its_size() {
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
        assert_eq!(store.syncs(), 1);
        for (key, record) in keys.iter().zip(&records) {
            assert_eq!(store.load("chat", key).unwrap().as_ref(), Some(record));
        }
        store.save("chat", &keys[0], b"one more").unwrap();
        assert_eq!(store.syncs(), 2);
        let plain = DirStore::new(&dir).unwrap();
        plain.save("chat", &keys[0], b"no sync").unwrap();
        assert_eq!(plain.syncs(), 0, "process durability does not sync");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Saves rewrite two slot files in turn: no new file (no new inode)
    /// per save, whatever their number.
    #[test]
    fn saves_rewrite_the_same_two_files() {
        let dir = fresh_dir("slots");
        let store = DirStore::new(&dir).unwrap();
        let key = vec!["lobby".to_string()];
        for i in 0..10 {
            store
                .save("chat", &key, format!("state {i}").as_bytes())
                .unwrap();
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        let fresh = DirStore::new(&dir).unwrap();
        assert_eq!(
            fresh.load("chat", &key).unwrap().as_deref(),
            Some(&b"state 9"[..])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What a crash can leave: the slot being written torn (cut short, or
    /// half old and half new). The record read is the one saved before,
    /// and a later save goes through.
    #[test]
    fn a_save_cut_short_by_a_crash_leaves_the_previous_record() {
        let dir = fresh_dir("crash-left");
        let store = DirStore::with_durability(&dir, Durability::Host).unwrap();
        let key = vec!["lobby".to_string()];
        store.save("chat", &key, b"acknowledged state").unwrap();
        store.save("chat", &key, b"the save the crash cut").unwrap();
        let [a, b] = DirStore::slot_paths(&store.file("chat", &key));
        let torn = if std::fs::metadata(&b).unwrap().len() > std::fs::metadata(&a).unwrap().len() {
            b
        } else {
            a
        };
        let bytes = std::fs::read(&torn).unwrap();
        std::fs::write(&torn, &bytes[..bytes.len() - 5]).unwrap();
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

    /// A record saved by an older version (one file renamed into place) is
    /// still read, until the first save in slots replaces it.
    #[test]
    fn a_record_in_the_older_single_file_is_still_read() {
        let dir = fresh_dir("legacy");
        let store = DirStore::new(&dir).unwrap();
        let key = vec!["old".to_string()];
        std::fs::write(store.file("chat", &key), b"from before").unwrap();
        assert_eq!(
            store.load("chat", &key).unwrap().as_deref(),
            Some(&b"from before"[..])
        );
        store.save("chat", &key, b"now").unwrap();
        assert_eq!(
            store.load("chat", &key).unwrap().as_deref(),
            Some(&b"now"[..])
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
            seq: 1 << 40,
            handled: vec![(1, 5), (u64::MAX, 300)],
            outbox: Bytes::from_static(b"\x35\x01\x00"),
            earlier: vec![(3, Bytes::from_static(b"\x35")), (1 << 39, Bytes::new())],
            spans: vec![(7, vec![(4, 9), (11, u64::MAX)])],
            state: Bytes::from_static(b"counter=42"),
        };
        assert_eq!(Record::decode(r.encode().to_vec()), Some(r.clone()));
        let mut truncated = r.encode().to_vec();
        truncated.truncate(truncated.len() - 13);
        assert_eq!(
            Record::decode(truncated),
            None,
            "cut inside the earlier outputs"
        );
        assert_eq!(Record::decode(vec![0x05]), None);
    }

    #[test]
    fn a_record_with_an_outbox_but_no_sequence_number_reads_as_seq_0() {
        // WITH_OUTBOX, count, (connection, index), outbox, state.
        let mut bytes = BytesMut::new();
        put_varint(&mut bytes, WITH_OUTBOX);
        for n in [1, 7, 3] {
            put_varint(&mut bytes, n);
        }
        put_bytes(&mut bytes, b"\x35");
        bytes.extend_from_slice(b"counter=42");
        let r = Record::decode(bytes.to_vec()).unwrap();
        assert_eq!((r.seq, &r.handled[..]), (0, &[(7, 3)][..]));
        assert_eq!(
            (&r.outbox[..], &r.state[..]),
            (&b"\x35"[..], &b"counter=42"[..])
        );
    }

    #[test]
    fn a_record_of_the_older_layout_reads_with_an_empty_outbox() {
        // Count, (connection, index) pairs, state: no outbox.
        let older = [&[1u8, 7, 3][..], b"counter=42"].concat();
        let r = Record::decode(older).unwrap();
        assert_eq!(r.handled, vec![(7, 3)]);
        assert!(r.outbox.is_empty());
        assert_eq!(&r.state[..], b"counter=42");
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
