//! What every WebSocket connection of a worker shares, whatever is at its
//! other end: the connection's control block, the worker's registry and its
//! one timer, the session loop (over a [`session::Role`]), replies written
//! before a WebSocket exists, socket IO that never loses bytes, and the
//! worker's buffers. Nothing here knows about actors, runners or tunnels.

pub(crate) mod admission;
pub(crate) mod control;
pub(crate) mod env;
pub(crate) mod gather;
pub(crate) mod histogram;
pub(crate) mod io;
pub(crate) mod live_config;
pub(crate) mod outbox;
pub(crate) mod pool;
pub(crate) mod rate;
mod rc_slab;
pub(crate) mod registry;
pub(crate) mod reply;
pub(crate) mod session;
pub(crate) mod shelf;
pub(crate) mod slot;
pub(crate) mod stats;
pub(crate) mod stopping;
pub(crate) mod stream;
pub(crate) mod tally;
pub(crate) mod thread_slot;
pub(crate) mod wakeups;
