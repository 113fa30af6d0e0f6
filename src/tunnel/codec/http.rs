//! The HTTP forwarding frames (0x50–0x55, feature `HTTP`, PROTOCOL §7b):
//! their bodies, and the checks that turn a hostile peer's field into a
//! decode error before it is copied. (Not `crate::http`, which parses
//! clients' requests.) Codec only: neither side serves these frames yet.

use bytes::{BufMut, Bytes, BytesMut};

use super::{count, limits, put_str, tag, Frame, TunnelError};
use crate::tunnel::wire::{put_bytes, put_varint, Reader};

/// A client's HTTP request to an actor, gateway → runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Chosen by the gateway, unique within it (like `conn_id`).
    pub req_id: u64,
    pub actor_id: u64,
    /// A token of 1–16 bytes, as the client sent it (methods are
    /// case-sensitive).
    pub method: String,
    /// The path after the actor's prefix, as the client sent it (not
    /// percent-decoded): starts with `/`, at most 8 KiB.
    pub path: String,
    /// After the `?`, without it; may be empty; at most 8 KiB.
    pub query: String,
    /// End-to-end headers, names lower-case.
    pub headers: Vec<(String, Bytes)>,
    /// The client's address, `ip:port`, as in `ConnOpen`.
    pub peer: String,
    /// `HttpBody` frames follow, then `HttpEnd`.
    pub body: bool,
}

/// The head of an actor's answer, runner → gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub req_id: u64,
    /// 100–599 but not 101: a tunnelled request cannot switch protocols.
    pub status: u16,
    /// End-to-end headers, names lower-case.
    pub headers: Vec<(String, Bytes)>,
    /// `HttpBody` frames follow, then `HttpEnd`.
    pub body: bool,
}

pub(super) fn put_request(out: &mut BytesMut, req: &HttpRequest) -> u8 {
    put_varint(out, req.req_id);
    put_varint(out, req.actor_id);
    put_str(out, &req.method);
    put_str(out, &req.path);
    put_str(out, &req.query);
    put_headers(out, &req.headers);
    put_str(out, &req.peer);
    out.put_u8(u8::from(req.body));
    tag::HTTP_REQUEST
}

pub(super) fn put_response(out: &mut BytesMut, resp: &HttpResponse) -> u8 {
    put_varint(out, resp.req_id);
    put_varint(out, u64::from(resp.status));
    put_headers(out, &resp.headers);
    out.put_u8(u8::from(resp.body));
    tag::HTTP_RESPONSE
}

pub(super) fn put_body(out: &mut BytesMut, req_id: u64, data: &[u8]) -> u8 {
    put_varint(out, req_id);
    out.put_slice(data);
    tag::HTTP_BODY
}

pub(super) fn put_end(out: &mut BytesMut, req_id: u64) -> u8 {
    put_varint(out, req_id);
    tag::HTTP_END
}

pub(super) fn put_cancel(out: &mut BytesMut, req_id: u64, reason: &str) -> u8 {
    put_varint(out, req_id);
    put_str(out, reason);
    tag::HTTP_CANCEL
}

pub(super) fn put_credit(out: &mut BytesMut, req_id: u64, bytes: u64) -> u8 {
    put_varint(out, req_id);
    put_varint(out, bytes);
    tag::HTTP_CREDIT
}

/// Like `ConnOpen`'s headers (the same layout), checked by [`headers`].
fn put_headers(out: &mut BytesMut, headers: &[(String, Bytes)]) {
    put_varint(out, headers.len() as u64);
    for (name, value) in headers {
        put_str(out, name);
        put_bytes(out, value);
    }
}

/// Decodes the body of an HTTP frame of type `t`.
pub(super) fn decode(t: u8, r: &mut Reader) -> Result<Frame, TunnelError> {
    Ok(match t {
        tag::HTTP_REQUEST => Frame::HttpRequest(request(r)?),
        tag::HTTP_RESPONSE => Frame::HttpResponse(HttpResponse {
            req_id: r.varint()?,
            status: status(r)?,
            headers: headers(r)?,
            body: flag(r)?,
        }),
        tag::HTTP_BODY => {
            let req_id = r.varint()?;
            let data = r.rest();
            if data.is_empty() {
                return Err(TunnelError("empty HTTP body frame"));
            }
            Frame::HttpBody { req_id, data }
        }
        tag::HTTP_END => Frame::HttpEnd {
            req_id: r.varint()?,
        },
        tag::HTTP_CANCEL => Frame::HttpCancel {
            req_id: r.varint()?,
            reason: text(r, limits::HTTP_REASON, "HTTP cancel reason too long")?,
        },
        tag::HTTP_CREDIT => Frame::HttpCredit {
            req_id: r.varint()?,
            bytes: match r.varint()? {
                0 => return Err(TunnelError("zero HTTP credit")),
                n => n,
            },
        },
        _ => return Err(TunnelError("unknown frame type")),
    })
}

