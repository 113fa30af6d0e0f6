//! Why an actor cannot be reached, as the actor layer knows it. The edge
//! turns it into an HTTP status or close code; nothing here speaks HTTP.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// No runner of the actor's pool offers an actor by that name.
    UnknownActor {
        name: String,
    },
    /// No runner of the pool is connected.
    NoRunner {
        pool: String,
    },
    /// Every runner of the pool that offers the actor is full or draining.
    NoCapacity {
        pool: String,
        name: String,
    },
    /// It could not be started (or was given up); why.
    StartFailed {
        reason: String,
    },
    StartTimeout,
    /// The runner did not answer the connection open in time.
    OpenTimeout,
    /// The runner refused the connection with this status and reason.
    Rejected {
        status: u16,
        reason: String,
    },
    /// The client's address created too many new actors lately.
    TooManyNewActors,
    /// The actor has `actors.max_connections_per_actor` connections.
    ActorFull,
    /// The gateway is handing its connections to a new process of itself.
    Upgrading,
    /// The actor's runner did not announce HTTP (feature 4, PROTOCOL §7b).
    NoHttp,
}

impl Unavailable {
    /// Machine-readable: what a client reads before the colon.
    pub fn kind(&self) -> &'static str {
        match self {
            Unavailable::UnknownActor { .. } => "unknown_actor",
            Unavailable::NoRunner { .. } => "no_runner",
            Unavailable::NoCapacity { .. } => "no_capacity",
            Unavailable::StartFailed { .. } => "start_failed",
            Unavailable::StartTimeout => "start_timeout",
            Unavailable::OpenTimeout => "open_timeout",
            Unavailable::Rejected { .. } => "rejected",
            Unavailable::TooManyNewActors => "rate_limited",
            Unavailable::ActorFull => "actor_full",
            Unavailable::Upgrading => "upgrading",
            Unavailable::NoHttp => "no_http",
        }
    }

    /// What a person reads.
    pub fn reason(&self) -> String {
        match self {
            Unavailable::UnknownActor { name } => format!("unknown actor {name}"),
            Unavailable::NoRunner { pool } => format!("no runner available in pool {pool}"),
            Unavailable::NoCapacity { pool, name } => {
                format!("no runner of pool {pool} has capacity for {name}")
            }
            Unavailable::StartFailed { reason } | Unavailable::Rejected { reason, .. } => {
                reason.clone()
            }
            Unavailable::StartTimeout => "actor did not start within actors.start_timeout".into(),
            Unavailable::OpenTimeout => "the actor did not accept the connection in time".into(),
            Unavailable::TooManyNewActors => {
                "this address created too many new actors; try again shortly".into()
            }
            Unavailable::ActorFull => "the actor has as many connections as it may".into(),
            Unavailable::Upgrading => "the gateway is upgrading; try again in a second".into(),
            Unavailable::NoHttp => "the actor's runner does not take HTTP requests".into(),
        }
    }
}

/// `kind: reason`, what the client reads.
impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.reason())
    }
}
