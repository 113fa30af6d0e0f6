//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! A text message may be split across frames and across reads at any byte, so
//! a code point can straddle two chunks. The validator carries at most three
//! bytes of an unfinished code point between calls and rejects a sequence as
//! soon as it can no longer become valid ("fail fast", RFC 6455 §8.1).

#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The bytes seen so far can never be valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), InvalidUtf8> {
        let mut start = 0;
        if self.pending_len > 0 {
            let need = char_width(self.pending[0]);
            while (self.pending_len as usize) < need && start < chunk.len() {
                self.pending[self.pending_len as usize] = chunk[start];
                self.pending_len += 1;
                start += 1;
            }
            let held = &self.pending[..self.pending_len as usize];
            match std::str::from_utf8(held) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                // Still a valid prefix of a code point: wait for more bytes.
                Err(_) => return Ok(()),
            }
        }
        let rest = &chunk[start..];
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &rest[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The stream ended: valid only if no code point is left unfinished.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

fn char_width(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_split(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut last = 0;
        for &c in cuts {
            let c = c.min(bytes.len()).max(last);
            v.feed(&bytes[last..c])?;
            last = c;
        }
        v.feed(&bytes[last..])?;
        v.finish()
    }

    #[test]
    fn multibyte_split_everywhere_is_valid() {
        let s = "κόσμε 😀 日本語".as_bytes();
        for i in 0..s.len() {
            for j in i..s.len() {
                assert_eq!(validate_split(s, &[i, j]), Ok(()), "cuts {i},{j}");
            }
        }
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        let mut v = Utf8Validator::new();
        // 0xF4 0x90 is above U+10FFFF: invalid before the code point completes.
        assert_eq!(v.feed(&[0xF4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xC0]), Err(InvalidUtf8));
    }

    #[test]
    fn unfinished_code_point_at_end_is_invalid() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xE2, 0x82]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std_for_any_split(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                         a in 0usize..64, b in 0usize..64) {
            let (a, b) = (a.min(b), a.max(b));
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(validate_split(&bytes, &[a, b]).is_ok(), expected);
        }
    }
}
