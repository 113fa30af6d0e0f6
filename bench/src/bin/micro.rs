//! Microbenchmarks of the per-message work that does not touch a socket: the
//! WebSocket frame codec (server side), the tunnel codec, and one hop of a
//! message between two cores through a lock-free queue.
//!
//!     cargo run --release -p tether-bench --bin micro
//!
//! A plain harness (no criterion): each row is calibrated to ~0.2 s per
//! repetition, run 5 times, and the median is reported, with the fastest and
//! slowest repetition beside it. Allocations are counted by this binary's own
//! global allocator (mimalloc underneath), only inside the timed sections, and
//! divided by the messages: a realloc counts as one allocation of its new size.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};
use crossbeam_queue::ArrayQueue;
use tether::tunnel::{decode_frames, encode_frame, encode_message, Frame, MessageKind, Recipients};
use tether::ws::frame::encode_frame as encode_ws_frame;
use tether::ws::{Decoder, Event, OpCode};

/// mimalloc, counting every allocation and its bytes (totals, never decreased).
struct CountingTotals;

static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count(bytes: usize) {
    ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: forwards to mimalloc unchanged; only counts.
unsafe impl GlobalAlloc for CountingTotals {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        mimalloc::MiMalloc.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        mimalloc::MiMalloc.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingTotals = CountingTotals;

/// The gateway's default `client.read_buffer_bytes`: one read fills at most this.
const READ_BUFFER: usize = 16 * 1024;
const REPETITIONS: usize = 5;
const TARGET: Duration = Duration::from_millis(200);
const SIZES: [(usize, &str); 2] = [(64, "64 B"), (4096, "4 KiB")];

/// Time and allocations of the measured sections of one repetition.
#[derive(Default)]
struct Meter {
    elapsed: Duration,
    bytes: u64,
    allocs: u64,
}

impl Meter {
    #[inline]
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let (b0, a0) = (
            ALLOCATED_BYTES.load(Ordering::Relaxed),
            ALLOCATIONS.load(Ordering::Relaxed),
        );
        let start = Instant::now();
        let r = f();
        let elapsed = start.elapsed();
        self.elapsed += elapsed;
        self.bytes += ALLOCATED_BYTES.load(Ordering::Relaxed) - b0;
        self.allocs += ALLOCATIONS.load(Ordering::Relaxed) - a0;
        r
    }
}

struct Row {
    ns: f64,
    ns_min: f64,
    ns_max: f64,
    bytes: f64,
    allocs: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `run(n, meter)` handles about `n` messages (it may round up to whole
/// batches), measures what counts with `meter.time` and returns how many it
/// handled. Calibrates `n` to `TARGET`, then reports the median repetition.
/// `--count N` (with `--row`): run the row once over N messages, with no
/// calibration and no repetitions, for instruction counts under
/// `valgrind --tool=callgrind` (run two counts and take the difference).
static FIXED_COUNT: AtomicU64 = AtomicU64::new(0);

fn fixed_count(args: &[String]) -> Option<u64> {
    let i = args.iter().position(|a| a == "--count")?;
    Some(args.get(i + 1)?.parse().expect("--count N"))
}

fn bench(name: &str, mut run: impl FnMut(u64, &mut Meter) -> u64) {
    let fixed = FIXED_COUNT.load(Ordering::Relaxed);
    if fixed > 0 {
        let done = run(fixed, &mut Meter::default());
        println!("{name:<40}: {done} messages");
        return;
    }
    let mut n = 256;
    let per_msg = loop {
        let mut m = Meter::default();
        let done = run(n, &mut m);
        if m.elapsed >= TARGET / 10 {
            break m.elapsed.as_secs_f64() / done as f64;
        }
        n *= 4;
    };
    let n = ((TARGET.as_secs_f64() / per_msg) as u64).max(1);
    let (mut ns, mut bytes, mut allocs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPETITIONS {
        let mut m = Meter::default();
        let done = run(n, &mut m) as f64;
        ns.push(m.elapsed.as_nanos() as f64 / done);
        bytes.push(m.bytes as f64 / done);
        allocs.push(m.allocs as f64 / done);
    }
    let row = Row {
        ns_min: ns.iter().copied().fold(f64::INFINITY, f64::min),
        ns_max: ns.iter().copied().fold(0.0, f64::max),
        ns: median(ns),
        bytes: median(bytes),
        allocs: median(allocs),
    };
    println!(
        "{name:<40}: {:>9.1} ns/msg ({:>8.1} .. {:>8.1})  {:>8.1} B/msg  {:>5.2} allocs/msg",
        row.ns, row.ns_min, row.ns_max, row.bytes, row.allocs
    );
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// A client's masked binary frame, as many whole as fit in one read buffer.
fn whole_frames_per_read(len: usize) -> (Vec<u8>, u64) {
    let frame = tether_bench::client_frame(&payload(len));
    let k = (READ_BUFFER / frame.len()).max(1);
    (frame.repeat(k), k as u64)
}

/// Decodes every event in `buf`; counts binary messages.
#[inline]
fn decode_all(dec: &mut Decoder, buf: &mut BytesMut) -> u64 {
    let mut got = 0;
    while let Some(event) = dec.decode(buf).expect("valid frames") {
        match event {
            Event::Binary(p) => {
                black_box(&p);
                got += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

/// The pool hands the emptied read buffer out again (`BufferPool::give_back`).
fn give_back(buf: &mut BytesMut) {
    buf.clear();
    let _ = buf.try_reclaim(READ_BUFFER);
}

fn ws_decode_whole(len: usize) -> impl FnMut(u64, &mut Meter) -> u64 {
    let (read, per_read) = whole_frames_per_read(len);
    let mut dec = Decoder::new(16 << 20);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    move |n, m| {
        let mut done = 0;
        while done < n {
            buf.extend_from_slice(&read); // the read: not timed
            let got = m.time(|| decode_all(&mut dec, &mut buf));
            assert_eq!(got, per_read);
            done += got;
            give_back(&mut buf);
        }
        done
    }
}

/// A stream of frames cut into 16 KiB reads regardless of frame boundaries:
/// frames that straddle two reads take the decoder's streaming path. The
/// stream is long enough for the cuts to fall at every offset of a frame.
fn ws_decode_stream(len: usize) -> impl FnMut(u64, &mut Meter) -> u64 {
    let frame = tether_bench::client_frame(&payload(len));
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let stream = frame.repeat(READ_BUFFER / gcd(frame.len(), READ_BUFFER));
    assert_eq!(stream.len() % READ_BUFFER, 0);
    let mut dec = Decoder::new(16 << 20);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    move |n, m| {
        let mut done = 0;
        while done < n {
            for read in stream.chunks(READ_BUFFER) {
                buf.extend_from_slice(read);
                done += m.time(|| decode_all(&mut dec, &mut buf));
                if buf.is_empty() {
                    give_back(&mut buf);
                }
            }
        }
        assert!(!dec.is_mid_message());
        done
    }
}

/// Encodes as many frames of `wire_len` bytes as fit in one 16 KiB buffer
/// per timed section, then clears the buffer (as the outbox does once written).
fn encode_rows(
    wire_len: usize,
    mut encode: impl FnMut(&mut BytesMut, u64),
) -> impl FnMut(u64, &mut Meter) -> u64 {
    let per_buffer = (READ_BUFFER / wire_len).max(1) as u64;
    let mut out = BytesMut::with_capacity(READ_BUFFER);
    move |n, m| {
        let mut done = 0;
        while done < n {
            m.time(|| {
                for i in 0..per_buffer {
                    encode(&mut out, done + i);
                }
            });
            black_box(&out);
            out.clear();
            done += per_buffer;
        }
        done
    }
}

fn ws_encode(len: usize) -> impl FnMut(u64, &mut Meter) -> u64 {
    let payload = payload(len);
    encode_rows(len + 14, move |out, _| {
        encode_ws_frame(out, OpCode::Binary, black_box(&payload))
    })
}

fn tunnel_encode_message(len: usize) -> impl FnMut(u64, &mut Meter) -> u64 {
    let payload = payload(len);
    encode_rows(len + 16, move |out, index| {
        encode_message(
            out,
            black_box(1 << 33),
            index,
            MessageKind::Binary,
            black_box(&payload),
        )
    })
}

fn tunnel_encode_frame(len: usize) -> impl FnMut(u64, &mut Meter) -> u64 {
    let frame = Frame::Message {
        conn_id: 1 << 33,
        index: 1_000_000,
        kind: MessageKind::Binary,
        payload: Bytes::from(payload(len)),
    };
    encode_rows(len + 16, move |out, _| encode_frame(out, black_box(&frame)))
}

fn tunnel_decode(len: usize, per_batch: u64) -> impl FnMut(u64, &mut Meter) -> u64 {
    let payload = payload(len);
    let mut batch = BytesMut::new();
    for i in 0..per_batch {
        encode_message(
            &mut batch,
            1 << 33,
            1_000_000 + i,
            MessageKind::Binary,
            &payload,
        );
    }
    let batch = batch.freeze();
    move |n, m| {
        let mut done = 0;
        while done < n {
            let got = m.time(|| {
                let mut got = 0;
                for frame in decode_frames(batch.clone()) {
                    match frame.expect("valid frame") {
                        Frame::Message { payload, .. } => {
                            black_box(&payload);
                            got += 1;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                got
            });
            assert_eq!(got, per_batch);
            done += got;
        }
        done
    }
}

/// How an actor's message reaches `members` connections.
#[derive(Clone, Copy)]
enum Fanout {
    /// A tunnel `Message` per member, each framed for its connection.
    MessageEach,
    /// One `Broadcast`; the payload framed again for each connection (the
    /// gateway before frames were encoded once).
    BroadcastFramedEach,
    /// One `Broadcast`; its WebSocket frame encoded once and shared.
    BroadcastFramedOnce,
}

/// One actor message to `members` connections, through the tunnel: the
/// runner encodes, the gateway decodes and queues a WebSocket frame for
/// each member (copied into the member's outbox buffer, or the one shared
/// frame). Per delivered message (what a chat room's broadcast costs per
/// member, the kernel's send aside).
fn fan_out(len: usize, members: u64, how: Fanout) -> impl FnMut(u64, &mut Meter) -> u64 {
    let payload = Bytes::from(payload(len));
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut outbox = BytesMut::with_capacity(16 * 1024);
    move |n, m| {
        let mut done = 0;
        while done < n {
            let got = m.time(|| {
                out.clear();
                if matches!(how, Fanout::MessageEach) {
                    for c in 0..members {
                        encode_message(&mut out, (1 << 33) + c, 5, MessageKind::Binary, &payload);
                    }
                } else {
                    let frame = Frame::Broadcast {
                        actor_id: 7,
                        kind: MessageKind::Binary,
                        to: Recipients::All,
                        payload: payload.clone(),
                    };
                    encode_frame(&mut out, &frame);
                }
                let mut framed_each = |payload: &Bytes| {
                    outbox.clear();
                    encode_ws_frame(&mut outbox, OpCode::Binary, payload);
                    black_box(&outbox);
                };
                let mut delivered = 0;
                for frame in decode_frames(out.split().freeze()) {
                    match (frame.expect("valid frame"), how) {
                        (Frame::Message { payload, .. }, _) => {
                            framed_each(&payload);
                            delivered += 1;
                        }
                        (Frame::Broadcast { payload, .. }, Fanout::BroadcastFramedOnce) => {
                            let mut once = BytesMut::with_capacity(payload.len() + 14);
                            encode_ws_frame(&mut once, OpCode::Binary, &payload);
                            let once = once.freeze();
                            for _ in 0..members {
                                black_box(once.clone());
                                delivered += 1;
                            }
                        }
                        (Frame::Broadcast { payload, .. }, _) => {
                            for _ in 0..members {
                                framed_each(&payload.clone());
                                delivered += 1;
                            }
                        }
                        (other, _) => panic!("unexpected {other:?}"),
                    }
                }
                delivered
            });
            assert_eq!(got, members);
            done += got;
        }
        done
    }
}

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call writes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: as in `allowed_cpus`; pins the calling thread only.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "pin to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}

/// One direction of the hop: a bounded lock-free queue and the waker of the
/// side that takes from it (as in `server/handoff.rs`).
struct Inbox {
    queue: ArrayQueue<u64>,
    waker: AtomicWaker,
}

impl Inbox {
    fn new() -> Self {
        Inbox {
            queue: ArrayQueue::new(64),
            waker: AtomicWaker::new(),
        }
    }
}

#[derive(Clone, Copy)]
enum Wait {
    /// The receiver polls the queue in a loop.
    Spin,
    /// The receiver registers its waker and sleeps; the sender wakes it.
    Park,
}

struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[inline]
fn send(inbox: &Inbox, v: u64, wait: Wait) {
    inbox
        .queue
        .push(v)
        .expect("ping-pong never fills the queue");
    if let Wait::Park = wait {
        inbox.waker.wake();
    }
}

#[inline]
fn receive(inbox: &Inbox, wait: Wait, me: &Waker) -> u64 {
    loop {
        if let Some(v) = inbox.queue.pop() {
            return v;
        }
        match wait {
            Wait::Spin => std::hint::spin_loop(),
            Wait::Park => {
                inbox.waker.register(me);
                if let Some(v) = inbox.queue.pop() {
                    return v;
                }
                thread::park();
            }
        }
    }
}

/// Ping-pong between threads pinned to two CPUs: `n / 2` round trips, each
/// two one-way hops.
fn hop(cpus: (usize, usize), wait: Wait) -> impl FnMut(u64, &mut Meter) -> u64 {
    move |n, m| {
        let rounds = n.div_ceil(2);
        let (to_b, to_a) = (Inbox::new(), Inbox::new());
        let start = Barrier::new(2);
        thread::scope(|s| {
            s.spawn(|| {
                pin_to(cpus.1);
                let me = Waker::from(Arc::new(Unparker(thread::current())));
                start.wait();
                for _ in 0..rounds {
                    let v = receive(&to_b, wait, &me);
                    send(&to_a, v + 1, wait);
                }
            });
            s.spawn(|| {
                pin_to(cpus.0);
                let me = Waker::from(Arc::new(Unparker(thread::current())));
                start.wait();
                m.time(|| {
                    for i in 0..rounds {
                        send(&to_b, 2 * i, wait);
                        let back = receive(&to_a, wait, &me);
                        assert_eq!(back, 2 * i + 1);
                    }
                });
            });
        });
        2 * rounds
    }
}

type Bench = Box<dyn FnOnce(&str)>;

/// Every row: its name and how to run it.
fn rows() -> Vec<(String, Bench)> {
    let mut rows: Vec<(String, Bench)> = Vec::new();
    let mut add = |name: String, f: Bench| rows.push((name, f));
    for (len, label) in SIZES {
        add(
            format!("ws decode {label}, whole frames"),
            Box::new(move |n| bench(n, ws_decode_whole(len))),
        );
    }
    add(
        "ws decode 4 KiB, stream in 16 KiB reads".into(),
        Box::new(|n| bench(n, ws_decode_stream(4096))),
    );
    for (len, label) in SIZES {
        add(
            format!("ws encode {label}"),
            Box::new(move |n| bench(n, ws_encode(len))),
        );
    }
    for (len, label) in SIZES {
        add(
            format!("tunnel encode_message {label}"),
            Box::new(move |n| bench(n, tunnel_encode_message(len))),
        );
    }
    for (len, label) in SIZES {
        add(
            format!("tunnel encode_frame(Message) {label}"),
            Box::new(move |n| bench(n, tunnel_encode_frame(len))),
        );
    }
    add(
        "tunnel decode 64 B, 1 per batch".into(),
        Box::new(|n| bench(n, tunnel_decode(64, 1))),
    );
    for (len, label) in SIZES {
        add(
            format!("tunnel decode {label}, 16 per batch"),
            Box::new(move |n| bench(n, tunnel_decode(len, 16))),
        );
    }
    for (how, label) in [
        (Fanout::MessageEach, "a Message each"),
        (Fanout::BroadcastFramedEach, "Broadcast, framed each"),
        (Fanout::BroadcastFramedOnce, "Broadcast, framed once"),
    ] {
        add(
            format!("fan-out 64 B to 100, {label}"),
            Box::new(move |n| bench(n, fan_out(64, 100, how))),
        );
    }
    let cpus = allowed_cpus();
    if let [a, b, ..] = cpus[..] {
        add(
            format!("hop CPU {a}->{b}, spinning receiver"),
            Box::new(move |n| bench(n, hop((a, b), Wait::Spin))),
        );
        add(
            format!("hop CPU {a}->{b}, parked receiver"),
            Box::new(move |n| bench(n, hop((a, b), Wait::Park))),
        );
    } else {
        add(
            "cross-core hop".into(),
            Box::new(move |_| {
                println!("cross-core hop: skipped, this process may use only {cpus:?}")
            }),
        );
    }
    rows
}

/// `micro [FILTER] [--in-process]`: rows whose name contains FILTER, each in
/// a fresh process (`--row NAME`) unless `--in-process`. A fresh process per
/// row keeps one row's heap layout from changing the next row's result: on
/// the test VM, 4 KiB copies between buffers placed after earlier rows ran
/// took ~155 ns instead of ~58 ns (see bench/README.md).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--row") {
        let name = args.get(i + 1).expect("--row NAME");
        let (name, run) = rows()
            .into_iter()
            .find(|(n, _)| n == name)
            .expect("a known row");
        if let Some(count) = fixed_count(&args) {
            FIXED_COUNT.store(count, Ordering::Relaxed);
        }
        run(&name);
        return;
    }
    let in_process = args.iter().any(|a| a == "--in-process");
    let filter = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_default();
    println!(
        "{:<40}  {:>9}        {:>21}  {:>10}  {:>12}",
        "", "median", "(min .. max of 5)", "allocated", "allocations"
    );
    let exe = std::env::current_exe().expect("own path");
    for (name, run) in rows() {
        if !name.contains(&filter) {
            continue;
        }
        if in_process {
            run(&name);
            continue;
        }
        std::io::Write::flush(&mut std::io::stdout()).expect("flush");
        let status = std::process::Command::new(&exe)
            .args(["--row", &name])
            .status()
            .expect("run a row in a child process");
        assert!(status.success(), "row {name:?}: {status}");
    }
}
