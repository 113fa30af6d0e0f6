//! Request bodies for etcd's JSON gateway, without IO. Keys and values go
//! as base64, int64s as decimal strings (the proto3 JSON mapping). Field
//! names are the camelCase JSON names, which the gateway accepts.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::cluster::model::{prefix_range_end, Compare, LeaseId, Op, Txn};

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// `POST /v3/lease/grant`.
pub fn lease_grant(ttl_secs: i64) -> Vec<u8> {
    body(json!({ "TTL": ttl_secs.to_string() }))
}

/// `POST /v3/lease/keepalive` (one request of the stream) and
/// `POST /v3/lease/revoke`: both just name the lease.
pub fn lease_id(lease: LeaseId) -> Vec<u8> {
    body(json!({ "ID": lease.to_string() }))
}

/// `POST /v3/auth/authenticate`.
pub fn authenticate(name: &str, password: &str) -> Vec<u8> {
    body(json!({ "name": name, "password": password }))
}

/// `POST /v3/kv/range`: one key, or `[key, range_end)` when given.
pub fn range(key: &[u8], range_end: Option<&[u8]>) -> Vec<u8> {
    let mut v = json!({ "key": b64(key) });
    if let Some(end) = range_end {
        v["range_end"] = Value::String(b64(end));
    }
    body(v)
}

/// `POST /v3/kv/put` with a lease.
pub fn put(key: &[u8], value: &[u8], lease: LeaseId) -> Vec<u8> {
    body(json!({ "key": b64(key), "value": b64(value), "lease": lease.to_string() }))
}

/// `POST /v3/kv/txn` for a model transaction.
pub fn txn(t: &Txn) -> Vec<u8> {
    let compare: Vec<Value> = t
        .compare
        .iter()
        .map(|c| match c {
            Compare::CreateRevision { key, revision } => json!({
                "target": "CREATE",
                "result": "EQUAL",
                "key": b64(key.as_bytes()),
                "createRevision": revision.to_string(),
            }),
        })
        .collect();
    let ops = |ops: &[Op]| -> Vec<Value> { ops.iter().map(op).collect() };
    body(json!({
        "compare": compare,
        "success": ops(&t.success),
        "failure": ops(&t.failure),
    }))
}

fn op(o: &Op) -> Value {
    match o {
        Op::Put { key, value, lease } => json!({ "requestPut": {
            "key": b64(key.as_bytes()),
            "value": b64(value),
            "lease": lease.to_string(),
        }}),
        Op::Rewrite { key, value } => json!({ "requestPut": {
            "key": b64(key.as_bytes()),
            "value": b64(value),
            "ignore_lease": true,
        }}),
        Op::Get { key } => json!({ "requestRange": { "key": b64(key.as_bytes()) } }),
        Op::GetPrefix { prefix } => json!({ "requestRange": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_range_end(prefix)),
        }}),
        Op::Delete { key } => json!({ "requestDeleteRange": { "key": b64(key.as_bytes()) } }),
    }
}

/// `POST /v3/watch`: every key in `[key, range_end)` from `start_revision`
/// (None: from now).
pub fn watch_create(key: &[u8], range_end: &[u8], start_revision: Option<i64>) -> Vec<u8> {
    let mut create = json!({ "key": b64(key), "range_end": b64(range_end) });
    if let Some(r) = start_revision {
        create["start_revision"] = Value::String(r.to_string());
    }
    body(json!({ "create_request": create }))
}

fn body(v: Value) -> Vec<u8> {
    // Serializing a Value built here cannot fail (string keys only).
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{claim_txn, release_txn, ActorPath, ClaimRecord};

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn a_claim_is_a_create_only_put_else_a_range() {
        let actor = ActorPath::new("default", "chat", &["r"]).unwrap();
        let rec = ClaimRecord {
            node: "n".into(),
            runner: String::new(),
        };
        let v = parse(&txn(&claim_txn(&actor, &rec, 42).unwrap()));
        let key = b64(actor.etcd_key().as_bytes());
        assert_eq!(v["compare"][0]["target"], "CREATE");
        assert_eq!(v["compare"][0]["createRevision"], "0");
        assert_eq!(v["compare"][0]["key"], key.as_str());
        assert_eq!(v["success"][0]["requestPut"]["lease"], "42");
        assert_eq!(v["success"][0]["requestPut"]["key"], key.as_str());
        assert_eq!(v["failure"][1]["requestRange"]["key"], key.as_str());
        // Both branches end with the members' range: [prefix, prefix + 1).
        let prefix = b64(b"/tether/v1/members/default/chat/r@");
        for branch in ["success", "failure"] {
            let range = &v[branch][2]["requestRange"];
            assert_eq!(range["key"], prefix.as_str());
            assert_eq!(
                range["range_end"],
                b64(b"/tether/v1/members/default/chat/rA").as_str()
            );
        }
        let r = parse(&txn(&release_txn(&actor, 7, "n").unwrap()));
        assert_eq!(r["compare"][0]["createRevision"], "7");
        assert_eq!(r["success"][0]["requestDeleteRange"]["key"], key.as_str());
        let member = b64(b"/tether/v1/members/default/chat/r@n");
        assert_eq!(
            r["success"][1]["requestDeleteRange"]["key"],
            member.as_str()
        );
        assert_eq!(
            r["failure"][0]["requestDeleteRange"]["key"],
            member.as_str()
        );
    }

    #[test]
    fn leases_watches_and_auth() {
        assert_eq!(parse(&lease_grant(5)), json!({"TTL": "5"}));
        assert_eq!(parse(&lease_id(-3)), json!({"ID": "-3"}));
        let w = parse(&watch_create(b"/a/", b"/a0", Some(9)));
        assert_eq!(w["create_request"]["start_revision"], "9");
        assert_eq!(w["create_request"]["key"], b64(b"/a/").as_str());
        assert!(parse(&watch_create(b"/", b"0", None))["create_request"]
            .get("start_revision")
            .is_none());
        let a = parse(&authenticate("u\"", "p"));
        assert_eq!(a["name"], "u\"", "escaped, not spliced");
        assert!(parse(&range(b"k", None)).get("range_end").is_none());
    }
}
