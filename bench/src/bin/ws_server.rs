//! A plain WebSocket server: the backend of the proxy comparison (direct,
//! nginx and HAProxy in front of it). Thread-per-core on monoio, one
//! SO_REUSEPORT listener per thread.
//!
//! Any path is accepted. A path starting with `/actors/chat/` is a chat lobby:
//! every text or binary message is sent to every connection on the same path
//! (the sender included), all of them seeing the same order. Any other path
//! echoes each message to its sender. Pings get pongs, a close gets a close;
//! fragmented messages are refused (close 1003), messages up to 16 MiB pass
//! (text is not checked for valid UTF-8).
//!
//! With `--threads N > 1` a lobby still spans all threads: after the
//! handshake, a chat connection is handed (as a file descriptor) to the thread
//! that owns its lobby, chosen by a hash of the path.
//!
//!     cargo run --release -p tether-bench --bin ws_server -- --listen 127.0.0.1:9100 --threads 1

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::{TcpListener, TcpStream};
use tether::http::response::{write_response, write_switching_protocols};
use tether::http::{HeadReader, Status};
use tether::ws::close::encode_close;
use tether::ws::frame::{apply_mask, encode_frame, parse_header};
use tether::ws::handshake::validate_upgrade;
use tether::ws::{CloseCode, OpCode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest message accepted; larger ones are refused with close 1009.
const MAX_PAYLOAD: u64 = 16 << 20;
/// Read buffer a connection starts with (and returns to after a big message).
const READ_ROOM: usize = 4096;
/// Stop reading from a client while this much is queued for it.
const HIGH_WATER: usize = 4 << 20;
/// A connection with this much queued (a chat member that does not read) is dropped.
const MAX_QUEUED: usize = 64 << 20;
/// Buffers larger than this are freed rather than kept for reuse.
const KEEP_CAPACITY: usize = 64 << 10;
const CHAT_PREFIX: &str = "/actors/chat/";

#[derive(Parser)]
#[command(about = "Plain WebSocket echo and chat server for proxy comparisons")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Threads, each with its own runtime and SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    let threads = args.threads.max(1);
    let fd_limit = raise_fd_limit();
    // The legacy (epoll) driver needs non-blocking sockets; io_uring blocking ones.
    let uring = monoio::utils::detect_uring();
    let listeners =
        match tether::server::listener::bind_shared(args.listen, threads, !uring, "ws_server") {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ws_server: {e}");
                std::process::exit(1);
            }
        };
    let addr = listeners[0].local_addr().expect("bound address");
    let inboxes: Arc<[Inbox]> = (0..threads).map(|_| Inbox::default()).collect();
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(id, listener)| {
            let inboxes = inboxes.clone();
            std::thread::Builder::new()
                .name(format!("ws-{id}"))
                .spawn(move || run_thread(id, listener, inboxes))
                .expect("spawn thread")
        })
        .collect();
    println!(
        "ws_server listening on {addr} ({threads} thread{}, {}, {fd_limit} descriptors)",
        if threads == 1 { "" } else { "s" },
        if uring { "io_uring" } else { "epoll" }
    );
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
}

/// Raises the descriptor limit as far as allowed (past the hard limit when
/// privileged): every proxied client is a connection here too. Returns it.
fn raise_fd_limit() -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let want = libc::rlimit {
            rlim_cur: nr_open,
            rlim_max: nr_open,
        };
        if nr_open > lim.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return nr_open;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn run_thread(id: usize, listener: std::net::TcpListener, inboxes: Arc<[Inbox]>) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("listener into monoio");
        let worker = Rc::new(Worker {
            id,
            inboxes,
            lobbies: RefCell::default(),
            scratch: RefCell::default(),
        });
        if worker.inboxes.len() > 1 {
            monoio::spawn(receive_handoffs(worker.clone()));
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(handshake(stream, worker.clone()));
                }
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to close.
                    eprintln!("ws_server: accept: {e}");
                    monoio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
}

/// One thread's state.
struct Worker {
    id: usize,
    inboxes: Arc<[Inbox]>,
    lobbies: RefCell<HashMap<String, Rc<Lobby>>>,
    /// A broadcast frame, encoded once for all members.
    scratch: RefCell<BytesMut>,
}

impl Worker {
    fn join(&self, key: String, member: &Rc<Outbox>) -> Rc<Lobby> {
        let lobby = self
            .lobbies
            .borrow_mut()
            .entry(key)
            .or_insert_with_key(|key| {
                Rc::new(Lobby {
                    key: key.clone(),
                    members: RefCell::default(),
                })
            })
            .clone();
        lobby.members.borrow_mut().push(member.clone());
        lobby
    }

