//! Which resource a request target names, with percent-decoding of path segments.
//!
//! Actor names and keys are checked here, before anything is allocated for
//! them or any actor starts:
//! - a name is 1–64 bytes of ASCII letters, digits, `-` and `_`;
//! - a key is 1–16 segments; each decodes to 1–256 bytes of UTF-8 with no
//!   control characters (NUL included) and is neither `.` nor `..` (which
//!   proxies and file systems would resolve); all segments together decode
//!   to at most 1,024 bytes.
//!
//! Too long or too many: 414. Anything else wrong: 400.
//!
//! `/ns/{namespace}/actors/...` names an actor of a namespace;
//! `/actors/...` one of the namespace `default`. A namespace name follows
//! the rules of an actor name.

use super::response::Status;
use crate::config::{is_namespace_name, DEFAULT_NAMESPACE};

/// Longest actor name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most segments in an actor key.
pub const MAX_KEY_PARTS: usize = 16;
/// Longest key segment, in bytes once decoded.
pub const MAX_KEY_PART_BYTES: usize = 256;
/// Longest key, all segments together, in bytes once decoded.
pub const MAX_KEY_BYTES: usize = 1024;

/// Where a client request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Actor(ActorPath),
    NotFound,
}

/// `[/ns/{ns}]/actors/{name}/{key…}?{query}`: the key may span several segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorPath {
    pub ns: String,
    pub name: String,
    pub key: Vec<String>,
    pub query: Option<String>,
}

/// A target that cannot be routed: its status (400 or 414) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTarget {
    pub status: Status,
    pub reason: &'static str,
}

impl BadTarget {
    const fn bad(reason: &'static str) -> Self {
        BadTarget {
            status: Status::BAD_REQUEST,
            reason,
        }
    }

    const fn too_long(reason: &'static str) -> Self {
        BadTarget {
            status: Status::URI_TOO_LONG,
            reason,
        }
    }
}

