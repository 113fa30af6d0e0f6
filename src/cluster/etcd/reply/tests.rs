//! Answers as etcd 3.4's gateway wrote them (captured with curl), and
//! hostile ones.

use super::*;

const HEADER: &str =
    r#""header":{"cluster_id":"1","member_id":"2","revision":"7","raft_term":"2"}"#;

fn b64(s: &str) -> String {
    B64.encode(s)
}

#[test]
fn a_won_and_a_lost_claim() {
    let won = format!(
        r#"{{{HEADER},"succeeded":true,"responses":[{{"response_put":{{"header":{{"revision":"7"}}}}}}]}}"#
    );
    let t = txn(won.as_bytes()).unwrap();
    assert!(t.succeeded);
    assert_eq!(t.revision, 7);
    assert!(t.ranges.is_empty());
    let lost = format!(
        r#"{{{HEADER},"responses":[{{"response_range":{{"header":{{"revision":"7"}},"kvs":[{{"key":"{}","create_revision":"2","mod_revision":"3","version":"1","value":"{}","lease":"758789"}}],"count":"1"}}}}]}}"#,
        b64("/k"),
        b64("{}")
    );
    let t = txn(lost.as_bytes()).unwrap();
    assert!(!t.succeeded, "absent means false");
    let kv = &t.ranges[0][0];
    assert_eq!(kv.key, b"/k");
    assert_eq!(kv.value.as_deref(), Some(&b"{}"[..]));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.lease),
        (2, 3, 758789)
    );
    let released = format!(r#"{{{HEADER}}}"#);
    assert!(!txn(released.as_bytes()).unwrap().succeeded);
}

#[test]
fn leases() {
    let g = format!(r#"{{{HEADER},"ID":"7587899293391967749","TTL":"5"}}"#);
    assert_eq!(
        lease_grant(g.as_bytes()).unwrap(),
        Lease {
            id: 7587899293391967749,
            ttl: 5
        }
    );
    assert!(lease_grant(format!(r#"{{{HEADER}}}"#).as_bytes()).is_err());
    let k = format!("{{\"result\":{{{HEADER},\"ID\":\"12\",\"TTL\":\"5\"}}}}\n");
    assert_eq!(lease_keepalive(k.as_bytes()).unwrap().ttl, 5);
    let gone = format!("{{\"result\":{{{HEADER},\"ID\":\"12\"}}}}\n");
    assert_eq!(lease_keepalive(gone.as_bytes()).unwrap().ttl, 0);
    let err = r#"{"error":{"grpc_code":14,"http_code":503,"message":"no leader"}}"#;
    assert_eq!(
        lease_keepalive(err.as_bytes()).unwrap_err(),
        Error::Etcd {
            code: 14,
            message: "no leader".into()
        }
    );
}

#[test]
fn errors_and_tokens() {
    let e = error(
        404,
        br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
    );
    assert!(matches!(e, Error::Etcd { code: 5, .. }));
    assert!(!e.is_invalid_token());
    let t = error(
        401,
        br#"{"error":"x","message":"etcdserver: invalid auth token","code":16}"#,
    );
    assert!(t.is_invalid_token());
    assert_eq!(error(502, b"<html>"), Error::Bad("HTTP status 502".into()));
    assert_eq!(
        auth_token(br#"{"header":{},"token":"abc.5"}"#).unwrap(),
        "abc.5"
    );
    assert!(
        auth_token(b"{\"token\":\"a\\r\\nX: y\"}").is_err(),
        "no header injection"
    );
}

#[test]
fn watch_messages() {
    let created = format!(r#"{{"result":{{{HEADER},"created":true}}}}"#);
    let m = watch_message(created.as_bytes()).unwrap();
    assert!(m.created && m.events.is_empty());
    let events = format!(
        r#"{{"result":{{{HEADER},"events":[{{"kv":{{"key":"{k}","create_revision":"4","mod_revision":"4","version":"1","value":"aGk="}}}},{{"type":"DELETE","kv":{{"key":"{k}","mod_revision":"5"}}}}]}}}}"#,
        k = b64("/tether/v1/y")
    );
    let m = watch_message(events.as_bytes()).unwrap();
    assert_eq!(m.revision, 7);
    assert!(!m.events[0].delete && m.events[1].delete);
    assert_eq!(m.events[0].kv.value.as_deref(), Some(&b"hi"[..]));
    assert_eq!(m.events[1].kv.mod_revision, 5);
    let compacted = r#"{"result":{"header":{},"canceled":true,"compact_revision":"4"}}"#;
    let m = watch_message(compacted.as_bytes()).unwrap();
    assert!(m.canceled);
    assert_eq!(m.compact_revision, 4);
}

#[test]
fn oversize_values_are_unreadable_and_oversize_bodies_refused() {
    let big = B64.encode(vec![b'x'; MAX_VALUE_BYTES + 1]);
    let body = format!(r#"{{"kvs":[{{"key":"{}","value":"{big}"}}]}}"#, b64("/k"));
    assert_eq!(range(body.as_bytes()).unwrap().kvs[0].value, None);
    let long_key = B64.encode(vec![b'k'; MAX_ETCD_KEY_BYTES + 10]);
    let skipped = format!(
        r#"{{"kvs":[{{"key":"{long_key}"}},{{"key":"!!"}},{{"key":"{}"}}]}}"#,
        b64("/k")
    );
    let r = range(skipped.as_bytes()).unwrap();
    assert_eq!(
        r.kvs.len(),
        1,
        "keys the directory never writes are skipped"
    );
    assert_eq!(r.kvs[0].key, b"/k");
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    assert!(matches!(range(&huge), Err(Error::Bad(_))));
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let samples: &[&[u8]] = &[
        b"",
        b"{",
        b"null",
        b"[]",
        br#"{"kvs":7}"#,
        br#"{"kvs":[{"key":"!!"}]}"#,
        br#"{"header":{"revision":"x"}}"#,
        br#"{"header":{"revision":"99999999999999999999"}}"#,
        br#"{"result":null}"#,
        br#"{"error":"s"}"#,
        br#"{"responses":[{"response_range":{"kvs":[{"create_revision":{}}]}}]}"#,
    ];
    for s in samples {
        let _ = range(s);
        let _ = txn(s);
        let _ = lease_grant(s);
        let _ = lease_keepalive(s);
        let _ = auth_token(s);
        let _ = watch_message(s);
        let _ = error(500, s);
    }
    let deep = "[".repeat(100_000);
    assert!(range(deep.as_bytes()).is_err(), "recursion is bounded");
    let mut seed = 11u64;
    let alphabet = br#"{}[]:,"0123456789abcdefkvsresultheadrevisiontrue-\ "#;
    for _ in 0..5000 {
        let len = (seed % 120) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                alphabet[(seed >> 33) as usize % alphabet.len()]
            })
            .collect();
        let _ = txn(&bytes);
        let _ = watch_message(&bytes);
    }
}
