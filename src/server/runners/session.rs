//! A runner's tunnel as a WebSocket session: its first frame must be a
//! hello; after that its frames go to the worker's actors, and what the
//! actors queue for the runner leaves as one batch per write.

use std::rc::Rc;

use bytes::Bytes;
use tracing::warn;

use super::identity::Identity;
use super::quota::TunnelPermit;
use super::RunnerSide;
use crate::config::Config;
use crate::http::route::is_actor_name;
use crate::server::actors::RunnerHello;
use crate::server::conn::control::ConnControl;
use crate::server::conn::env::SessionLimits;
use crate::server::conn::outbox::Outbox;
use crate::server::conn::session::{Failure, Gate, Role};
use crate::server::tunnels::Tunnel;
use crate::tunnel::{decode_frames, Frame, MessageKind, PROTOCOL_VERSION};
use crate::ws::{CloseCode, OpCode};

pub(crate) struct TunnelRole {
    control: Rc<ConnControl>,
    /// Whose token the runner presented, and the configuration that
    /// admitted it (until its hello: a reload meanwhile may revoke it).
    identity: Option<(Identity, Rc<Config>)>,
    /// Set by the runner's hello.
    tunnel: Option<Rc<Tunnel>>,
    /// Its place among its identity's tunnels, held while it lives.
    _permit: TunnelPermit,
    /// Another node's link (its frames come unmasked, `ws::Decoder::for_peer`).
    node: bool,
}

impl TunnelRole {
    pub fn new(
        control: Rc<ConnControl>,
        identity: (Identity, Rc<Config>),
        permit: TunnelPermit,
    ) -> Self {
        TunnelRole {
            control,
            node: identity.0.is_node(),
            identity: Some(identity),
            tunnel: None,
            _permit: permit,
        }
    }
}

impl Role for TunnelRole {
    type Ctx = RunnerSide;

    fn limits(side: &RunnerSide) -> SessionLimits {
        side.limits.get()
    }

    fn unmasked_frames(&self) -> bool {
        self.node
    }

    /// A tunnel is always read: backpressure is on the clients, not the runner.
    fn gate(&mut self, _: &RunnerSide, _: &Rc<ConnControl>, _: bool) -> Gate {
        Gate::Read
    }

    fn on_message(
        &mut self,
        side: &RunnerSide,
        kind: MessageKind,
        payload: Bytes,
    ) -> Result<(), Failure> {
        if kind == MessageKind::Text {
            return Err(failure(
                CloseCode::UNSUPPORTED_DATA,
                "tunnel messages are binary",
            ));
        }
        for frame in decode_frames(payload) {
            let frame = frame.map_err(|e| {
                warn!(error = %e, "malformed tunnel frame: closing that tunnel");
                failure(CloseCode::PROTOCOL, e.0)
            })?;
            match &self.tunnel {
                Some(tunnel) => side.actors.on_tunnel_frame(tunnel, frame).map_err(|e| {
                    warn!(error = %e, "tunnel protocol violation: closing that tunnel");
                    failure(CloseCode::PROTOCOL, e.0)
                })?,
                None => {
                    let Some((identity, admitted_under)) = self.identity.take() else {
                        return Err(failure(CloseCode::PROTOCOL, "a second hello"));
                    };
                    let identity = current_identity(side, identity, &admitted_under)?;
                    self.tunnel = Some(hello(side, frame, &self.control, identity)?)
                }
            }
        }
        Ok(())
    }

    fn collect_outbound(
        &mut self,
        side: &RunnerSide,
        _: &ConnControl,
        outbox: &mut Outbox,
        _: bool,
    ) {
        if let Some(batch) = self.tunnel.as_ref().and_then(|t| t.take_pending()) {
            outbox.push(&side.env.pool, OpCode::Binary, &batch);
        }
    }

    fn flushed(&mut self, _: &RunnerSide) {
        if let Some(tunnel) = &self.tunnel {
            tunnel.flushed();
        }
    }

    fn ended(&mut self, side: &RunnerSide, _: CloseCode, _: &str) {
        if let Some(tunnel) = &self.tunnel {
            side.actors.remove_tunnel(tunnel);
        }
    }
}

