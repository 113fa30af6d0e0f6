//! Steady load with sequence checking: many clients, each sending numbered
//! messages to an echo actor and checking that every reply comes back
//! exactly once and in order, on the same socket, however the actors move.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

impl Load {
    /// `clients` sockets over `actors` echo actors (`/actors/echo/load-{i}`),
    /// driven by `threads` threads, each sending in rounds.
    pub fn start(addr: SocketAddr, clients: usize, actors: usize, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let per_thread = clients.div_ceil(threads);
        let threads = (0..threads)
            .map(|t| {
                let stop = stop.clone();
                let ids: Vec<usize> =
                    (t * per_thread..((t + 1) * per_thread).min(clients)).collect();
                std::thread::spawn(move || drive(addr, ids, actors, stop))
            })
            .collect();
        Load { stop, threads }
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

fn drive(addr: SocketAddr, ids: Vec<usize>, actors: usize, stop: Arc<AtomicBool>) -> LoadReport {
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
                Some(got) if got == expected => report.messages += 1,
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
    }
    // Nothing may trail behind the last reply (a duplicate would).
    for (i, s) in sockets.iter_mut() {
        s.stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        if let Some(extra) = next_text(s) {
            report
                .sequence_errors
                .push(format!("client {i}: unexpected trailing {extra}"));
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
