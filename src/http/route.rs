//! Which resource a request target names, with percent-decoding of path segments.

/// Where a client request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Actor(ActorPath),
    NotFound,
}

/// `/actors/{name}/{key…}?{query}`: the key may span several segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorPath {
    pub name: String,
    pub key: Vec<String>,
    pub query: Option<String>,
}

/// A target that cannot be routed at all (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTarget(pub &'static str);

pub fn route(target: &str) -> Result<Route, BadTarget> {
    if !target.starts_with('/') {
        return Err(BadTarget("request target must be an absolute path"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    if path == "/healthz" {
        return Ok(Route::Healthz);
    }
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
        name: percent_decode(name)?,
        key: key
            .into_iter()
            .map(percent_decode)
            .collect::<Result<_, _>>()?,
        query,
    }))
}

/// The canonical path of an actor: `/actors/{name}/{key…}`, each segment
/// percent-encoded so that it decodes back to the same segments.
pub fn actor_path(name: &str, key: &[String]) -> String {
    let mut out = String::from("/actors/");
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
                .ok_or(BadTarget("invalid percent-encoding in path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BadTarget("path segment is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let key = vec!["room/1".to_string(), "sub key".into(), "é?#%".into()];
        let Route::Actor(a) = route(&actor_path("chat", &key)).unwrap() else {
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
}
