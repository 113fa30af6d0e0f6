//! `loadtest`: drive a gateway (or any WebSocket server) with a scenario.
//!
//!     loadtest --scenario echo-throughput --url ws://127.0.0.1:8080 --gateway-pid $(pidof tether)
//!     loadtest --scenario smoke --url wss://localhost:8443 --ca ca.crt
//!
//! Exit status: 0 all checks passed, 1 something was lost, duplicated,
//! reordered or refused, 2 the scenario or options are wrong.

use std::time::Duration;

use clap::Parser;
use tether_loadtest::run::{run, Options};
use tether_loadtest::scenario::{ActorKind, ChaosEvent, Scenario, BUILTIN};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load test and correctness check for Tether or any WebSocket server",
    after_help = "Every scenario field can be overridden by the option of the same name. Chaos events: ACTION[:RUNNER]@TIME, e.g. kill:0@5s, drain:1@8s, hibernate@10s/40s/5s (at / silent for / wake spread); `--chaos none` removes the scenario's."
)]
struct Args {
    /// A shipped scenario (see --list) or a TOML file.
    #[arg(long, default_value = "smoke")]
    scenario: String,
    /// List the shipped scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Print the effective scenario as TOML and exit.
    #[arg(long)]
    show: bool,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Draw latency percentiles over time as SVG.
    #[arg(long, value_name = "FILE")]
    plot: Option<String>,
    /// A local gateway process whose CPU and RSS to report.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,

    /// ws://host:port, or wss://host:port for TLS.
    #[arg(long)]
    url: Option<String>,
    /// TLS (wss://): trust only the certificates in this PEM file (for the
    /// clients and the runners started here), not the system's roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<String>,
    /// echo, chat or counter.
    #[arg(long)]
    actor: Option<String>,
    #[arg(long)]
    actors: Option<usize>,
    #[arg(long)]
    clients: Option<usize>,
    #[arg(long)]
    connect_rate: Option<f64>,
    #[arg(long)]
    message_bytes: Option<usize>,
    /// Messages per second per client; 0 = closed loop.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    drain_timeout: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    connect_timeout: Option<Duration>,
    #[arg(long)]
    reconnect_every: Option<u64>,
    #[arg(long)]
    tls: Option<bool>,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    runners: Option<usize>,
    #[arg(long)]
    runner_url: Option<String>,
    #[arg(long)]
    runner_token: Option<String>,
    /// Local address(es) the clients connect from: 127.0.0.2,
    /// 127.0.0.2-127.0.0.9 or a comma-separated list.
    #[arg(long)]
    source: Option<String>,
    /// Sets a field of the scenario's [flood] (repeatable), e.g.
    /// `--flood idle_clients=0 --flood admin_token='"secret"'`; `--flood none` removes it.
    #[arg(long, value_name = "FIELD=VALUE")]
    flood: Vec<String>,
    /// Replaces the scenario's chaos schedule (repeatable).
    #[arg(long)]
    chaos: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tether::config::parse_duration(s)
}

fn scenario_from(args: &Args) -> Result<Scenario, String> {
    let mut s = Scenario::load(&args.scenario)?;
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(v) = args.$field.clone() {
                s.$field = v;
            }
        )*};
    }
    set!(
        url,
        actors,
        clients,
        connect_rate,
        message_bytes,
        rate,
        warmup,
        duration,
        drain_timeout,
        connect_timeout,
        reconnect_every,
        tls,
        ca,
        threads,
        runners,
        runner_url,
        runner_token,
        source
    );
    if let Some(a) = &args.actor {
        s.actor = ActorKind::parse(a)?;
    }
    if !args.chaos.is_empty() {
        s.chaos = if args.chaos == ["none"] {
            Vec::new()
        } else {
            args.chaos
                .iter()
                .map(|c| ChaosEvent::parse(c))
                .collect::<Result<_, _>>()?
        };
    }
    for f in &args.flood {
        s = set_flood_field(s, f)?;
    }
    s.validate()?;
    Ok(s)
}

/// `FIELD=VALUE` into the scenario's [flood] table (created if missing);
/// VALUE is TOML (`3`, `2.5`, `"127.0.0.3"`, `"10s"`), or else a string.
fn set_flood_field(s: Scenario, assignment: &str) -> Result<Scenario, String> {
    if assignment == "none" {
        return Ok(Scenario { flood: None, ..s });
    }
    let (field, value) = assignment
        .split_once('=')
        .ok_or_else(|| format!("--flood {assignment}: expected FIELD=VALUE"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut table = toml::Table::try_from(&s).map_err(|e| e.to_string())?;
    let flood = table
        .entry("flood")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(flood) = flood else {
        return Err("flood is not a table".into());
    };
    flood.insert(field.trim().to_string(), value);
    table
        .try_into()
        .map_err(|e: toml::de::Error| format!("--flood {assignment}: {e}"))
}

fn main() {
    tether_loadtest::runners::run_if_asked();
    let args = Args::parse();
    if args.list {
        for (name, text) in BUILTIN {
            let s = Scenario::parse(text).expect("shipped scenarios parse");
            println!("{name:20} {}", s.description);
        }
        return;
    }
    let scenario = match scenario_from(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::exit(2);
        }
    };
    if args.show {
        print!(
            "{}",
            toml::to_string(&scenario).expect("a scenario serializes")
        );
        return;
    }
    let options = Options {
        gateway_pid: args.gateway_pid,
        progress: !args.quiet,
    };
    let report = match run(scenario, &options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::exit(2);
        }
    };
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("a report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("loadtest: writing {path}: {e}");
            std::process::exit(2);
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = std::fs::write(path, tether_loadtest::plot::svg(&report)) {
            eprintln!("loadtest: writing {path}: {e}");
            std::process::exit(2);
        }
    }
    std::process::exit(if report.ok { 0 } else { 1 });
}
