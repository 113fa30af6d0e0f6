//! Reference runners the load test starts itself: this binary re-executed
//! as a runner child process, so that chaos can SIGKILL it (a crash) or
//! SIGTERM it (a drain: it hands its actors over and exits).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const RUNNER_ARG: &str = "__runner";

pub struct RunnerChild {
    child: Child,
    pub key: String,
}

impl RunnerChild {
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after a signal).
    pub fn wait(mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

impl Drop for RunnerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runners sharing one state directory (as the runners of one host do),
/// removed when dropped.
pub struct Runners {
    pub children: Vec<RunnerChild>,
    state_dir: PathBuf,
}

impl Drop for Runners {
    fn drop(&mut self) {
        self.children.clear();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

pub fn start(count: usize, url: &str, token: &str) -> Result<Runners, String> {
    start_with_ca(count, url, token, None)
}

/// As [`start`]; a `wss://` url's certificate must chain to `ca` (a PEM
/// file), or with `None` to the system's trusted roots.
pub fn start_with_ca(
    count: usize,
    url: &str,
    token: &str,
    ca: Option<&Path>,
) -> Result<Runners, String> {
    let state_dir =
        std::env::temp_dir().join(format!("tether-loadtest-state-{}", std::process::id()));
    let mut runners = Runners {
        children: Vec::new(),
        state_dir,
    };
    for i in 0..count {
        let key = format!("loadtest-{}-{i}", std::process::id());
        runners
            .children
            .push(spawn_with_ca(url, token, &key, &runners.state_dir, ca)?);
    }
    Ok(runners)
}

/// Starts this binary again as a runner child (its `main` must call
/// `run_if_asked` first) and waits until it is connected.
pub fn spawn(url: &str, token: &str, key: &str, state_dir: &Path) -> Result<RunnerChild, String> {
    spawn_with_ca(url, token, key, state_dir, None)
}

/// As [`spawn`], trusting `ca` for a `wss://` url (see [`start_with_ca`]).
pub fn spawn_with_ca(
    url: &str,
    token: &str,
    key: &str,
    state_dir: &Path,
    ca: Option<&Path>,
) -> Result<RunnerChild, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut child = Command::new(exe)
        .args([RUNNER_ARG, url, token, key])
        .arg(state_dir)
        .args(ca)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting a runner: {e}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("runner stdout")?;
    let _ = BufReader::new(stdout).read_line(&mut line);
    let child = RunnerChild {
        child,
        key: key.into(),
    };
    if line.trim() != "ready" {
        return Err(format!(
            "runner {key} could not connect to {url} within 10 s (is the gateway's runner listener there, and the token right?)"
        ));
    }
    Ok(child)
}

/// In a runner child: serve the reference actors until SIGTERM (then drain)
/// or SIGKILL. Returns if this process is not a runner child.
pub fn run_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(RUNNER_ARG) || args.len() < 6 {
        return;
    }
    let signals = tether::server::signals::block_termination_signals().expect("signal mask");
    let mut options = tether::runner::RunnerOptions::new(&args[2], &args[3]);
    options.key = args[4].clone();
    options.tls_ca = args.get(6).map(PathBuf::from);
    // Saves that survive a host crash (group commit, `tether runner
    // --sync-state`) when the environment asks for it.
    let durability = match std::env::var_os("TETHER_LOADTEST_SYNC_STATE") {
        Some(_) => tether::runner::Durability::Host,
        None => tether::runner::Durability::Process,
    };
    match tether::runner::DirStore::with_durability(&args[5], durability) {
        Ok(store) => options.state = Some(std::sync::Arc::new(store)),
        Err(e) => {
            eprintln!("runner state directory {}: {e}", args[5]);
            std::process::exit(2);
        }
    }
    let runner = tether::runner::Runner::start(options, tether::runner::BuiltinActors);
    if !runner.wait_connected(Duration::from_secs(10)) {
        std::process::exit(1);
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    signals.wait();
    runner.drain(Duration::from_secs(30));
    runner.stop();
    std::process::exit(0);
}
