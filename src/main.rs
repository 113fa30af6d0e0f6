//! The `tether` command: serve, or check a configuration file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tether::runner::{BuiltinActors, DirStore, Runner, RunnerOptions};
use tether::server::notify;
use tether::{Config, Gateway};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tether", version, about = "Edge gateway for stateful backends")]
struct Cli {
    /// Serve from this TOML file instead of the embedded defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print every error with its position.
    CheckConfig { file: PathBuf },
    /// Run the reference runner (actors `echo`, `chat`, `counter`) against a gateway.
    Runner(RunnerArgs),
    /// Start the gateway on the embedded defaults plus one in-process runner.
    Demo,
    /// Upgrade a running gateway to the binary now at its path, keeping
    /// every WebSocket (sends it SIGUSR2; waits for the new process's pid
    /// in the pid file, if one is known).
    Upgrade(UpgradeArgs),
    /// Print a signed connect token (tt1) granting one actor, or a key
    /// prefix, until an expiry. The secret is read from an environment
    /// variable, never from the command line.
    SignToken(SignTokenArgs),
}

#[derive(clap::Args)]
struct SignTokenArgs {
    /// Environment variable holding the secret (one of the namespace's
    /// `connect_token_secrets`).
    #[arg(long, default_value = "TETHER_CONNECT_SECRET")]
    secret_env: String,
    #[arg(long, default_value = "default")]
    ns: String,
    /// Actor name.
    #[arg(long)]
    name: String,
    /// Key segments, e.g. `--key room --key 1` for /actors/NAME/room/1.
    #[arg(long)]
    key: Vec<String>,
    /// Grant every key starting with the given segments.
    #[arg(long)]
    prefix: bool,
    /// How long the token is valid ("15m", "24h").
    #[arg(long, default_value = "1h", value_parser = humantime_secs)]
    ttl: std::time::Duration,
}

#[derive(clap::Args)]
struct UpgradeArgs {
    /// The gateway's pid (default: read from the pid file).
    #[arg(long)]
    pid: Option<u32>,
    /// The gateway's pid file (default: `server.pid_file` of --config).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// How long to wait for the new process (a hand-over waits at most
    /// for actors to stop and sessions to flush: see systemd/README.md).
    #[arg(long, default_value = "180s", value_parser = humantime_secs)]
    timeout: std::time::Duration,
}

#[derive(clap::Args)]
struct RunnerArgs {
    /// The gateway's runner listener (`wss://` for TLS).
    #[arg(long, default_value = "ws://127.0.0.1:8081")]
    gateway: String,
    /// For `wss://`: the CA (PEM) the gateway's certificate must chain to
    /// (default: the system's trusted roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Runner token (the embedded default config accepts the development token).
    #[arg(long, default_value = tether::config::DEV_RUNNER_TOKEN)]
    token: String,
    /// Runner pool.
    #[arg(long, default_value = "default")]
    pool: String,
    /// Runner key; a runner connecting with the key of a connected one replaces it.
    #[arg(long)]
    key: Option<String>,
    /// Most actors at once.
    #[arg(long, default_value_t = 10_000)]
    capacity: u32,
    /// Directory for actors' durable state, shared by the runners of this
    /// host (default: tether-actor-state in the temporary directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Make every save survive a crash of the host, not only of this
    /// process: a batch's files are synced to disk before its messages
    /// are acknowledged (one syncfs per batch, whatever its size).
    #[arg(long)]
    sync_state: bool,
    /// On SIGTERM/SIGINT, how long to wait for the gateway to move this
    /// runner's actors elsewhere before exiting anyway.
    #[arg(long, default_value = "30s", value_parser = humantime_secs)]
    drain_timeout: std::time::Duration,
    /// Serve the serverless entry point on this address instead of dialing
    /// the gateway: `GET /metadata`, and `GET /start`, which starts a runner
    /// dialing the gateway named in the request, which must be `--gateway`
    /// (`--token`, `--pool` and `--key` are then the request's).
    #[arg(long)]
    serve_http: Option<std::net::SocketAddr>,
}

