//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that an L4
//! load balancer puts in front of a connection to say whose it really is.
//! Sans IO: bytes in, the client's address (if the header names one) and
//! the header's length out. The gateway reads it only from balancers it is
//! told to trust (`client.trusted_proxies`); anyone else could claim any
//! address with it.
//!
//! Limits: a v1 header is at most 107 bytes (the spec's maximum); a v2
//! header at most [`MAX_V2_BYTES`] (addresses plus TLVs, which are skipped).
//! Anything else: [`ProxyError`] (the connection is closed, or answered 400
//! by the caller).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (spec §2.1).
pub const MAX_V1_BYTES: usize = 107;
/// The longest v2 header accepted, TLVs included.
pub const MAX_V2_BYTES: usize = 1024;

/// What the balancer said: the client's address, or `None` for a
/// connection of its own (v2 LOCAL, v1 UNKNOWN): then the TCP peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    pub source: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError(pub &'static str);

/// The header at the start of `buf`, with its length; `Ok(None)` while
/// more bytes are needed.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let v2_prefix = buf.len().min(V2_SIGNATURE.len());
    if buf[..v2_prefix] == V2_SIGNATURE[..v2_prefix] {
        return parse_v2(buf);
    }
    let v1_prefix = buf.len().min(6);
    if buf[..v1_prefix] == b"PROXY "[..v1_prefix] {
        return parse_v1(buf);
    }
    Err(ProxyError("no PROXY protocol header"))
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1_BYTES {
            return Err(ProxyError("PROXY v1 header too long"));
        }
        return Ok(None);
    };
    if end + 2 > MAX_V1_BYTES {
        return Err(ProxyError("PROXY v1 header too long"));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError("PROXY v1 not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyError("PROXY v1 bad address"))?;
            let port: u16 = sport.parse().map_err(|_| ProxyError("PROXY v1 bad port"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError("PROXY v1 address of the wrong family"));
            }
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError("PROXY v1 malformed")),
    };
    Ok(Some((ProxyHeader { source }, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError("PROXY v2 unknown version"));
    }
    let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > MAX_V2_BYTES {
        return Err(ProxyError("PROXY v2 header too long"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    let source = match version_command & 0x0f {
        0x0 => None, // LOCAL: the balancer's own connection (health check)
        0x1 => v2_source(buf[13], body)?,
        _ => return Err(ProxyError("PROXY v2 unknown command")),
    };
    Ok(Some((ProxyHeader { source }, len)))
}

/// The source address of a v2 PROXY command; `None` for families that
/// carry no IP address (UNSPEC, UNIX).
fn v2_source(family: u8, body: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let short = ProxyError("PROXY v2 addresses truncated");
    match family >> 4 {
        0x1 => {
            let a = body.get(..12).ok_or(short)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        0x2 => {
            let a = body.get(..36).ok_or(short)?;
            let octets: [u8; 16] = a[..16].try_into().map_err(|_| short)?;
            let port = u16::from_be_bytes([a[32], a[33]]);
            Ok(Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port)))
        }
        0x0 | 0x3 => Ok(None),
        _ => Err(ProxyError("PROXY v2 unknown address family")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_names_the_client() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 8080\r\nGET / HTTP/1.1\r\n";
        let (header, len) = parse_proxy_header(h).unwrap().unwrap();
        assert_eq!(header.source, Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(&h[len..len + 3], b"GET");
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n";
        let (header, _) = parse_proxy_header(h6).unwrap().unwrap();
        assert_eq!(header.source, Some("[2001:db8::1]:4000".parse().unwrap()));
        let (header, _) = parse_proxy_header(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(header.source, None);
    }

    #[test]
    fn v2_names_the_client_and_skips_tlvs() {
        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x1f, 0x91];
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a TLV
        let mut h = v2(0x1, 0x11, &body);
        h.extend_from_slice(b"\x16\x03\x01"); // what follows: a TLS record
        let (header, len) = parse_proxy_header(&h).unwrap().unwrap();
        assert_eq!(header.source, Some("198.51.100.9:8080".parse().unwrap()));
        assert_eq!(&h[len..], b"\x16\x03\x01");
        let (local, _) = parse_proxy_header(&v2(0x0, 0x00, &[])).unwrap().unwrap();
        assert_eq!(local.source, None, "LOCAL: the balancer's own connection");
    }

    #[test]
    fn wrong_or_oversized_headers_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 nonsense 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 99999 2\r\n",
        ] {
            assert!(
                parse_proxy_header(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(parse_proxy_header(&long).is_err());
        let mut huge = v2(0x1, 0x11, &[0; 12]);
        huge[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert!(parse_proxy_header(&huge).is_err());
        assert!(
            parse_proxy_header(&v2(0x1, 0x11, &[0; 4])).is_err(),
            "truncated"
        );
    }

    proptest! {
        /// Any header, cut anywhere: a prefix asks for more, never errs or
        /// answers differently.
        #[test]
        fn prefixes_ask_for_more(cut in 0usize..60, v in 0u8..2) {
            let h = if v == 0 {
                b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 8080\r\n".to_vec()
            } else {
                v2(0x1, 0x11, &[198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x1f, 0x91])
            };
            let cut = cut.min(h.len() - 1);
            prop_assert_eq!(parse_proxy_header(&h[..cut]), Ok(None));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_proxy_header(&bytes);
        }
    }
}
