//! Finding the client's credential in a request head, without IO.
//!
//! Browsers cannot set headers on a WebSocket, so a client token may arrive
//! three ways, looked at in this order:
//! 1. `Authorization: Bearer <token>` (other auth schemes are ignored: they
//!    may belong to a proxy in front of the gateway);
//! 2. the `token` query parameter of the target, percent-decoded (`+` stays
//!    `+`: a token has no spaces, so it can only be a literal plus);
//! 3. a `Sec-WebSocket-Protocol` entry `tether-token.<token>`. A subprotocol
//!    must be an HTTP token (RFC 6455 §4.1, RFC 9110 §5.6.2), so a token sent
//!    this way must consist of tchar: ASCII letters, digits and
//!    ``!#$%&'*+-.^_`|~``. Base64url and `.` (signed connect tokens) are
//!    tchar; standard base64's `/` and `=` are not. Chrome fails a handshake
//!    whose client offered subprotocols and whose response selects none, so
//!    when the runner selects none the gateway selects the token entry
//!    itself (it goes back to the client that sent it, never to the runner).
//!
//! A token must be present once only. Two tokens, in one place or in two, are
//! refused even when equal: a gateway that picked one while something behind
//! it read the other would authorize one credential and act on another.
//!
//! After checking the credential, the gateway removes it with
//! [`strip_token_protocol`] and [`strip_token_query`] so that neither the
//! runner nor a log line ever sees it. [`ClientCredential`]'s `Debug` does not
//! print the token either.

use std::borrow::Cow;
use std::fmt;

use super::request::RequestHead;
use super::response::Status;
use super::route::percent_decode;

/// Longest client token, in bytes (once percent-decoded). Signed connect
/// tokens share the limit, so whatever passes here can be verified.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The `Sec-WebSocket-Protocol` entry prefix that carries a token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "tether-token.";

/// The query parameter that carries a token.
pub const TOKEN_QUERY_PARAM: &str = "token";

/// Where a client token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Bearer,
    Query,
    Protocol,
}

/// A client token and where it was found. Compare it with [`Self::matches`],
/// which takes constant time; `Debug` redacts it.
#[derive(Clone)]
pub struct ClientCredential {
    token: String,
    source: TokenSource,
}

impl ClientCredential {
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn source(&self) -> TokenSource {
        self.source
    }

