//! Two slot files per actor, rewritten in turn (sans IO): each holds a
//! record with its sequence number and a checksum, so a save torn by a
//! crash is recognised and the other slot, one save older, is read
//! instead. Rewriting a file in place costs no new inode per save, which
//! creating a file and renaming it over the old one does (on ext4 that was
//! most of a busy runner's time: bench/README.md, chat-fanout profile).

/// Sequence number, record length, checksum.
const HEADER: usize = 8 + 4 + 8;

/// A slot file's bytes for `record`, saved as number `seq`.
pub(super) fn encode(seq: u64, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + record.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(seq, record).to_le_bytes());
    out.extend_from_slice(record);
    out
}

/// The sequence number and record of a slot file, if it is whole.
pub(super) fn decode(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let header = bytes.get(..HEADER)?;
    let seq = u64::from_le_bytes(header[..8].try_into().ok()?);
    let len = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(header[12..20].try_into().ok()?);
    let record = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    (bytes.len() == HEADER + len && checksum(seq, record) == sum).then_some((seq, record))
}

/// Of two slots, which is newer and whole: its index, number and record.
pub(super) fn newest(slots: [Option<&[u8]>; 2]) -> Option<(usize, u64, &[u8])> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.and_then(decode).map(|(seq, r)| (i, seq, r)))
        .max_by_key(|(_, seq, _)| *seq)
}

/// FNV-1a over the number and the record: enough to tell a torn write.
fn checksum(seq: u64, record: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seq.to_le_bytes().iter().chain(record) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_newest_whole_slot_wins() {
        let (a, b) = (encode(4, b"older"), encode(5, b"newer"));
        assert_eq!(newest([Some(&a), Some(&b)]), Some((1, 5, &b"newer"[..])));
        // The newer one torn: the older one is read.
        let torn = &b[..b.len() - 2];
        assert_eq!(newest([Some(&a), Some(torn)]), Some((0, 4, &b"older"[..])));
        let mut flipped = b.clone();
        flipped[HEADER] ^= 1;
        assert_eq!(newest([Some(&a), Some(&flipped)]).map(|n| n.1), Some(4));
        assert_eq!(newest([None, None]), None);
    }

    proptest! {
        #[test]
        fn any_cut_of_a_slot_is_refused(cut in 0usize..40) {
            let full = encode(9, b"a record of some length");
            prop_assume!(cut < full.len());
            prop_assert_eq!(decode(&full[..cut]), None);
        }
    }
}
