//! What each client thread measures, merged at the end; and the few
//! counters the live progress line reads while the run goes on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::check::Errors;

/// Microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.max(1));
}

pub struct ThreadStats {
    /// TCP connect + upgrade, every connection.
    pub connect: Histogram<u64>,
    /// A message's trip back to its sender, after the warm-up.
    pub rtt: Histogram<u64>,
    /// The first message after a hibernation silence.
    pub wake: Histogram<u64>,
    /// Round trips by the second they completed in, for the whole run.
    pub per_second: Vec<Histogram<u64>>,
    /// Per kill/drain event: each client's longest silence around it.
    pub pauses: Vec<Histogram<u64>>,
    /// With a flood: round trips by the phase they were sent in (quiet
    /// baseline, under the flood).
    pub phase_rtt: [Histogram<u64>; 2],
    /// With a flood: the well-behaved newcomer's connections, by phase.
    pub probes: [Probes; 2],
    /// After the warm-up.
    pub sent: u64,
    pub received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub connections: u64,
    pub errors: Errors,
    /// The first few errors in words, for the report.
    pub notes: Vec<String>,
}

const MAX_NOTES: usize = 10;

impl ThreadStats {
    pub fn new(pause_events: usize) -> Self {
        ThreadStats {
            connect: histogram(),
            rtt: histogram(),
            wake: histogram(),
            per_second: Vec::new(),
            pauses: (0..pause_events).map(|_| histogram()).collect(),
            phase_rtt: [histogram(), histogram()],
            probes: [Probes::new(), Probes::new()],
            sent: 0,
            received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            connections: 0,
            errors: Errors::default(),
            notes: Vec::new(),
        }
    }

    pub fn note(&mut self, what: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(what);
        }
    }

    pub fn record_second(&mut self, second: usize, micros: u64) {
        while self.per_second.len() <= second {
            self.per_second.push(histogram());
        }
        record(&mut self.per_second[second], micros);
    }

    pub fn merge(&mut self, o: &ThreadStats) {
        let add = |a: &mut Histogram<u64>, b: &Histogram<u64>| {
            a.add(b).expect("same histogram bounds");
        };
        add(&mut self.connect, &o.connect);
        add(&mut self.rtt, &o.rtt);
        add(&mut self.wake, &o.wake);
        while self.per_second.len() < o.per_second.len() {
            self.per_second.push(histogram());
        }
        for (a, b) in self.per_second.iter_mut().zip(&o.per_second) {
            add(a, b);
        }
        for (a, b) in self.pauses.iter_mut().zip(&o.pauses) {
            add(a, b);
        }
        for (a, b) in self.phase_rtt.iter_mut().zip(&o.phase_rtt) {
            add(a, b);
        }
        for (a, b) in self.probes.iter_mut().zip(&o.probes) {
            a.merge(b);
        }
        self.sent += o.sent;
        self.received += o.received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.connections += o.connections;
        self.errors.add(&o.errors);
        for n in &o.notes {
            self.note(n.clone());
        }
    }
}

/// New connections of one kind: how long the good ones took, how the
/// others ended.
#[derive(Debug, Clone)]
pub struct Probes {
    /// TCP connect + upgrade of those that got in.
    pub connect: Histogram<u64>,
    /// Refused, by HTTP status.
    pub refused: BTreeMap<u16, u64>,
    /// Connect failed or timed out, or the answer was not HTTP.
    pub failed: u64,
}

impl Probes {
    pub fn new() -> Self {
        Probes {
            connect: histogram(),
            refused: BTreeMap::new(),
            failed: 0,
        }
    }

    pub fn merge(&mut self, o: &Probes) {
        self.connect.add(&o.connect).expect("same histogram bounds");
        for (status, n) in &o.refused {
            *self.refused.entry(*status).or_default() += n;
        }
        self.failed += o.failed;
    }
}

impl Default for Probes {
    fn default() -> Self {
        Probes::new()
    }
}

/// Read by the progress line while threads run.
pub struct Progress {
    pub open: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
    /// Per thread: p99 of the last full second, µs.
    pub p99: Vec<AtomicU64>,
}

impl Progress {
    pub fn new(threads: usize) -> Self {
        Progress {
            open: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            p99: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub_open(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}