    /// Whether the token is exactly `expected`, in constant time (see [`ct_eq`]).
    pub fn matches(&self, expected: &[u8]) -> bool {
        ct_eq(self.token.as_bytes(), expected)
    }
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredential")
            .field("token", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Why a credential could not be read. Statuses follow RFC 6750 §3.1: a
/// request that carries a token badly is `invalid_request` (400), a token
/// that cannot be valid is `invalid_token` (401). No variant holds token text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong,
    /// Empty, badly percent-encoded, or with characters a token cannot have.
    Malformed,
    /// More than one token, in one place or in several.
    Ambiguous,
}

impl CredentialError {
    pub fn status(self) -> u16 {
        match self {
            CredentialError::TooLong => Status::UNAUTHORIZED.0,
            CredentialError::Malformed | CredentialError::Ambiguous => Status::BAD_REQUEST.0,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CredentialError::TooLong => "client token too long",
            CredentialError::Malformed => "malformed client token",
            CredentialError::Ambiguous => "more than one client token",
        }
    }
}

/// The client's token, if it sent one. See the module doc for where it may be.
pub fn client_token(head: &RequestHead) -> Result<Option<ClientCredential>, CredentialError> {
    let found = [
        bearer_token(head)?.map(|t| (t, TokenSource::Bearer)),
        query_token(&head.target)?.map(|t| (t, TokenSource::Query)),
        protocol_token(head)?.map(|t| (t, TokenSource::Protocol)),
    ];
    let mut present = found.into_iter().flatten();
    let first = present.next();
    if present.next().is_some() {
        return Err(CredentialError::Ambiguous);
    }
    Ok(first.map(|(token, source)| ClientCredential { token, source }))
}

/// Removes every `tether-token.*` entry from `Sec-WebSocket-Protocol`, and
/// the header itself where nothing else remains, so that the runner (which
/// sees the client's subprotocols) never sees the token. Headers without a
/// token entry are left byte for byte.
pub fn strip_token_protocol(head: &mut RequestHead) {
    head.headers.retain_mut(|(name, value)| {
        if !name.eq_ignore_ascii_case("sec-websocket-protocol")
            || !list_entries(value).any(is_token_entry)
        {
            return true;
        }
        let kept: Vec<&[u8]> = list_entries(value).filter(|e| !is_token_entry(e)).collect();
        let kept = kept.join(&b", "[..]);
        *value = kept;
        !value.is_empty()
    });
}

/// The target without its `token` query parameters (and without the `?` if
/// nothing else remains), so the token is neither forwarded nor logged.
/// Parameters are matched by percent-decoded name, as [`client_token`] does.
pub fn strip_token_query(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    if !query.split('&').any(is_token_param) {
        return Cow::Borrowed(target);
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_token_param(p)).collect();
    if kept.is_empty() {
        Cow::Owned(path.to_owned())
    } else {
        Cow::Owned(format!("{path}?{}", kept.join("&")))
    }
}

/// Whether `a` and `b` are equal, taking a time that depends on their
/// lengths but not on their contents: the length of a secret may leak, its
/// bytes do not. Tokens with a public format (signed connect tokens) give
/// nothing away by their length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimizer from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

fn bearer_token(head: &RequestHead) -> Result<Option<String>, CredentialError> {
    let mut bearers = head
        .header_values("authorization")
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "));
    let Some(value) = bearers.next() else {
        return Ok(None);
    };
    if bearers.next().is_some() {
        return Err(CredentialError::Ambiguous);
    }
    let token = value[7..].trim_ascii();
    checked(token, |b| b.is_ascii_graphic()).map(Some)
}

fn query_token(target: &str) -> Result<Option<String>, CredentialError> {
    let Some((_, query)) = target.split_once('?') else {
        return Ok(None);
    };
    let mut params = query.split('&').filter(|p| is_token_param(p));
    let Some(param) = params.next() else {
        return Ok(None);
    };
    if params.next().is_some() {
        return Err(CredentialError::Ambiguous);
    }
    let raw = param.split_once('=').map_or("", |(_, v)| v);
    // Encoded, a byte is at most three characters: refuse before decoding.
    if raw.len() > 3 * MAX_TOKEN_BYTES {
        return Err(CredentialError::TooLong);
    }
    let token = percent_decode(raw).map_err(|_| CredentialError::Malformed)?;
    checked(token.as_bytes(), |b| b.is_ascii_graphic()).map(Some)
}

fn protocol_token(head: &RequestHead) -> Result<Option<String>, CredentialError> {
    let mut entries = head
        .header_values("sec-websocket-protocol")
        .flat_map(list_entries)
        .filter(|e| is_token_entry(e));
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    if entries.next().is_some() {
        return Err(CredentialError::Ambiguous);
    }
    checked(&entry[TOKEN_PROTOCOL_PREFIX.len()..], is_tchar).map(Some)
}

/// A token as text, once its length and characters are acceptable.
fn checked(token: &[u8], allowed: fn(&u8) -> bool) -> Result<String, CredentialError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(CredentialError::TooLong);
    }
    if token.is_empty() || !token.iter().all(allowed) {
        return Err(CredentialError::Malformed);
    }
    // All allowed characters are ASCII.
    String::from_utf8(token.to_vec()).map_err(|_| CredentialError::Malformed)
}

