//! Headers of a request forwarded to an actor and of the actor's response,
//! without IO (PROTOCOL §7b): which fields pass (end-to-end ones) and which
//! stay with the connection they came on (hop-by-hop ones), within the
//! tunnel's bounds; and the head the gateway writes for the response.

use bytes::{BufMut, Bytes, BytesMut};

use super::request::RequestHead;
use super::response::Status;

/// Most header fields a forwarded head carries (the tunnel's `limits::HEADERS`).
pub const MAX_FIELDS: usize = 128;
/// Names and values together (the tunnel's `limits::HTTP_HEADER_BYTES`).
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Fields a client may not set for the actor: the gateway says who the
/// client is (`peer`), and answers `Expect` itself.
const CLIENT_ONLY: &[&str] = &["x-forwarded-for", "x-real-ip", "forwarded", "expect"];

/// Why a request's headers cannot be forwarded (431: over the tunnel's
/// bounds; 400: a value the tunnel may not carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRefusal {
    pub status: Status,
    pub reason: &'static str,
}

/// Whether `name` (any case) stays on its connection, given the tokens of
/// that message's `Connection` header.
fn is_hop_by_hop<'a>(name: &str, connection: impl Iterator<Item = &'a str>) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name
            .as_bytes()
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"proxy-"))
        || connection.into_iter().any(|t| t.eq_ignore_ascii_case(name))
}

/// The end-to-end fields of a client's request, names lower-cased, in order.
/// `drop_authorization`: the header carried the gateway's own token.
pub fn request_headers(
    head: &RequestHead,
    drop_authorization: bool,
) -> Result<Vec<(String, Bytes)>, HeaderRefusal> {
    let mut out = Vec::with_capacity(head.headers.len().min(MAX_FIELDS));
    let mut bytes = 0usize;
    for (name, value) in &head.headers {
        if is_hop_by_hop(name, head.header_tokens("connection"))
            || CLIENT_ONLY.iter().any(|c| name.eq_ignore_ascii_case(c))
            || drop_authorization && name.eq_ignore_ascii_case("authorization")
        {
            continue;
        }
        if value.contains(&0) {
            let reason = "a header value holds NUL";
            return Err(HeaderRefusal {
                status: Status::BAD_REQUEST,
                reason,
            });
        }
        bytes += name.len() + value.len();
        if out.len() == MAX_FIELDS || bytes > MAX_FIELD_BYTES {
            let reason = "request headers over what an actor may receive";
            return Err(HeaderRefusal {
                status: Status::HEADER_FIELDS_TOO_LARGE,
                reason,
            });
        }
        out.push((name.to_ascii_lowercase(), Bytes::copy_from_slice(value)));
    }
    Ok(out)
}

/// Whether a request asks for `100 Continue` before it sends its body.
/// An HTTP/1.0 request's Expect is ignored (RFC 9110 §10.1.1).
pub fn expects_continue(head: &RequestHead) -> bool {
    head.version >= 1
        && head
            .header("expect")
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
}

/// Whether the client's connection may serve another request after this one.
pub fn keeps_alive(head: &RequestHead) -> bool {
    // An HTTP/1.0 client gets close-delimited responses: one request each.
    let close = head
        .header_tokens("connection")
        .any(|c| c.eq_ignore_ascii_case("close"));
    head.version >= 1 && !close
}

/// RFC 9110 §9.2.2: methods whose repetition has the effect of one.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}

/// The actor's response head as it stands: its end-to-end fields, and the
/// length it declared (`None`: no `content-length`).
pub struct ActorHead<'a> {
    pub fields: Vec<&'a (String, Bytes)>,
    pub length: Option<u64>,
}

/// Sorts an actor's response fields; an unreadable or ambiguous
/// `content-length` is an error (the client gets 502).
pub fn actor_head(headers: &[(String, Bytes)]) -> Result<ActorHead<'_>, &'static str> {
    let connection: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut length = None;
    let mut fields = Vec::with_capacity(headers.len());
    for field in headers {
        let name = field.0.as_str();
        if name == "content-length" {
            let n = std::str::from_utf8(&field.1)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("the actor's content-length is not a number")?;
            if length.is_some_and(|l| l != n) {
                return Err("the actor sent two different content-lengths");
            }
            length = Some(n);
        } else if !is_hop_by_hop(name, connection.iter().copied()) {
            fields.push(field);
        }
    }
    Ok(ActorHead { fields, length })
}

/// How the gateway frames a response body to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireBody {
    /// No body on the wire (HEAD, 1xx, 204, 304), with this length
    /// announced if the actor gave one.
    None(Option<u64>),
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client).
    UntilClose,
}

impl WireBody {
    /// `body`: the actor sends body frames; `length`: its `content-length`.
    pub fn choose(
        status: u16,
        head_request: bool,
        version: u8,
        body: bool,
        length: Option<u64>,
    ) -> Self {
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return WireBody::None(length.filter(|_| head_request || status == 304));
        }
        match (body, length) {
            (false, _) => WireBody::Length(0),
            (true, Some(n)) => WireBody::Length(n),
            (true, None) if version == 0 => WireBody::UntilClose,
            (true, None) => WireBody::Chunked,
        }
    }
}

