//! Steady load with sequence checking: many clients, each sending numbered
//! messages to an echo actor and checking that every reply comes back
//! exactly once and in order, on the same socket, however the actors move.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::RawWs;

const TEXT: u8 = 1;

#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub clients: usize,
    pub messages: u64,
    pub disconnects: u64,
    /// Replies that were not the next number expected (lost, duplicated or reordered).
    pub sequence_errors: Vec<String>,
    /// The longest wait of any client for one reply.
    pub max_pause: Duration,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadReport>>,
    /// Rounds completed by each thread (every one of its clients answered).
    rounds: Arc<Vec<AtomicU64>>,
    /// Replies received so far, all threads together.
    messages: Arc<AtomicU64>,
}

impl Load {
    /// `clients` sockets over `actors` echo actors (`/actors/echo/load-{i}`),
    /// driven by `threads` threads, each sending in rounds.
    pub fn start(addr: SocketAddr, clients: usize, actors: usize, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let per_thread = clients.div_ceil(threads);
        let rounds: Arc<Vec<AtomicU64>> =
            Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
        let messages = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let progress = Progress {
                    stop: stop.clone(),
                    rounds: rounds.clone(),
                    thread: t,
                    messages: messages.clone(),
                };
                let ids: Vec<usize> =
                    (t * per_thread..((t + 1) * per_thread).min(clients)).collect();
                std::thread::spawn(move || drive(addr, ids, actors, progress))
            })
            .collect();
        Load {
            stop,
            threads,
            rounds,
            messages,
        }
    }

    /// Rounds completed by the slowest thread: every client has had this
    /// many messages answered (their sockets are all connected from 1 on).
    pub fn rounds(&self) -> u64 {
        self.rounds
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    /// Replies received so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Acquire)
    }

    /// A thread has stopped early (a client was disconnected; `finish`
    /// reports it): waiting for more progress is pointless.
    pub fn broken(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Waits until every client has had `n` more messages answered (from
    /// 2 on, at least one whole round was sent after this call), or the
    /// load broke.
    #[track_caller]
    pub fn wait_rounds(&self, n: u64) {
        let from = self.rounds();
        super::wait_for(&format!("{n} more rounds of load after {from}"), || {
            self.rounds() >= from + n || self.broken()
        });
    }

    /// Waits until more than `n` replies have been received, or the load broke.
    #[track_caller]
    pub fn wait_messages(&self, n: u64) {
        super::wait_for(&format!("more than {n} replies"), || {
            self.messages() > n || self.broken()
        });
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Release);
        let mut total = LoadReport::default();
        for t in self.threads {
            let r = t.join().expect("load thread");
            total.clients += r.clients;
            total.messages += r.messages;
            total.disconnects += r.disconnects;
            total.sequence_errors.extend(r.sequence_errors);
            total.max_pause = total.max_pause.max(r.max_pause);
        }
        total
    }
}

struct Progress {
    stop: Arc<AtomicBool>,
    rounds: Arc<Vec<AtomicU64>>,
    thread: usize,
    messages: Arc<AtomicU64>,
}

fn drive(addr: SocketAddr, ids: Vec<usize>, actors: usize, progress: Progress) -> LoadReport {
    let Progress {
        stop,
        rounds,
        thread,
        messages,
    } = progress;
    let mut sockets: Vec<(usize, RawWs)> = ids
        .iter()
        .map(|&i| {
            (
                i,
                RawWs::connect(addr, &format!("/actors/echo/load-{}", i % actors)),
            )
        })
        .collect();
    for (_, s) in &sockets {
        s.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }
    let mut report = LoadReport {
        clients: sockets.len(),
        ..Default::default()
    };
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Acquire) && report.disconnects == 0 {
        seq += 1;
        let sent_at = Instant::now();
        for (i, s) in sockets.iter_mut() {
            s.send(true, TEXT, format!("{i}:{seq}").as_bytes());
        }
        for (i, s) in sockets.iter_mut() {
            let expected = format!("{i}:{seq}");
            match next_text(s) {
                Some(got) if got == expected => {
                    report.messages += 1;
                    messages.fetch_add(1, Ordering::Release);
                }
                Some(got) => report
                    .sequence_errors
                    .push(format!("client {i}: expected {expected}, got {got}")),
                None => {
                    report.disconnects += 1;
                    report
                        .sequence_errors
                        .push(format!("client {i}: disconnected waiting for {expected}"));
                }
            }
        }
        report.max_pause = report.max_pause.max(sent_at.elapsed());
        rounds[thread].fetch_add(1, Ordering::Release);
    }
    // Nothing may trail behind the last reply (a duplicate would): one more
    // message each, whose answer must be the very next one. (Waiting a while
    // for silence instead would miss a duplicate that comes late.)
    if report.disconnects == 0 {
        for (i, s) in sockets.iter_mut() {
            s.send(true, TEXT, format!("{i}:end").as_bytes());
        }
        for (i, s) in sockets.iter_mut() {
            let end = format!("{i}:end");
            match next_text(s) {
                Some(got) if got == end => {}
                Some(got) => report
                    .sequence_errors
                    .push(format!("client {i}: unexpected trailing {got}")),
                None => {
                    report.disconnects += 1;
                    report
                        .sequence_errors
                        .push(format!("client {i}: disconnected waiting for {end}"));
                }
            }
        }
    }
    report
}

/// The next text message (answering pings), or `None` on close or timeout.
fn next_text(s: &mut RawWs) -> Option<String> {
    loop {
        let f = s.recv()?;
        match f.opcode {
            1 => return Some(String::from_utf8_lossy(&f.payload).into_owned()),
            9 => s.send(true, 10, &f.payload),
            _ => return None,
        }
    }
}
