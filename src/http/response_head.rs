//! Response heads, as the gateway reads them from a serverless function it
//! calls (issue 15): found as bytes arrive, parsed once complete, bounded.

use super::request::{first_header, owned_headers, HeadScan};
use super::HeadError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ResponseHead {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_header(&self.headers, name)
    }
}

/// Finds the end of a response head as bytes arrive (scanning only what is
/// new) and parses it once, when it is complete.
#[derive(Debug)]
pub struct ResponseHeadReader {
    scan: HeadScan,
    max_headers: usize,
}

impl ResponseHeadReader {
    pub fn new(max_bytes: usize, max_headers: usize) -> Self {
        ResponseHeadReader {
            scan: HeadScan::new(max_bytes),
            max_headers,
        }
    }

    /// `buf` holds everything received so far. `Some((head, len))`: the
    /// head is the first `len` bytes; the body starts after them.
    pub fn poll(&mut self, buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        let Some(end) = self.scan.end(buf)? else {
            return Ok(None);
        };
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..end]) {
            Ok(httparse::Status::Complete(len)) => Ok(Some((owned(&response)?, len))),
            Ok(httparse::Status::Partial) => Err(HeadError::Malformed("truncated response head")),
            Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
            Err(_) => Err(HeadError::Malformed("malformed response head")),
        }
    }
}

fn owned(response: &httparse::Response<'_, '_>) -> Result<ResponseHead, HeadError> {
    let malformed = HeadError::Malformed("malformed status line");
    Ok(ResponseHead {
        status: response.code.ok_or(malformed)?,
        version: response.version.ok_or(malformed)?,
        headers: owned_headers(response.headers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n: keepalive\n\n";

    #[test]
    fn a_head_split_anywhere_reads_the_same_and_leaves_the_body() {
        let whole = ResponseHeadReader::new(1024, 16)
            .poll(RESPONSE)
            .unwrap()
            .unwrap();
        assert_eq!(whole.0.status, 200);
        assert_eq!(
            whole.0.header("content-type"),
            Some(&b"text/event-stream"[..])
        );
        assert_eq!(&RESPONSE[whole.1..], b": keepalive\n\n");
        for cut in 0..RESPONSE.len() {
            let mut reader = ResponseHeadReader::new(1024, 16);
            let first = reader.poll(&RESPONSE[..cut]).unwrap();
            let done = first.or_else(|| reader.poll(RESPONSE).unwrap());
            assert_eq!(done.as_ref(), Some(&whole), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_crowded_and_garbled_heads_are_refused() {
        let long = [b"HTTP/1.1 200 OK\r\nx: ".as_slice(), &[b'a'; 100]].concat();
        let too_large = ResponseHeadReader::new(64, 16).poll(&long);
        assert_eq!(too_large, Err(HeadError::TooLarge));
        let crowded = b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        let too_many = ResponseHeadReader::new(1024, 2).poll(crowded);
        assert_eq!(too_many, Err(HeadError::TooManyHeaders));
        for garbled in [
            &b"HTTP/1.1 2x0 OK\r\n\r\n"[..],
            b"SSH-2.0-x\r\n\r\n",
            b"HTTP/1.1 200\x01\r\n\r\n",
        ] {
            let r = ResponseHeadReader::new(1024, 16).poll(garbled);
            assert!(
                matches!(r, Err(HeadError::Malformed(_))),
                "{garbled:?}: {r:?}"
            );
        }
    }
}
