//! Counters by a small, fixed set of labels (HTTP statuses, close codes,
//! actor states): one relaxed atomic per label, indexed by the caller's
//! table, so counting costs what a plain counter does and the label set
//! (the series `/metrics` shows) stays bounded whatever a peer sends.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Tally<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Tally(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> Tally<N> {
    pub fn add(&self, slot: usize) {
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// For a gauge: only the worker that added takes away.
    pub fn sub(&self, slot: usize) {
        self.0[slot].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self, slot: usize) -> u64 {
        self.0[slot].load(Ordering::Relaxed)
    }

    /// Adds these counts to `total`, slot by slot (summing workers).
    pub fn add_to(&self, total: &mut [u64; N]) {
        for (t, c) in total.iter_mut().zip(&self.0) {
            *t += c.load(Ordering::Relaxed);
        }
    }
}

/// The slot of `code` in `table`, whose last entry stands for every code
/// not listed before it.
pub fn slot_of(table: &[u16], code: u16) -> usize {
    let listed = &table[..table.len() - 1];
    listed
        .iter()
        .position(|&c| c == code)
        .unwrap_or(listed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_codes_share_the_last_slot() {
        let table = [101, 404, 0];
        assert_eq!(slot_of(&table, 101), 0);
        assert_eq!(slot_of(&table, 404), 1);
        assert_eq!(slot_of(&table, 418), 2);
        assert_eq!(slot_of(&table, 0), 2);
    }

    #[test]
    fn tallies_sum_slot_by_slot() {
        let (a, b) = (Tally::<3>::default(), Tally::<3>::default());
        a.add(0);
        a.add(2);
        b.add(2);
        b.add(1);
        b.sub(1);
        let mut total = [0; 3];
        a.add_to(&mut total);
        b.add_to(&mut total);
        assert_eq!(total, [1, 0, 2]);
    }
}
