//! The cluster directory's data model, without IO: where each record lives
//! in etcd, how actor keys are encoded so that no two actors share a path,
//! what the records hold, and the claim and release rules as transactions
//! (data the client thread hands to etcd unchanged).
//!
//! Layout, under [`PREFIX`]:
//! - `nodes/{node}` → [`NodeRecord`] (JSON), put with the node's lease;
//! - `actors/{ns}/{name}/{key}` → [`ClaimRecord`] (JSON), put with the
//!   owner's lease; `{key}` is [`encode_key`] of the key's segments;
//! - `runners/{ns}/{runner}` → the node holding the runner's tunnel, with
//!   that node's lease; `{runner}` is one encoded segment;
//! - `members/{ns}/{name}/{key}@{node}` → empty, with `node`'s lease: that
//!   node has clients of the actor (put by its claims, deleted when it no
//!   longer has the actor); the new owner after a failover waits for the
//!   nodes listed here (see [`members_prefix`] for why `@`).
//!
//! A claim's revision is etcd's `create_revision` of its key: it changes
//! whenever the key is created anew (after a release or a lease expiry), so
//! "the claim I hold" is (key, create_revision), never just the key.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{is_namespace_name, is_node_id};
use crate::http::route::{is_actor_name, MAX_KEY_BYTES, MAX_KEY_PARTS, MAX_KEY_PART_BYTES};

/// Every key the directory writes starts with this (version 1 of the layout).
pub const PREFIX: &str = "/tether/v1/";
/// The longest key the directory writes: a 1 KiB actor key encodes to at
/// most 3 KiB, plus its separators and the fixed parts.
pub const MAX_ETCD_KEY_BYTES: usize = 4096;
/// The longest record value.
pub const MAX_VALUE_BYTES: usize = 1024;
/// The longest runner key (one segment).
pub const MAX_RUNNER_KEY_BYTES: usize = 256;

/// An actor, as clients address it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorPath {
    pub namespace: String,
    pub name: String,
    /// The key's segments, decoded: any text, `/` included.
    pub key: Vec<String>,
}

/// Why an actor, node or runner cannot be written to the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl ActorPath {
    /// Checks the bounds the client-facing routes enforce, so that every
    /// actor the gateway serves has a directory key and nothing else does.
    pub fn new(namespace: &str, name: &str, key: &[&str]) -> Result<ActorPath, Invalid> {
        let path = ActorPath {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.iter().map(|s| s.to_string()).collect(),
        };
        path.check()?;
        Ok(path)
    }

    fn check(&self) -> Result<(), Invalid> {
        if !is_namespace_name(&self.namespace) {
            return Err(Invalid("namespace"));
        }
        if !is_actor_name(&self.name) {
            return Err(Invalid("actor name"));
        }
        if self.key.len() > MAX_KEY_PARTS
            || self.key.iter().any(|s| s.len() > MAX_KEY_PART_BYTES)
            || self.key.iter().map(String::len).sum::<usize>() > MAX_KEY_BYTES
        {
            return Err(Invalid("actor key too long"));
        }
        Ok(())
    }

    /// `{PREFIX}actors/{ns}/{name}/{encoded key}`.
    pub fn etcd_key(&self) -> String {
        let mut k = actors_prefix(&self.namespace, &self.name);
        k.push_str(&encode_key(&self.key));
        debug_assert!(k.len() <= MAX_ETCD_KEY_BYTES);
        k
    }

    /// The actor a directory key names (None for any other key).
    pub fn from_etcd_key(k: &str) -> Option<ActorPath> {
        let rest = k.strip_prefix(PREFIX)?.strip_prefix("actors/")?;
        let (namespace, rest) = rest.split_once('/')?;
        let (name, key) = rest.split_once('/')?;
        let path = ActorPath {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: decode_key(key)?,
        };
        path.check().ok()?;
        Some(path)
    }
}

