//! One runner's tunnel as this worker sees it: what the runner said in its
//! hello, the frames waiting to be sent to it, and backpressure on the
//! clients of its actors.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::load::RunnerLoad;
use crate::server::conn::control::ConnControl;
use crate::tunnel::{encode_frame, encode_http_body, encode_message, Frame, MessageKind};
use crate::ws::CloseCode;

/// Close code for a tunnel replaced by a newer connection with the same
/// runner key (4000 + 409 Conflict). A runner library must not reconnect
/// after it: another process now holds its key.
pub(crate) const REPLACED: CloseCode = CloseCode(4409);

/// One runner's tunnel to this worker.
pub(crate) struct Tunnel {
    pub runner_key: String,
    /// The runner identity that registered the key (only it may take it over).
    pub identity: String,
    /// The namespace whose actors it runs (the identity's).
    pub namespace: String,
    /// What the runner's hello said it may use (`tunnel::features`).
    pub features: u64,
    pub pool: String,
    pub actor_names: Vec<String>,
    /// When the tunnel was set up (shown to operators).
    pub connected_at: SystemTime,
    /// The tunnel session's control: poked when frames are pending.
    pub control: Rc<ConnControl>,
    pending: RefCell<BytesMut>,
    max_pending: usize,
    /// The runner's actors across every worker, against its capacity.
    load: Arc<RunnerLoad>,
    draining: Cell<bool>,
    /// `Drained` was sent: the runner may exit.
    drained_sent: Cell<bool>,
    pub(super) slab_key: Cell<usize>,
    /// Client sessions that stopped reading because this tunnel is congested.
    blocked: RefCell<Vec<Rc<ConnControl>>>,
}

impl Tunnel {
    pub fn new(
        runner_key: String,
        pool: String,
        actor_names: Vec<String>,
        control: Rc<ConnControl>,
        max_pending: usize,
        load: Arc<RunnerLoad>,
    ) -> Self {
        Tunnel {
            identity: String::new(),
            namespace: crate::config::DEFAULT_NAMESPACE.to_owned(),
            features: 0,
            runner_key,
            pool,
            actor_names,
            connected_at: SystemTime::now(),
            control,
            pending: RefCell::new(BytesMut::new()),
            max_pending,
            load,
            draining: Cell::new(false),
            drained_sent: Cell::new(false),
            slab_key: Cell::new(0),
            blocked: RefCell::new(Vec::new()),
        }
    }

    pub fn send(&self, frame: &Frame) {
        encode_frame(&mut self.pending.borrow_mut(), frame);
        self.control.poke();
    }

    pub fn send_message(&self, conn_id: u64, index: u64, kind: MessageKind, payload: &[u8]) {
        encode_message(
            &mut self.pending.borrow_mut(),
            conn_id,
            index,
            kind,
            payload,
        );
        self.control.poke();
    }

    /// An HTTP body piece (PROTOCOL §7b), framed straight into the batch.
    pub fn send_http_body(&self, req_id: u64, data: &[u8]) {
        encode_http_body(&mut self.pending.borrow_mut(), req_id, data);
        self.control.poke();
    }

    /// Everything queued for the runner, as one batch (one WebSocket message).
    pub fn take_pending(&self) -> Option<Bytes> {
        let mut p = self.pending.borrow_mut();
        (!p.is_empty()).then(|| p.split().freeze())
    }

    /// Past `max_pending` queued bytes, clients of this runner stop reading.
    pub fn is_congested(&self) -> bool {
        self.pending.borrow().len() >= self.max_pending
    }

    /// Registers `client` (once, however often it asks) to be poked when
    /// the tunnel is no longer congested.
    pub fn wait_until_uncongested(&self, client: &Rc<ConnControl>) {
        if client.start_waiting_for_tunnel() {
            self.blocked.borrow_mut().push(client.clone());
        }
    }

    /// Called after the tunnel wrote a batch: release blocked clients.
    pub fn flushed(&self) {
        if !self.is_congested() {
            self.release_blocked();
        }
    }

    /// Pokes every blocked client (also when the tunnel goes away).
    pub fn release_blocked(&self) {
        for c in self.blocked.borrow_mut().drain(..) {
            c.stop_waiting_for_tunnel();
            c.poke();
        }
    }

    /// Whether the runner takes HTTP requests (feature 4, PROTOCOL §7b).
    pub fn takes_http(&self) -> bool {
        self.features & crate::tunnel::features::HTTP != 0
    }

    /// Whether the runner offers actors called `name`.
    pub fn runs(&self, name: &str) -> bool {
        self.actor_names.iter().any(|n| n == name)
    }

    /// Whether a new actor `name` may go to this runner now.
    pub fn can_place(&self, name: &str) -> bool {
        !self.draining.get() && self.load.has_room() && self.runs(name)
    }

    /// Actors the runner runs, through any worker.
    pub fn placed(&self) -> u32 {
        self.load.placed()
    }

    /// How many actors the runner may run (the least of its hello and
    /// `runners.max_actors_per_runner`).
    pub fn capacity(&self) -> u32 {
        self.load.capacity()
    }

    pub(super) fn load(&self) -> &RunnerLoad {
        &self.load
    }

    /// No new actors go here; returns false if it was draining already.
    pub fn start_draining(&self) -> bool {
        !self.draining.replace(true)
    }

    /// Whether a drain was asked for (told it may exit or not).
    pub fn drain_requested(&self) -> bool {
        self.draining.get()
    }

    /// Draining, and the runner not yet told it may exit.
    pub fn is_draining(&self) -> bool {
        self.draining.get() && !self.drained_sent.get()
    }

    /// Tells the runner it holds no actors any more and may exit.
    pub fn send_drained(&self) {
        self.drained_sent.set(true);
        self.send(&Frame::Drained);
    }
}
