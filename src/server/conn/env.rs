//! What a worker lends every connection task: its config, buffers, registry
//! and wake-ups, and the limits of each kind of session.

use std::rc::Rc;
use std::time::Duration;

use super::live_config::LiveConfig;
use super::pool::BufferPool;
use super::registry::Registry;
use super::wakeups::Wakeups;
use crate::config::Config;
use crate::ws::keepalive::KeepalivePolicy;

pub(crate) struct ConnEnv {
    /// The worker's configuration, swapped by a reload (shared with its `Actors`).
    pub live: Rc<LiveConfig>,
    pub pool: BufferPool,
    pub registry: Rc<Registry>,
    pub wakeups: Rc<Wakeups>,
}

impl ConnEnv {
    /// The buffer pool is sized once: its settings need a restart.
    pub fn new(config: Rc<Config>) -> Self {
        let wakeups = Rc::new(Wakeups::default());
        let c = &config.client;
        ConnEnv {
            pool: BufferPool::new(c.read_buffer_bytes, c.buffer_pool_buffers),
            registry: Rc::new(Registry::new(wakeups.clone())),
            wakeups,
            live: Rc::new(LiveConfig::new(config)),
        }
    }

    /// The configuration in force now.
    pub fn config(&self) -> Rc<Config> {
        self.live.get()
    }
}

/// The limits and timers of one kind of WebSocket session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    pub max_message_bytes: usize,
    pub keepalive: KeepalivePolicy,
    /// How long to wait for the peer's close frame after ours.
    pub close_timeout: Duration,
    /// How long one write may make no progress before the peer is given up.
    pub send_timeout: Duration,
}

impl SessionLimits {
    /// A client of an actor.
    pub fn client(config: &Config) -> Self {
        let c = &config.client;
        SessionLimits {
            max_message_bytes: c.max_message_bytes,
            keepalive: KeepalivePolicy {
                interval: c.ping_interval,
                timeout: c.ping_timeout,
            },
            close_timeout: c.close_timeout,
            send_timeout: c.send_timeout,
        }
    }

    /// A runner's tunnel.
    pub fn tunnel(config: &Config) -> Self {
        let r = &config.runners;
        SessionLimits {
            max_message_bytes: r.max_message_bytes,
            keepalive: KeepalivePolicy {
                interval: r.ping_interval,
                timeout: r.ping_timeout,
            },
            close_timeout: r.close_timeout,
            send_timeout: r.send_timeout,
        }
    }
}