/// Ends an actor's part of a member key: `encode_key` never writes it (it
/// writes `A-Z a-z 0-9 - _ . % ~ /` only), so the first `@` of a member
/// key is where its actor ends, and no actor's members prefix is a prefix
/// of another actor's member key (key `["a"]` is `a@`, key `["a", "x"]`
/// is `a/x@`: a `/` alone would have let the first prefix the second).
pub const MEMBER_SEP: char = '@';

/// `{PREFIX}members/{ns}/{name}/{encoded key}@`: every member key of one
/// actor (a prefix range), and of no other actor.
pub fn members_prefix(actor: &ActorPath) -> String {
    let mut k = format!("{PREFIX}members/{}/{}/", actor.namespace, actor.name);
    k.push_str(&encode_key(&actor.key));
    k.push(MEMBER_SEP);
    k
}

/// `{PREFIX}members/{ns}/{name}/{encoded key}@{node}`: `node` has clients
/// of the actor.
pub fn member_key(actor: &ActorPath, node: &str) -> Result<String, Invalid> {
    actor.check()?;
    if !is_node_id(node) {
        return Err(Invalid("node id"));
    }
    let mut k = members_prefix(actor);
    k.push_str(node);
    debug_assert!(k.len() <= MAX_ETCD_KEY_BYTES);
    Ok(k)
}

/// The node a member key of `actor` names (None for any other key).
pub fn member_of<'k>(actor: &ActorPath, key: &'k str) -> Option<&'k str> {
    let node = key.strip_prefix(&members_prefix(actor))?;
    is_node_id(node).then_some(node)
}

/// `{PREFIX}actors/{ns}/{name}/`: every actor of one name (a prefix scan
/// or watch; the trailing `/` keeps `chat` from matching `chatroom`).
pub fn actors_prefix(namespace: &str, name: &str) -> String {
    format!("{PREFIX}actors/{namespace}/{name}/")
}

/// `{PREFIX}actors/{ns}/`: every actor of a namespace.
pub fn namespace_prefix(namespace: &str) -> String {
    format!("{PREFIX}actors/{namespace}/")
}

/// `{PREFIX}nodes/`: every node.
pub fn nodes_prefix() -> String {
    format!("{PREFIX}nodes/")
}

/// `{PREFIX}nodes/{node}`.
pub fn node_key(node: &str) -> Result<String, Invalid> {
    if !is_node_id(node) {
        return Err(Invalid("node id"));
    }
    Ok(format!("{PREFIX}nodes/{node}"))
}

/// `{PREFIX}runners/{ns}/{encoded runner key}`.
pub fn runner_key(namespace: &str, runner: &str) -> Result<String, Invalid> {
    if !is_namespace_name(namespace) {
        return Err(Invalid("namespace"));
    }
    if runner.len() > MAX_RUNNER_KEY_BYTES {
        return Err(Invalid("runner key too long"));
    }
    let mut k = format!("{PREFIX}runners/{namespace}/");
    encode_segment(runner, &mut k);
    Ok(k)
}

/// The end of etcd's range for "every key starting with `prefix`": the
/// prefix with its last byte incremented (prefixes here end in `/`, never
/// in 0xff).
pub fn prefix_range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Bytes a segment keeps as they are; everything else is `%XX`. `~` is
/// not among them: it marks an empty segment.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

fn encode_segment(s: &str, out: &mut String) {
    if s.is_empty() {
        out.push('~');
        return;
    }
    for &b in s.as_bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// An actor key's segments as one etcd path tail: each segment
/// percent-encoded (so `/` and `%` inside it cannot be confused with the
/// separator), an empty segment as `~`, segments joined by `/`. The empty
/// key (no segment) is the empty string, which no segment encodes to, so
/// the encoding is one-to-one.
pub fn encode_key(key: &[String]) -> String {
    let mut out = String::new();
    for (i, s) in key.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode_segment(s, &mut out);
    }
    out
}

fn decode_segment(s: &str) -> Option<String> {
    if s == "~" {
        return Some(String::new());
    }
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if unreserved(v) {
                return None; // would have been written as itself
            }
            out.push(v);
            i += 3;
        } else if unreserved(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The inverse of [`encode_key`]; None for text it never produces.
pub fn decode_key(s: &str) -> Option<Vec<String>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split('/').map(decode_segment).collect()
}

