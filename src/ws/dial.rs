//! The client side of the WebSocket opening handshake (RFC 6455 §4.1), for
//! the gateway's own outgoing links (node to node, issue 16), without IO:
//! the request's bytes, and the answer checked once its head is complete.

use crate::http::response_head::ResponseHead;

/// The request for `path` at `host` with `headers` (names and values the
/// caller chose: tokens, no CR/LF); `key` is 16 random bytes.
pub fn encode_request(host: &str, path: &str, key: &[u8; 16], headers: &[(&str, &str)]) -> Vec<u8> {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n").as_bytes());
    out.extend_from_slice(b"upgrade: websocket\r\nconnection: Upgrade\r\n");
    out.extend_from_slice(format!("sec-websocket-key: {key}\r\n").as_bytes());
    out.extend_from_slice(b"sec-websocket-version: 13\r\n");
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether `head` accepts the upgrade asked with `key`; else why not.
pub fn check_answer(head: &ResponseHead, key: &[u8; 16]) -> Result<(), String> {
    use base64::Engine as _;
    if head.status != 101 {
        return Err(format!("answered {} instead of 101", head.status));
    }
    let has_token = |name: &str, token: &str| {
        head.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err("101 without Upgrade: websocket and Connection: Upgrade".into());
    }
    let sent = base64::engine::general_purpose::STANDARD.encode(key);
    let expected = tungstenite::handshake::derive_accept_key(sent.as_bytes());
    match head.header("sec-websocket-accept").map(<[u8]>::trim_ascii) {
        Some(v) if v == expected.as_bytes() => Ok(()),
        _ => Err("wrong or missing Sec-WebSocket-Accept".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response_head::ResponseHeadReader;
    use crate::http::HeadReader;
    use crate::ws::handshake::validate_upgrade;

    fn response(text: &str) -> ResponseHead {
        let mut reader = ResponseHeadReader::new(4096, 32);
        reader.poll(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn the_gateways_own_server_side_accepts_the_request_and_its_answer_checks() {
        let key = [7u8; 16];
        let bytes = encode_request(
            "n1:7001",
            "/cluster/connect?tunnel=1",
            &key,
            &[("authorization", "Bearer t")],
        );
        let mut reader = HeadReader::new(4096, 32);
        let (head, _) = reader.poll(&bytes).unwrap().unwrap();
        assert!(head.bearer_is("t"));
        let up = validate_upgrade(&head).expect("a valid upgrade");
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            up.accept_key
        );
        assert_eq!(check_answer(&response(&answer), &key), Ok(()));
        let other = check_answer(&response(&answer), &[8u8; 16]);
        assert!(other.unwrap_err().contains("Accept"));
        let refused = check_answer(&response("HTTP/1.1 401 Unauthorized\r\n\r\n"), &key);
        assert_eq!(refused.unwrap_err(), "answered 401 instead of 101");
    }
}
