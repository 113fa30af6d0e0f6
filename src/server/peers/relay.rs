//! One connection of another node's client, relayed: a small task per
//! connection that waits on its control like a client session would. The
//! runner's frames for the connection go to that node as they are
//! dispatched (`actors::Relay`); what reaches the control instead — a
//! close the gateway decides (the actor given up, a client over its hold),
//! a publish queued for it — is turned into tunnel frames here. It holds
//! no socket and no buffer, and ends when the connection does.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::link::PeerLink;
use super::PeerSide;
use crate::server::conn::control::{Outgoing, Signal};
use crate::server::conn::registry::Registration;
use crate::tunnel::{Frame, MessageKind};
use crate::ws::{CloseCode, OpCode};

/// A relay's control has no timer of its own (the other node keeps the
/// client's): its deadline is put out of the sweep's way.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

pub(super) async fn relay_conn(
    side: Rc<PeerSide>,
    link: Rc<PeerLink>,
    remote: u64,
    local: u64,
    registration: Registration,
) {
    let control = registration.control.clone();
    control.set_deadline(Instant::now() + NO_DEADLINE);
    loop {
        match control.next_signal().await {
            Signal::Outbound => control.drain_outbound(|o| send(&link, remote, o)),
            Signal::Close(code, reason) => {
                return closed(&side, &link, remote, local, code, &reason)
            }
            Signal::Timer => control.set_deadline(Instant::now() + NO_DEADLINE),
        }
    }
}

fn send(link: &PeerLink, remote: u64, outgoing: Outgoing) {
    let (opcode, payload) = match outgoing {
        Outgoing::Payload(op, payload) => (op, payload),
        Outgoing::Encoded(frame) => match unframe(&frame) {
            Some(parts) => parts,
            None => return,
        },
    };
    let kind = match opcode {
        OpCode::Text => MessageKind::Text,
        _ => MessageKind::Binary,
    };
    link.out.send_message(remote, kind, &payload);
}

/// The opcode and payload of a frame the gateway encoded once for many
/// clients (a broadcast): unmasked, whole, with the header `encode_header`
/// writes.
fn unframe(frame: &Bytes) -> Option<(OpCode, Bytes)> {
    let op = OpCode::from_bits(*frame.first()? & 0x0f)?;
    let (len, header) = match *frame.get(1)? & 0x7f {
        126 => (
            u16::from_be_bytes(frame.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    (frame.len() == header + len).then(|| (op, frame.slice(header..)))
}

/// The connection closed here. The other node is told — unless it was
/// told already (the actor's own close), or this worker stops: then the
/// link itself goes, and that node moves its clients elsewhere instead of
/// closing them.
fn closed(
    side: &PeerSide,
    link: &PeerLink,
    remote: u64,
    local: u64,
    code: CloseCode,
    reason: &str,
) {
    tracing::debug!(node = %link.node, conn = remote, code = code.0, %reason, "forwarded connection closed here");
    link.forget_conn(remote);
    let Some(relay) = side.actors.take_relay(local) else {
        return; // told already, or the other node closed it
    };
    // The gateway closed it here (a client over its hold, say): it leaves
    // the actor too, or it would stay linked with nobody holding it.
    side.actors.leave_relayed(local, relay.peer, code, reason);
    if side.stopping.is_set() {
        return;
    }
    relay.out.send(&Frame::Close {
        conn_id: remote,
        code: code.0,
        reason: reason.to_owned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn a_shared_frame_gives_back_its_opcode_and_payload() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let payload = vec![b'x'; len];
            let mut frame = BytesMut::new();
            crate::ws::frame::encode_frame(&mut frame, OpCode::Text, &payload);
            let (op, back) = unframe(&frame.freeze()).unwrap();
            assert_eq!((op, back.len()), (OpCode::Text, len));
        }
        assert_eq!(unframe(&Bytes::from_static(&[0x81, 5, b'a'])), None);
    }
}