/// What `nodes/{node}` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Where other nodes open their node-to-node tunnel to it.
    pub advertise: String,
}

/// What `actors/…` holds: who serves the actor. The claim's revision is
/// the key's `create_revision`, which etcd keeps beside the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub node: String,
    /// The runner (key) the owner placed the actor on; empty until placed.
    pub runner: String,
}

/// What `runners/…` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRecord {
    pub node: String,
}

/// A record as stored: JSON, bounded.
pub fn encode_value<T: Serialize>(record: &T) -> Result<Vec<u8>, Invalid> {
    let v = serde_json::to_vec(record).map_err(|_| Invalid("record"))?;
    if v.len() > MAX_VALUE_BYTES {
        return Err(Invalid("record too long"));
    }
    Ok(v)
}

/// A record as read back; None for anything unexpected (another writer's
/// garbage is never trusted).
pub fn decode_value<T: for<'de> Deserialize<'de>>(v: &[u8]) -> Option<T> {
    if v.len() > MAX_VALUE_BYTES {
        return None;
    }
    serde_json::from_slice(v).ok()
}

/// An etcd lease id.
pub type LeaseId = i64;

/// One comparison of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's create_revision equals this (0: the key does not exist).
    CreateRevision { key: String, revision: i64 },
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    /// A new value under the key's own lease (etcd's `ignore_lease`).
    Rewrite {
        key: String,
        value: Vec<u8>,
    },
    Get {
        key: String,
    },
    /// Every key starting with `prefix`.
    GetPrefix {
        prefix: String,
    },
    Delete {
        key: String,
    },
}

/// An etcd transaction: if every comparison holds, `success`, else
/// `failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// The claim rule: "create the actor's key, with my lease, if it does not
/// exist; else tell me who has it". A takeover after the owner's lease
/// expired is the same transaction: etcd deleted the key with the lease.
/// Nothing ever overwrites another node's claim.
///
/// Either way the claiming node becomes a member of the actor (its member
/// key, under its lease: it has clients of the actor, wherever it runs) and
/// reads the actor's members, so that a winner knows which nodes' clients
/// to wait for. The ops, in order (the request thread reads the answer by
/// position: the txn's revision is the claim put's, the range answers come
/// in op order):
/// - success: put claim, put member, range members;
/// - failure: put member, get claim, range members.
pub fn claim_txn(actor: &ActorPath, record: &ClaimRecord, lease: LeaseId) -> Result<Txn, Invalid> {
    actor.check()?;
    let key = actor.etcd_key();
    let member = Op::Put {
        key: member_key(actor, &record.node)?,
        value: Vec::new(),
        lease,
    };
    let members = Op::GetPrefix {
        prefix: members_prefix(actor),
    };
    Ok(Txn {
        compare: vec![Compare::CreateRevision {
            key: key.clone(),
            revision: 0,
        }],
        success: vec![
            Op::Put {
                key: key.clone(),
                value: encode_value(record)?,
                lease,
            },
            member.clone(),
            members.clone(),
        ],
        failure: vec![member, Op::Get { key }, members],
    })
}

/// The release rule: delete the key only if it still holds the claim made
/// at `revision` (a claim lost and taken by another node stays theirs).
/// The releasing node (`node`) is no member of the actor any more, in
/// either case.
pub fn release_txn(actor: &ActorPath, revision: i64, node: &str) -> Result<Txn, Invalid> {
    let key = actor.etcd_key();
    let member = Op::Delete {
        key: member_key(actor, node)?,
    };
    Ok(Txn {
        compare: vec![Compare::CreateRevision {
            key: key.clone(),
            revision,
        }],
        success: vec![Op::Delete { key }, member.clone()],
        failure: vec![member],
    })
}

/// `node` no longer has the actor (its clients of it left): its member key
/// goes.
pub fn leave_txn(actor: &ActorPath, node: &str) -> Result<Txn, Invalid> {
    Ok(Txn {
        compare: vec![],
        success: vec![Op::Delete {
            key: member_key(actor, node)?,
        }],
        failure: vec![],
    })
}

