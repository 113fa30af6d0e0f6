//! Keeping this worker's link to another node up: dial its advertised
//! runner address, ask for `/cluster/connect?tunnel=<this worker>` with the
//! cluster token, say hello as a runner would, and serve the link
//! (`link.rs`) until it ends; then dial again, backing off, until the node
//! leaves the cluster.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tracing::{info, warn};

use super::link::{PeerLink, PeerRole};
use super::PeerSide;
use crate::http::response_head::ResponseHeadReader;
use crate::server::conn::control::ConnControl;
use crate::server::conn::session::Session;
use crate::server::conn::stream::Stream;
use crate::server::conn::thread_slot::thread_slot;
use crate::server::tunnels::{PeerOut, PEER_KEY_PREFIX, PEER_POOL};
use crate::tunnel::{Frame, PROTOCOL_VERSION};
use crate::ws::dial::{check_answer, encode_request};
use crate::ws::CloseCode;

/// Another node, as the directory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeAddress {
    pub node: String,
    /// Its runner listener, `host:port`.
    pub address: String,
}

/// This worker's dialing of one node; `stop` ends it (the node left).
#[derive(Default)]
pub(crate) struct Dialing {
    gone: Cell<bool>,
    current: RefCell<Option<Rc<ConnControl>>>,
}

impl Dialing {
    pub fn stop(&self) {
        self.gone.set(true);
        if let Some(control) = self.current.take() {
            control.request_close(CloseCode::GOING_AWAY, "node left the cluster");
        }
    }

    /// Closes the link open now; it is dialed again.
    pub fn drop_link(&self) {
        if let Some(control) = self.current.take() {
            control.request_close(CloseCode::SERVICE_RESTART, "node fenced");
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.gone.get()
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A link that lasted this long was up: the next dial starts from the
/// first backoff again.
const STABLE_LINK: Duration = Duration::from_secs(1);
/// The largest answer head read from another node.
const MAX_ANSWER_HEAD: usize = 8 * 1024;

/// Dials `target` until `dialing` is stopped, serving each link to its end.
pub(crate) async fn dial_node(side: Rc<PeerSide>, target: NodeAddress, dialing: Rc<Dialing>) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    while !dialing.is_stopped() {
        match connect(&side, &target).await {
            // Stopped while connecting: the node left meanwhile.
            Ok(_) if dialing.is_stopped() => return,
            Ok((stream, leftover)) => {
                failures = 0;
                let since = Instant::now();
                serve(&side, &target, &dialing, stream, leftover).await;
                // A link the other node ends at once (a refused hello, a
                // worker count that differs) is not redialed at once.
                if since.elapsed() >= STABLE_LINK {
                    backoff = FIRST_BACKOFF;
                }
            }
            Err(why) => {
                failures += 1;
                // Once, then every 20th time: a node that is down is not news.
                if failures == 1 || failures % 20 == 0 {
                    warn!(worker = side.worker_id, node = %target.node, address = %target.address, %why, failures, "cannot link to node");
                }
            }
        }
        if dialing.is_stopped() {
            return;
        }
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn serve(
    side: &Rc<PeerSide>,
    target: &NodeAddress,
    dialing: &Dialing,
    stream: TcpStream,
    leftover: BytesMut,
) {
    let registration = side.env.registry.register(Instant::now());
    // What a runner's tunnel may hold, a few times over: one link carries
    // many runners' worth of clients.
    let max_pending = side
        .env
        .config()
        .runners
        .max_send_queue_bytes
        .saturating_mul(8);
    let out = Rc::new(PeerOut::new(registration.control.clone(), max_pending));
    out.send(&hello(side));
    dialing.current.replace(Some(registration.control.clone()));
    info!(worker = side.worker_id, node = %target.node, "linked to node");
    let link = Rc::new(PeerLink::new(target.node.clone(), out));
    let role = PeerRole {
        link,
        side: side.clone(),
    };
    let session = Session::new(side.clone(), role);
    session
        .run(Stream::plain(stream), leftover, registration)
        .await;
    dialing.current.take();
}

/// This node's hello on a link: a runner that runs whatever the other
/// node asks of it (it refuses actors it does not own, `link.rs`).
fn hello(side: &PeerSide) -> Frame {
    Frame::Hello {
        version: PROTOCOL_VERSION,
        runner_key: format!("{PEER_KEY_PREFIX}{}", side.node),
        pool: PEER_POOL.to_owned(),
        capacity: u32::MAX,
        tunnel_index: side.worker_id as u32,
        actor_names: Vec::new(),
        features: 0,
    }
}

/// Connects and upgrades; the bytes read past the answer's head are the
/// start of the link.
async fn connect(side: &PeerSide, target: &NodeAddress) -> Result<(TcpStream, BytesMut), String> {
    let addr = resolve(&target.address).await?;
    let stream = monoio::select! {
        s = TcpStream::connect(addr) => s.map_err(|e| format!("connect: {e}"))?,
        _ = monoio::time::sleep(CONNECT_TIMEOUT) => return Err("connect timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    monoio::select! {
        r = upgrade(side, target, stream) => r,
        _ = monoio::time::sleep(CONNECT_TIMEOUT) => Err("upgrade timed out".into()),
    }
}

async fn upgrade(
    side: &PeerSide,
    target: &NodeAddress,
    mut stream: TcpStream,
) -> Result<(TcpStream, BytesMut), String> {
    let key: [u8; 16] = random_key();
    let path = format!("/cluster/connect?tunnel={}", side.worker_id);
    let auth = format!("Bearer {}", side.token);
    let headers = [
        ("authorization", auth.as_str()),
        ("x-tether-node", side.node.as_str()),
    ];
    let request = encode_request(&target.address, &path, &key, &headers);
    let (r, _) = stream.write_all(request).await;
    r.map_err(|e| format!("write: {e}"))?;
    let mut reader = ResponseHeadReader::new(MAX_ANSWER_HEAD, 32);
    let mut buf = BytesMut::with_capacity(MAX_ANSWER_HEAD);
    loop {
        let spare = buf.split_off(buf.len());
        let (r, filled) = stream.read(spare).await;
        let n = r.map_err(|e| format!("read: {e}"))?;
        buf.unsplit(filled);
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
        match reader.poll(&buf) {
            Ok(Some((head, len))) => {
                check_answer(&head, &key)?;
                let _ = buf.split_to(len);
                return Ok((stream, buf));
            }
            Ok(None) if buf.len() >= MAX_ANSWER_HEAD => return Err("answer head too large".into()),
            Ok(None) => buf.reserve(1024),
            Err(e) => return Err(format!("bad answer: {e:?}")),
        }
    }
}

/// `ip:port` at once; a host name on a short-lived thread (a worker never
/// blocks on DNS).
async fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    let (slot, filler) = thread_slot();
    let name = address.to_owned();
    std::thread::spawn(move || {
        let found = name.to_socket_addrs().map(|mut a| a.next());
        filler.fill(found.map_err(|e| e.to_string()));
    });
    match slot.wait().await {
        Some(Ok(Some(addr))) => Ok(addr),
        Some(Ok(None)) => Err(format!("{address} resolves to nothing")),
        Some(Err(e)) => Err(format!("cannot resolve {address}: {e}")),
        None => Err("resolver thread ended".into()),
    }
}

fn random_key() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 16];
    // A key only has to differ between requests; should the system's
    // generator fail, the time does that.
    if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        key = nanos.to_le_bytes();
    }
    key
}
