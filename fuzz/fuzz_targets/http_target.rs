//! Plain HTTP targets to actors (PROTOCOL §7b) and the header fields a
//! forwarded request and an actor's response carry: routing never panics,
//! a routed actor respects the limits clients have, the actor's path is
//! what followed its prefix (starting with `/`, never holding the query),
//! and sorting an actor's fields never panics.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::http::forward::actor_head;
use tether::http::route::{is_actor_name, route_http, MAX_KEY_BYTES, MAX_KEY_PARTS};

fuzz_target!(|data: &[u8]| {
    let (target, fields) = data.split_at(data.iter().position(|b| *b == 0).unwrap_or(data.len()));
    if let Ok(target) = std::str::from_utf8(target) {
        if let Ok(Some(t)) = route_http(target) {
            assert!(is_actor_name(&t.actor.name));
            assert!(!t.actor.key.is_empty() && t.actor.key.len() <= MAX_KEY_PARTS);
            assert!(t.actor.key.iter().map(String::len).sum::<usize>() <= MAX_KEY_BYTES);
            assert!(t.path.starts_with('/') && !t.path.contains('?'));
            assert!(target.contains(t.path.as_str()));
        }
    }
    // The rest: name/value pairs, each `name:value` between NULs.
    let headers: Vec<(String, Bytes)> = fields
        .split(|b| *b == 0)
        .filter_map(|f| {
            let at = f.iter().position(|b| *b == b':')?;
            let name = std::str::from_utf8(&f[..at]).ok()?.to_ascii_lowercase();
            Some((name, Bytes::copy_from_slice(&f[at + 1..])))
        })
        .collect();
    if let Ok(head) = actor_head(&headers) {
        assert!(head.fields.iter().all(|(n, _)| n != "content-length" && n != "connection"));
    }
});