/// The owner names the runner it placed the actor on: the claim's record
/// is rewritten, keeping the claim's own lease (so a claim made under a
/// lease since lost dies with it), only while it is still the claim made
/// at `revision`.
pub fn placed_txn(actor: &ActorPath, revision: i64, record: &ClaimRecord) -> Result<Txn, Invalid> {
    actor.check()?;
    let key = actor.etcd_key();
    Ok(Txn {
        compare: vec![Compare::CreateRevision {
            key: key.clone(),
            revision,
        }],
        success: vec![Op::Rewrite {
            key,
            value: encode_value(record)?,
        }],
        failure: vec![],
    })
}

/// A runner's record goes (its last tunnel to this node closed).
pub fn runner_gone_txn(namespace: &str, runner: &str) -> Result<Txn, Invalid> {
    let key = runner_key(namespace, runner)?;
    Ok(Txn {
        compare: vec![],
        success: vec![Op::Delete { key }],
        failure: vec![],
    })
}

/// What a claim transaction came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This node holds the actor; `revision` is its claim's create_revision.
    Won { revision: i64 },
    /// Another claim holds it (`owner` None if its value was unreadable).
    Lost {
        owner: Option<ClaimRecord>,
        revision: i64,
    },
}

/// Fencing, as a node sees its lease: a keep-alive *sent* at `t` and
/// answered with a TTL `r` proves the lease lives at least until `t + r`
/// (etcd restarts the TTL when it receives the request, after `t`). The
/// node serves its actors only until that instant minus a margin for clock
/// drift, so it stops before etcd can expire the lease and let another node
/// claim them — even when it is cut off and hears nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseFence {
    valid_until: Option<Instant>,
}

impl LeaseFence {
    /// The share of a TTL kept back for drift: a tenth, at least 500 ms.
    pub fn margin(ttl: Duration) -> Duration {
        (ttl / 10).max(Duration::from_millis(500))
    }

    /// A lease not yet confirmed: serves nothing.
    pub fn new() -> LeaseFence {
        LeaseFence { valid_until: None }
    }

    /// A keep-alive (or the grant) sent at `sent_at` was answered with
    /// `ttl` left (0: the lease is gone).
    pub fn confirmed(&mut self, sent_at: Instant, ttl: Duration) {
        if ttl.is_zero() {
            self.valid_until = None;
            return;
        }
        let until = sent_at + ttl.saturating_sub(Self::margin(ttl));
        self.valid_until = Some(self.valid_until.map_or(until, |u| u.max(until)));
    }

    /// The lease is known lost (revoked, expired, or a keep-alive said 0).
    pub fn lost(&mut self) {
        self.valid_until = None;
    }

    pub fn alive(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|u| now < u)
    }

    /// The instant the node must stop serving (None: it must not now);
    /// published to other threads as an atomic deadline.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }
}

impl Default for LeaseFence {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a node may serve an actor now: its lease is alive and the claim
/// it holds (`held`) is the one the directory shows (`current`, the key's
/// create_revision as last seen in a watch or read; None: the key is gone).
pub fn may_serve(fence: &LeaseFence, now: Instant, held: i64, current: Option<i64>) -> bool {
    fence.alive(now) && current == Some(held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("~".to_owned()),
            Just("/".to_owned()),
            Just("%2F".to_owned()),
            "[a-z/%~. ]{0,6}",
            any::<String>().prop_map(|s| s.chars().take(8).collect()),
        ]
    }

