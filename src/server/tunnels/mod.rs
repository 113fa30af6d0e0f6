//! One worker's runner tunnels: what each runner said in its hello, the
//! frames waiting to be sent to it, and which of its clients wait for it to
//! drain (`tunnel`); the worker's table of them (`table`); a runner's load
//! across workers (`load`); tunnels to and from other nodes (`peer`).

pub(crate) mod load;
pub(crate) mod peer;
pub(crate) mod reserved;
pub(crate) mod table;
pub(crate) mod tunnel;

pub(crate) use load::RunnerLoads;
pub(crate) use peer::{PeerOut, PEER_KEY_PREFIX, PEER_NAMESPACE, PEER_POOL};
pub(crate) use reserved::{release, Reserved};
pub(crate) use table::TunnelTable;
pub(crate) use tunnel::{Tunnel, REPLACED};
