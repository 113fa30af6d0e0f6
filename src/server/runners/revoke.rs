//! A reload that takes a runner token away, or narrows what its identity
//! may register, closes the tunnels it no longer admits (4403), on this
//! worker: a tunnel lives only while the token it presented would still
//! let it in. Their actors move to other runners of their pool, their
//! clients staying connected, as when a runner dies. To rotate a token
//! without that, add the new one beside it (another identity), move the
//! runners over, then remove the old.

use super::identity::Identity;
use super::session::FORBIDDEN;
use super::RunnerSide;
use crate::config::Config;
use crate::server::tunnels::Tunnel;

/// What a revoked tunnel is told.
pub(super) const REVOKED: &str = "runner token revoked by a configuration reload";

/// Closes this worker's tunnels that `new` no longer admits (each is logged).
pub(crate) fn revoke_tunnels(side: &RunnerSide, old: &Config, new: &Config) {
    let revoked = |t: &Tunnel| !still_admitted(old, new, t);
    side.actors.close_tunnels(revoked, FORBIDDEN, REVOKED);
}

/// Whether the tunnel's identity keeps its token under `new` and may still
/// register the tunnel's pool and runner key.
fn still_admitted(old: &Config, new: &Config, tunnel: &Tunnel) -> bool {
    Identity::renewed(old, new, &tunnel.identity)
        .is_some_and(|id| id.may_use(&tunnel.pool) && id.may_register(&tunnel.runner_key))
}
