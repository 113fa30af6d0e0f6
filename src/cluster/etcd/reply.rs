//! Answers of etcd's JSON gateway, parsed without IO into typed results.
//! Nothing here trusts the peer: bodies are bounded before parsing, keys
//! and values before decoding, and anything malformed is an [`Error`],
//! never a panic. Fields etcd leaves at zero (or false) are absent from
//! its JSON, so every field defaults.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::cluster::model::{LeaseId, MAX_ETCD_KEY_BYTES, MAX_VALUE_BYTES};

/// The longest unary answer read (a range over many nodes stays far below).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The longest single watch message: one revision can delete every claim
/// of an expired lease at once, and etcd does not split it.
pub const MAX_WATCH_MESSAGE_BYTES: usize = 8 << 20;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Connecting, sending or receiving failed or timed out: another
    /// endpoint may do better.
    Io(String),
    /// The answer is not what etcd sends (framing, JSON, bounds).
    Bad(String),
    /// etcd refused, with its gRPC code and message.
    Etcd { code: i64, message: String },
}

impl Error {
    /// The auth token expired or is unknown: authenticate again.
    pub fn is_invalid_token(&self) -> bool {
        matches!(self, Error::Etcd { code, message }
            if *code == 16 || message.contains("invalid auth token"))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(why) => write!(f, "etcd unreachable: {why}"),
            Error::Bad(why) => write!(f, "bad answer from etcd: {why}"),
            Error::Etcd { code, message } => write!(f, "etcd error {code}: {message}"),
        }
    }
}

/// One key-value pair. `value` is None when it is longer than any record
/// the directory writes: a stranger's oversize value is unreadable, not
/// fatal to the answer that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: LeaseId,
}

/// A range answer: the store's revision and the pairs found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

/// A lease grant or keep-alive answer; `ttl` 0: the lease is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: i64,
}

/// A transaction answer: which branch ran, at which revision, and the
/// pairs of each range operation of that branch, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnReply {
    pub succeeded: bool,
    pub revision: i64,
    pub ranges: Vec<Vec<Kv>>,
}

/// One message of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchMessage {
    pub revision: i64,
    pub created: bool,
    /// The watch ended on etcd's side (compaction among other reasons).
    pub canceled: bool,
    /// Non-zero: the start revision was compacted away; events are lost.
    pub compact_revision: i64,
    pub events: Vec<WatchEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// DELETE; otherwise PUT (etcd omits the type then: it is 0).
    pub delete: bool,
    pub kv: Kv,
}

