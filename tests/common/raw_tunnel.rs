//! A runner tunnel driven by hand with raw protocol frames, for tests that
//! need a runner to misbehave or to answer at a chosen moment.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use tether::tunnel::{decode_frames, encode_frame, Frame};
use tungstenite::client::IntoClientRequest;

use super::Harness;

/// Connects to the runner listener with the default token.
pub fn raw_tunnel(h: &Harness) -> tungstenite::WebSocket<TcpStream> {
    raw_tunnel_as(h, "tether-dev-token")
}

/// Connects to the runner listener with `token`. (A handshake interrupted
/// by a signal, EINTR, is tried again on a new connection: tungstenite's
/// blocking handshake cannot resume.)
pub fn raw_tunnel_as(h: &Harness, token: &str) -> tungstenite::WebSocket<TcpStream> {
    raw_tunnel_at(h.runner_addr, token)
}

/// Connects to the runner listener at `addr` with `token`.
pub fn raw_tunnel_at(addr: SocketAddr, token: &str) -> tungstenite::WebSocket<TcpStream> {
    for _ in 0..5 {
        let mut req = format!("ws://{addr}/runners/connect")
            .into_client_request()
            .unwrap();
        let bearer = format!("Bearer {token}");
        req.headers_mut()
            .insert("authorization", bearer.parse().unwrap());
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        match tungstenite::client::client(req, stream) {
            Ok((ws, _)) => return ws,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("tunnel handshake: {e}"),
        }
    }
    panic!("tunnel handshake interrupted five times")
}

/// Sends one frame as its own tunnel message.
pub fn send_frame(ws: &mut tungstenite::WebSocket<TcpStream>, frame: &Frame) {
    let mut out = BytesMut::new();
    encode_frame(&mut out, frame);
    ws.send(tungstenite::Message::Binary(out.freeze())).unwrap();
}

/// Sends several frames as one tunnel message (one batch, handled by the
/// gateway in one go, as a runner library's output is).
pub fn send_batch(ws: &mut tungstenite::WebSocket<TcpStream>, frames: &[Frame]) {
    let mut out = BytesMut::new();
    for frame in frames {
        encode_frame(&mut out, frame);
    }
    ws.send(tungstenite::Message::Binary(out.freeze())).unwrap();
}

/// Reads tunnel messages until a frame other than a keepalive arrives
/// (keepalives are answered); panics on a read error or timeout.
pub fn next_frame(ws: &mut tungstenite::WebSocket<TcpStream>, pending: &mut Vec<Frame>) -> Frame {
    loop {
        if !pending.is_empty() {
            return pending.remove(0);
        }
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => {
                for frame in decode_frames(b) {
                    match frame.expect("well-formed frame") {
                        Frame::Keepalive { nonce } => {
                            send_frame(ws, &Frame::KeepaliveAck { nonce })
                        }
                        f => pending.push(f),
                    }
                }
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            Err(e) => panic!("tunnel read failed: {e}"),
        }
    }
}

/// Sends `hello` and reads until the gateway welcomes the runner (`None`)
/// or closes the tunnel (its close code).
pub fn hello_answer(ws: &mut tungstenite::WebSocket<TcpStream>, hello: &Frame) -> Option<u16> {
    send_frame(ws, hello);
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => {
                return Some(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Ok(tungstenite::Message::Binary(b)) => {
                if decode_frames(b).any(|f| matches!(f, Ok(Frame::Welcome { .. }))) {
                    return None;
                }
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            Err(e) => panic!("tunnel read failed: {e}"),
        }
    }
}
