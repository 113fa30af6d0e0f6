//! Log output: `tracing` to stderr, filtered by RUST_LOG or the config's
//! level, as plain text or one JSON object per line (`server.log_format`).
//! Colour codes only when stderr is a terminal: under systemd, stderr is
//! the journal (or a file), where escape codes are noise. The level can be
//! changed while running (SIGHUP) through the handle `init_with` returns.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// Changes the installed subscriber's level while it runs.
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
    /// Applies `level` (EnvFilter syntax) unless RUST_LOG overrides the
    /// configuration; false if it could not be applied.
    pub fn set(&self, level: &str) -> bool {
        if std::env::var_os("RUST_LOG").is_some() {
            return false;
        }
        EnvFilter::try_new(level)
            .ok()
            .is_some_and(|filter| self.0.reload(filter).is_ok())
    }
}

/// Installs the global subscriber as plain text. RUST_LOG, when set,
/// overrides `level`.
pub fn init(level: &str) {
    init_with(level, LogFormat::Text);
}

/// Installs the global subscriber in `format`; `None` if one was already
/// installed (tests start several gateways in one process).
pub fn init_with(level: &str, format: LogFormat) -> Option<LevelHandle> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(false),
            )
            .try_init(),
    };
    installed.ok().map(|()| LevelHandle(handle))
}
