//! HTTP request load for the proxy comparison: `clients` kept-alive
//! connections, each sending `GET path` and waiting for the answer before
//! the next (closed loop), spread over a few monoio threads. Latency is
//! per request (send to whole answer); throughput counts answers in the
//! measured window after a warm-up. The measured process's CPU is read
//! from /proc around the run.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tether_loadtest::procstat::tree_cpu_seconds;

#[derive(Clone)]
pub struct HttpLoad {
    pub addr: SocketAddr,
    /// `{i}` in it is replaced by the connection's number modulo `actors`.
    pub path: String,
    pub actors: usize,
    pub clients: usize,
    pub threads: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub measured: Option<u32>,
}

pub struct HttpResult {
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU-µs of the measured process per request (whole run).
    pub cpu_us_per_request: Option<f64>,
    pub errors: u64,
}

pub fn run_http(load: &HttpLoad) -> Result<HttpResult, String> {
    let threads = load.threads.clamp(1, load.clients.max(1));
    let cpu0 = load.measured.and_then(tree_cpu_seconds);
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (load, answered, stop) = (load.clone(), answered.clone(), stop.clone());
            std::thread::spawn(move || run_thread(&load, t, threads, answered, stop))
        })
        .collect();
    std::thread::sleep(load.warmup + load.duration);
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut measured, mut errors) = (0, 0);
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a client thread panicked".to_owned())?;
        hist.add(&r.hist).expect("histogram");
        measured += r.measured;
        errors += r.errors;
    }
    let cpu = match (load.measured.and_then(tree_cpu_seconds), cpu0) {
        (Some(c1), Some(c0)) => {
            Some((c1 - c0) * 1e6 / answered.load(Ordering::Relaxed).max(1) as f64)
        }
        _ => None,
    };
    Ok(HttpResult {
        per_second: measured as f64 / load.duration.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        cpu_us_per_request: cpu,
        errors,
    })
}

struct ThreadResult {
    hist: Histogram<u64>,
    measured: u64,
    errors: u64,
}

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    measured: u64,
    errors: u64,
}

fn run_thread(
    load: &HttpLoad,
    t: usize,
    threads: usize,
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> ThreadResult {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    let tally = Rc::new(std::cell::RefCell::new(Tally {
        hist: Some(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")),
        ..Tally::default()
    }));
    let start = Instant::now();
    let from = start + load.warmup;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in (t..load.clients).step_by(threads) {
            let path = load
                .path
                .replace("{i}", &(c % load.actors.max(1)).to_string());
            let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
            let (addr, tally) = (load.addr, tally.clone());
            let (stop, answered) = (stop.clone(), answered.clone());
            tasks.push(monoio::spawn(client(
                addr, request, from, stop, answered, tally,
            )));
        }
        for task in tasks {
            task.await;
        }
    });
    let mut tally = tally.borrow_mut();
    ThreadResult {
        hist: tally.hist.take().expect("histogram"),
        measured: tally.measured,
        errors: tally.errors,
    }
}

/// One connection's closed loop, until `stop`.
async fn client(
    addr: SocketAddr,
    request: Vec<u8>,
    from: Instant,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    tally: Rc<std::cell::RefCell<Tally>>,
) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        tally.borrow_mut().errors += 1;
        return;
    };
    let _ = s.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(4096);
    let mut req = request;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let (r, back) = s.write_all(req).await;
        req = back;
        if r.is_err() {
            tally.borrow_mut().errors += 1;
            return;
        }
        match read_answer(&mut s, &mut buf).await {
            Some(200) => {}
            _ => {
                tally.borrow_mut().errors += 1;
                return;
            }
        }
        answered.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if now >= from {
            let mut t = tally.borrow_mut();
            t.measured += 1;
            let us = now.duration_since(sent).as_micros().max(1) as u64;
            let _ = t.hist.as_mut().map(|h| h.record(us));
        }
    }
}

/// Reads one whole answer (its head and a Content-Length body); its status.
async fn read_answer(s: &mut TcpStream, buf: &mut BytesMut) -> Option<u16> {
    loop {
        if let Some((status, total)) = parse(buf) {
            if buf.len() >= total {
                let _ = buf.split_to(total);
                return Some(status);
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(4096);
        }
        let owned = std::mem::take(buf);
        let (len, cap) = (owned.len(), owned.capacity());
        let (r, slice) = s.read(owned.slice_mut(len..cap)).await;
        *buf = slice.into_inner();
        if !matches!(r, Ok(n) if n > 0) {
            return None;
        }
    }
}

/// The status and the whole answer's length, once its head is in `buf`.
fn parse(buf: &[u8]) -> Option<(u16, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    Some((status, end + length))
}