/// "30s", "500ms", "2m" → a duration.
fn humantime_secs(s: &str) -> Result<std::time::Duration, String> {
    tether::config::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Runner(args)) => runner(args),
        Some(Command::Demo) => demo(),
        Some(Command::SignToken(args)) => sign_token(&args),
        Some(Command::Upgrade(args)) => upgrade(&args, cli.config.as_deref()),
        None => serve(cli.config),
    }
}

fn sign_token(args: &SignTokenArgs) -> ExitCode {
    let Some(secret) = std::env::var_os(&args.secret_env) else {
        eprintln!("tether: set {} to the signing secret", args.secret_env);
        return ExitCode::FAILURE;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = tether::http::token::sign_for(
        secret.as_encoded_bytes(),
        &args.ns,
        &args.name,
        &args.key,
        args.prefix,
        args.ttl.as_secs(),
        now,
    );
    println!("{token}");
    ExitCode::SUCCESS
}

fn upgrade(args: &UpgradeArgs, config: Option<&Path>) -> ExitCode {
    let configured = config
        .and_then(|path| Config::load(path).ok())
        .map(|c| c.server.pid_file)
        .filter(|f| !f.is_empty())
        .map(PathBuf::from);
    let pid_file = args.pid_file.clone().or(configured);
    let pid = args
        .pid
        .or_else(|| pid_file.as_deref().and_then(tether::server::pidfile::read));
    let Some(pid) = pid else {
        eprintln!("tether upgrade: give --pid, --pid-file, or --config with server.pid_file");
        return ExitCode::FAILURE;
    };
    match tether::server::pidfile::upgrade(pid, pid_file.as_deref(), args.timeout) {
        Ok(Some(new)) => println!("upgraded: pid {pid} -> {new}"),
        Ok(None) => println!("signalled pid {pid} (no pid file to follow the upgrade)"),
        Err(e) => {
            eprintln!("tether upgrade: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", file.display());
            }
            ExitCode::FAILURE
        }
    }
}

/// Blocks SIGINT/SIGTERM before any thread starts, so one thread can wait for them.
fn termination_signals() -> Option<tether::server::signals::TerminationSignals> {
    match tether::server::signals::block_termination_signals() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("tether: cannot set up signal handling: {e}");
            None
        }
    }
}

/// A started gateway with what its signal thread needs.
struct Started {
    gateway: Gateway,
    signals: tether::server::signals::TerminationSignals,
    /// Changes the log level on reload.
    levels: Option<tether::logging::LevelHandle>,
}

/// Logging, signal handling, then the gateway; errors are printed. A
/// process started by an upgrade takes the old one's listeners and
/// connections instead of binding.
fn start_gateway(config: Config) -> Option<Started> {
    let levels = tether::logging::init_with(&config.server.log_level, config.server.log_format);
    let signals = termination_signals()?;
    let started = match tether::server::Inheriting::from_env() {
        None => Gateway::start(config),
        Some(inheriting) => {
            inheriting
                .and_then(|i| i.start(config))
                .map(|(gateway, taking)| {
                    // Serves what came, even if the hand-over broke off.
                    taking.receive_connections();
                    let upgrades = &gateway.gateway_stats().upgrades;
                    upgrades.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    gateway
                })
        }
    };
    match started {
        Ok(gateway) => Some(Started {
            gateway,
            signals,
            levels,
        }),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tether: {e}");
            None
        }
    }
}

fn runner_options(args: &RunnerArgs) -> Result<RunnerOptions, String> {
    let mut o = RunnerOptions::new(&args.gateway, &args.token);
    o.pool = args.pool.clone();
    o.capacity = args.capacity;
    o.tls_ca = args.ca.clone();
    if let Some(k) = &args.key {
        o.key = k.clone();
    }
    let dir = args.state_dir.clone().unwrap_or_else(DirStore::default_dir);
    let durability = match args.sync_state {
        true => tether::runner::Durability::Host,
        false => tether::runner::Durability::Process,
    };
    let store = DirStore::with_durability(&dir, durability)
        .map_err(|e| format!("cannot use state directory {}: {e}", dir.display()))?;
    o.state = Some(std::sync::Arc::new(store));
    Ok(o)
}

