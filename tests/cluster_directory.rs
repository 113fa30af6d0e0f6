//! The cluster-wide actor directory (issue 16, groundwork) against a real
//! etcd: Debian's `etcd-server`, started per test on loopback ports in a
//! temp dir. Without etcd every test prints SKIPPED and passes.

mod common;

use common::etcd::{self, Etcd};

/// The helper itself: etcd starts, answers, and leaves nothing behind.
#[test]
fn etcd_starts_answers_and_is_removed_on_drop() {
    if !etcd::available() {
        return;
    }
    let a = Etcd::start();
    let b = Etcd::start();
    assert_ne!(a.client_addr, b.client_addr);
    let dir = a.dir().to_owned();
    assert!(dir.join("data").exists());
    drop(a);
    assert!(!dir.exists(), "the data dir goes with the etcd");
    assert!(std::net::TcpStream::connect(b.client_addr).is_ok());
}