/// An int64 as proto3 JSON writes it: a decimal string (numbers accepted).
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        S(String),
        N(i64),
    }
    match Wire::deserialize(d)? {
        Wire::N(n) => Ok(n),
        Wire::S(s) => s.parse().map_err(de::Error::custom),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireHeader {
    #[serde(deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireKv {
    key: String,
    value: String,
    #[serde(deserialize_with = "int64")]
    create_revision: i64,
    #[serde(deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(deserialize_with = "int64")]
    lease: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireRange {
    header: WireHeader,
    kvs: Vec<WireKv>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireOp {
    response_range: Option<WireRange>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireTxn {
    header: WireHeader,
    succeeded: bool,
    responses: Vec<WireOp>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireLease {
    #[serde(rename = "ID", deserialize_with = "int64")]
    id: i64,
    #[serde(rename = "TTL", deserialize_with = "int64")]
    ttl: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    kv: WireKv,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireWatch {
    header: WireHeader,
    created: bool,
    canceled: bool,
    #[serde(deserialize_with = "int64")]
    compact_revision: i64,
    events: Vec<WireEvent>,
}

/// A unary error body, or the `error` object of a stream message.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireError {
    #[serde(deserialize_with = "int64")]
    code: i64,
    #[serde(deserialize_with = "int64")]
    grpc_code: i64,
    message: String,
}

/// A stream message: `{"result": …}` or `{"error": {…}}`.
#[derive(Deserialize)]
struct WireStream<T> {
    result: Option<T>,
    error: Option<WireError>,
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8], max: usize) -> Result<T, Error> {
    if body.len() > max {
        return Err(Error::Bad(format!("answer over {max} bytes")));
    }
    serde_json::from_slice(body).map_err(|e| Error::Bad(format!("JSON: {e}")))
}

/// A streamed message's result, or the error it carries.
fn stream<'a, T: Deserialize<'a>>(body: &'a [u8], max: usize) -> Result<T, Error> {
    let s: WireStream<T> = json(body, max)?;
    if let Some(e) = s.error {
        return Err(Error::Etcd {
            code: e.code.max(e.grpc_code),
            message: e.message,
        });
    }
    s.result
        .ok_or_else(|| Error::Bad("stream message without result".into()))
}

/// A pair, or None when its key cannot be one the directory wrote (too
/// long, not base64): such a pair is someone else's and is skipped, so it
/// cannot make a whole answer, or a watch stream, unreadable.
fn kv(w: WireKv) -> Option<Kv> {
    // base64 grows by 4/3: a longer text cannot decode within the bound.
    if w.key.len() > MAX_ETCD_KEY_BYTES * 4 / 3 + 4 {
        return None;
    }
    let key = B64.decode(&w.key).ok()?;
    let value = (w.value.len() <= MAX_VALUE_BYTES * 4 / 3 + 4)
        .then(|| B64.decode(&w.value).ok())
        .flatten()
        .filter(|v| v.len() <= MAX_VALUE_BYTES);
    Some(Kv {
        key,
        value,
        create_revision: w.create_revision,
        mod_revision: w.mod_revision,
        lease: w.lease,
    })
}

fn kvs(w: Vec<WireKv>) -> Vec<Kv> {
    w.into_iter().filter_map(kv).collect()
}

/// The error a non-200 answer carries (its body may be anything).
pub fn error(status: u16, body: &[u8]) -> Error {
    match json::<WireError>(body, MAX_BODY_BYTES) {
        Ok(e) if !e.message.is_empty() => Error::Etcd {
            code: e.code.max(e.grpc_code),
            message: e.message,
        },
        _ => Error::Bad(format!("HTTP status {status}")),
    }
}

pub fn range(body: &[u8]) -> Result<Range, Error> {
    let w: WireRange = json(body, MAX_BODY_BYTES)?;
    Ok(Range {
        revision: w.header.revision,
        kvs: kvs(w.kvs),
    })
}

pub fn txn(body: &[u8]) -> Result<TxnReply, Error> {
    let w: WireTxn = json(body, MAX_BODY_BYTES)?;
    let ranges = w
        .responses
        .into_iter()
        .filter_map(|op| op.response_range)
        .map(|r| kvs(r.kvs))
        .collect();
    Ok(TxnReply {
        succeeded: w.succeeded,
        revision: w.header.revision,
        ranges,
    })
}

/// A grant's answer (unary).
pub fn lease_grant(body: &[u8]) -> Result<Lease, Error> {
    let w: WireLease = json(body, MAX_BODY_BYTES)?;
    if w.id == 0 || w.ttl <= 0 {
        return Err(Error::Bad("grant without a lease".into()));
    }
    Ok(Lease {
        id: w.id,
        ttl: w.ttl,
    })
}

/// A keep-alive's answer (the first message of its stream).
pub fn lease_keepalive(body: &[u8]) -> Result<Lease, Error> {
    let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let w: WireLease = stream(line, MAX_BODY_BYTES)?;
    Ok(Lease {
        id: w.id,
        ttl: w.ttl.max(0),
    })
}

pub fn auth_token(body: &[u8]) -> Result<String, Error> {
    #[derive(Deserialize)]
    struct Token {
        token: String,
    }
    let t: Token = json(body, MAX_BODY_BYTES)?;
    // It goes back in a header: printable ASCII only.
    if t.token.is_empty() || t.token.len() > 4096 || !t.token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::Bad("unusable auth token".into()));
    }
    Ok(t.token)
}

/// One line of a watch stream.
pub fn watch_message(line: &[u8]) -> Result<WatchMessage, Error> {
    let w: WireWatch = stream(line, MAX_WATCH_MESSAGE_BYTES)?;
    let events = w
        .events
        .into_iter()
        .filter_map(|e| {
            Some(WatchEvent {
                delete: e.kind == "DELETE",
                kv: kv(e.kv)?,
            })
        })
        .collect();
    Ok(WatchMessage {
        revision: w.header.revision,
        created: w.created,
        canceled: w.canceled,
        compact_revision: w.compact_revision,
        events,
    })
}

#[cfg(test)]
mod tests;