    fn key() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(seg(), 0..5)
    }

    proptest! {
        #[test]
        fn keys_round_trip(k in key()) {
            let e = encode_key(&k);
            prop_assert_eq!(decode_key(&e), Some(k));
            prop_assert!(e.bytes().all(|b| b.is_ascii_graphic()));
        }

        #[test]
        fn distinct_actors_have_distinct_paths(a in key(), b in key(), na in "[ab]", nb in "[ab]") {
            let pa = ActorPath { namespace: "default".into(), name: na, key: a };
            let pb = ActorPath { namespace: "default".into(), name: nb, key: b };
            prop_assert_eq!(pa == pb, pa.etcd_key() == pb.etcd_key());
            prop_assert_eq!(ActorPath::from_etcd_key(&pa.etcd_key()), Some(pa));
        }

        #[test]
        fn prefix_scans_find_exactly_their_actors(k in key(), name in "(chat|chatroom|c)", scan in "(chat|chatroom|c)") {
            let p = ActorPath { namespace: "acme".into(), name: name.clone(), key: k };
            let key = p.etcd_key();
            prop_assert_eq!(key.starts_with(&actors_prefix("acme", &scan)), name == scan);
            prop_assert!(key.starts_with(&namespace_prefix("acme")));
            prop_assert!(!key.starts_with(&namespace_prefix("acm")));
            let end = prefix_range_end(&actors_prefix("acme", &name));
            prop_assert!(key.as_bytes() < end.as_slice());
        }

        #[test]
        fn an_actors_members_prefix_matches_exactly_its_own_member_keys(
            a in key(), b in key(), na in "[ab]", nb in "[ab]", node in "[a-z0-9._-]{1,8}"
        ) {
            prop_assume!(is_node_id(&node));
            let pa = ActorPath { namespace: "default".into(), name: na, key: a };
            let pb = ActorPath { namespace: "default".into(), name: nb, key: b };
            let kb = member_key(&pb, &node).unwrap();
            prop_assert_eq!(kb.starts_with(&members_prefix(&pa)), pa == pb);
            prop_assert_eq!(member_of(&pa, &kb), (pa == pb).then_some(node.as_str()));
            // Nor does the range etcd reads for it reach past its prefix.
            let end = prefix_range_end(&members_prefix(&pa));
            let inside = members_prefix(&pa).as_bytes() <= kb.as_bytes() && kb.as_bytes() < end.as_slice();
            prop_assert_eq!(inside, pa == pb);
            // Member keys are no actor's, node's or runner's key.
            prop_assert!(ActorPath::from_etcd_key(&kb).is_none());
            prop_assert!(!kb.starts_with(&nodes_prefix()));
        }

        #[test]
        fn decode_never_panics_and_only_accepts_its_own_output(s in "[a-zA-Z0-9%~/._-]{0,12}") {
            if let Some(k) = decode_key(&s) {
                prop_assert_eq!(encode_key(&k), s);
            }
        }
    }

    #[test]
    fn examples() {
        let k = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(encode_key(&k(&["room", "a/b"])), "room/a%2Fb");
        assert_eq!(encode_key(&k(&["room/a", "b"])), "room%2Fa/b");
        assert_eq!(encode_key(&k(&[])), "");
        assert_eq!(encode_key(&k(&[""])), "~");
        assert_eq!(encode_key(&k(&["~"])), "%7E");
        assert_eq!(encode_key(&k(&["é"])), "%C3%A9");
        let p = ActorPath::new("default", "chat", &["room", "a/b"]).unwrap();
        assert_eq!(p.etcd_key(), "/tether/v1/actors/default/chat/room/a%2Fb");
        assert_eq!(node_key("edge-1").unwrap(), "/tether/v1/nodes/edge-1");
        let a = |s: &[&str]| ActorPath::new("default", "chat", s).unwrap();
        assert_eq!(
            members_prefix(&a(&["a"])),
            "/tether/v1/members/default/chat/a@"
        );
        assert_eq!(
            members_prefix(&a(&["a", "x"])),
            "/tether/v1/members/default/chat/a/x@"
        );
        assert_eq!(members_prefix(&a(&[])), "/tether/v1/members/default/chat/@");
        assert!(node_key("a/b").is_err());
        assert_eq!(
            runner_key("default", "r/1").unwrap(),
            "/tether/v1/runners/default/r%2F1"
        );
        assert_eq!(prefix_range_end("/a/"), b"/a0".to_vec());
        assert!(ActorPath::new("no/ns", "chat", &[]).is_err());
        assert!(ActorPath::new("default", "chat", &["x"; 17]).is_err());
        assert!(ActorPath::from_etcd_key("/tether/v1/nodes/x").is_none());
        assert!(decode_key("a%2f").is_none(), "lowercase hex is not ours");
        assert!(decode_key("%41").is_none(), "an encoded unreserved byte");
        assert!(decode_key("a//b").is_none());
    }

    #[test]
    fn the_longest_key_fits() {
        let seg = "/".repeat(MAX_KEY_BYTES / MAX_KEY_PARTS);
        let key: Vec<&str> = vec![seg.as_str(); MAX_KEY_PARTS];
        let p = ActorPath::new(&"n".repeat(64), &"a".repeat(64), &key).unwrap();
        assert!(p.etcd_key().len() <= MAX_ETCD_KEY_BYTES);
        let node = "n".repeat(crate::config::MAX_NODE_ID_BYTES);
        assert!(member_key(&p, &node).unwrap().len() <= MAX_ETCD_KEY_BYTES);
    }

    #[test]
    fn claims_create_only_and_releases_only_their_own() {
        let p = ActorPath::new("default", "chat", &["r"]).unwrap();
        let rec = ClaimRecord {
            node: "edge-1".into(),
            runner: String::new(),
        };
        let t = claim_txn(&p, &rec, 7).unwrap();
        assert_eq!(
            t.compare,
            [Compare::CreateRevision {
                key: p.etcd_key(),
                revision: 0
            }]
        );
        let member = member_key(&p, "edge-1").unwrap();
        assert_eq!(member, "/tether/v1/members/default/chat/r@edge-1");
        let members = members_prefix(&p);
        // The claim's put first (its revision is the txn's), the member
        // put in both branches, the members' range last in both.
        assert!(matches!(&t.success[..], [
            Op::Put { key: k, lease: 7, .. },
            Op::Put { key: m, lease: 7, value },
            Op::GetPrefix { prefix },
        ] if *k == p.etcd_key() && *m == member && value.is_empty() && *prefix == members));
        assert!(matches!(&t.failure[..], [
            Op::Put { key: m, lease: 7, .. },
            Op::Get { key: k },
            Op::GetPrefix { prefix },
        ] if *k == p.etcd_key() && *m == member && *prefix == members));
        let r = release_txn(&p, 42, "edge-1").unwrap();
        assert_eq!(
            r.compare,
            [Compare::CreateRevision {
                key: p.etcd_key(),
                revision: 42
            }]
        );
        let delete = |key: &str| Op::Delete { key: key.into() };
        assert_eq!(r.success, [delete(&p.etcd_key()), delete(&member)]);
        assert_eq!(r.failure, [delete(&member)]);
        assert_eq!(leave_txn(&p, "edge-1").unwrap().success, [delete(&member)]);
        assert!(leave_txn(&p, "a/b").is_err());
        assert!(claim_txn(
            &p,
            &ClaimRecord {
                node: "x@y".into(),
                runner: String::new()
            },
            7
        )
        .is_err());
        let v = encode_value(&rec).unwrap();
        assert_eq!(decode_value::<ClaimRecord>(&v), Some(rec));
        assert_eq!(decode_value::<ClaimRecord>(b"{}"), None);
    }

    #[test]
    fn the_fence_closes_before_the_lease_can_expire() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut f = LeaseFence::new();
        assert!(!f.alive(t0), "unconfirmed");
        f.confirmed(t0, ttl);
        assert!(f.alive(t0 + Duration::from_secs(8)));
        assert!(!f.alive(t0 + Duration::from_secs(9)), "the margin");
        assert!(may_serve(&f, t0, 5, Some(5)));
        assert!(!may_serve(&f, t0, 5, Some(6)), "another claim");
        assert!(!may_serve(&f, t0, 5, None), "claim gone");
        // An older confirmation answered late never shortens the fence.
        f.confirmed(t0 - Duration::from_secs(5), ttl);
        assert!(f.alive(t0 + Duration::from_secs(8)));
        f.confirmed(t0, Duration::ZERO);
        assert!(!f.alive(t0));
        f.confirmed(t0, ttl);
        f.lost();
        assert!(!f.alive(t0));
    }
}
