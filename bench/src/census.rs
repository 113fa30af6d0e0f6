//! Live allocations by requested size, for finding what a hibernated socket
//! is made of (`TETHER_BENCH_CENSUS=1`, read by the `hibernate` benchmark):
//! N sockets that each keep an allocation of some size show up as N more
//! allocations of that size. Off by default: it costs two atomic additions
//! per allocation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};

/// Set in the gateway child when the environment asks for a census.
pub const ENV: &str = "TETHER_BENCH_CENSUS";

static ON: AtomicBool = AtomicBool::new(false);

/// Allocations of up to 4 KiB, in 8-byte steps.
static SMALL: [AtomicIsize; 512] = [const { AtomicIsize::new(0) }; 512];

/// Larger ones by exact size (tables, slabs, buffers), in an open-addressed
/// table that never allocates (the allocator itself calls in here).
static LARGE_SIZES: [AtomicUsize; 1024] = [const { AtomicUsize::new(0) }; 1024];
static LARGE_COUNTS: [AtomicIsize; 1024] = [const { AtomicIsize::new(0) }; 1024];

pub fn enable_if_asked() {
    ON.store(std::env::var_os(ENV).is_some(), Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Relaxed)
}

/// Counts an allocation (`delta` 1) or a deallocation (-1) of `size` bytes.
pub fn record(size: usize, delta: isize) {
    if !ON.load(Relaxed) {
        return;
    }
    let step = size.div_ceil(8);
    if step < SMALL.len() {
        SMALL[step].fetch_add(delta, Relaxed);
        return;
    }
    let mut i = step % LARGE_SIZES.len();
    for _ in 0..LARGE_SIZES.len() {
        match LARGE_SIZES[i].compare_exchange(0, size, Relaxed, Relaxed) {
            Ok(_) => break,
            Err(s) if s == size => break,
            Err(_) => i = (i + 1) % LARGE_SIZES.len(),
        }
    }
    LARGE_COUNTS[i].fetch_add(delta, Relaxed);
}

/// Live allocations by size: `size count` lines (small sizes rounded up to 8).
pub fn text() -> String {
    let small = SMALL
        .iter()
        .enumerate()
        .map(|(i, c)| (i * 8, c.load(Relaxed)));
    let large = LARGE_SIZES
        .iter()
        .zip(&LARGE_COUNTS)
        .map(|(s, c)| (s.load(Relaxed), c.load(Relaxed)));
    small
        .chain(large)
        .filter(|&(_, c)| c != 0)
        .map(|(s, c)| format!("{s} {c}\n"))
        .collect()
}

pub fn parse(text: &str) -> BTreeMap<usize, i64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace().map(|p| p.parse().unwrap_or(0));
        if let (Some(size), Some(count)) = (parts.next(), parts.next()) {
            *out.entry(size as usize).or_insert(0) += count;
        }
    }
    out
}

/// What `after` holds beyond `before`, per socket, by size: sizes whose
/// count grew by at least 1 % of `sockets`, and every large one.
pub fn report(
    before: &BTreeMap<usize, i64>,
    after: &BTreeMap<usize, i64>,
    sockets: usize,
) -> String {
    let mut out = String::from("  live allocations per socket, by requested size:\n");
    let n = sockets.max(1) as f64;
    for (&size, &count) in after {
        let grew = count - before.get(&size).copied().unwrap_or(0);
        let large = size >= SMALL.len() * 8;
        if grew != 0 && (large || grew.unsigned_abs() as f64 >= n / 100.0) {
            let per = (size as f64) * grew as f64 / n;
            let at_most = if large { "" } else { "≤ " };
            out.push_str(&format!("    {at_most}{size} B × {grew}: {per:.1} B\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_census_reads_back_and_reports_growth() {
        let before = parse("64 10\n278544 1\n");
        let after = parse("64 1010\n80 3\n278544 2\n");
        let r = report(&before, &after, 1000);
        assert!(r.contains("≤ 64 B × 1000: 64.0 B"), "{r}");
        assert!(r.contains("278544 B × 1: 278.5 B"), "{r}");
        assert!(!r.contains("80 B"), "{r}");
    }
}
