//! The real `tether` binary as a child process: started on a config file
//! of its own, its log read line by line, reloaded with SIGHUP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use super::WAIT;

/// A child process killed when dropped, so that a failing test leaves no
/// gateway running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's stderr, line by line, from a thread.
pub fn log_lines(child: &mut Child) -> Receiver<String> {
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // TETHER_TEST_LOGS=DIR also keeps each child's log in DIR/<pid>.log.
    let mut copy = std::env::var_os("TETHER_TEST_LOGS").and_then(|dir| {
        std::fs::File::create(std::path::Path::new(&dir).join(format!("{}.log", child.id()))).ok()
    });
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(f) = copy.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(f, "{line}");
            }
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line containing `wanted`, within `WAIT`.
#[track_caller]
pub fn line_with(lines: &Receiver<String>, wanted: &str) -> String {
    // The last lines passed over, to say why when the wanted one never comes.
    let mut passed = std::collections::VecDeque::new();
    loop {
        match lines.recv_timeout(WAIT) {
            Ok(line) if line.contains(wanted) => return line,
            Ok(line) => {
                if passed.len() == 20 {
                    passed.pop_front();
                }
                passed.push_back(line);
            }
            Err(e) => {
                let passed: Vec<String> = passed.into();
                panic!(
                    "no log line with {wanted:?}: {e}; the last lines:\n{}",
                    passed.join("\n")
                )
            }
        }
    }
}

/// A directory of its own per call: tests run in parallel.
pub fn temp_dir(what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tether-{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway process serving from a file this test rewrites.
pub struct ChildGateway {
    pub client_addr: SocketAddr,
    pub runner_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub lines: Receiver<String>,
    file: PathBuf,
    dir: PathBuf,
    // Dropped before the directory goes.
    child: Reaped,
}

impl ChildGateway {
    /// Starts `tether --config FILE` on `config` and waits until it serves.
    pub fn start(config: &str) -> ChildGateway {
        ChildGateway::start_as(Command::new(env!("CARGO_BIN_EXE_tether")), config)
    }

    /// As `start`, with `command` running the binary (in a network
    /// namespace, say: `netns::Lab::command`).
    pub fn start_as(mut command: Command, config: &str) -> ChildGateway {
        let dir = temp_dir("child");
        let file = dir.join("tether.toml");
        std::fs::write(&file, config).unwrap();
        let mut child = Reaped(
            command
                .arg("--config")
                .arg(&file)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let lines = log_lines(&mut child.0);
        let serving = line_with(&lines, "tether is serving");
        ChildGateway {
            client_addr: addr_after(&serving, "client="),
            runner_addr: addr_after(&serving, "runners="),
            admin_addr: addr_after(&serving, "admin="),
            lines,
            file,
            dir,
            child,
        }
    }

    /// Replaces the file with `config`, sends SIGHUP and returns the
    /// reload's log line ("configuration reloaded", once every worker runs
    /// on it, or the first "configuration not reloaded").
    pub fn reload(&self, config: &str) -> String {
        std::fs::write(&self.file, config).unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGHUP) };
        loop {
            let line = line_with(&self.lines, "SIGHUP: configuration");
            if line.contains("reloaded") {
                return line;
            }
        }
    }

    /// The next log line containing `wanted`.
    #[track_caller]
    pub fn line_with(&self, wanted: &str) -> String {
        line_with(&self.lines, wanted)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.0.try_wait().unwrap().is_none()
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The address after `label` in a log line (`client=127.0.0.1:4000`).
fn addr_after(line: &str, label: &str) -> SocketAddr {
    line.split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|a| a.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {label} address in {line}"))
}