/// Close code for a runner refused what its identity does not allow
/// (4000 + 403 Forbidden).
pub(super) const FORBIDDEN: CloseCode = CloseCode(4403);

/// An identity registers only in its pools, and only its runner keys.
fn admit(identity: &Identity, pool: &str, runner_key: &str) -> Result<(), Failure> {
    let reason = if !identity.may_use(pool) {
        format!(
            "runner identity {} may not register in pool {pool}",
            identity.name
        )
    } else if !identity.may_register(runner_key) {
        format!(
            "runner identity {} registers only runner keys starting with {:?}",
            identity.name, identity.key_prefix
        )
    } else {
        return Ok(());
    };
    Err(Failure {
        code: FORBIDDEN,
        reason,
    })
}

/// The runner's identity as the configuration now says: a reload since
/// its token was checked may have taken the token away (4403) or changed
/// what the identity may register.
fn current_identity(
    side: &RunnerSide,
    identity: Identity,
    admitted_under: &Rc<Config>,
) -> Result<Identity, Failure> {
    let now = side.env.config();
    if Rc::ptr_eq(&now, admitted_under) {
        return Ok(identity);
    }
    Identity::renewed(admitted_under, &now, &identity.name).ok_or_else(|| Failure {
        code: FORBIDDEN,
        reason: super::revoke::REVOKED.into(),
    })
}

/// Longest runner key, in bytes.
const MAX_RUNNER_KEY_BYTES: usize = 128;

/// A hello's names are logged and compared on every placement: bounded,
/// printable, and actor names as clients can name them.
fn check_hello(hello: &RunnerHello) -> Result<(), Failure> {
    let key = &hello.runner_key;
    if key.is_empty() || key.len() > MAX_RUNNER_KEY_BYTES || key.chars().any(char::is_control) {
        let reason = "runner key must be 1-128 bytes without control characters";
        return Err(failure(CloseCode::PROTOCOL, reason));
    }
    if !is_actor_name(&hello.pool) {
        let reason = "pool names are 1-64 bytes of ASCII letters, digits, - and _";
        return Err(failure(CloseCode::PROTOCOL, reason));
    }
    if !hello.actor_names.iter().all(|n| is_actor_name(n)) {
        let reason = "actor names are 1-64 bytes of ASCII letters, digits, - and _";
        return Err(failure(CloseCode::PROTOCOL, reason));
    }
    Ok(())
}

fn failure(code: CloseCode, reason: &str) -> Failure {
    Failure {
        code,
        reason: reason.to_owned(),
    }
}

/// A runner's first frame: check its version, register its tunnel, welcome it.
fn hello(
    side: &RunnerSide,
    frame: Frame,
    control: &Rc<ConnControl>,
    identity: Identity,
) -> Result<Rc<Tunnel>, Failure> {
    let Frame::Hello {
        version,
        runner_key,
        pool,
        capacity,
        actor_names,
        features,
        ..
    } = frame
    else {
        return Err(failure(
            CloseCode::PROTOCOL,
            "the first tunnel frame must be hello",
        ));
    };
    if version != PROTOCOL_VERSION {
        let reason = format!(
            "unsupported tunnel protocol version {version}; this gateway speaks {PROTOCOL_VERSION}"
        );
        return Err(Failure {
            code: CloseCode::PROTOCOL,
            reason,
        });
    }
    admit(&identity, &pool, &runner_key)?;
    let hello = RunnerHello {
        runner_key,
        pool,
        capacity,
        actor_names,
        identity: identity.name,
        namespace: identity.namespace,
        features,
    };
    check_hello(&hello)?;
    let tunnel = side
        .actors
        .add_tunnel(hello, control.clone())
        .map_err(|reason| Failure {
            code: FORBIDDEN,
            reason,
        })?;
    tunnel.send(&Frame::Welcome {
        version: PROTOCOL_VERSION,
        workers: side.worker_count as u32,
        tunnel_index: side.worker_id as u32,
        ping_interval_ms: side.limits.get().keepalive.interval.as_millis() as u64,
        features: crate::tunnel::features::SUPPORTED,
    });
    side.actors.place_waiting();
    Ok(tunnel)
}