pub fn route(target: &str) -> Result<Route, BadTarget> {
    if !target.starts_with('/') {
        return Err(BadTarget::bad("request target must be an absolute path"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    if path == "/healthz" {
        return Ok(Route::Healthz);
    }
    let (ns, path) = match namespace_of(path)? {
        Some((ns, rest)) => (ns, rest),
        None => (DEFAULT_NAMESPACE.to_owned(), path),
    };
    let Some(rest) = path.strip_prefix("/actors/") else {
        return Ok(Route::NotFound);
    };
    let mut segments = rest.split('/');
    let name = segments.next().unwrap_or_default();
    let key: Vec<&str> = segments.collect();
    if name.is_empty() || key.is_empty() || key.iter().any(|s| s.is_empty()) {
        return Ok(Route::NotFound);
    }
    Ok(Route::Actor(ActorPath {
        ns,
        name: actor_name(name)?,
        key: actor_key(&key)?,
        query,
    }))
}

/// A plain (non-upgrade) HTTP request to an actor: the actor, and the
/// path after its prefix as the client sent it (not percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub actor: ActorPath,
    /// Starts with `/`; `/` when the target is the actor's prefix alone.
    pub path: String,
}

/// The segment that ends a compound key in an HTTP target
/// (`/actors/chat/a/b/-/history`: key `[a, b]`, path `/history`). A key
/// segment that is a dash itself is written `%2D` there.
pub const KEY_END: &str = "-";

/// Routes a plain HTTP request. A WebSocket's key is every segment after
/// the name; an HTTP request's is the first one alone, unless a `-`
/// segment ends a compound key, and the rest is the path the actor gets.
pub fn route_http(target: &str) -> Result<Option<HttpTarget>, BadTarget> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Some(at) = path.find("/actors/") else {
        return Ok(None);
    };
    let rest = &path[at + "/actors/".len()..];
    let name_end = rest.find('/').map_or(rest.len(), |i| i + 1);
    let segments = &rest[name_end..];
    let (key_len, after) = match segments.split('/').position(|s| s == KEY_END) {
        Some(n) => {
            let len: usize = segments.split('/').take(n).map(|s| s.len() + 1).sum();
            (len.saturating_sub(1), len + KEY_END.len())
        }
        None => {
            let len = segments.find('/').unwrap_or(segments.len());
            (len, len)
        }
    };
    let prefix = &path[..at + "/actors/".len() + name_end + key_len];
    let target_prefix = match query {
        Some(q) => format!("{prefix}?{q}"),
        None => prefix.to_owned(),
    };
    let Route::Actor(actor) = route(&target_prefix)? else {
        return Ok(None);
    };
    let tail = &path[(at + "/actors/".len() + name_end + after).min(path.len())..];
    let path = if tail.is_empty() { "/" } else { tail };
    Ok(Some(HttpTarget {
        actor,
        path: path.to_owned(),
    }))
}

/// `/ns/{ns}` and what follows it, if the path starts so.
fn namespace_of(path: &str) -> Result<Option<(String, &str)>, BadTarget> {
    let Some(rest) = path.strip_prefix("/ns/") else {
        return Ok(None);
    };
    let (ns, rest) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !is_namespace_name(ns) {
        return Err(BadTarget::bad(
            "namespace names are 1-64 ASCII letters, digits, - and _",
        ));
    }
    Ok(Some((ns.to_owned(), rest)))
}

/// Whether `name` may name an actor (and a runner may offer it).
pub fn is_actor_name(name: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.bytes().all(allowed)
}

/// An actor name as the path gives it (not percent-decoded: no allowed
/// character needs encoding).
fn actor_name(raw: &str) -> Result<String, BadTarget> {
    if raw.len() > MAX_NAME_BYTES {
        return Err(BadTarget::too_long("actor name longer than 64 bytes"));
    }
    if !is_actor_name(raw) {
        let reason = "actor names are ASCII letters, digits, - and _";
        return Err(BadTarget::bad(reason));
    }
    Ok(raw.to_owned())
}

fn actor_key(raw: &[&str]) -> Result<Vec<String>, BadTarget> {
    if raw.len() > MAX_KEY_PARTS {
        return Err(BadTarget::too_long("actor key has more than 16 segments"));
    }
    // Encoded, a segment is at most three times its decoded length.
    if raw.iter().any(|s| s.len() > 3 * MAX_KEY_PART_BYTES) {
        return Err(BadTarget::too_long(
            "actor key segment longer than 256 bytes",
        ));
    }
    let key: Vec<String> = raw
        .iter()
        .map(|s| percent_decode(s))
        .collect::<Result<_, _>>()?;
    if key.iter().any(|s| s.len() > MAX_KEY_PART_BYTES) {
        return Err(BadTarget::too_long(
            "actor key segment longer than 256 bytes",
        ));
    }
    if key.iter().map(String::len).sum::<usize>() > MAX_KEY_BYTES {
        return Err(BadTarget::too_long("actor key longer than 1024 bytes"));
    }
    if key.iter().any(|s| s == "." || s == "..") {
        return Err(BadTarget::bad("actor key segments may not be . or .."));
    }
    if key.iter().any(|s| s.chars().any(char::is_control)) {
        return Err(BadTarget::bad(
            "actor keys may not contain control characters",
        ));
    }
    Ok(key)
}

/// The canonical path of an actor: `[/ns/{ns}]/actors/{name}/{key…}`, each
/// segment percent-encoded so that it decodes back to the same segments.
pub fn actor_path(ns: &str, name: &str, key: &[String]) -> String {
    let mut out = String::new();
    if ns != DEFAULT_NAMESPACE {
        out.push_str("/ns/");
        out.push_str(ns); // namespace names need no encoding
    }
    out.push_str("/actors/");
    percent_encode_into(&mut out, name);
    for segment in key {
        out.push('/');
        percent_encode_into(&mut out, segment);
    }
    out
}

fn percent_encode_into(out: &mut String, segment: &str) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
pub fn percent_decode(segment: &str) -> Result<String, BadTarget> {
    let bytes = segment.as_bytes();
    if !bytes.contains(&b'%') {
        return Ok(segment.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(BadTarget::bad("invalid percent-encoding in path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BadTarget::bad("path segment is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_paths_name_their_namespace_and_plain_ones_the_default() {
        let Route::Actor(a) = route("/ns/acme-1/actors/chat/room").unwrap() else {
            panic!()
        };
        assert_eq!((a.ns.as_str(), a.name.as_str()), ("acme-1", "chat"));
        let Route::Actor(a) = route("/actors/chat/room").unwrap() else {
            panic!()
        };
        assert_eq!(a.ns, "default");
        assert_eq!(route("/ns/acme/other").unwrap(), Route::NotFound);
        assert_eq!(
            route("/ns/a%2Fb/actors/chat/room").unwrap_err().status,
            Status::BAD_REQUEST
        );
        assert_eq!(
            route("/ns//actors/chat/room").unwrap_err().status,
            Status::BAD_REQUEST
        );
        let key = vec!["a b".to_owned()];
        let Route::Actor(a) = route(&actor_path("acme", "chat", &key)).unwrap() else {
            panic!()
        };
        assert_eq!((a.ns.as_str(), a.key.clone()), ("acme", key));
    }

    #[test]
    fn actor_paths_with_compound_keys_and_queries() {
        let Route::Actor(a) = route("/actors/chat/room%2F1/sub%20key?token=x&y=2").unwrap() else {
            panic!()
        };
        assert_eq!(a.name, "chat");
        assert_eq!(a.key, ["room/1", "sub key"]);
        assert_eq!(a.query.as_deref(), Some("token=x&y=2"));
    }

    #[test]
    fn actor_paths_round_trip() {
        let key = vec![
            "room/1".to_string(),
            "sub key".into(),
            "é?#%".into(),
            "...".into(),
        ];
        let Route::Actor(a) = route(&actor_path("default", "chat", &key)).unwrap() else {
            panic!()
        };
        assert_eq!((a.name.as_str(), a.key), ("chat", key));
    }

    #[test]
    fn other_targets() {
        assert_eq!(route("/healthz").unwrap(), Route::Healthz);
        assert_eq!(route("/nope").unwrap(), Route::NotFound);
        assert_eq!(route("/actors/echo").unwrap(), Route::NotFound);
        assert_eq!(route("/actors/echo/").unwrap(), Route::NotFound);
        assert_eq!(route("/actors/echo/a//b").unwrap(), Route::NotFound);
        assert!(route("/actors/echo/%zz").is_err());
        assert!(route("/actors/echo/%ff").is_err());
        assert!(route("http://host/x").is_err());
    }

    fn http(target: &str) -> Option<(Vec<String>, String, Option<String>)> {
        let t = route_http(target).unwrap()?;
        Some((t.actor.key, t.path, t.actor.query))
    }

    #[test]
    fn http_targets_split_the_key_from_the_actor_path() {
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            http("/actors/chat/lobby/history?n=5"),
            Some((k(&["lobby"]), "/history".into(), Some("n=5".into())))
        );
        assert_eq!(
            http("/actors/chat/lobby"),
            Some((k(&["lobby"]), "/".into(), None))
        );
        assert_eq!(
            http("/actors/chat/lobby/"),
            Some((k(&["lobby"]), "/".into(), None))
        );
        assert_eq!(
            http("/actors/chat/a/b/-/x/%20y"),
            Some((k(&["a", "b"]), "/x/%20y".into(), None))
        );
        assert_eq!(
            http("/actors/chat/a/b/-"),
            Some((k(&["a", "b"]), "/".into(), None))
        );
        assert_eq!(
            http("/actors/chat/%2D/-/x"),
            Some((k(&["-"]), "/x".into(), None))
        );
        let t = route_http("/ns/acme/actors/chat/r/events")
            .unwrap()
            .unwrap();
        assert_eq!((t.actor.ns.as_str(), t.path.as_str()), ("acme", "/events"));
        assert_eq!(http("/actors/chat"), None);
        assert_eq!(http("/actors/chat/-/x"), None);
        assert_eq!(http("/nope"), None);
        assert!(route_http("/actors/chat/%zz/x").is_err());
        assert!(route_http("/actors/c.hat/k/x").is_err());
    }

    fn refused(target: &str) -> u16 {
        route(target).expect_err(target).status.0
    }

    #[test]
    fn names_and_keys_have_limits() {
        let part = "k".repeat(MAX_KEY_PART_BYTES);
        assert!(route(&format!("/actors/echo/{part}")).is_ok());
        assert_eq!(refused(&format!("/actors/echo/{part}k")), 414);
        assert_eq!(refused(&format!("/actors/{}/k", "n".repeat(65))), 414);
        let parts = vec!["p"; MAX_KEY_PARTS + 1].join("/");
        assert_eq!(refused(&format!("/actors/echo/{parts}")), 414);
        let total = [&part[..200]; 6].join("/");
        assert_eq!(refused(&format!("/actors/echo/{total}")), 414);
        for bad in [
            "/actors/echo/..",
            "/actors/echo/%2e",
            "/actors/echo/a%00",
            "/actors/echo/%7F",
        ] {
            assert_eq!(refused(bad), 400, "{bad}");
        }
        for bad in ["/actors/e.cho/k", "/actors/e%63ho/k", "/actors/\u{e9}/k"] {
            assert_eq!(refused(bad), 400, "{bad}");
        }
    }
}
