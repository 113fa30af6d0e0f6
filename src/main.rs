//! The `tether` command: serve, or check a configuration file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        None => serve(cli.config),
    }
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

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match &config_path {
        Some(path) => match Config::load(path) {
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
    tether::logging::init(&config.server.log_level);
    let signals = match tether::server::signals::block_termination_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tether: cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    let gateway = match Gateway::start(config) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tether: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stopper = gateway.stopper();
    std::thread::Builder::new()
        .name("tether-signals".into())
        .spawn(move || {
            let sig = signals.wait();
            tracing::info!(signal = sig, "stopping: no new connections, draining");
            stopper.stop();
        })
        .expect("spawn the signal thread");
    gateway.join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
