//! Socket operations that are safe to abandon.
//!
//! monoio loses bytes when an in-flight read is dropped (the kernel already
//! copied them into a buffer nobody will look at). So no read is ever raced
//! against a timer: we race *readiness* (which consumes nothing) and read only
//! once data is there. Writes may be abandoned only when the connection is
//! being given up anyway.
//!
//! Every function here takes a [`Stream`] and moves plaintext: over TLS,
//! reads decrypt (and answer the handshake) and writes encrypt.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::pool::BufferPool;
use super::stream::{Stream, TlsConn};
use crate::http::proxy_header::{parse_proxy_header, ProxyError, ProxyHeader};

#[derive(Debug)]
pub(crate) enum ReadOutcome {
    Data(usize),
    Eof,
    TimedOut,
    Failed(#[allow(dead_code)] io::Error), // read through Debug in logs
}

/// Waits until `stream` is readable or `deadline` passes, without holding a buffer.
pub(crate) async fn wait_readable(stream: &Stream, deadline: Instant) -> Result<(), ReadOutcome> {
    monoio::select! {
        r = stream.readable() => r.map_err(ReadOutcome::Failed),
        _ = monoio::time::sleep_until(deadline.into()) => Err(ReadOutcome::TimedOut),
    }
}

/// Reads plaintext into the spare capacity of `buf` (made to hold at
/// least `room` free bytes by `pool`, which lends a buffer if `buf` has
/// none). Call when the stream is known to be readable.
/// Over TLS, `Data(n)` may be `Data(0)`: the bytes read were handshake or
/// an incomplete record.
/// Over TLS the ciphertext is read into a buffer lent by `pool` (given
/// back unless an incomplete record stays in it).
pub(crate) async fn read_into(
    stream: &mut Stream,
    mut buf: BytesMut,
    room: usize,
    pool: &BufferPool,
) -> (ReadOutcome, BytesMut) {
    pool.make_room(&mut buf, room);
    match stream.tls.as_mut() {
        None => read_tcp(&mut stream.tcp, buf, room).await,
        Some(tls) => read_tls(&mut stream.tcp, tls, buf, room, pool).await,
    }
}

/// How long the gateway's own TLS handshake replies may take to write.
const TLS_REPLY_STALL: Duration = Duration::from_secs(10);

/// Reads ciphertext, decrypts what is complete into `buf`, and writes what
/// the handshake answers.
async fn read_tls(
    tcp: &mut TcpStream,
    tls: &mut TlsConn,
    mut buf: BytesMut,
    room: usize,
    pool: &BufferPool,
) -> (ReadOutcome, BytesMut) {
    if tls.peer_closed {
        return (ReadOutcome::Eof, buf);
    }
    let mut incoming = std::mem::take(&mut tls.incoming);
    let mut incoming = if std::mem::take(&mut tls.unread) {
        incoming // read ahead: process it before reading more
    } else {
        pool.make_room(&mut incoming, room);
        match read_tcp(tcp, incoming, room).await {
            (ReadOutcome::Data(_), incoming) => incoming,
            (outcome, incoming) => {
                pool.give_back(incoming);
                return (outcome, buf);
            }
        }
    };
    // Plaintext is never longer than the ciphertext it comes from.
    pool.make_room(&mut buf, incoming.len());
    let mut reply = BytesMut::new();
    let result = tls.server.read_tls(&mut incoming, &mut buf, &mut reply);
    let stall = || monoio::time::sleep(TLS_REPLY_STALL);
    if !reply.is_empty() && write_tcp(tcp, reply, stall).await.is_err() {
        return (ReadOutcome::Eof, buf);
    }
    // Nothing is kept while no record is incomplete.
    if incoming.is_empty() {
        pool.give_back(incoming);
    } else {
        tls.incoming = incoming;
    }
    match result {
        Ok(p) if p.peer_closed && p.plaintext > 0 => {
            // Deliver what came with the close_notify; the end comes next.
            tls.peer_closed = true;
            tls.unread = true;
            (ReadOutcome::Data(p.plaintext), buf)
        }
        Ok(p) if p.peer_closed => (ReadOutcome::Eof, buf),
        Ok(p) => (ReadOutcome::Data(p.plaintext), buf),
        Err(e) => {
            let error = io::Error::new(io::ErrorKind::InvalidData, e.reason());
            (ReadOutcome::Failed(error), buf)
        }
    }
}

async fn read_tcp(
    stream: &mut TcpStream,
    mut buf: BytesMut,
    room: usize,
) -> (ReadOutcome, BytesMut) {
    if buf.capacity() - buf.len() < room {
        buf.reserve(room);
    }
    // monoio reads into a BytesMut from offset 0, overwriting what it holds;
    // reading into the spare tail appends instead.
    let (len, cap) = (buf.len(), buf.capacity());
    let (r, slice) = stream.read(buf.slice_mut(len..cap)).await;
    let buf = slice.into_inner();
    let outcome = match r {
        Ok(0) => ReadOutcome::Eof,
        Ok(n) => ReadOutcome::Data(n),
        Err(e) => ReadOutcome::Failed(e),
    };
    (outcome, buf)
}

/// `wait_readable` then `read_into`: a read with a deadline that loses nothing.
pub(crate) async fn read_before(
    stream: &mut Stream,
    buf: BytesMut,
    room: usize,
    deadline: Instant,
    pool: &BufferPool,
) -> (ReadOutcome, BytesMut) {
    if stream.has_unread_input() {
        return read_into(stream, buf, room, pool).await;
    }
    if let Err(outcome) = wait_readable(stream, deadline).await {
        return (outcome, buf);
    }
    read_into(stream, buf, room, pool).await
}

/// Writes all of `buf` and hands it back. Fails with `TimedOut` if one write
/// makes no progress for `stall`: a client that stopped reading must not hold
/// us forever. On failure the buffer is gone with the connection.
pub(crate) async fn write_all_or_stall<T>(
    stream: &mut Stream,
    buf: T,
    stall: Duration,
) -> io::Result<T>
where
    T: IoBuf + Buf + 'static,
{
    write_all_unless(stream, buf, || monoio::time::sleep(stall)).await
}

/// Writes all of `buf`, racing each write against a fresh `stop()` future;
/// fails with `TimedOut` if `stop` wins. On failure the buffer is gone.
/// Over TLS, `buf` is encrypted into a buffer that lives while it is written.
pub(crate) async fn write_all_unless<T, S, F>(stream: &mut Stream, buf: T, stop: S) -> io::Result<T>
where
    T: IoBuf + Buf + 'static,
    S: FnMut() -> F,
    F: Future<Output = ()>,
{
    if stream.tls.is_none() {
        return write_tcp(&mut stream.tcp, buf, stop).await;
    }
    write_sealed(stream, buf, stop).await
}

/// Over TLS: encrypts all of `buf` into a buffer that lives while it is
/// written, writes that, and hands `buf` back (consumed). On plain TCP it
/// writes nothing and fails.
pub(crate) async fn write_sealed<B, S, F>(stream: &mut Stream, mut buf: B, stop: S) -> io::Result<B>
where
    B: Buf,
    S: FnMut() -> F,
    F: Future<Output = ()>,
{
    let Some(tls) = stream.tls.as_mut() else {
        return Err(io::Error::other("sealing for a stream without TLS"));
    };
    let mut sealed = BytesMut::new();
    while buf.has_remaining() {
        let chunk = buf.chunk();
        let len = chunk.len();
        tls.server
            .write_plain(chunk, &mut sealed)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.reason()))?;
        buf.advance(len);
    }
    write_tcp(&mut stream.tcp, sealed, stop).await?;
    Ok(buf)
}

