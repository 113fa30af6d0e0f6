use super::*;
use crate::tunnel::MessageKind;
use proptest::prelude::*;

fn record() -> ConnRecord {
    ConnRecord {
        ns: "default".into(),
        name: "chat".into(),
        key: vec!["room/1".into(), "a".into()],
        actor_awake: true,
        conn_id: (3 << 56) | 77,
        peer: "[2001:db8::7]:4000".parse().unwrap(),
        hibernatable: false,
        next_index: 12,
        last_acked: 9,
        query: "x=1".into(),
        headers: vec![("origin".into(), Bytes::from_static(b"https://a"))],
        protocol: Some("chat.v1".into()),
        attachment: Bytes::from_static(b"\0att"),
        held: (10..=12)
            .map(|index| HeldMessage {
                index,
                kind: if index % 2 == 0 {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                },
                payload: Bytes::from(format!("m{index}")),
            })
            .collect(),
        unread: Bytes::from_static(&[0x81, 0x85]),
        close: None,
        tls: None,
    }
}

#[test]
fn every_note_round_trips() {
    let notes = [
        Note::Listeners {
            client: 2,
            runner: 2,
        },
        Note::Ready,
        Note::Conn(Box::new(record())),
        Note::Done { conns: 1000 },
        Note::Taken,
    ];
    for note in notes {
        assert_eq!(Note::decode(note.encode()), Ok(note));
    }
}

#[test]
fn a_closed_connection_travels_without_its_socket() {
    let mut r = record();
    r.close = Some((1000, "bye".into()));
    let note = Note::Conn(Box::new(r));
    assert_eq!(note.descriptors(), 0);
    assert_eq!(Note::decode(note.encode()), Ok(note));
}

#[test]
fn a_tls_session_travels_with_its_keys() {
    use crate::tls::{DirectionSecrets, SessionSecrets, Suite};
    let mut r = record();
    let direction = |seq, byte| DirectionSecrets {
        key: vec![byte; 32],
        iv: [byte; 12],
        seq,
    };
    r.tls = Some(TlsState {
        secrets: SessionSecrets {
            suite: Suite::Chacha20Poly1305,
            tx: direction(7, 1),
            rx: direction(9, 2),
        },
        incoming: Bytes::from_static(&[23, 3, 3, 0]),
    });
    let note = Note::Conn(Box::new(r));
    assert_eq!(note.descriptors(), 1);
    assert_eq!(Note::decode(note.encode()), Ok(note));
}

#[test]
fn held_messages_must_follow_the_acknowledged_ones_in_order() {
    for bad in [9, 13] {
        let mut r = record();
        r.held[0].index = bad;
        let err = Note::decode(Note::Conn(Box::new(r)).encode()).unwrap_err();
        assert_eq!(err.0, "held messages out of order", "index {bad}");
    }
}

#[test]
fn descriptors_travel_with_listeners_and_connections() {
    let l = Note::Listeners {
        client: 4,
        runner: 4,
    };
    assert_eq!(l.descriptors(), 9);
    assert_eq!(Note::Conn(Box::new(record())).descriptors(), 1);
    assert_eq!(Note::Done { conns: 0 }.descriptors(), 0);
}

#[test]
fn another_version_is_refused() {
    let mut bytes = BytesMut::from(&Note::Ready.encode()[..]);
    bytes[0] = HANDOVER_VERSION as u8 + 1;
    assert_eq!(
        Note::decode(bytes.freeze()),
        Err(HandoverError("another handover version"))
    );
}

#[test]
fn an_acknowledgement_beyond_the_last_message_is_refused() {
    let mut r = record();
    r.last_acked = r.next_index + 1;
    let err = Note::decode(Note::Conn(Box::new(r)).encode()).unwrap_err();
    assert_eq!(err.0, "acknowledged beyond the last message");
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Note::decode(Bytes::from(bytes));
    }

    #[test]
    fn every_truncation_fails_cleanly(cut in 0usize..200) {
        let full = Note::Conn(Box::new(record())).encode();
        let cut = cut.min(full.len() - 1);
        prop_assert!(Note::decode(full.slice(..cut)).is_err());
    }
}
