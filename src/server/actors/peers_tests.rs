//! Another node's client restored into an actor that already runs (its
//! node came late, or its link blipped): the owner holds back what the
//! runner says to all its connections, and the marks that would vouch for
//! it, until the runner answers the restore (PROTOCOL §5a).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{Actors, Relay, RestoredConn, SharedLimits};
use crate::config::Config;
use crate::http::route::ActorPath;
use crate::server::actors::tunnel_events::RunnerHello;
use crate::server::conn::env::ConnEnv;
use crate::server::tunnels::PeerOut;
use crate::tunnel::{decode_frames, features, Frame, MessageKind, Recipients};

fn broadcast(actor_id: u64, to: Recipients, text: &'static str) -> Frame {
    Frame::Broadcast {
        actor_id,
        kind: MessageKind::Text,
        to,
        payload: Bytes::from_static(text.as_bytes()),
    }
}

/// What the link to the client's node was sent since last asked.
fn sent(out: &PeerOut) -> Vec<Frame> {
    let pending = out.take_pending().unwrap_or_default();
    decode_frames(pending).map(Result::unwrap).collect()
}

#[test]
fn a_late_restore_hears_what_is_said_to_all_once_the_runner_answered_it() {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = Rc::new(Config::default());
        let env = Rc::new(ConnEnv::new(config.clone()));
        let shared = SharedLimits::new(&config);
        let actors = Actors::new(
            0,
            env.live.clone(),
            Arc::default(),
            env.wakeups.clone(),
            shared,
            Arc::default(),
        );
        let control = || env.registry.register(Instant::now()).control.clone();
        let hello = RunnerHello {
            runner_key: "r".into(),
            pool: "default".into(),
            capacity: 10,
            actor_names: vec!["chat".into()],
            identity: "default".into(),
            namespace: "default".into(),
            features: features::SUPPORTED,
        };
        let tunnel = actors.add_tunnel(hello, control()).unwrap();
        let path = ActorPath {
            ns: "default".into(),
            name: "chat".into(),
            key: vec!["k".into()],
            query: None,
        };
        let actor = actors.get_or_start_as(&path, None).unwrap();
        let said = |f: Frame| actors.on_tunnel_frame(&tunnel, f).unwrap();
        said(Frame::ActorReady {
            actor_id: actor.id(),
        });
        let out = Rc::new(PeerOut::new(control(), 1 << 20));
        let peer = "127.0.0.1:9".parse().unwrap();
        let relay = Relay {
            out: out.clone(),
            remote_conn: 5,
            peer,
            control: control(),
            remote_actor: 9,
            output_seen: Cell::new(0),
        };
        let restored = RestoredConn {
            query: String::new(),
            headers: Vec::new(),
            protocol: None,
            attachment: Bytes::new(),
            last_index: 0,
            peer,
            output_seen: 3,
        };
        actors.restore_relayed(&actor, 77, restored, relay);
        let id = actor.id();
        said(broadcast(id, Recipients::All, "said before it knew 77"));
        said(Frame::OutputMark {
            actor_id: id,
            seq: 4,
        });
        said(broadcast(id, Recipients::Only(vec![77]), "what 77 missed"));
        let before = sent(&out);
        assert_eq!(before.len(), 1, "only what was sent to it: {before:?}");
        said(Frame::Ack {
            conn_id: 77,
            index: 0,
        });
        said(broadcast(id, Recipients::All, "said after"));
        said(Frame::OutputMark {
            actor_id: id,
            seq: 5,
        });
        let after = sent(&out);
        let mark = Frame::OutputMark {
            actor_id: 9,
            seq: 5,
        };
        assert_eq!(after.len(), 3, "{after:?}");
        assert_eq!(after[2], mark, "marks vouch for it once it is answered");
    });
}