/// The entries of a comma-separated header value, trimmed, empty ones
/// skipped. Works on bytes, so a value that is not UTF-8 is still stripped.
fn list_entries(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// Subprotocol names are case-sensitive (RFC 6455 §4.1), so the prefix is too.
fn is_token_entry(entry: &[u8]) -> bool {
    entry.starts_with(TOKEN_PROTOCOL_PREFIX.as_bytes())
}

/// A `name[=value]` query parameter whose decoded name is `token`.
fn is_token_param(param: &str) -> bool {
    let name = param.split_once('=').map_or(param, |(n, _)| n);
    percent_decode(name).is_ok_and(|n| n == TOKEN_QUERY_PARAM)
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(target: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            target: target.into(),
            version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn found(h: &RequestHead) -> (String, TokenSource) {
        let c = client_token(h).unwrap().expect("a token");
        (c.token().to_owned(), c.source())
    }

    #[test]
    fn each_source() {
        let bearer = head("/actors/a/k", &[("Authorization", "bearer  abc.DEF ")]);
        assert_eq!(found(&bearer), ("abc.DEF".into(), TokenSource::Bearer));
        let query = head("/actors/a/k?x=1&token=abc.DEF&y", &[]);
        assert_eq!(found(&query), ("abc.DEF".into(), TokenSource::Query));
        let protocol = head(
            "/actors/a/k",
            &[("Sec-WebSocket-Protocol", "chat, tether-token.abc.DEF")],
        );
        assert_eq!(found(&protocol), ("abc.DEF".into(), TokenSource::Protocol));
        assert!(client_token(&head("/actors/a/k?tokens=1", &[]))
            .unwrap()
            .is_none());
        let basic = head("/actors/a/k", &[("Authorization", "Basic dXNlcg==")]);
        assert!(client_token(&basic).unwrap().is_none());
    }

    #[test]
    fn query_tokens_are_percent_decoded() {
        let h = head("/actors/a/k?%74oken=a%2Bb%2Fc%3D+", &[]);
        assert_eq!(found(&h), ("a+b/c=+".into(), TokenSource::Query));
        for bad in [
            "?token=a%zz",
            "?token=a%20b",
            "?token=",
            "?token",
            "?token=%ff",
        ] {
            let h = head(&format!("/actors/a/k{bad}"), &[]);
            assert_eq!(
                client_token(&h).unwrap_err(),
                CredentialError::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn two_tokens_are_refused() {
        let both = [
            head("/a?token=x", &[("Authorization", "Bearer x")]),
            head("/a?token=x&token=x", &[]),
            head(
                "/a?token=x",
                &[("Sec-WebSocket-Protocol", "tether-token.x")],
            ),
            head(
                "/a",
                &[("Authorization", "Bearer x"), ("authorization", "Bearer y")],
            ),
            head(
                "/a",
                &[
                    ("Sec-WebSocket-Protocol", "tether-token.x"),
                    ("Sec-WebSocket-Protocol", "chat, tether-token.y"),
                ],
            ),
        ];
        for h in both {
            let err = client_token(&h).unwrap_err();
            assert_eq!((err, err.status()), (CredentialError::Ambiguous, 400));
        }
    }

    #[test]
    fn limits_and_characters() {
        let max = "t".repeat(MAX_TOKEN_BYTES);
        let ok = head("/a", &[("Authorization", &format!("Bearer {max}"))]);
        assert_eq!(found(&ok).0.len(), MAX_TOKEN_BYTES);
        let over = [
            head("/a", &[("Authorization", &format!("Bearer {max}t"))]),
            head(&format!("/a?token={max}t"), &[]),
            head(
                &format!("/a?token={}", "%41".repeat(MAX_TOKEN_BYTES + 1)),
                &[],
            ),
            head(
                "/a",
                &[("Sec-WebSocket-Protocol", &format!("tether-token.{max}t"))],
            ),
        ];
        for h in over {
            let err = client_token(&h).unwrap_err();
            assert_eq!((err, err.status()), (CredentialError::TooLong, 401));
        }
        let not_tchar = head("/a", &[("Sec-WebSocket-Protocol", "tether-token.a/b=")]);
        assert_eq!(
            client_token(&not_tchar).unwrap_err(),
            CredentialError::Malformed
        );
        let empty = head("/a", &[("Sec-WebSocket-Protocol", "tether-token.")]);
        assert_eq!(
            client_token(&empty).unwrap_err(),
            CredentialError::Malformed
        );
    }

    #[test]
    fn stripping_the_protocol_leaves_the_others() {
        let mut h = head(
            "/a",
            &[
                ("Sec-WebSocket-Protocol", "chat,  tether-token.x, v2.chat"),
                ("Host", "h"),
                ("sec-websocket-protocol", "tether-token.y"),
                ("Sec-WebSocket-Protocol", "Tether-Token.kept ,other"),
            ],
        );
        strip_token_protocol(&mut h);
        assert_eq!(
            h.headers,
            [
                (
                    "Sec-WebSocket-Protocol".to_string(),
                    b"chat, v2.chat".to_vec()
                ),
                ("Host".into(), b"h".to_vec()),
                (
                    "Sec-WebSocket-Protocol".into(),
                    b"Tether-Token.kept ,other".to_vec()
                ),
            ]
        );
        let mut only = head("/a", &[("Sec-WebSocket-Protocol", "tether-token.x")]);
        strip_token_protocol(&mut only);
        assert!(only.headers.is_empty());
    }

    #[test]
    fn stripping_the_query() {
        let cases = [
            ("/a/k", "/a/k"),
            ("/a/k?x=1", "/a/k?x=1"),
            ("/a/k?token=t", "/a/k"),
            ("/a/k?token", "/a/k"),
            ("/a/k?x=1&token=t&%74oken=u&y", "/a/k?x=1&y"),
            ("/a/k?tokens=1&token=t", "/a/k?tokens=1"),
        ];
        for (target, stripped) in cases {
            assert_eq!(strip_token_query(target), stripped, "{target}");
        }
        assert!(matches!(strip_token_query("/a?x=1"), Cow::Borrowed(_)));
    }

    #[test]
    fn debug_redacts() {
        let c = client_token(&head("/a?token=s3cret", &[]))
            .unwrap()
            .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(c.matches(b"s3cret") && !c.matches(b"s3cre") && !c.matches(b"s3creT"));
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    proptest! {
        /// Whatever the query, stripping leaves no token behind for the
        /// extractor to find.
        #[test]
        fn stripped_targets_have_no_token(
            params in proptest::collection::vec(
                prop_oneof!["token(=[a-z%+]{0,3})?", "%74oken=x", "t%6Fken", "[a-z%0-9=+]{0,6}"],
                0..6,
            )
        ) {
            let target = format!("/a/k?{}", params.join("&"));
            let stripped = strip_token_query(&target);
            prop_assert!(matches!(query_token(&stripped), Ok(None)));
        }
    }
}
