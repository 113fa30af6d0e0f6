//! The responses the gateway writes itself: errors, health checks and the
//! WebSocket `101 Switching Protocols`.

use bytes::{BufMut, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub const SWITCHING_PROTOCOLS: Status = Status(101);
    pub const OK: Status = Status(200);
    pub const CREATED: Status = Status(201);
    pub const ACCEPTED: Status = Status(202);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const CONFLICT: Status = Status(409);
    pub const LENGTH_REQUIRED: Status = Status(411);
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    pub const URI_TOO_LONG: Status = Status(414);
    pub const UPGRADE_REQUIRED: Status = Status(426);
    pub const UNPROCESSABLE: Status = Status(422);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const HEADER_FIELDS_TOO_LARGE: Status = Status(431);
    pub const INTERNAL_ERROR: Status = Status(500);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const BAD_GATEWAY: Status = Status(502);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    pub const GATEWAY_TIMEOUT: Status = Status(504);

    pub fn reason_phrase(self) -> &'static str {
        match self.0 {
            101 => "Switching Protocols",
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            204 => "No Content",
            206 => "Partial Content",
            301 => "Moved Permanently",
            302 => "Found",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            411 => "Length Required",
            413 => "Content Too Large",
            414 => "URI Too Long",
            422 => "Unprocessable Content",
            426 => "Upgrade Required",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Unknown",
        }
    }
}

/// Appends a complete response with a plain-text body. Every response the
/// gateway writes before an upgrade ends the connection, so it says so.
pub fn write_response(
    out: &mut BytesMut,
    status: Status,
    extra_headers: &[(&str, &str)],
    body: &str,
) {
    put_status_line(out, status);
    for (name, value) in extra_headers {
        put_header(out, name, value.as_bytes());
    }
    if !extra_headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        put_header(out, "Content-Type", b"text/plain; charset=utf-8");
    }
    put_header(out, "Content-Length", body.len().to_string().as_bytes());
    put_header(out, "Connection", b"close");
    out.put_slice(b"\r\n");
    out.put_slice(body.as_bytes());
}

/// Appends the `101` answer to a WebSocket upgrade.
pub fn write_switching_protocols(out: &mut BytesMut, accept_key: &str, protocol: Option<&str>) {
    put_status_line(out, Status::SWITCHING_PROTOCOLS);
    put_header(out, "Upgrade", b"websocket");
    put_header(out, "Connection", b"Upgrade");
    put_header(out, "Sec-WebSocket-Accept", accept_key.as_bytes());
    if let Some(p) = protocol {
        put_header(out, "Sec-WebSocket-Protocol", p.as_bytes());
    }
    out.put_slice(b"\r\n");
}

fn put_status_line(out: &mut BytesMut, status: Status) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.0.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.reason_phrase().as_bytes());
    out.put_slice(b"\r\n");
}

fn put_header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_is_complete_http() {
        let mut out = BytesMut::new();
        write_response(
            &mut out,
            Status::UPGRADE_REQUIRED,
            &[("Sec-WebSocket-Version", "13")],
            "use 13\n",
        );
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("Content-Length: 7\r\n"));
        assert!(text.ends_with("\r\n\r\nuse 13\n"));
    }
}