/// Appends the response head the client gets.
pub fn write_head(
    out: &mut BytesMut,
    status: u16,
    fields: &[&(String, Bytes)],
    wire: WireBody,
    keep_alive: bool,
) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(Status(status).reason_phrase().as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in fields {
        put_field(out, name.as_bytes(), value);
    }
    match wire {
        WireBody::None(Some(n)) | WireBody::Length(n) => {
            put_field(out, b"content-length", n.to_string().as_bytes())
        }
        WireBody::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
        WireBody::None(None) | WireBody::UntilClose => {}
    }
    let close = !keep_alive || wire == WireBody::UntilClose;
    put_field(
        out,
        b"connection",
        if close { b"close" } else { b"keep-alive" },
    );
    out.put_slice(b"\r\n");
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: "/actors/counter/a".into(),
            version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn names(v: &[(String, Bytes)]) -> Vec<&str> {
        v.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn hop_by_hop_and_client_only_fields_stay_behind() {
        let h = head(&[
            ("Host", "x"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "p"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("Forwarded", "for=1.2.3.4"),
            ("Expect", "100-continue"),
            ("Content-Type", "text/plain"),
            ("Authorization", "Bearer t"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
        ]);
        let kept = request_headers(&h, false).unwrap();
        assert_eq!(
            names(&kept),
            ["host", "content-type", "authorization", "cookie", "cookie"]
        );
        let kept = request_headers(&h, true).unwrap();
        assert!(!names(&kept).contains(&"authorization"));
    }

    #[test]
    fn too_many_or_too_large_fields_are_431_and_nul_is_400() {
        let many: Vec<(String, String)> = (0..=MAX_FIELDS)
            .map(|i| (format!("x-{i}"), "v".into()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            request_headers(&head(&many), false).unwrap_err().status.0,
            431
        );
        let big = "v".repeat(MAX_FIELD_BYTES);
        assert_eq!(
            request_headers(&head(&[("x-big", &big)]), false)
                .unwrap_err()
                .status
                .0,
            431
        );
        assert_eq!(
            request_headers(&head(&[("x-nul", "a\0b")]), false)
                .unwrap_err()
                .status
                .0,
            400
        );
    }

    #[test]
    fn an_actor_head_keeps_its_end_to_end_fields_and_one_length() {
        let f = |v: &[(&str, &str)]| -> Vec<(String, Bytes)> {
            v.iter()
                .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v.as_bytes())))
                .collect()
        };
        let h = f(&[
            ("content-type", "a"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
        ]);
        let a = actor_head(&h).unwrap();
        assert_eq!(a.length, Some(5));
        assert_eq!(
            a.fields.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["content-type"]
        );
        assert!(actor_head(&f(&[("content-length", "5"), ("content-length", "6")])).is_err());
        assert!(actor_head(&f(&[("content-length", "-1")])).is_err());
        assert!(actor_head(&f(&[("content-length", "5"), ("content-length", "5")])).is_ok());
    }

    #[test]
    fn a_name_with_a_multibyte_character_near_the_proxy_prefix_does_not_panic() {
        // Found by the http_target fuzzer: `name[..6]` cut a character.
        let h = vec![("abcdeӟ".to_string(), Bytes::from_static(b"v"))];
        assert_eq!(actor_head(&h).unwrap().fields.len(), 1);
    }

    #[test]
    fn the_wire_framing_follows_the_request_and_the_status() {
        assert_eq!(
            WireBody::choose(200, true, 1, true, Some(9)),
            WireBody::None(Some(9))
        );
        assert_eq!(
            WireBody::choose(204, false, 1, true, None),
            WireBody::None(None)
        );
        assert_eq!(
            WireBody::choose(200, false, 1, false, None),
            WireBody::Length(0)
        );
        assert_eq!(
            WireBody::choose(200, false, 1, true, Some(3)),
            WireBody::Length(3)
        );
        assert_eq!(
            WireBody::choose(200, false, 1, true, None),
            WireBody::Chunked
        );
        assert_eq!(
            WireBody::choose(200, false, 0, true, None),
            WireBody::UntilClose
        );
        let mut out = BytesMut::new();
        write_head(&mut out, 200, &[], WireBody::Chunked, true);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn keep_alive_and_idempotence() {
        assert!(keeps_alive(&head(&[])));
        assert!(!keeps_alive(&head(&[("Connection", "close")])));
        let mut h10 = head(&[("Connection", "keep-alive")]);
        h10.version = 0;
        assert!(!keeps_alive(&h10));
        assert!(is_idempotent("GET") && is_idempotent("PUT") && !is_idempotent("POST"));
        assert!(expects_continue(&head(&[("Expect", "100-Continue")])));
    }

    /// RFC 9110 §10.1.1: an HTTP/1.0 client does not know 100 Continue.
    #[test]
    fn an_http_1_0_client_is_not_sent_100_continue() {
        let mut h10 = head(&[("Expect", "100-continue")]);
        h10.version = 0;
        assert!(!expects_continue(&h10));
    }
}
