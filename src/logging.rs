//! Log output: `tracing` to stderr, filtered by RUST_LOG or the config's level.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. RUST_LOG, when set, overrides `level`.
pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
