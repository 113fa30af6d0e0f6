//! Heap held by an idle `TlsServer` after its handshake and one message
//! each way, measured with a counting global allocator (the gateway's
//! mimalloc is set in the binary only). The target: a hibernated `wss://`
//! socket costs at most 4 KiB, so its TLS state must fit well under that.
//!
//! One test in this file: the counters are process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use tether::tls::{load_server_config, CertSpec, TlsServer};
use tether_testkit::ThrowawayPki;

/// Bytes glibc reserves per block: the usable size plus its size header.
static FOOTPRINT: AtomicIsize = AtomicIsize::new(0);

fn footprint(ptr: *mut u8) -> isize {
    // SAFETY: `ptr` is a live block from `System` (glibc malloc).
    unsafe { libc::malloc_usable_size(ptr.cast()) as isize + 8 }
}

struct Counting;

// SAFETY: every call forwards to `System`; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            FOOTPRINT.fetch_add(footprint(ptr), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            FOOTPRINT.fetch_add(footprint(ptr), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FOOTPRINT.fetch_sub(footprint(ptr), Ordering::Relaxed);
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = footprint(ptr);
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            FOOTPRINT.fetch_add(footprint(new) - old, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SESSIONS: usize = 500;

#[test]
fn idle_session_heap() {
    let pki = Pki::new();
    let server = load_server_config(std::slice::from_ref(&pki.spec)).unwrap();
    let tls13 = pki.client(&rustls::version::TLS13);
    let tls12 = pki.client(&rustls::version::TLS12);
    let per13 = per_session(&server, &tls13);
    let per12 = per_session(&server, &tls12);
    println!(
        "idle TlsServer (size_of {} B) incl. heap: TLS 1.3 {per13} B, TLS 1.2 {per12} B",
        std::mem::size_of::<TlsServer>()
    );
    assert!(per13 <= 4096, "TLS 1.3 idle session holds {per13} B");
    assert!(per12 <= 4096, "TLS 1.2 idle session holds {per12} B");
}

/// Bytes (the struct in a `Vec` plus all its heap) per idle session.
fn per_session(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> isize {
    let mut sessions = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        sessions.push(idle_session(server, client));
    }
    let with = FOOTPRINT.load(Ordering::Relaxed);
    drop(sessions);
    let without = FOOTPRINT.load(Ordering::Relaxed);
    (with - without) / SESSIONS as isize
}

/// A session after its handshake and one message each way; everything but
/// the `TlsServer` (client, buffers) is dropped.
fn idle_session(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> TlsServer {
    let name = "site.test".try_into().unwrap();
    let mut client = ClientConnection::new(client.clone(), name).unwrap();
    let mut tls = TlsServer::new(server.clone()).unwrap();
    let mut bufs = Buffers::default();
    bufs.pump(&mut client, &mut tls);
    client.writer().write_all(b"hello").unwrap();
    bufs.pump(&mut client, &mut tls);
    assert_eq!(&bufs.plaintext[..], b"hello");
    tls.write_plain(b"world", &mut bufs.outgoing).unwrap();
    bufs.pump(&mut client, &mut tls);
    let mut got = [0u8; 5];
    client.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"world");
    tls
}

#[derive(Default)]
struct Buffers {
    incoming: BytesMut,
    plaintext: BytesMut,
    outgoing: BytesMut,
}

impl Buffers {
    fn pump(&mut self, client: &mut ClientConnection, tls: &mut TlsServer) {
        loop {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            self.incoming.extend_from_slice(&wire);
            tls.read_tls(&mut self.incoming, &mut self.plaintext, &mut self.outgoing)
                .unwrap();
            if wire.is_empty() && self.outgoing.is_empty() {
                return;
            }
            let mut out = &self.outgoing[..];
            while !out.is_empty() {
                client.read_tls(&mut out).unwrap();
                client.process_new_packets().unwrap();
            }
            self.outgoing.clear();
        }
    }
}

/// A CA and one leaf for `site.test` (the shared throwaway PKI).
struct Pki {
    pki: ThrowawayPki,
    spec: CertSpec,
}

impl Pki {
    fn new() -> Self {
        let pki = ThrowawayPki::new("tls-memory");
        let leaf = pki.leaf("site", &["site.test"]);
        let spec = CertSpec {
            chain: leaf.chain,
            key: leaf.key,
            names: Vec::new(),
        };
        Self { pki, spec }
    }

    fn client(&self, version: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.pki.ca_der().into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}
