//! Settings of the process allocator (mimalloc, set in `main.rs`).

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v2), which the Rust
/// bindings do not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes freed memory leave RSS at once, so that what thousands of
/// connections used while active does not stay resident once they hibernate.
///
/// - mimalloc's purge delay 0: freed pages go back to the OS at once instead
///   of after a delay that only runs out when the thread allocates again
///   (measured: 1,135 → ~930 bytes per hibernated socket).
/// - Transparent huge pages off for this process: mimalloc asks for them on
///   its arena (`MADV_HUGEPAGE`), and a 2 MiB page stays resident while any
///   4 KiB of it is in use, so purging freed pages returns nothing. Measured
///   with `bench/hibernate` at 15,000 sockets: 1,235 → ~650 bytes RSS per
///   hibernated socket. `prctl` rather than mimalloc's `allow_thp` option
///   because the arena is already mapped when the gateway starts.
///
/// Neither had a measurable cost on message round trips (bench/README.md).
pub fn return_freed_memory_at_once() {
    // SAFETY: sets a process-wide option; mimalloc allows it at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(
            "cannot turn transparent huge pages off: {}",
            std::io::Error::last_os_error()
        );
    }
}
