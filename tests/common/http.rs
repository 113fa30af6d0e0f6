//! A small HTTP/1.1 client over a raw socket, written independently of the
//! gateway's own code: requests as bytes, responses read as they come
//! (head, then a body by its length or chunk by chunk), so a test can tell
//! a complete message from one that was cut.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct HttpConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How a body read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    Complete,
    /// The connection ended before the body did.
    Cut,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> HttpConn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        HttpConn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Sends what the writer accepts; false once the peer closed.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).is_ok()
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// `method path` with these headers and an optional body (with its
    /// Content-Length).
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes);
    }

    /// The status and headers of the next response; `None` if the
    /// connection ended first.
    pub fn read_head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            if self.reader.read_line(&mut l).ok()? == 0 {
                return None;
            }
            let l = l.trim_end();
            if l.is_empty() {
                return Some((status, headers));
            }
            let (n, v) = l.split_once(':')?;
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }

    /// The next chunk of a chunked body: `Some(bytes)`, `None` at the last
    /// chunk (`Ok`) or when the connection ended first (`Err`).
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, BodyEnd> {
        let mut size = String::new();
        match self.reader.read_line(&mut size) {
            Ok(0) | Err(_) => return Err(BodyEnd::Cut),
            Ok(_) => {}
        }
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16)
            .map_err(|_| BodyEnd::Cut)?;
        let mut data = vec![0; n + 2];
        self.reader
            .read_exact(&mut data)
            .map_err(|_| BodyEnd::Cut)?;
        data.truncate(n);
        Ok((n > 0).then_some(data))
    }

    /// The next whole response (for HEAD, pass `head_request`).
    pub fn response(&mut self) -> Response {
        self.response_to(false).expect("a response")
    }

    pub fn response_to(&mut self, head_request: bool) -> Option<Response> {
        let (status, headers) = self.read_head()?;
        let mut body = Vec::new();
        let chunked = header(&headers, "transfer-encoding") == Some("chunked");
        let length = header(&headers, "content-length").map(|v| v.parse::<usize>().unwrap());
        if head_request || status == 204 || status == 304 {
        } else if chunked {
            while let Some(c) = self.next_chunk().expect("a complete chunked body") {
                body.extend(c);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body).unwrap();
        } else {
            self.reader.read_to_end(&mut body).unwrap();
        }
        Some(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads at most `max` bytes of whatever comes (at least one); how
    /// many.
    pub fn read_some(&mut self, max: usize) -> usize {
        let mut buf = vec![0; max];
        let n = self.reader.read(&mut buf).unwrap();
        assert!(n > 0, "the connection ended");
        n
    }

    /// Everything until the connection ends.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        rest
    }

    /// Whether the gateway closed the connection (reads EOF, nothing else).
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}

/// One request on its own connection (Connection: close); the response.
pub fn exchange(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let mut c = HttpConn::connect(addr);
    c.request(method, path, &[("Connection", "close")], body);
    c.response()
}