/// Runs until a termination signal (then drains: the gateway moves the
/// actors elsewhere, clients staying connected) or until an operator's
/// drain completes.
fn runner(args: RunnerArgs) -> ExitCode {
    tether::logging::init("info");
    let Some(signals) = termination_signals() else {
        return ExitCode::FAILURE;
    };
    if let Some(addr) = args.serve_http {
        return serve_serverless(&args, addr, &signals);
    }
    let options = match runner_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tether runner: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(gateway = %options.gateway, key = %options.key, pool = %options.pool, "runner starting");
    let runner = Runner::start(options, BuiltinActors);
    loop {
        if signals
            .wait_timeout(std::time::Duration::from_millis(100))
            .is_some()
        {
            tracing::info!("draining: the gateway moves this runner's actors elsewhere");
            if !runner.drain(args.drain_timeout) {
                tracing::warn!("drain did not complete within --drain-timeout: exiting anyway");
            }
            break;
        }
        if runner.is_drained() {
            tracing::info!("drained by the gateway: exiting");
            break;
        }
    }
    runner.stop();
    ExitCode::SUCCESS
}

fn demo() -> ExitCode {
    let config = Config::default();
    let Some(Started {
        gateway, signals, ..
    }) = start_gateway(config)
    else {
        return ExitCode::FAILURE;
    };
    let runner = Runner::start(
        RunnerOptions::new(
            &format!("ws://{}", gateway.runner_addr),
            tether::config::DEV_RUNNER_TOKEN,
        ),
        BuiltinActors,
    );
    println!(
        "demo: open ws://{}/actors/chat/lobby from two browser tabs and chat",
        gateway.client_addr
    );
    signals.wait();
    runner.stop();
    gateway.shutdown();
    ExitCode::SUCCESS
}

/// Under systemd (`$NOTIFY_SOCKET`): READY=1 now that every worker
/// listens, and, if it watches (`$WATCHDOG_USEC`), WATCHDOG=1 every half
/// interval while every worker's loop turns. The notifier is kept for
/// STOPPING=1.
fn notify_systemd(gateway: &Gateway) -> Option<std::sync::Arc<notify::Notifier>> {
    let notifier = std::sync::Arc::new(notify::Notifier::from_env()?);
    let vitals = gateway.vitals();
    // After an upgrade this process is the service's main one now
    // (the unit's NotifyAccess=all lets it say so).
    let main_pid = format!("MAINPID={}\n", std::process::id());
    if let Err(e) = notifier.send(&format!("{main_pid}READY=1\n{}", vitals.status_line())) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    if let Some(interval) = notify::watchdog_interval() {
        let n = notifier.clone();
        let feed = move || feed_watchdog(&n, &vitals, interval);
        let spawned = std::thread::Builder::new()
            .name("tether-watchdog".into())
            .spawn(feed);
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the watchdog thread");
        }
    }
    Some(notifier)
}

/// Feeds systemd's watchdog while every worker's loop turns; a stuck
/// worker stops the feed (and systemd restarts the service).
fn feed_watchdog(n: &notify::Notifier, vitals: &notify::Vitals, interval: std::time::Duration) {
    let mut dog = notify::Watchdog::new(vitals.workers());
    loop {
        std::thread::sleep(interval / 2);
        if dog.all_turning(vitals.heartbeats()) {
            let _ = n.send(&format!("WATCHDOG=1\n{}", vitals.status_line()));
        } else {
            tracing::warn!(
                ?interval,
                "a worker's loop has stopped turning: not feeding the systemd watchdog"
            );
        }
    }
}

