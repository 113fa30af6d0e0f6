//! What a load-test message carries: the sender's client id, its sequence
//! number and when it was sent (µs since the run started, on the load
//! test's own clock), padded to the message size. Text, so that chat
//! actors keep it as is.

use bytes::BytesMut;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub client: u32,
    pub seq: u64,
    pub sent_us: u64,
}

/// Appends a message of `size` bytes (more if the tag alone is longer).
pub fn encode(out: &mut BytesMut, tag: Tag, size: usize) {
    use std::fmt::Write;
    let start = out.len();
    let _ = write!(out, "{}:{}:{}:", tag.client, tag.seq, tag.sent_us);
    let used = out.len() - start;
    if size > used {
        out.resize(start + size, b'x');
    }
}

pub fn parse(payload: &[u8]) -> Option<Tag> {
    let mut fields = payload.splitn(4, |b| *b == b':');
    let mut number = || -> Option<u64> {
        let f = fields.next()?;
        if f.is_empty() || f.len() > 20 || !f.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(f).ok()?.parse().ok()
    };
    let client = u32::try_from(number()?).ok()?;
    let seq = number()?;
    let sent_us = number()?;
    fields.next()?;
    Some(Tag {
        client,
        seq,
        sent_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let tag = Tag {
            client: 7,
            seq: 123_456,
            sent_us: 99,
        };
        let mut out = BytesMut::new();
        encode(&mut out, tag, 64);
        assert_eq!(out.len(), 64);
        assert_eq!(parse(&out), Some(tag));
        let mut short = BytesMut::new();
        encode(&mut short, tag, 4);
        assert_eq!(parse(&short), Some(tag));
    }

    #[test]
    fn garbage_is_not_a_tag() {
        for bad in [
            &b""[..],
            b"1:2:3",
            b"a:2:3:",
            b"1::3:",
            b"99999999999:1:1:",
            b"inc",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
