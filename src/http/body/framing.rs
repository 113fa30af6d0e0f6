//! How long a message body is, from its head (RFC 9112 §6.3).
//!
//! Requests are read strictly: any head whose length two parsers could read
//! differently is refused, because a proxy in front of us and we must agree
//! on where one request ends and the next begins (request smuggling).

use super::BodyError;
use crate::http::RequestHead;

/// Where a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (`Length(0)`: no body).
    Length(u64),
    /// Chunked transfer coding, ending with the last chunk and trailers.
    Chunked,
    /// Everything until the connection closes (responses only). When
    /// `Transfer-Encoding` named codings other than a final `chunked`, those
    /// codings are part of the bytes and the header must travel with them.
    UntilClose,
}

/// A request's framing. A request with neither header has no body.
pub fn request_framing(head: &RequestHead) -> Result<Framing, BodyError> {
    let headers = || head.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
    let te = codings(headers());
    let cl = content_length(headers());
    match (te, cl) {
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        (Some(_), _) if head.version == 0 => Err(BodyError::BadFraming(
            "Transfer-Encoding in an HTTP/1.0 request",
        )),
        // §6.3 lets a server read this as chunked; a front proxy may have used
        // the length instead, so neither reading is safe.
        (Some(_), Some(_)) => Err(BodyError::BadFraming(
            "both Transfer-Encoding and Content-Length",
        )),
        (Some(te), None) => match te? {
            Codings::Chunked => Ok(Framing::Chunked),
            Codings::OthersThenChunked => Err(BodyError::UnsupportedCoding),
            // §6.3: chunked not final in a request is a MUST-400.
            Codings::NotChunkedLast => Err(BodyError::BadFraming(
                "chunked is not the final transfer coding",
            )),
        },
        (None, Some(cl)) => cl.map(Framing::Length),
        (None, None) => Ok(Framing::Length(0)),
    }
}

/// A response's framing. `status` and whether the request was `HEAD` come
/// first (§6.3 rules 1–2): such responses have no body whatever they say.
/// The actor is trusted no more than a client: conflicting headers are an
/// error (a 502 for the client) rather than a guess.
pub fn response_framing<'a>(
    status: u16,
    request_was_head: bool,
    headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
) -> Result<Framing, BodyError> {
    if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Length(0));
    }
    match (codings(headers.clone()), content_length(headers)) {
        (Some(_), Some(_)) => Err(BodyError::BadFraming(
            "both Transfer-Encoding and Content-Length",
        )),
        (Some(te), None) => match te? {
            Codings::Chunked => Ok(Framing::Chunked),
            Codings::OthersThenChunked => Err(BodyError::UnsupportedCoding),
            Codings::NotChunkedLast => Ok(Framing::UntilClose),
        },
        (None, Some(cl)) => cl.map(Framing::Length),
        (None, None) => Ok(Framing::UntilClose),
    }
}

/// What a `Transfer-Encoding` list amounts to.
#[derive(Debug, PartialEq, Eq)]
enum Codings {
    /// `chunked` alone.
    Chunked,
    /// `gzip, chunked` and the like: the length is known, the coding is not ours.
    OthersThenChunked,
    /// The last coding is not `chunked`: the length is unknown.
    NotChunkedLast,
}

/// `None`: no Transfer-Encoding header. Every occurrence counts, as one
/// comma list (RFC 9110 §5.3); empty elements are ignored (§5.6.1), an
/// empty list is an error, and `chunked` twice is an error (§7: "MUST NOT
/// apply chunked more than once").
fn codings<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Option<Result<Codings, BodyError>> {
    let mut present = false;
    let (mut total, mut chunked, mut last_chunked) = (0usize, 0usize, false);
    for (_, value) in headers.filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")) {
        present = true;
        for coding in list_elements(value) {
            let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            total += 1;
            chunked += usize::from(is_chunked);
            last_chunked = is_chunked;
        }
    }
    if !present {
        return None;
    }
    Some(match (total, chunked, last_chunked) {
        (0, _, _) => Err(BodyError::BadFraming("empty Transfer-Encoding")),
        (_, 2.., _) => Err(BodyError::BadFraming("chunked applied more than once")),
        (1, 1, true) => Ok(Codings::Chunked),
        (_, 1, true) => Ok(Codings::OthersThenChunked),
        _ => Ok(Codings::NotChunkedLast),
    })
}

/// `None`: no Content-Length header. All values, across occurrences and
/// comma lists, must be the same 1*DIGIT number (RFC 9110 §8.6): no sign,
/// no inner spaces, no empty element, nothing past `u64`.
fn content_length<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Option<Result<u64, BodyError>> {
    let mut found: Option<Result<u64, BodyError>> = None;
    for (_, value) in headers.filter(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        for element in value.split(|&b| b == b',').map(trim_ows) {
            let this = parse_decimal(element);
            found = Some(match (found, this) {
                (Some(Err(e)), _) | (_, Err(e)) => Err(e),
                (Some(Ok(a)), Ok(b)) if a != b => {
                    Err(BodyError::BadFraming("differing Content-Length values"))
                }
                (_, Ok(b)) => Ok(b),
            });
        }
    }
    found
}