async fn write_tcp<T, S, F>(stream: &mut TcpStream, mut buf: T, mut stop: S) -> io::Result<T>
where
    T: IoBuf + Buf + 'static,
    S: FnMut() -> F,
    F: Future<Output = ()>,
{
    while buf.has_remaining() {
        let (r, b) = monoio::select! {
            done = stream.write(buf) => done,
            _ = stop() => return Err(io::ErrorKind::TimedOut.into()),
        };
        buf = b;
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.advance(n),
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

/// Bytes read per attempt while discarding a closing peer's input.
const LINGER_READ_BYTES: usize = 4096;
/// A peer that sends more than this after our last word is cut off.
const LINGER_DISCARD_BYTES: usize = 1 << 20;

/// Ends a connection politely after we have said our last word: stop
/// sending, then discard what the peer still sends until it closes or
/// `linger` passes. Closing with unread input makes the kernel send RST,
/// which can destroy our final response before the peer reads it.
pub(crate) async fn linger_close(mut stream: Stream, scratch: BytesMut, linger: Duration) {
    if let Some(tls) = stream.tls.as_mut() {
        let mut alert = BytesMut::new();
        tls.server.close_notify(&mut alert);
        if !alert.is_empty() {
            // Already a TLS record: written as it is, not encrypted again.
            let _ = write_tcp(&mut stream.tcp, alert, || monoio::time::sleep(linger)).await;
        }
        // Whatever the peer still sends is discarded without decrypting.
        stream.tls = None;
    }
    let _ = stream.tcp.shutdown().await;
    let deadline = Instant::now() + linger;
    let mut buf = scratch;
    let mut discarded = 0usize;
    while discarded < LINGER_DISCARD_BYTES {
        buf.clear();
        if wait_readable(&stream, deadline).await.is_err() {
            break;
        }
        let (outcome, b) = read_tcp(&mut stream.tcp, buf, LINGER_READ_BYTES).await;
        buf = b;
        match outcome {
            ReadOutcome::Data(n) => discarded += n,
            _ => break,
        }
    }
}

/// Why no PROXY protocol header could be read.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug in logs
pub(crate) enum ProxyHeaderFailure {
    Invalid(&'static str),
    Read(ReadOutcome),
}

/// Reads a PROXY protocol header off the raw socket, before any TLS,
/// within `deadline`. What follows it stays for the next read: in the TLS
/// session's input, or returned (plaintext).
pub(crate) async fn read_proxy_header(
    stream: &mut Stream,
    deadline: Instant,
) -> Result<(ProxyHeader, BytesMut), ProxyHeaderFailure> {
    let mut buf = BytesMut::new();
    loop {
        match parse_proxy_header(&buf) {
            Ok(Some((header, len))) => {
                let rest = buf.split_off(len);
                return Ok((header, stream.keep_early_bytes(rest)));
            }
            Ok(None) => {}
            Err(ProxyError(why)) => return Err(ProxyHeaderFailure::Invalid(why)),
        }
        if let Err(outcome) = wait_readable(stream, deadline).await {
            return Err(ProxyHeaderFailure::Read(outcome));
        }
        let (outcome, b) = read_tcp(&mut stream.tcp, buf, PROXY_READ_BYTES).await;
        buf = b;
        if !matches!(outcome, ReadOutcome::Data(_)) {
            return Err(ProxyHeaderFailure::Read(outcome));
        }
    }
}

/// Bytes read per attempt while a PROXY header is incomplete (a v1 header
/// is at most 107 bytes; v2 headers are usually 28 or 52).
const PROXY_READ_BYTES: usize = 256;
