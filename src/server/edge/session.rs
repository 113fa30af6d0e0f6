//! A client of an actor as a WebSocket session: its messages go to the
//! actor, numbered; what the actor sends comes back; it stops reading while
//! its actor's runner is congested or behind on acknowledgements, and it
//! parks while its actor sleeps.

use std::rc::Rc;

use crate::server::conn::stream::Stream;
use bytes::{Bytes, BytesMut};

use super::{EdgeSide, Handed};
use crate::server::actors::LinkView;
use crate::server::conn::control::{ConnControl, Outgoing};
use crate::server::conn::env::SessionLimits;
use crate::server::conn::outbox::Outbox;
use crate::server::conn::registry::Registration;
use crate::server::conn::session::{Failure, Gate, Role, Session};
use crate::tunnel::MessageKind;
use crate::ws::CloseCode;

pub(crate) struct ClientRole {
    pub conn_id: u64,
    /// The index of the client's last message (the first is 1).
    pub next_index: u64,
}

impl Role for ClientRole {
    type Ctx = EdgeSide;

    fn limits(edge: &EdgeSide) -> SessionLimits {
        edge.limits.get()
    }

    fn gate(&mut self, edge: &EdgeSide, control: &Rc<ConnControl>, open: bool) -> Gate {
        match edge.actors.link_view(self.conn_id) {
            // Closing: read on, for the peer's close frame.
            LinkView::Running { .. } if !open => Gate::Read,
            // Poked by the acknowledgement that brings it under the limit.
            LinkView::Running {
                backlogged: true, ..
            } => Gate::Hold,
            // Backpressure on that runner's clients only, until it drains.
            LinkView::Running { tunnel, .. } if tunnel.is_congested() => {
                tunnel.wait_until_uncongested(control);
                Gate::Hold
            }
            // Not before every runner is gone: what an actor sends while it
            // stops must reach the session first.
            LinkView::Hibernated | LinkView::Waking if edge.actors.sessions_may_leave() => {
                Gate::HandOver
            }
            LinkView::Hibernated if edge.parker.is_some() => Gate::Park,
            _ => Gate::Read,
        }
    }

    fn on_message(
        &mut self,
        edge: &EdgeSide,
        kind: MessageKind,
        payload: Bytes,
    ) -> Result<(), Failure> {
        self.next_index += 1;
        edge.actors
            .forward(self.conn_id, self.next_index, kind, &payload);
        Ok(())
    }

    fn collect_outbound(
        &mut self,
        edge: &EdgeSide,
        control: &ConnControl,
        outbox: &mut Outbox,
        open: bool,
    ) {
        let pool = &edge.env.pool;
        control.drain_outbound(|outgoing| match outgoing {
            _ if !open => {}
            Outgoing::Payload(op, payload) => outbox.push(pool, op, &payload),
            Outgoing::Encoded(frame) => outbox.push_encoded(frame),
        });
    }

    fn closing(&mut self, edge: &EdgeSide, code: CloseCode) {
        edge.stats.count_close(code.0);
    }

    fn ended(&mut self, edge: &EdgeSide, code: CloseCode, reason: &str) {
        edge.actors.client_closed(self.conn_id, code, reason);
    }

    fn hand_over(session: Session<Self>, stream: Stream, unread: BytesMut, reg: Registration) {
        let edge = session.ctx().clone();
        let (role, _) = session.into_parts();
        edge.handed.borrow_mut().push(Handed {
            conn_id: role.conn_id,
            next_index: role.next_index,
            stream,
            unread,
            registration: reg,
        });
    }

    fn park(session: Session<Self>, stream: Stream, registration: Registration) {
        match session.ctx().parker.clone() {
            Some(parker) => parker.park(stream, session, registration),
            None => {
                monoio::spawn(session.run(stream, BytesMut::new(), registration));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::actors::Actors;
    use crate::server::conn::control::ConnControl;
    use crate::server::conn::env::ConnEnv;
    use std::sync::Arc;
    use std::time::Instant;

    /// What every idle client connection holds, in bytes: its task's
    /// future and its control block (docs/ARCHITECTURE.md, "Memory per idle
    /// connection"). A growth here is paid 15,000 times in `idle_memory`.
    /// (736: the stream's TLS slot added 16 B; mimalloc still serves it
    /// from the 768-byte size class, as the 720 before it.)
    #[test]
    fn an_idle_client_session_stays_small() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let config = Rc::new(Config::default());
            let env = Rc::new(ConnEnv::new(config.clone()));
            let stats: Arc<crate::server::conn::stats::WorkerStats> = Arc::default();
            let wakeups = env.wakeups.clone();
            let shared = crate::server::actors::SharedLimits::new(&config);
            let actors = Actors::new(
                0,
                env.live.clone(),
                stats.clone(),
                wakeups,
                shared,
                Arc::default(),
            );
            let edge = Rc::new(EdgeSide {
                env: env.clone(),
                actors: Rc::new(actors),
                stats,
                limits: std::cell::Cell::new(SessionLimits::client(&config)),
                parker: None,
                handed: Default::default(),
                rehome: Box::new(crate::server::edge::Rehomed::Here),
            });
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let stream = Stream::plain(monoio::net::TcpStream::from_std(client).unwrap());
            let registration = env.registry.register(Instant::now());
            let role = ClientRole {
                conn_id: 1,
                next_index: 0,
            };
            let session = Session::new(edge, role);
            let future = session.run(stream, BytesMut::new(), registration);
            let task = std::mem::size_of_val(&future);
            let control = std::mem::size_of::<ConnControl>();
            println!("session future {task} B, ConnControl {control} B");
            assert!(task <= 736, "the session future grew to {task} bytes");
            assert!(control <= 48, "ConnControl grew to {control} bytes");
        });
    }
}