fn request(r: &mut Reader) -> Result<HttpRequest, TunnelError> {
    Ok(HttpRequest {
        req_id: r.varint()?,
        actor_id: r.varint()?,
        method: method(r)?,
        path: path(r)?,
        query: query(r)?,
        headers: headers(r)?,
        peer: r.string()?,
        body: flag(r)?,
    })
}

/// RFC 9110 `tchar`: what a method or a header name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A string of at most `max` bytes, refused (with `why`) before it is copied.
fn text(r: &mut Reader, max: usize, why: &'static str) -> Result<String, TunnelError> {
    let b = r.bytes()?;
    if b.len() > max {
        return Err(TunnelError(why));
    }
    String::from_utf8(b.to_vec()).map_err(|_| TunnelError("string is not UTF-8"))
}

fn method(r: &mut Reader) -> Result<String, TunnelError> {
    let b = r.bytes()?;
    if b.is_empty() || b.len() > limits::HTTP_METHOD || !b.iter().all(|&c| is_tchar(c)) {
        return Err(TunnelError("HTTP method is not a token of 1-16 bytes"));
    }
    ascii(b)
}

/// A byte a request target never holds raw: controls and space (RFC 9112
/// §3.2 forbids them; a gateway that passed one would let a runner see a
/// different target than the client sent).
fn is_control(c: u8) -> bool {
    c <= b' ' || c == 0x7F
}

fn path(r: &mut Reader) -> Result<String, TunnelError> {
    let p = text(r, limits::HTTP_TARGET, "HTTP path too long")?;
    let bytes = p.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.iter().any(|&c| is_control(c) || c == b'?') {
        return Err(TunnelError("HTTP path is not an absolute path"));
    }
    Ok(p)
}

fn query(r: &mut Reader) -> Result<String, TunnelError> {
    let q = text(r, limits::HTTP_TARGET, "HTTP query too long")?;
    if q.bytes().any(is_control) {
        return Err(TunnelError("HTTP query holds a control character"));
    }
    Ok(q)
}

fn status(r: &mut Reader) -> Result<u16, TunnelError> {
    match r.varint()? {
        // 101 would hand the client's connection to the actor: upgrades go
        // through `ConnOpen`, not here.
        s @ 100..=599 if s != 101 => Ok(s as u16),
        _ => Err(TunnelError("HTTP status out of range")),
    }
}

fn flag(r: &mut Reader) -> Result<bool, TunnelError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(TunnelError("HTTP body flag is neither 0 nor 1")),
    }
}

/// Header names are lower-case tokens; values hold no CR, LF or NUL (RFC
/// 9110 §5.5), which is what keeps a runner from splitting the gateway's
/// response to the client. Count and total size are bounded.
fn headers(r: &mut Reader) -> Result<Vec<(String, Bytes)>, TunnelError> {
    let n = count(r, limits::HEADERS, 2)?;
    let mut v = Vec::with_capacity(n);
    let mut total = 0usize;
    for _ in 0..n {
        let (name, value) = (r.bytes()?, r.bytes()?);
        total = total.saturating_add(name.len() + value.len());
        if total > limits::HTTP_HEADER_BYTES {
            return Err(TunnelError("HTTP headers over the size limit"));
        }
        let lower_token = |&c: &u8| is_tchar(c) && !c.is_ascii_uppercase();
        if name.is_empty() || !name.iter().all(lower_token) {
            return Err(TunnelError("HTTP header name is not a lower-case token"));
        }
        if value.iter().any(|&c| matches!(c, b'\r' | b'\n' | 0)) {
            return Err(TunnelError("HTTP header value holds CR, LF or NUL"));
        }
        v.push((ascii(name)?, value));
    }
    Ok(v)
}

/// Bytes already checked to be tchars, as a `String`.
fn ascii(b: Bytes) -> Result<String, TunnelError> {
    String::from_utf8(b.to_vec()).map_err(|_| TunnelError("string is not UTF-8"))
}

#[cfg(test)]
mod tests;
