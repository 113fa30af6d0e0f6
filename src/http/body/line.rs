//! The lines inside chunked framing: chunk-size lines and trailer fields
//! (RFC 9112 §7.1). Each is checked whole once its LF has arrived.
//!
//! Stricter than the grammar's readers often are, on purpose: only CRLF ends
//! a line, no byte of a line may be a control (bare CR, NUL, a lone LF inside
//! an extension), and a size is bare hex digits. Lenient chunk parsing is
//! where the recent smuggling attacks live (differences in how a proxy and a
//! server read `5\n`, `5 ;x` or `5;a\rb`): refusing is never ambiguous.

use super::BodyError;

/// Looks for the end of a line in `buf`, starting at `*scanned` (what an
/// earlier call already searched). `Ok(Some(len))`: the line with its LF is
/// `buf[..len]`. `Err(())`: no LF within `max` bytes.
pub(super) fn find_line(buf: &[u8], scanned: &mut usize, max: usize) -> Result<Option<usize>, ()> {
    let from = (*scanned).min(buf.len());
    match buf[from..].iter().position(|&b| b == b'\n') {
        Some(at) if from + at < max => Ok(Some(from + at + 1)),
        Some(_) => Err(()),
        None if buf.len() >= max => Err(()),
        None => {
            *scanned = buf.len();
            Ok(None)
        }
    }
}

/// A chunk-size line, CRLF included: the size and how many bytes of
/// extensions it carried (which are otherwise ignored).
pub(super) fn parse_size_line(line: &[u8]) -> Result<(u64, usize), BodyError> {
    let body = strip_crlf(line)?;
    let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::Malformed("chunk size is not hex digits"));
    }
    let size = body[..digits].iter().try_fold(0u64, |n, &d| {
        // A 17th significant digit would shift bits out: refuse, never wrap.
        n.checked_mul(16)
            .map(|n| n | u64::from(hex_value(d)))
            .ok_or(BodyError::Malformed("chunk size overflows"))
    })?;
    let ext = &body[digits..];
    check_extensions(ext)?;
    Ok((size, ext.len()))
}

/// `*( BWS ";" BWS name [ BWS "=" BWS value ] )`: the content is ignored,
/// so only what matters for framing is checked: it starts with `;` (after
/// optional whitespace) and holds no control byte.
fn check_extensions(ext: &[u8]) -> Result<(), BodyError> {
    if ext.is_empty() {
        return Ok(());
    }
    let start = ext.iter().position(|&b| b != b' ' && b != b'\t');
    if start.map(|i| ext[i]) != Some(b';') {
        return Err(BodyError::Malformed("junk after chunk size"));
    }
    if ext.iter().any(|&b| is_control(b)) {
        return Err(BodyError::Malformed("control byte in chunk extension"));
    }
    Ok(())
}

/// What one line of the trailer section is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TrailerLine {
    /// The empty line: the body is over.
    End,
    /// A field, checked for shape and otherwise ignored.
    Field,
}

pub(super) fn parse_trailer_line(line: &[u8]) -> Result<TrailerLine, BodyError> {
    let body = strip_crlf(line)?;
    if body.is_empty() {
        return Ok(TrailerLine::End);
    }
    // obs-fold (a line starting with whitespace) continues a field; RFC 9112
    // §5.2 lets us refuse it, and we do, as for heads.
    if matches!(body[0], b' ' | b'\t') {
        return Err(BodyError::Malformed("folded trailer line"));
    }
    let name_len = body.iter().position(|&b| b == b':');
    if !matches!(name_len, Some(n) if n > 0) || body.iter().any(|&b| is_control(b)) {
        return Err(BodyError::Malformed("malformed trailer field"));
    }
    Ok(TrailerLine::Field)
}

fn strip_crlf(line: &[u8]) -> Result<&[u8], BodyError> {
    line.strip_suffix(b"\r\n")
        .ok_or(BodyError::Malformed("line not ended by CRLF"))
}

/// Controls other than horizontal tab, DEL included.
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        b'A'..=b'F' => d - b'A' + 10,
        _ => 0, // not reached: callers pass hex digits only
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_line(b"0\r\n"), Ok((0, 0)));
        assert_eq!(parse_size_line(b"1a\r\n"), Ok((26, 0)));
        assert_eq!(parse_size_line(b"FF\r\n"), Ok((255, 0)));
        assert_eq!(parse_size_line(b"000010\r\n"), Ok((16, 0)));
        assert_eq!(parse_size_line(b"ffffffffffffffff\r\n"), Ok((u64::MAX, 0)));
        assert_eq!(parse_size_line(b"00000000000000001\r\n"), Ok((1, 0)));
        assert_eq!(parse_size_line(b"5;a=b\r\n"), Ok((5, 4)));
        assert_eq!(parse_size_line(b"5 \t; a = \"q\"\r\n"), Ok((5, 11)));
    }

    #[test]
    fn sizes_refused() {
        for bad in [
            &b"\r\n"[..],
            b"5\n",
            b"5\r\r\n",
            b" 5\r\n",
            b"+5\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"5 \r\n",
            b"5 5\r\n",
            b"5;a\rb\r\n",
            b"5;a\nb\r\n",
            b"5;\x00\r\n",
            b"5;\x7f\r\n",
            b"10000000000000000\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert!(
                parse_size_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn trailers() {
        assert_eq!(parse_trailer_line(b"\r\n"), Ok(TrailerLine::End));
        assert_eq!(parse_trailer_line(b"X-Sum: 1\r\n"), Ok(TrailerLine::Field));
        for bad in [
            &b"\n"[..],
            b" X: 1\r\n",
            b"\tX: 1\r\n",
            b": 1\r\n",
            b"X\r\n",
            b"X: \x01\r\n",
        ] {
            assert!(parse_trailer_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn finding_lines() {
        let mut scanned = 0;
        assert_eq!(find_line(b"12", &mut scanned, 8), Ok(None));
        assert_eq!(scanned, 2);
        assert_eq!(find_line(b"12\r\nxx", &mut scanned, 8), Ok(Some(4)));
        assert_eq!(find_line(b"1234567\n", &mut 0, 8), Ok(Some(8)));
        assert_eq!(find_line(b"12345678\n", &mut 0, 8), Err(()));
        assert_eq!(find_line(b"12345678", &mut 0, 8), Err(()));
        // A buffer shorter than what was scanned (a caller's mistake) does not panic.
        assert_eq!(find_line(b"1", &mut 9, 8), Ok(None));
    }
}