fn parse_decimal(digits: &[u8]) -> Result<u64, BodyError> {
    const BAD: BodyError = BodyError::BadFraming("invalid Content-Length");
    if digits.is_empty() {
        return Err(BAD);
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return Err(BAD);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(BAD)
    })
}

/// Non-empty elements of a comma list, without their optional whitespace.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// OWS is spaces and tabs only (RFC 9110 §5.6.3), not every ASCII blank.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: u8, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: "/actors/a/b".into(),
            version,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn req(headers: &[(&str, &str)]) -> Result<Framing, BodyError> {
        request_framing(&head(1, headers))
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> Result<Framing, BodyError> {
        let pairs = headers.iter().map(|(n, v)| (*n, v.as_bytes()));
        response_framing(status, false, pairs)
    }

    #[test]
    fn request_lengths() {
        assert_eq!(req(&[]), Ok(Framing::Length(0)));
        assert_eq!(req(&[("Content-Length", "42")]), Ok(Framing::Length(42)));
        assert_eq!(req(&[("content-length", " 007 ")]), Ok(Framing::Length(7)));
        assert_eq!(req(&[("Content-Length", "5, 5")]), Ok(Framing::Length(5)));
        let repeated = [("Content-Length", "5"), ("Content-Length", "5")];
        assert_eq!(req(&repeated), Ok(Framing::Length(5)));
        let max = u64::MAX.to_string();
        assert_eq!(
            req(&[("Content-Length", &max)]),
            Ok(Framing::Length(u64::MAX))
        );
    }

    #[test]
    fn request_lengths_refused() {
        for bad in [
            "",
            "-1",
            "+5",
            "5 5",
            "0x10",
            "5,",
            "5, 6",
            "1e3",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let got = req(&[("Content-Length", bad)]);
            assert!(
                matches!(got, Err(BodyError::BadFraming(_))),
                "{bad:?}: {got:?}"
            );
        }
        let differing = [("Content-Length", "5"), ("Content-Length", "6")];
        assert!(matches!(req(&differing), Err(BodyError::BadFraming(_))));
    }

    #[test]
    fn request_transfer_codings() {
        assert_eq!(
            req(&[("Transfer-Encoding", "chunked")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            req(&[("transfer-encoding", " CHUNKED\t")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            req(&[("Transfer-Encoding", ", chunked,")]),
            Ok(Framing::Chunked)
        );
        let gzip = [
            ("Transfer-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"),
        ];
        assert_eq!(req(&gzip), Err(BodyError::UnsupportedCoding));
        assert_eq!(
            req(&[("Transfer-Encoding", "gzip, chunked")]),
            Err(BodyError::UnsupportedCoding)
        );
    }

    #[test]
    fn request_smuggling_shapes_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
            &[("Content-Length", "0"), ("Transfer-Encoding", "identity")],
            &[("Transfer-Encoding", "chunked, chunked")],
            &[
                ("Transfer-Encoding", "chunked"),
                ("Transfer-Encoding", "chunked"),
            ],
            &[("Transfer-Encoding", "chunked, gzip")],
            &[("Transfer-Encoding", "gzip")],
            &[("Transfer-Encoding", "identity")],
            &[("Transfer-Encoding", "")],
            &[("Transfer-Encoding", " , ")],
            &[("Transfer-Encoding", "chunked;x=1")],
            &[("Transfer-Encoding", "\"chunked\"")],
            &[("Transfer-Encoding", "chunked\x0b")],
            &[("Transfer-Encoding", "xchunked")],
        ];
        for case in cases {
            let got = req(case);
            assert!(
                matches!(got, Err(BodyError::BadFraming(_))),
                "{case:?}: {got:?}"
            );
        }
        let http10 = head(0, &[("Transfer-Encoding", "chunked")]);
        assert!(matches!(
            request_framing(&http10),
            Err(BodyError::BadFraming(_))
        ));
    }

    #[test]
    fn response_lengths() {
        assert_eq!(resp(200, &[]), Ok(Framing::UntilClose));
        assert_eq!(
            resp(200, &[("Content-Length", "3")]),
            Ok(Framing::Length(3))
        );
        assert_eq!(
            resp(200, &[("Transfer-Encoding", "chunked")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            resp(200, &[("Transfer-Encoding", "gzip")]),
            Ok(Framing::UntilClose)
        );
        for status in [100, 101, 103, 204, 304] {
            let chunked = [("Transfer-Encoding", "chunked")];
            assert_eq!(resp(status, &chunked), Ok(Framing::Length(0)), "{status}");
        }
        let pairs = [("Content-Length", "10")];
        let head = response_framing(200, true, pairs.iter().map(|(n, v)| (*n, v.as_bytes())));
        assert_eq!(head, Ok(Framing::Length(0)));
    }

    #[test]
    fn response_conflicts_refused() {
        let both = [("Transfer-Encoding", "chunked"), ("Content-Length", "3")];
        assert!(matches!(resp(200, &both), Err(BodyError::BadFraming(_))));
        let twice = [("Transfer-Encoding", "chunked, chunked")];
        assert!(matches!(resp(200, &twice), Err(BodyError::BadFraming(_))));
        let cl = [("Content-Length", "-3")];
        assert!(matches!(resp(200, &cl), Err(BodyError::BadFraming(_))));
    }
}
