//! At the file-descriptor limit. Its own test binary: it lowers the
//! process's RLIMIT_NOFILE, which would starve tests running beside it.

mod common;

use common::*;

/// Lowers the soft limit on open files for as long as it lives.
struct FdLimit {
    saved: libc::rlimit,
}

impl FdLimit {
    fn set(soft: u64) -> FdLimit {
        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with valid pointers to rlimit structs.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved), 0);
            let lowered = libc::rlimit {
                rlim_cur: soft,
                rlim_max: saved.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
        }
        FdLimit { saved }
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.saved) };
    }
}

/// The limit that leaves exactly two descriptors to be opened: new ones take
/// the lowest free numbers, and the limit caps the numbers, not the count.
fn room_for_two() -> u64 {
    // SAFETY: dup and close of our own standard input's descriptor.
    unsafe {
        let a = libc::dup(0);
        let b = libc::dup(0);
        assert!(a >= 0 && b > a);
        libc::close(a);
        libc::close(b);
        b as u64 + 1
    }
}

#[test]
fn a_connection_that_cannot_be_handed_over_gets_an_answer() {
    let h = start_bare(test_config()); // two workers; the admin listener is on worker 0
    let count = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let baseline = count();
    let mut answers = Vec::new();
    for k in 0..10 {
        // The gateway closes its side of the previous request a moment
        // after the client: only then are the free descriptors known.
        wait_for("the previous request's sockets to close", || {
            count() <= baseline
        });
        let request = format!(
            "GET /actors/echo/k{k} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
        );
        // Room for the client's socket and the gateway's accepted one, and
        // not one more: handing an actor request to worker 1 needs a
        // duplicate descriptor, which fails. (read_dir's own descriptor is
        // closed again before the limit is set.)
        let limit = FdLimit::set(room_for_two());
        let answer = raw_exchange(h.admin_addr, request.as_bytes());
        drop(limit);
        answers.push(answer);
    }
    // Before, a failed hand-off dropped the socket without a word.
    for answer in &answers {
        assert!(
            answer.starts_with("HTTP/1.1 "),
            "no answer at all: {answer:?}"
        );
    }
    assert!(
        answers
            .iter()
            .any(|a| status_of(a) == 503 && a.contains("out of file descriptors")),
        "some request needed a hand-off: {answers:?}"
    );
    h.shutdown();
}
