//! Incremental HTTP/1.1 request-head parsing over a growing byte buffer.

use super::response::Status;

/// A parsed request head. Header names keep their spelling; look-ups ignore case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_header(&self.headers, name)
    }

    /// Every value of a header (repeated headers are a comma list, RFC 9110 §5.3).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether `Authorization: Bearer <token>` carries exactly `token`,
    /// compared without an early exit on the first difference.
    pub fn bearer_is(&self, token: &str) -> bool {
        // RFC 9110 §11.1: the auth scheme is case-insensitive.
        let Some(given) = self
            .header("authorization")
            .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|v| &v[7..])
        else {
            return false;
        };
        super::credential::ct_eq(given.trim_ascii(), token.as_bytes())
    }

    /// Comma-separated tokens of a header across all its occurrences, trimmed.
    pub fn header_tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// Why a head could not be accepted, each with the status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    TooLarge,
    TooManyHeaders,
    Malformed(&'static str),
}

impl HeadError {
    pub fn status(self) -> Status {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => Status::HEADER_FIELDS_TOO_LARGE,
            HeadError::Malformed(_) => Status::BAD_REQUEST,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many request headers",
            HeadError::Malformed(why) => why,
        }
    }
}

/// Finds the end of a request head as bytes arrive. Only scans new bytes for
/// the blank line, and runs the full parse once, when the head is complete.
#[derive(Debug)]
pub struct HeadReader {
    scan: HeadScan,
    max_headers: usize,
}

/// Where a head (a request's or a response's) ends, as bytes arrive: only
/// what is new is scanned, and a head longer than `max_bytes` is refused.
#[derive(Debug)]
pub(super) struct HeadScan {
    max_bytes: usize,
    scanned: usize,
}

impl HeadScan {
    pub fn new(max_bytes: usize) -> Self {
        HeadScan {
            max_bytes,
            scanned: 0,
        }
    }

    /// `Some(end)`: the head is `buf[..end]`; `None`: read more.
    pub fn end(&mut self, buf: &[u8]) -> Result<Option<usize>, HeadError> {
        let from = self.scanned.saturating_sub(2);
        let Some(end) = find_blank_line(&buf[from..]).map(|end| from + end) else {
            self.scanned = buf.len();
            return match buf.len() > self.max_bytes {
                true => Err(HeadError::TooLarge),
                false => Ok(None),
            };
        };
        match end > self.max_bytes {
            true => Err(HeadError::TooLarge),
            false => Ok(Some(end)),
        }
    }
}

impl HeadReader {
    pub fn new(max_bytes: usize, max_headers: usize) -> Self {
        Self {
            scan: HeadScan::new(max_bytes),
            max_headers,
        }
    }

    /// `Ok(None)`: incomplete, read more. `Ok(Some((head, len)))`: the head
    /// occupies the first `len` bytes of `buf`; anything after belongs to the
    /// protocol that follows.
    pub fn poll(&mut self, buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let Some(end) = self.scan.end(buf)? else {
            return Ok(None);
        };
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..end]) {
            Ok(httparse::Status::Complete(len)) => Ok(Some((owned_head(&req)?, len))),
            Ok(httparse::Status::Partial) => Err(HeadError::Malformed("truncated request head")),
            Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
            Err(_) => Err(HeadError::Malformed("malformed request head")),
        }
    }
}

/// Where the head ends: after the first line break followed by an empty
/// line, `\n\r\n` or a bare `\n\n` (RFC 9112 §2.2 lets a server accept a
/// bare LF as a line terminator, and httparse does).
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.iter()
        .enumerate()
        .find_map(|(i, &b)| match (b, buf.get(i + 1), buf.get(i + 2)) {
            (b'\n', Some(b'\n'), _) => Some(i + 2),
            (b'\n', Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        })
}

fn owned_head(req: &httparse::Request<'_, '_>) -> Result<RequestHead, HeadError> {
    let malformed = HeadError::Malformed("malformed request line");
    Ok(RequestHead {
        method: req.method.ok_or(malformed)?.to_owned(),
        target: req.path.ok_or(malformed)?.to_owned(),
        version: req.version.ok_or(malformed)?,
        headers: owned_headers(req.headers),
    })
}

/// The first value of a header among `headers`, by case-insensitive name.
pub(super) fn first_header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// httparse's borrowed headers, owned.
pub(super) fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REQ: &[u8] = b"GET /actors/echo/x?a=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\nrest";

    fn feed(
        reader: &mut HeadReader,
        bytes: &[u8],
        cuts: &[usize],
    ) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        points.sort_unstable();
        points.push(bytes.len());
        for p in points {
            if let Some(done) = reader.poll(&bytes[..p])? {
                return Ok(Some(done));
            }
        }
        Ok(None)
    }

    #[test]
    fn parses_a_complete_head_and_leaves_the_rest() {
        let (head, len) = HeadReader::new(8192, 32).poll(REQ).unwrap().unwrap();
        assert_eq!(&REQ[len..], b"rest");
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/actors/echo/x?a=1");
        assert_eq!(head.header("upgrade"), Some(&b"websocket"[..]));
        assert_eq!(
            head.header_tokens("connection").collect::<Vec<_>>(),
            ["keep-alive", "Upgrade"]
        );
    }

    #[test]
    fn limits_and_errors() {
        assert_eq!(HeadReader::new(16, 32).poll(REQ), Err(HeadError::TooLarge));
        assert_eq!(
            HeadReader::new(16, 32).poll(&[b'a'; 17]),
            Err(HeadError::TooLarge)
        );
        assert_eq!(
            HeadReader::new(8192, 2).poll(REQ),
            Err(HeadError::TooManyHeaders)
        );
        assert!(matches!(
            HeadReader::new(8192, 32).poll(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            HeadReader::new(8192, 32).poll(b"\x00\x01 junk\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert_eq!(
            HeadReader::new(8192, 32).poll(b"GET / HTTP/1.1\r\n"),
            Ok(None)
        );
    }

    proptest! {
        #[test]
        fn any_split_parses_the_same(cuts in proptest::collection::vec(0usize..REQ.len(), 0..10)) {
            let whole = HeadReader::new(8192, 32).poll(REQ).unwrap();
            let split = feed(&mut HeadReader::new(8192, 32), REQ, &cuts).unwrap();
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), cuts in proptest::collection::vec(0usize..300, 0..5)) {
            let _ = feed(&mut HeadReader::new(256, 8), &bytes, &cuts);
        }
    }
}
