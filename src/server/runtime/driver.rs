//! Choosing and building each worker's monoio runtime.

use std::future::Future;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::IoDriver;

/// The driver actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// Resolves the configured choice against what this kernel allows.
pub fn choose(configured: IoDriver) -> Result<Driver, String> {
    let forced_legacy = std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some();
    match configured {
        IoDriver::Epoll => Ok(Driver::Epoll),
        _ if forced_legacy => Ok(Driver::Epoll),
        IoDriver::IoUring if monoio::utils::detect_uring() => Ok(Driver::IoUring),
        IoDriver::IoUring => Err("io_driver = \"io_uring\" but io_uring is not available (old kernel, seccomp or io_uring_disabled)".into()),
        IoDriver::Auto if monoio::utils::detect_uring() => Ok(Driver::IoUring),
        IoDriver::Auto => Ok(Driver::Epoll),
    }
}

/// Builds a runtime with `driver` on the current thread and runs `fut` to completion.
pub fn block_on<F: Future>(driver: Driver, entries: u32, fut: F) -> std::io::Result<F::Output> {
    match driver {
        Driver::IoUring => {
            let mut rt = RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?;
            Ok(rt.block_on(fut))
        }
        Driver::Epoll => {
            let mut rt = RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .build()?;
            Ok(rt.block_on(fut))
        }
    }
}