/// SIGHUP: re-reads the configuration file and puts in force what can
/// change live (`config::diff::SETTINGS`); settings that need a restart
/// keep their running values. An invalid file changes nothing; each of its
/// errors is logged. `running` becomes the text now in force.
fn reload(
    path: Option<&std::path::Path>,
    running: &mut String,
    reloader: &tether::server::Reloader,
    levels: Option<&tether::logging::LevelHandle>,
) {
    let Some(path) = path else {
        tracing::info!(
            "SIGHUP: no configuration file to reload (running on the embedded defaults)"
        );
        return;
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            reloader.refused();
            return tracing::warn!(file = %path.display(), error = %e, "SIGHUP: cannot read the configuration; nothing changed");
        }
    };
    let plan = match tether::config::reload::plan(running, &text) {
        Ok(plan) => plan,
        Err(errors) => {
            reloader.refused();
            for e in &errors {
                tracing::warn!(file = %path.display(), error = %e, "SIGHUP: configuration not reloaded; the running one stays");
            }
            return;
        }
    };
    // A pool whose function is missing or speaks another protocol refuses
    // the whole file, as an invalid one does.
    if let Err(e) = tether::server::check_functions(&plan.config) {
        reloader.refused();
        return tracing::warn!(file = %path.display(), error = %e, "SIGHUP: configuration not reloaded; the running one stays");
    }
    if !reloader.apply(&plan.config) {
        tracing::warn!(
            "SIGHUP: a worker has not taken the new configuration yet; it will at its next turn"
        );
    }
    if let Some(levels) = levels {
        levels.set(&plan.config.server.log_level);
    }
    *running = plan.running;
    tracing::info!(applied = ?plan.applied, needs_restart = ?plan.needs_restart, "SIGHUP: configuration reloaded");
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    // The text the process runs on, kept to tell a reload what changed.
    let running = match &config_path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => String::new(),
    };
    let config = match &config_path {
        Some(path) => match Config::parse(&running) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors {
                    eprintln!("{}: {e}", path.display());
                }
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    // The binary as it was found at start: an upgrade starts whatever is
    // at that path then.
    let binary = tether::server::NewBinary {
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
        args: std::env::args_os().skip(1).collect(),
    };
    let stop_bound = config.server.shutdown_drain + STOP_MARGIN;
    let pid_file =
        Some(PathBuf::from(&config.server.pid_file)).filter(|p| !p.as_os_str().is_empty());
    let Some(Started {
        gateway,
        signals,
        levels,
    }) = start_gateway(config)
    else {
        return ExitCode::FAILURE;
    };
    if let Some(path) = &pid_file {
        if let Err(e) = tether::server::pidfile::write(path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the pid file");
        }
    }
    let upgrading = std::sync::Arc::new(std::sync::Mutex::new(Upgrade::None));
    let handler = SignalHandler {
        upgrading: upgrading.clone(),
        stopper: gateway.stopper(),
        reloader: gateway.reloader(),
        upgrader: gateway.upgrader(),
        notifier: notify_systemd(&gateway),
        levels,
        config_path,
        running,
        binary,
        stop_bound,
    };
    std::thread::Builder::new()
        .name("tether-signals".into())
        .spawn(move || handler.run(signals))
        .expect("spawn the signal thread");
    gateway.join();
    // The workers are done once they handed everything over; the upgrade
    // is not until the new process confirms it took it all.
    let upgrade = *upgrading.lock().unwrap_or_else(|e| e.into_inner());
    // After an upgrade the pid file is the new process's (it may not have
    // written it yet).
    if let (Some(path), false) = (&pid_file, upgrade == Upgrade::HandedOver) {
        tether::server::pidfile::remove_if_mine(path);
    }
    tracing::info!("stopped");
    match upgrade {
        // Restart=on-failure brings the service back.
        Upgrade::Broken => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// What became of an upgrade of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// Everything went to the new process.
    HandedOver,
    /// The hand-over broke off after it began.
    Broken,
}

/// Beyond `server.shutdown_drain`, what a stop may take (close handshakes,
/// a stalled write) before the process exits regardless.
const STOP_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What the signal thread acts with.
struct SignalHandler {
    /// Held while an upgrade runs (the process exits only after it), with
    /// its outcome.
    upgrading: std::sync::Arc<std::sync::Mutex<Upgrade>>,
    stopper: tether::server::Stopper,
    reloader: tether::server::Reloader,
    upgrader: tether::server::Upgrader,
    notifier: Option<std::sync::Arc<notify::Notifier>>,
    levels: Option<tether::logging::LevelHandle>,
    config_path: Option<PathBuf>,
    running: String,
    binary: tether::server::NewBinary,
    stop_bound: std::time::Duration,
}

impl SignalHandler {
    /// SIGHUP reloads, SIGUSR2 upgrades, SIGINT/SIGTERM stop.
    fn run(mut self, signals: tether::server::signals::TerminationSignals) {
        loop {
            match signals.wait() {
                libc::SIGHUP => {
                    let (path, levels) = (self.config_path.as_deref(), self.levels.as_ref());
                    reload(path, &mut self.running, &self.reloader, levels);
                }
                libc::SIGUSR2 => {
                    if self.upgrade() {
                        return; // the workers finish; main exits
                    }
                }
                sig => return self.stop(sig),
            }
        }
    }

    /// Hands everything to a new process; false if it could not start (this
    /// one serves on).
    fn upgrade(&self) -> bool {
        tracing::info!(exe = %self.binary.exe.display(), "SIGUSR2: upgrading");
        let mut upgrading = self.upgrading.lock().unwrap_or_else(|e| e.into_inner());
        match self.upgrader.upgrade(&self.binary) {
            Ok(done) => {
                *upgrading = Upgrade::HandedOver;
                // Before this process exits, so that systemd never sees the
                // service without its main process.
                if let Some(n) = &self.notifier {
                    let _ = n.send(&format!("MAINPID={}", done.pid));
                }
                tracing::info!(
                    pid = done.pid,
                    connections = done.connections,
                    "upgrade: handed over; this process exits"
                );
                true
            }
            Err(e @ tether::server::UpgradeError::NotStarted(_)) => {
                tracing::error!("upgrade failed: {e}");
                false
            }
            Err(e) => {
                *upgrading = Upgrade::Broken;
                tracing::error!("upgrade failed: {e}");
                true
            }
        }
    }

    /// Drains, and exits anyway once `stop_bound` has passed.
    /// The bound is armed first: logging itself can block (a stalled
    /// journal), and must not keep the process from ending.
    fn stop(&self, sig: i32) {
        if let Some(n) = &self.notifier {
            let _ = n.send("STOPPING=1");
        }
        self.stopper.stop();
        let bound = self.stop_bound;
        let _ = std::thread::Builder::new()
            .name("tether-stop-bound".into())
            .spawn(move || {
                std::thread::sleep(bound);
                // No log line: the writer may be what is stuck.
                std::process::exit(1);
            });
        tracing::info!(signal = sig, "stopping: no new connections, draining");
    }
}

/// `tether runner --serve-http ADDR`: the reference actors as a serverless
/// function, until a termination signal.
fn serve_serverless(
    args: &RunnerArgs,
    addr: std::net::SocketAddr,
    signals: &tether::server::signals::TerminationSignals,
) -> ExitCode {
    let state = match runner_options(args) {
        Ok(o) => o.state,
        Err(e) => {
            eprintln!("tether runner: {e}");
            return ExitCode::FAILURE;
        }
    };
    let factory: std::sync::Arc<dyn tether::runner::ActorFactory> =
        std::sync::Arc::new(BuiltinActors);
    // It dials only the gateway it is told to trust (`--gateway`).
    let handler = tether::runner::serverless::ServerlessHandler::new(factory, state)
        .capacity(args.capacity)
        .allow_gateway(&args.gateway)
        .tls_ca(args.ca.clone());
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tether runner: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match tether::runner::serverless::http::serve(listener, handler) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tether runner: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %server.addr(), "serving /metadata and /start");
    while signals
        .wait_timeout(std::time::Duration::from_secs(1))
        .is_none()
    {}
    drop(server);
    ExitCode::SUCCESS
}
