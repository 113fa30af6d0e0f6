//! Signed connect tokens: an application grants a user access to some
//! actors, and the gateway checks the grant locally, calling no one.
//!
//! # Format
//!
//! ```text
//! tt1.<payload>.<signature>
//! payload   = base64url-no-pad(JSON grant)
//! signature = base64url-no-pad(HMAC-SHA256(secret, "tt1." + payload))
//! ```
//!
//! base64url is RFC 4648 §5 without `=` padding; unused trailing bits must be
//! zero. The HMAC covers the ASCII text `tt1.<payload>` exactly as sent.
//! The grant is a JSON object:
//!
//! ```text
//! {"ns":"<namespace>","name":"<actor name>","key":["part",...],"prefix":false,"exp":<unix seconds>}
//! ```
//!
//! - `ns`, `name`: the actor's namespace and name, compared exactly. There
//!   is no wildcard: `"*"` is not an actor name, so it matches nothing.
//! - `key`: the key segments, decoded (as strings, not as a path).
//! - `prefix` (optional, default `false`): `true` grants every key whose
//!   first segments are `key`, segment by segment: `["room"]` grants
//!   `["room"]` and `["room","1"]`, not `["roomy"]`. `[]` with `prefix`
//!   grants every key of the actor name.
//! - `exp`: the token is refused once `exp <= now`. It is checked when a
//!   connection opens; an open connection outlives its token.
//!
//! Other fields are refused, so that a field a later format adds to narrow a
//! grant is never silently ignored; a new format gets a new version prefix.
//! The whole token is at most [`MAX_TOKEN_BYTES`] bytes. [`sign`] and
//! [`sign_for`] make tokens; so can any HMAC-SHA256 and base64url library.
//!
//! # Verifying
//!
//! Length first, then the signature (with `ring::hmac::verify`, constant
//! time), and only then is the payload decoded and parsed, so unsigned bytes
//! never reach the JSON parser. Several secrets may be accepted at once, so
//! that a secret can be rotated: sign with the new one, verify with both,
//! then drop the old. An empty secret verifies nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

pub use super::credential::MAX_TOKEN_BYTES;
use super::response::Status;

/// What every connect token starts with: the format and its version.
pub const TOKEN_PREFIX: &str = "tt1.";

/// An HMAC-SHA256 tag is 32 bytes, 43 characters of unpadded base64.
const SIGNATURE_CHARS: usize = 43;

/// Which actors a token lets its holder connect to, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectGrant {
    pub ns: String,
    pub name: String,
    pub key: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefix: bool,
    /// Unix seconds; the token is refused from this second on.
    pub exp: u64,
}

impl ConnectGrant {
    /// Whether the grant covers the actor `name` with `key` in `ns`.
    pub fn allows(&self, ns: &str, name: &str, key: &[String]) -> bool {
        let key_ok = if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key.as_slice()
        };
        self.ns == ns && self.name == name && key_ok
    }
}

/// Why a connect token was refused. Every variant is a 401; none holds any
/// of the token's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`]; nothing was decoded.
    TooLong,
    /// Not `tt1.<payload>.<signature>`, or a signed payload that is not a grant.
    Malformed,
    /// Signed with none of the secrets, or altered.
    BadSignature,
    Expired,
}

impl TokenError {
    pub fn status(self) -> u16 {
        Status::UNAUTHORIZED.0
    }

    pub fn reason(self) -> &'static str {
        match self {
            TokenError::TooLong => "too_long",
            TokenError::Malformed => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
        }
    }
}

/// A token for `grant`. Keep grants within the route limits (a key of at most
/// 1,024 bytes): a token longer than [`MAX_TOKEN_BYTES`] is never accepted.
pub fn sign(secret: &[u8], grant: &ConnectGrant) -> String {
    let json = serde_json::to_vec(grant).expect("a grant is strings, a bool and a number");
    let mut token = String::from(TOKEN_PREFIX);
    URL_SAFE_NO_PAD.encode_string(json, &mut token);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    token
}

