//! The server side of the WebSocket opening handshake (RFC 6455 §4.2).

use crate::http::{RequestHead, Status};

/// An acceptable upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub accept_key: String,
    /// Offered subprotocols in the client's order of preference.
    pub protocols: Vec<String>,
}

/// An unacceptable one: the HTTP status and a short reason for the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: Status,
    pub reason: &'static str,
}

impl Rejection {
    const fn bad(reason: &'static str) -> Self {
        Self {
            status: Status::BAD_REQUEST,
            reason,
        }
    }

    /// Headers the rejection must carry (426 names the version we speak).
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        if self.status == Status::UPGRADE_REQUIRED {
            &[("Sec-WebSocket-Version", "13")]
        } else {
            &[]
        }
    }
}

/// Checks a GET request on a WebSocket path. Extensions (permessage-deflate)
/// are declined by not echoing them, which RFC 6455 §9.1 allows.
pub fn validate_upgrade(head: &RequestHead) -> Result<Upgrade, Rejection> {
    if head.version < 1 {
        return Err(Rejection::bad("WebSocket upgrade requires HTTP/1.1"));
    }
    if head.header("host").is_none() {
        return Err(Rejection::bad("missing Host header"));
    }
    if !head
        .header_tokens("upgrade")
        .any(|t| t.eq_ignore_ascii_case("websocket"))
    {
        return Err(Rejection::bad(
            "missing or invalid Upgrade: websocket header",
        ));
    }
    if !head
        .header_tokens("connection")
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
    {
        return Err(Rejection::bad(
            "missing or invalid Connection: Upgrade header",
        ));
    }
    match head.header("sec-websocket-version") {
        Some(v) if v.trim_ascii() == b"13" => {}
        None => return Err(Rejection::bad("missing Sec-WebSocket-Version header")),
        Some(_) => {
            return Err(Rejection {
                status: Status::UPGRADE_REQUIRED,
                reason: "unsupported WebSocket version; this server speaks 13",
            })
        }
    }
    let key = head
        .header("sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .filter(|k| is_valid_key(k))
        .ok_or(Rejection::bad(
            "missing or invalid Sec-WebSocket-Key header",
        ))?;
    if head.header_tokens("sec-websocket-protocol").count() > MAX_PROTOCOLS {
        return Err(Rejection::bad("more than 64 subprotocols offered"));
    }
    Ok(Upgrade {
        accept_key: tungstenite::handshake::derive_accept_key(key),
        protocols: head
            .header_tokens("sec-websocket-protocol")
            .map(str::to_owned)
            .collect(),
    })
}

/// Whether a request tries to be a WebSocket upgrade at all (an `Upgrade`
/// or `Sec-WebSocket-Key` header, or `Connection: upgrade`): such a request
/// is checked as one (and refused with its reason), any other to an
/// actor's path is a plain HTTP request for the actor.
pub fn is_upgrade_attempt(head: &RequestHead) -> bool {
    head.header("upgrade").is_some()
        || head.header("sec-websocket-key").is_some()
        || head
            .header_tokens("connection")
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Most subprotocols a client may offer (the tunnel protocol's limit).
pub const MAX_PROTOCOLS: usize = 64;

/// A key is the base64 encoding of 16 bytes: 22 symbols and "==".
fn is_valid_key(key: &[u8]) -> bool {
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24 && key[..22].iter().all(b64) && &key[22..] == b"=="
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HeadReader;

    fn head(extra: &str) -> RequestHead {
        let text = format!("GET /actors/echo/x HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        HeadReader::new(8192, 32)
            .poll(text.as_bytes())
            .unwrap()
            .unwrap()
            .0
    }

    const GOOD: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn accepts_the_rfc_example() {
        let up = validate_upgrade(&head(&format!(
            "{GOOD}Sec-WebSocket-Protocol: chat, superchat\r\n"
        )))
        .unwrap();
        assert_eq!(up.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.protocols, ["chat", "superchat"]);
    }

    #[test]
    fn rejects_each_missing_piece() {
        for drop in [
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Key",
        ] {
            let extra: String = GOOD
                .split("\r\n")
                .filter(|l| !l.is_empty() && !l.starts_with(drop))
                .map(|l| format!("{l}\r\n"))
                .collect();
            assert_eq!(
                validate_upgrade(&head(&extra)).unwrap_err().status,
                Status::BAD_REQUEST,
                "{drop}"
            );
        }
        let bad_version = GOOD.replace("Version: 13", "Version: 8");
        let r = validate_upgrade(&head(&bad_version)).unwrap_err();
        assert_eq!(r.status, Status::UPGRADE_REQUIRED);
        assert_eq!(r.headers(), &[("Sec-WebSocket-Version", "13")]);
        let bad_key = GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(
            validate_upgrade(&head(&bad_key)).unwrap_err().status,
            Status::BAD_REQUEST
        );
    }
}