    fn leave(&self, lobby: &Lobby, member: &Rc<Outbox>) {
        let mut members = lobby.members.borrow_mut();
        if let Some(i) = members.iter().position(|m| Rc::ptr_eq(m, member)) {
            members.swap_remove(i);
        }
        if members.is_empty() {
            self.lobbies.borrow_mut().remove(&lobby.key);
        }
    }

    /// The thread that owns the lobby at `key`.
    fn home_of(&self, key: &str) -> usize {
        // DefaultHasher with its fixed keys: every thread agrees.
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        (hash % self.inboxes.len() as u64) as usize
    }
}

struct Lobby {
    key: String,
    members: RefCell<Vec<Rc<Outbox>>>,
}

impl Lobby {
    fn broadcast(&self, opcode: OpCode, payload: &[u8], scratch: &RefCell<BytesMut>) {
        let mut frame = scratch.borrow_mut();
        frame.clear();
        encode_frame(&mut frame, opcode, payload);
        for m in self.members.borrow().iter() {
            m.push(|out| out.extend_from_slice(&frame));
        }
        if frame.capacity() > KEEP_CAPACITY {
            *frame = BytesMut::new();
        }
    }
}

/// Bytes queued for one connection, drained by its writer task.
struct Outbox {
    fd: RawFd,
    state: RefCell<OutState>,
}

#[derive(Default)]
struct OutState {
    queued: BytesMut,
    /// No more frames will be queued; the writer exits once it flushed.
    closing: bool,
    /// The connection is being torn down; queued bytes are dropped.
    dead: bool,
    writer: Option<Waker>,
    reader: Option<Waker>,
}

impl Outbox {
    fn push(&self, encode: impl FnOnce(&mut BytesMut)) {
        let mut s = self.state.borrow_mut();
        if s.dead || s.closing {
            return;
        }
        if s.queued.len() > MAX_QUEUED {
            drop(s);
            self.kill();
            return;
        }
        encode(&mut s.queued);
        if let Some(w) = s.writer.take() {
            w.wake();
        }
    }

    fn push_frame(&self, opcode: OpCode, payload: &[u8]) {
        self.push(|out| encode_frame(out, opcode, payload));
    }

    fn push_close(&self, code: CloseCode, reason: &str) {
        self.push(|out| encode_close(out, code, reason));
    }

    /// Lets the writer flush what is queued and end.
    fn close(&self) {
        let mut s = self.state.borrow_mut();
        s.closing = true;
        if let Some(w) = s.writer.take() {
            w.wake();
        }
    }