/// A token granting `key` of actor `name` in `ns` for `ttl_secs` from
/// `now_unix`: what a command-line signer needs.
pub fn sign_for(
    secret: &[u8],
    ns: &str,
    name: &str,
    key: &[String],
    prefix: bool,
    ttl_secs: u64,
    now_unix: u64,
) -> String {
    let grant = ConnectGrant {
        ns: ns.to_owned(),
        name: name.to_owned(),
        key: key.to_vec(),
        prefix,
        exp: now_unix.saturating_add(ttl_secs),
    };
    sign(secret, &grant)
}

/// The grant in `token` if one of `secrets` signed it and it has not expired
/// at `now_unix`. See the module doc for the order of the checks.
pub fn verify(token: &str, secrets: &[&[u8]], now_unix: u64) -> Result<ConnectGrant, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let (signed, signature) = split(token)?;
    if !secrets
        .iter()
        .filter(|s| !s.is_empty())
        .any(|s| hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, s), signed, &signature).is_ok())
    {
        return Err(TokenError::BadSignature);
    }
    let payload = &signed[TOKEN_PREFIX.len()..];
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let grant: ConnectGrant = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if grant.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    Ok(grant)
}

/// The signed text (`tt1.<payload>`) and the decoded signature.
fn split(token: &str) -> Result<(&[u8], Vec<u8>), TokenError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(TokenError::Malformed)?;
    let (payload, signature) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.is_empty() || signature.len() != SIGNATURE_CHARS {
        return Err(TokenError::Malformed);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let signed = &token.as_bytes()[..TOKEN_PREFIX.len() + payload.len()];
    Ok((signed, signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn key(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    fn grant(parts: &[&str], prefix: bool) -> ConnectGrant {
        ConnectGrant {
            ns: "app".into(),
            name: "chat".into(),
            key: key(parts),
            prefix,
            exp: NOW + 60,
        }
    }

    #[test]
    fn round_trip() {
        let g = grant(&["room/1", "é \"quoted\""], false);
        let token = sign(SECRET, &g);
        assert!(token.starts_with("tt1."));
        assert_eq!(verify(&token, &[SECRET], NOW), Ok(g.clone()));
        let for_cli = sign_for(SECRET, "app", "chat", &g.key, false, 60, NOW);
        assert_eq!(for_cli, token);
    }

    #[test]
    fn the_format_is_as_documented() {
        let token = sign(SECRET, &grant(&["r"], false));
        let parts: Vec<&str> = token.split('.').collect();
        let json = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        let expected = format!(
            r#"{{"ns":"app","name":"chat","key":["r"],"exp":{}}}"#,
            NOW + 60
        );
        assert_eq!(String::from_utf8(json).unwrap(), expected);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, SECRET),
            format!("tt1.{}", parts[1]).as_bytes(),
        );
        assert_eq!(parts[2], URL_SAFE_NO_PAD.encode(tag));

        // Hand-made, with `prefix` given.
        let payload = URL_SAFE_NO_PAD
            .encode(r#"{"ns":"app","name":"chat","key":[],"prefix":true,"exp":1700000060}"#);
        let signed = format!("tt1.{payload}");
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, SECRET),
            signed.as_bytes(),
        );
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag));
        assert_eq!(verify(&token, &[SECRET], NOW), Ok(grant(&[], true)));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let token = sign(SECRET, &grant(&["room", "1"], true));
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for b in (0u8..=127).filter(|&b| b != bytes[i]) {
                let mut changed = bytes.to_vec();
                changed[i] = b;
                let changed = String::from_utf8(changed).unwrap();
                assert!(verify(&changed, &[SECRET], NOW).is_err(), "byte {i} -> {b}");
            }
            let removed = [&token[..i], &token[i + 1..]].concat();
            assert!(
                verify(&removed, &[SECRET], NOW).is_err(),
                "byte {i} removed"
            );
        }
    }

    #[test]
    fn expired_wrong_secret_and_rotation() {
        let token = sign(SECRET, &grant(&["r"], false));
        assert_eq!(
            verify(&token, &[SECRET], NOW + 60),
            Err(TokenError::Expired)
        );
        assert!(verify(&token, &[SECRET], NOW + 59).is_ok());
        let other: &[u8] = b"another secret";
        assert_eq!(verify(&token, &[other], NOW), Err(TokenError::BadSignature));
        assert_eq!(verify(&token, &[], NOW), Err(TokenError::BadSignature));
        assert!(verify(&token, &[other, SECRET], NOW).is_ok());
        assert!(verify(&sign(other, &grant(&["r"], false)), &[other, SECRET], NOW).is_ok());
        let unsigned = sign(b"", &grant(&["r"], false));
        assert_eq!(
            verify(&unsigned, &[b""], NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn malformed_and_oversize() {
        for bad in ["", "tt1.", "tt1..", "tt2.e30.x", "tt1.e30", "tt1.e30.short"] {
            assert_eq!(
                verify(bad, &[SECRET], NOW),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        // Signed but not a grant: refused after the signature, as malformed.
        let sign_payload = |json: &str| {
            let signed = format!("tt1.{}", URL_SAFE_NO_PAD.encode(json));
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, SECRET),
                signed.as_bytes(),
            );
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
        };
        for json in [
            "{}",
            "not json",
            r#"{"ns":"a","name":"b","key":[],"exp":9999999999,"aud":"x"}"#,
            r#"{"ns":"a","name":"b","key":[],"exp":9999999999,"exp":1}"#,
        ] {
            let err = verify(&sign_payload(json), &[SECRET], NOW).unwrap_err();
            assert_eq!((err, err.reason()), (TokenError::Malformed, "malformed"));
        }
        // Too long: refused by length alone, whatever it holds.
        let long = format!("tt1.{}", "A".repeat(MAX_TOKEN_BYTES));
        let err = verify(&long, &[SECRET], NOW).unwrap_err();
        assert_eq!((err, err.status()), (TokenError::TooLong, 401));
        let limit = format!("tt1.{}", "A".repeat(MAX_TOKEN_BYTES - 4));
        assert_eq!(verify(&limit, &[SECRET], NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn prefix_grants_are_segment_wise() {
        let room = grant(&["room"], true);
        assert!(room.allows("app", "chat", &key(&["room"])));
        assert!(room.allows("app", "chat", &key(&["room", "1"])));
        assert!(!room.allows("app", "chat", &key(&["roomy"])));
        assert!(!room.allows("app", "chat", &key(&["other", "room"])));
        assert!(grant(&[], true).allows("app", "chat", &key(&["any", "key"])));

        let exact = grant(&["room"], false);
        assert!(exact.allows("app", "chat", &key(&["room"])));
        assert!(!exact.allows("app", "chat", &key(&["room", "1"])));
    }

    #[test]
    fn allows_checks_namespace_and_name() {
        let g = grant(&["room"], true);
        assert!(!g.allows("other", "chat", &key(&["room"])));
        assert!(!g.allows("app", "echo", &key(&["room"])));
        let star = ConnectGrant {
            name: "*".into(),
            ..g
        };
        assert!(!star.allows("app", "chat", &key(&["room"])));
    }

    proptest! {
        #[test]
        fn never_panics(token in "(tt1\\.)?[A-Za-z0-9_.=-]{0,120}") {
            let _ = verify(&token, &[SECRET], NOW);
        }

        #[test]
        fn any_grant_round_trips(
            ns in "[a-z]{0,8}",
            name in "[a-z_-]{1,8}",
            parts in proptest::collection::vec(any::<String>(), 0..4),
            prefix in any::<bool>(),
            ttl in 1u64..1_000_000,
        ) {
            let token = sign_for(SECRET, &ns, &name, &parts, prefix, ttl, NOW);
            let g = verify(&token, &[SECRET], NOW).unwrap();
            prop_assert!(g.allows(&ns, &name, &parts));
        }
    }
}
