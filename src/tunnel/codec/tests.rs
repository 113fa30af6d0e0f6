//! Round trips, limits and hostile bytes for the tunnel codec.
use super::*;
use proptest::prelude::*;

/// A StartActor body whose key claims `parts` segments, with `actual` present.
fn start_actor_claiming(parts: u64, actual: usize) -> Bytes {
    let mut body = BytesMut::new();
    put_varint(&mut body, 7);
    put_str(&mut body, "echo");
    put_varint(&mut body, parts);
    for _ in 0..actual {
        put_str(&mut body, "k");
    }
    put_bytes(&mut body, b"");
    let mut frame = BytesMut::new();
    frame.put_u8(tag::START_ACTOR);
    put_varint(&mut frame, body.len() as u64);
    frame.put_slice(&body);
    frame.freeze()
}

#[test]
fn a_conn_open_without_the_peer_field_decodes_with_an_empty_peer() {
    // What a gateway of protocol 1.0 sent: no peer at the end.
    let mut body = BytesMut::new();
    put_varint(&mut body, 5);
    put_varint(&mut body, 7);
    put_str(&mut body, "/actors/echo/k");
    put_str(&mut body, "");
    put_varint(&mut body, 0);
    put_varint(&mut body, 0);
    let mut frame = BytesMut::new();
    frame.put_u8(tag::CONN_OPEN);
    put_varint(&mut frame, body.len() as u64);
    frame.put_slice(&body);
    match decode_frames(frame.freeze()).next() {
        Some(Ok(Frame::ConnOpen { conn_id, peer, .. })) => {
            assert_eq!((conn_id, peer.as_str()), (5, ""))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn list_counts_are_checked_before_anything_is_allocated() {
    let decode = |b: Bytes| decode_frames(b).next().expect("one frame");
    assert!(decode(start_actor_claiming(3, 3)).is_ok());
    let err = decode(start_actor_claiming(17, 17)).unwrap_err();
    assert_eq!(err.0, "list longer than the protocol allows");
    // Claims more entries than there are bytes left (each takes one).
    let err = decode(start_actor_claiming(16, 2)).unwrap_err();
    assert_eq!(err.0, "list count exceeds the frame");
    let err = decode(start_actor_claiming(u64::MAX, 0)).unwrap_err();
    assert_eq!(err.0, "list longer than the protocol allows");
}

fn samples() -> Vec<Frame> {
    vec![
        Frame::Hello {
            version: 1,
            runner_key: "r1".into(),
            pool: "default".into(),
            capacity: 100,
            tunnel_index: 1,
            actor_names: vec!["echo".into(), "chat".into()],
            features: 1,
        },
        Frame::Welcome {
            version: 1,
            workers: 2,
            tunnel_index: 1,
            ping_interval_ms: 30_000,
            features: 1,
        },
        Frame::Broadcast {
            actor_id: 7,
            kind: MessageKind::Text,
            to: Recipients::All,
            payload: Bytes::from_static(b"to everyone"),
        },
        Frame::Broadcast {
            actor_id: 7,
            kind: MessageKind::Binary,
            to: Recipients::AllBut(vec![3, 1 << 40]),
            payload: Bytes::from_static(b"\x00\xff"),
        },
        Frame::Broadcast {
            actor_id: 7,
            kind: MessageKind::Text,
            to: Recipients::Only(vec![5]),
            payload: Bytes::new(),
        },
        Frame::StartActor {
            actor_id: 7,
            name: "chat".into(),
            key: vec!["room".into(), "1".into()],
            input: Bytes::from_static(b"in"),
            output_seen: 0,
        },
        Frame::StartActor {
            actor_id: 7,
            name: "chat".into(),
            key: Vec::new(),
            input: Bytes::new(),
            output_seen: u64::MAX,
        },
        Frame::OutputMark {
            actor_id: 7,
            seq: 1 << 50,
        },
        Frame::ActorReady { actor_id: 7 },
        Frame::ActorStopped {
            actor_id: 7,
            reason: "bye".into(),
        },
        Frame::SleepRequest { actor_id: 7 },
        Frame::StopActor { actor_id: 7 },
        Frame::ConnOpen {
            conn_id: 1 << 40,
            actor_id: 7,
            path: "/actors/chat/room".into(),
            query: "a=1".into(),
            headers: vec![("origin".into(), Bytes::from_static(b"x"))],
            protocols: vec!["v1".into()],
            peer: "127.0.0.1:5000".into(),
        },
        Frame::ConnAccept {
            conn_id: 3,
            protocol: Some("v1".into()),
            hibernatable: Some(true),
        },
        Frame::ConnAccept {
            conn_id: 3,
            protocol: None,
            hibernatable: None,
        },
        Frame::RestoreConn {
            conn_id: 3,
            actor_id: 8,
            path: "/actors/chat/r".into(),
            query: "".into(),
            headers: vec![],
            protocol: Some("v1".into()),
            attachment: Bytes::from_static(b"state"),
            last_index: 41,
            peer: "[::1]:7".into(),
            output_seen: 12,
        },
        Frame::SetAttachment {
            conn_id: 3,
            attachment: Bytes::from_static(b"state"),
        },
        Frame::ConnAccept {
            conn_id: 3,
            protocol: None,
            hibernatable: Some(false),
        },
        Frame::ConnReject {
            conn_id: 3,
            status: 403,
            reason: "no".into(),
        },
        Frame::Message {
            conn_id: 3,
            index: 99,
            kind: MessageKind::Text,
            payload: Bytes::from_static("héllo".as_bytes()),
        },
        Frame::Message {
            conn_id: 3,
            index: 100,
            kind: MessageKind::Binary,
            payload: Bytes::from_static(&[0, 255]),
        },
        Frame::Ack {
            conn_id: 3,
            index: 100,
        },
        Frame::Close {
            conn_id: 3,
            code: 1000,
            reason: "done".into(),
        },
        Frame::Keepalive { nonce: 5 },
        Frame::KeepaliveAck { nonce: 5 },
        Frame::Drain,
        Frame::Drained,
        Frame::HttpRequest(HttpRequest {
            req_id: 1 << 40,
            actor_id: 7,
            method: "POST".into(),
            path: "/history".into(),
            query: "".into(),
            headers: vec![
                ("host".into(), Bytes::from_static(b"example.com")),
                ("x-empty".into(), Bytes::new()),
            ],
            peer: "[::1]:7".into(),
            body: true,
        }),
        Frame::HttpResponse(HttpResponse {
            req_id: 1 << 40,
            status: 204,
            headers: vec![],
            body: false,
        }),
        Frame::HttpBody {
            req_id: 1 << 40,
            data: Bytes::from_static(b"\x00 chunk"),
        },
        Frame::HttpEnd { req_id: 1 << 40 },
        Frame::HttpCancel {
            req_id: 3,
            reason: "".into(),
        },
        Frame::HttpCredit {
            req_id: 3,
            bytes: limits::HTTP_INITIAL_CREDIT,
        },
    ]
}

#[test]
fn every_frame_round_trips_in_one_batch() {
    let mut out = BytesMut::new();
    for f in samples() {
        encode_frame(&mut out, &f);
    }
    let decoded: Vec<Frame> = decode_frames(out.freeze())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(decoded, samples());
}

#[test]
fn http_body_encoding_matches_the_frame() {
    let mut fast = BytesMut::new();
    encode_http_body(&mut fast, 300, b"piece");
    let mut slow = BytesMut::new();
    let data = Bytes::from_static(b"piece");
    encode_frame(&mut slow, &Frame::HttpBody { req_id: 300, data });
    assert_eq!(fast, slow);
}

#[test]
fn fast_message_encoding_matches_and_is_small() {
    let mut fast = BytesMut::new();
    encode_message(&mut fast, 1234, 56789, MessageKind::Binary, b"payload");
    let mut slow = BytesMut::new();
    encode_frame(
        &mut slow,
        &Frame::Message {
            conn_id: 1234,
            index: 56789,
            kind: MessageKind::Binary,
            payload: Bytes::from_static(b"payload"),
        },
    );
    assert_eq!(fast, slow);
    assert!(
        fast.len() - 7 <= 16,
        "tunnel header of {} bytes",
        fast.len() - 7
    );
}

#[test]
fn unknown_types_are_errors_below_0x80_and_skipped_above() {
    let mut out = BytesMut::new();
    out.put_u8(0x90);
    put_bytes(&mut out, b"future extension");
    encode_frame(&mut out, &Frame::Drain);
    assert_eq!(
        decode_frames(out.clone().freeze())
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        vec![Frame::Drain]
    );
    let mut bad = BytesMut::new();
    bad.put_u8(0x7F);
    put_bytes(&mut bad, b"");
    assert!(decode_frames(bad.freeze()).next().unwrap().is_err());
}

#[test]
fn invalid_text_is_refused() {
    let mut out = BytesMut::new();
    encode_message(&mut out, 1, 1, MessageKind::Text, &[0xFF]);
    assert!(decode_frames(out.freeze()).next().unwrap().is_err());
}

proptest! {
    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for f in decode_frames(Bytes::from(bytes)) {
            if f.is_err() { break; }
        }
    }

    #[test]
    fn truncated_batches_fail_cleanly(cut in 0usize..400) {
        let mut out = BytesMut::new();
        for f in samples() { encode_frame(&mut out, &f); }
        let cut = cut.min(out.len());
        let decoded: Vec<_> = decode_frames(out.freeze().slice(..cut)).collect();
        // Every frame before the cut decodes; at most the last one fails.
        prop_assert!(decoded.iter().rev().skip(1).all(|f| f.is_ok()));
    }
}

#[test]
fn an_older_peers_hello_and_welcome_say_no_features() {
    // A 1.1 hello: the fields up to the actor names, nothing after.
    let mut body = BytesMut::new();
    crate::tunnel::wire::put_varint(&mut body, 1);
    for s in ["r1", "default"] {
        crate::tunnel::wire::put_bytes(&mut body, s.as_bytes());
    }
    for n in [10, 0, 0] {
        crate::tunnel::wire::put_varint(&mut body, n);
    }
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0x01]);
    crate::tunnel::wire::put_bytes(&mut frame, &body);
    let decoded: Vec<_> = decode_frames(frame.freeze()).collect();
    assert!(
        matches!(decoded[..], [Ok(Frame::Hello { features: 0, .. })]),
        "{decoded:?}"
    );
}

