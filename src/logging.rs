//! Log output: `tracing` to stderr, filtered by RUST_LOG or the config's
//! level, as plain text or one JSON object per line (`server.log_format`).
//! Colour codes only when stderr is a terminal: under systemd, stderr is
//! the journal (or a file), where escape codes are noise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber as plain text. RUST_LOG, when set,
/// overrides `level`.
pub fn init(level: &str) {
    init_with(level, LogFormat::Text);
}

/// Installs the global subscriber in `format`.
pub fn init_with(level: &str, format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