    /// Drops the connection: both its reader and writer see the socket shut.
    fn kill(&self) {
        let mut s = self.state.borrow_mut();
        if s.dead {
            return;
        }
        s.dead = true;
        s.queued = BytesMut::new();
        // SAFETY: the descriptor stays open while either half of the stream
        // lives, and both outlive every call that can reach here.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        for w in [s.writer.take(), s.reader.take()].into_iter().flatten() {
            w.wake();
        }
    }

    /// Waits until the writer has taken the queue below `HIGH_WATER`.
    async fn drained(&self) {
        poll_fn(|cx| {
            let mut s = self.state.borrow_mut();
            if s.dead || s.queued.len() < HIGH_WATER {
                Poll::Ready(())
            } else {
                s.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

async fn handshake(mut stream: TcpStream, worker: Rc<Worker>) {
    let mut buf = BytesMut::with_capacity(READ_ROOM);
    let mut reader = HeadReader::new(8192, 64);
    let (head, head_len) = loop {
        match reader.poll(&buf) {
            Ok(Some(done)) => break done,
            Ok(None) => {}
            Err(e) => return reject(stream, e.status(), &[], e.reason()).await,
        }
        let n;
        (n, buf) = read_more(&mut stream, buf, READ_ROOM).await;
        if n == 0 {
            return;
        }
    };
    if head.method != "GET" {
        return reject(stream, Status::METHOD_NOT_ALLOWED, &[], "GET only").await;
    }
    let upgrade = match validate_upgrade(&head) {
        Ok(u) => u,
        Err(r) => return reject(stream, r.status, r.headers(), r.reason).await,
    };
    let mut out = BytesMut::with_capacity(256);
    write_switching_protocols(
        &mut out,
        &upgrade.accept_key,
        upgrade.protocols.first().map(String::as_str),
    );
    if stream.write_all(out).await.0.is_err() {
        return;
    }
    buf.advance(head_len);
    let path = head.target.split('?').next().unwrap_or_default();
    let lobby = path.starts_with(CHAT_PREFIX).then(|| path.to_owned());
    if let Some(key) = &lobby {
        let home = worker.home_of(key);
        if home != worker.id {
            if let Some(fd) = detach_fd(&stream) {
                drop(stream);
                worker.inboxes[home].send(Handoff {
                    fd,
                    leftover: buf,
                    lobby: lobby.unwrap_or_default(),
                });
            }
            return;
        }
    }
    serve(stream, buf, lobby, worker).await;
}

async fn reject(mut stream: TcpStream, status: Status, headers: &[(&str, &str)], reason: &str) {
    let mut out = BytesMut::with_capacity(256);
    write_response(&mut out, status, headers, reason);
    let _ = stream.write_all(out).await;
}

/// Reads into the spare capacity of `buf`, after making at least `room`
/// bytes of it. monoio would read a whole `BytesMut` from offset 0,
/// overwriting what it holds, so the read goes into a slice of the tail.
/// Returns 0 on end of stream or error.
async fn read_more<R: AsyncReadRent>(
    r: &mut R,
    mut buf: BytesMut,
    room: usize,
) -> (usize, BytesMut) {
    if buf.capacity() - buf.len() < room {
        buf.reserve(room);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = r.read(buf.slice_mut(len..cap)).await;
    (res.unwrap_or(0), slice.into_inner())
}

async fn serve(stream: TcpStream, buf: BytesMut, lobby: Option<String>, worker: Rc<Worker>) {
    let me = Rc::new(Outbox {
        fd: stream.as_raw_fd(),
        state: RefCell::default(),
    });
    let (mut rd, wr) = stream.into_split();
    monoio::spawn(write_loop(wr, me.clone()));
    let lobby = lobby.map(|key| worker.join(key, &me));
    read_loop(&mut rd, buf, &me, lobby.as_deref(), &worker).await;
    if let Some(lobby) = &lobby {
        worker.leave(lobby, &me);
    }
    me.close();
}

/// Reads frames and answers them until the client closes, fails or errs.
async fn read_loop(
    rd: &mut OwnedReadHalf<TcpStream>,
    mut buf: BytesMut,
    me: &Outbox,
    lobby: Option<&Lobby>,
    worker: &Worker,
) {
    loop {
        // Every complete frame in the buffer.
        let mut room = READ_ROOM;
        loop {
            let h = match parse_header(&buf) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return me.push_close(e.code, e.reason),
            };
            if h.payload_len > MAX_PAYLOAD {
                return me.push_close(CloseCode::TOO_BIG, "message too big");
            }
            if h.opcode.is_control() && (h.payload_len > 125 || !h.fin) {
                return me.push_close(CloseCode::PROTOCOL, "bad control frame");
            }
            let Some(mask) = h.mask else {
                return me.push_close(CloseCode::PROTOCOL, "client frames must be masked");
            };
            let total = h.header_len + h.payload_len as usize;
            if buf.len() < total {
                room = room.max(total - buf.len());
                break;
            }
            if !h.fin || h.opcode == OpCode::Continuation {
                return me.push_close(CloseCode(1003), "fragmented messages are not supported");
            }
            let payload = &mut buf[h.header_len..total];
            apply_mask(payload, mask, 0);
            match h.opcode {
                OpCode::Text | OpCode::Binary => match lobby {
                    Some(l) => l.broadcast(h.opcode, payload, &worker.scratch),
                    None => me.push_frame(h.opcode, payload),
                },
                OpCode::Ping => me.push_frame(OpCode::Pong, payload),
                OpCode::Close => {
                    // Answer with the client's code (or none), then hang up.
                    let code = if payload.len() >= 2 {
                        &payload[..2]
                    } else {
                        &[]
                    };
                    return me.push_frame(OpCode::Close, code);
                }
                OpCode::Pong | OpCode::Continuation => {}
            }
            buf.advance(total);
        }
        me.drained().await;
        if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
            buf = BytesMut::with_capacity(READ_ROOM);
        }
        let n;
        (n, buf) = read_more(rd, buf, room).await;
        if n == 0 {
            return;
        }
    }
}

/// Writes whatever is queued, in batches, until the connection closes.
async fn write_loop(mut wr: OwnedWriteHalf<TcpStream>, me: Rc<Outbox>) {
    let mut spare = BytesMut::new();
    loop {
        let batch = poll_fn(|cx| {
            let mut s = me.state.borrow_mut();
            if s.dead {
                return Poll::Ready(None);
            }
            if !s.queued.is_empty() {
                let batch = std::mem::replace(&mut s.queued, std::mem::take(&mut spare));
                if let Some(r) = s.reader.take() {
                    r.wake();
                }
                return Poll::Ready(Some(batch));
            }
            if s.closing {
                return Poll::Ready(None);
            }
            s.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(batch) = batch else { break };
        let (r, mut batch) = wr.write_all(batch).await;
        if r.is_err() {
            me.kill();
            break;
        }
        batch.clear();
        if batch.capacity() <= KEEP_CAPACITY {
            spare = batch;
        }
    }
}

/// A chat connection moving to the thread that owns its lobby.
struct Handoff {
    fd: OwnedFd,
    leftover: BytesMut,
    lobby: String,
}

#[derive(Default)]
struct Inbox {
    state: Mutex<(Vec<Handoff>, Option<Waker>)>,
}

impl Inbox {
    fn send(&self, handoff: Handoff) {
        let waker = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.0.push(handoff);
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

async fn receive_handoffs(worker: Rc<Worker>) {
    loop {
        let batch = poll_fn(|cx| {
            let mut s = worker.inboxes[worker.id]
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if s.0.is_empty() {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut s.0))
            }
        })
        .await;
        for h in batch {
            if let Ok(stream) = TcpStream::from_std(std::net::TcpStream::from(h.fd)) {
                let _ = stream.set_nodelay(true);
                monoio::spawn(serve(stream, h.leftover, Some(h.lobby), worker.clone()));
            }
        }
    }
}

/// A duplicate of the socket's descriptor, to move it to another thread
/// (monoio sockets cannot cross threads); the original closes with `stream`.
fn detach_fd(stream: &TcpStream) -> Option<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold; the result is checked.
    let raw = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    // SAFETY: `raw` is a fresh descriptor we own.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream as StdStream;
    use tether_bench::{client_frame, read_frame};

    /// Like `tether_bench::ws_connect_with`, but retrying interrupted reads:
    /// with the server's io_uring runtimes in the same process, a blocking
    /// read on a test thread now and then fails with EINTR.
    fn ws_connect_with(addr: SocketAddr, path: &str, first_frames: &[u8]) -> StdStream {
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(first_frames);
        s.write_all(&req).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        s
    }

    fn ws_connect(addr: SocketAddr, path: &str) -> StdStream {
        ws_connect_with(addr, path, &[])
    }

    fn start(threads: usize) -> SocketAddr {
        let uring = monoio::utils::detect_uring();
        let listeners = tether::server::listener::bind_shared(
            "127.0.0.1:0".parse().unwrap(),
            threads,
            !uring,
            "test",
        )
        .unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let inboxes: Arc<[Inbox]> = (0..threads).map(|_| Inbox::default()).collect();
        for (id, l) in listeners.into_iter().enumerate() {
            let inboxes = inboxes.clone();
            std::thread::spawn(move || run_thread(id, l, inboxes));
        }
        addr
    }

    #[test]
    fn echoes_and_broadcasts_across_threads() {
        let addr = start(2);
        let mut echo = ws_connect(addr, "/actors/echo/a");
        let big = vec![7u8; 1 << 20];
        for payload in [&b"hello"[..], &big] {
            echo.write_all(&client_frame(payload)).unwrap();
            assert_eq!(read_frame(&mut echo), payload);
        }
        // A frame sent right behind the request head is not lost, also when
        // the connection moves to its lobby's thread.
        for path in ["/actors/echo/b", "/actors/chat/p1", "/actors/chat/p2"] {
            let mut s = ws_connect_with(addr, path, &client_frame(b"early"));
            assert_eq!(read_frame(&mut s), b"early", "{path}");
        }
        // Enough members that some are accepted on each thread.
        let mut members: Vec<_> = (0..8)
            .map(|_| ws_connect(addr, "/actors/chat/room?x=1"))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        members[3].write_all(&client_frame(b"one")).unwrap();
        members[5].write_all(&client_frame(b"two")).unwrap();
        let first: Vec<_> = members
            .iter_mut()
            .map(|m| (read_frame(m), read_frame(m)))
            .collect();
        assert!(first.iter().all(|f| *f == first[0]), "{first:?}");
    }
}