#[test]
fn an_older_gateways_start_actor_says_it_saw_no_output() {
    // A 1.2 StartActor: id, name, key parts, input; nothing after.
    let mut body = BytesMut::new();
    crate::tunnel::wire::put_varint(&mut body, 7);
    crate::tunnel::wire::put_bytes(&mut body, b"chat");
    crate::tunnel::wire::put_varint(&mut body, 0);
    crate::tunnel::wire::put_bytes(&mut body, b"");
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0x10]);
    crate::tunnel::wire::put_bytes(&mut frame, &body);
    let decoded: Vec<_> = decode_frames(frame.freeze()).collect();
    assert!(
        matches!(decoded[..], [Ok(Frame::StartActor { output_seen: 0, .. })]),
        "{decoded:?}"
    );
}

#[test]
fn a_broadcast_with_a_list_for_all_or_unknown_recipients_is_refused() {
    for (mode, list) in [(0u8, vec![1u64]), (3, vec![])] {
        let mut body = BytesMut::new();
        crate::tunnel::wire::put_varint(&mut body, 7);
        body.extend_from_slice(&[0, mode]);
        crate::tunnel::wire::put_varint(&mut body, list.len() as u64);
        list.iter()
            .for_each(|c| crate::tunnel::wire::put_varint(&mut body, *c));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0x35]);
        crate::tunnel::wire::put_bytes(&mut frame, &body);
        let err = decode_frames(frame.freeze()).next().unwrap().unwrap_err();
        assert_eq!(err.0, "unknown broadcast recipients");
    }
}
