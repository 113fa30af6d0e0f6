//! Running a scenario: start runners if asked, client threads (one monoio
//! runtime each), the chaos schedule and the progress line; merge what the
//! threads measured into a report.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::flood::{FloodStats, GROUPS};
use crate::plan::Plan;
use crate::procstat::{
    cpu_seconds, own_threads_cpu_seconds, tree_cpu_seconds, tree_rss_kib, RssSampler,
};
use crate::report::{
    self, Connections, FloodGroup, FloodReport, GatewayUsage, Messages, Pause, Percentiles, Phase,
    PhaseCpu, Report,
};
use crate::runners;
use crate::scenario::{ChaosAction, Scenario};
use crate::stats::ThreadStats;

pub struct Options {
    /// A local gateway (or proxy) whose CPU and RSS to report, its direct
    /// children included (nginx's workers).
    pub gateway_pid: Option<u32>,
    /// Print a live progress line (on a terminal).
    pub progress: bool,
}

pub fn run(scenario: Scenario, options: &Options) -> Result<Report, String> {
    scenario.validate()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match scenario.threads {
        0 => cores,
        n => n,
    }
    .min(scenario.clients)
    .max(1);
    let driver = tether::server::driver::choose(tether::config::IoDriver::Auto)?;
    let runners = if scenario.runners > 0 {
        let ca = (!scenario.ca.is_empty()).then(|| std::path::Path::new(&scenario.ca));
        Some(runners::start_with_ca(
            scenario.runners,
            &scenario.runner_url,
            &scenario.runner_token,
            ca,
        )?)
    } else {
        None
    };
    let gateway_start = options
        .gateway_pid
        .map(|pid| {
            Ok::<_, String>((
                pid,
                tree_cpu_seconds(pid).ok_or(format!("no process {pid} to measure"))?,
                tree_rss_kib(pid).unwrap_or(0),
                RssSampler::start(pid),
            ))
        })
        .transpose()?;
    let runner_pids: Vec<u32> = runners
        .as_ref()
        .map(|r| r.children.iter().map(|c| c.pid()).collect())
        .unwrap_or_default();
    let plan = Arc::new(Plan::new(scenario, threads, driver)?);
    let done = Arc::new(AtomicBool::new(false));
    let watch = plan.scenario.flood.is_some().then(|| {
        let (plan, done) = (plan.clone(), done.clone());
        let gateway = options.gateway_pid;
        std::thread::spawn(move || watch_flood(&plan, gateway, &runner_pids, &done))
    });
    let chaos = runners.map(|r| spawn_chaos(plan.clone(), r, done.clone()));
    let progress = (options.progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(plan.clone(), done.clone()));
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let plan = plan.clone();
            std::thread::Builder::new()
                .name(format!("loadtest-{i}"))
                .spawn(move || run_thread(plan, i))
                .map_err(|e| format!("starting a client thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let flood_threads = plan.scenario.flood.as_ref().map_or(0, |f| f.threads);
    let flooders: Vec<_> = (0..flood_threads)
        .map(|i| {
            let plan = plan.clone();
            std::thread::Builder::new()
                .name(format!("flood-{i}"))
                .spawn(move || crate::flood::run_thread(plan, i))
                .map_err(|e| format!("starting a flood thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut total = ThreadStats::new(plan.pause_windows.len());
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(stats)) => total.merge(&stats),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a client thread panicked".into()),
        }
    }
    let mut flood_total = FloodStats::default();
    for f in flooders {
        match f.join() {
            Ok(Ok(stats)) => flood_total.merge(&stats),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a flood thread panicked".into()),
        }
    }
    let finished = Instant::now();
    done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    if let Some(c) = chaos {
        let _ = c.join();
    }
    let watched = watch.and_then(|w| w.join().ok());
    if let Some(f) = failure {
        return Err(f);
    }
    let gateway = gateway_start.map(|(pid, cpu0, rss0, sampler)| {
        let cpu = tree_cpu_seconds(pid).unwrap_or(cpu0) - cpu0;
        let end = tree_rss_kib(pid).unwrap_or(0);
        let peak = sampler.finish().max(end);
        let deliveries = plan.progress.received.load(Ordering::Relaxed).max(1);
        GatewayUsage {
            pid,
            cpu_seconds: round2(cpu),
            cpu_us_per_message: round2(cpu * 1e6 / deliveries as f64),
            rss_kib_start: rss0,
            rss_kib_peak: peak,
            rss_kib_end: end,
            rss_bytes_per_connection: round2(
                peak.saturating_sub(rss0) as f64 * 1024.0 / plan.scenario.clients as f64,
            ),
        }
    });
    let mut report = build_report(&plan, &total, gateway, finished);
    if let Some(w) = watched {
        let flood = flood_report(&plan, &total, &flood_total, w);
        let failures = flood.failures();
        if !failures.is_empty() {
            report.ok = false;
            report.error_notes.extend(failures);
        }
        report.flood = Some(flood);
    }
    Ok(report)
}

fn run_thread(plan: Arc<Plan>, index: usize) -> Result<ThreadStats, String> {
    let stats = Rc::new(RefCell::new(ThreadStats::new(plan.pause_windows.len())));
    let s = stats.clone();
    let p = plan.clone();
    tether::server::driver::block_on(plan.driver, 4096, async move {
        let clients: Vec<_> = (index..p.scenario.clients)
            .step_by(p.threads)
            .map(|c| monoio::spawn(crate::client::run(p.clone(), c as u32, s.clone())))
            .collect();
        let ticker = monoio::spawn(publish_p99(p.clone(), s.clone(), index));
        let probe = (index == 0 && p.scenario.flood.is_some())
            .then(|| monoio::spawn(crate::flood::run_probe(p.clone(), s.clone())));
        for c in clients {
            c.await;
        }
        if let Some(probe) = probe {
            probe.await;
        }
        drop(ticker);
    })
    .map_err(|e| format!("client thread runtime: {e}"))?;
    // Reader tasks of connections the server never closed may still hold
    // a reference: take the figures out rather than the cell.
    let taken = std::mem::replace(
        &mut *stats.borrow_mut(),
        ThreadStats::new(plan.pause_windows.len()),
    );
    Ok(taken)
}

/// Each second, the p99 of the last full second, for the progress line.
async fn publish_p99(plan: Arc<Plan>, stats: Rc<RefCell<ThreadStats>>, index: usize) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let second = plan.start.elapsed().as_secs() as usize;
        if let Some(h) = second
            .checked_sub(1)
            .and_then(|s| stats.borrow().per_second.get(s).cloned())
        {
            plan.progress.p99[index].store(h.value_at_quantile(0.99), Ordering::Relaxed);
        }
    }
}

fn spawn_chaos(
    plan: Arc<Plan>,
    runners: runners::Runners,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut events: Vec<_> = plan.scenario.chaos.clone();
        events.sort_by_key(|e| e.at);
        for e in events {
            let signal = match e.action {
                ChaosAction::Kill => libc::SIGKILL,
                ChaosAction::Drain => libc::SIGTERM,
                ChaosAction::Hibernate => continue,
            };
            let at = plan.start + e.at;
            while Instant::now() < at {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep((at - Instant::now()).min(Duration::from_millis(50)));
            }
            if let Some(r) = runners.children.get(e.runner) {
                r.signal(signal);
            }
        }
        // Keep the remaining runners until the clients are done.
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(runners);
    })
}

fn spawn_progress(plan: Arc<Plan>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let p = &plan.progress;
        let (mut sent0, mut recv0) = (0, 0);
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let sent = p.sent.load(Ordering::Relaxed);
            let recv = p.received.load(Ordering::Relaxed);
            let p99 = p
                .p99
                .iter()
                .map(|v| v.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            let flood = if plan.scenario.flood.is_some() {
                let open = &plan.flood_progress.open;
                let n = |g: crate::flood::Group| open[g as usize].load(Ordering::Relaxed);
                use crate::flood::Group::{Idle, Silent, Spam};
                format!(
                    "  flood open: idle {} silent {} spam {}",
                    n(Idle),
                    n(Silent),
                    n(Spam)
                )
            } else {
                String::new()
            };
            eprint!(
                "\r[{:>4}s] open {:>6}  sent {:>8}/s  received {:>8}/s  p99 {:>7} µs  errors {}{flood}   ",
                plan.start.elapsed().as_secs(),
                p.open.load(Ordering::Relaxed),
                sent - sent0,
                recv - recv0,
                p99,
                p.errors.load(Ordering::Relaxed)
            );
            let _ = std::io::stderr().flush();
            (sent0, recv0) = (sent, recv);
        }
        eprintln!();
    })
}

fn build_report(
    plan: &Plan,
    total: &ThreadStats,
    gateway: Option<GatewayUsage>,
    finished: Instant,
) -> Report {
    let s = &plan.scenario;
    let measured = s.duration.as_secs_f64().max(1e-3);
    let mib = |bytes: u64| round2(bytes as f64 / measured / (1024.0 * 1024.0));
    let run_seconds = finished.duration_since(plan.start).as_secs_f64().max(1e-3);
    let pauses = s
        .chaos
        .iter()
        .filter(|e| matches!(e.action, ChaosAction::Kill | ChaosAction::Drain))
        .zip(&total.pauses)
        .map(|(e, h)| Pause {
            action: e.action,
            runner: e.runner,
            at_ms: e.at.as_millis() as u64,
            longest_silence_us: Percentiles::of(h),
        })
        .collect();
    let ok = total.errors.total() == 0 && total.received > 0;
    let mut notes = total.notes.clone();
    if total.received == 0 {
        notes.push("no message came back during the measured time".into());
    }
    Report {
        scenario: s.clone(),
        threads: plan.threads,
        io_driver: plan.driver.to_string(),
        measured_seconds: round2(measured),
        connections: Connections {
            clients: s.clients,
            opened: total.connections,
            per_second: round2(total.connections as f64 / run_seconds),
            connect_us: Percentiles::of(&total.connect),
        },
        messages: Messages {
            sent: total.sent,
            received: total.received,
            sent_per_second: round2(total.sent as f64 / measured),
            received_per_second: round2(total.received as f64 / measured),
            sent_mib_per_second: mib(total.bytes_sent),
            received_mib_per_second: mib(total.bytes_received),
        },
        round_trip_us: Percentiles::of(&total.rtt),
        wake_us: Percentiles::of(&total.wake),
        pauses,
        errors: total.errors.clone(),
        error_notes: notes,
        gateway,
        timeline: report::timeline(&total.per_second),
        flood: None,
        ok,
    }
}

/// CPU seconds used so far by the gateway, the runners, the well-behaved
/// client threads and the abusive ones.
#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    at: Instant,
    gateway: Option<f64>,
    runners: f64,
    clients: f64,
    flood: f64,
}

impl CpuSnapshot {
    fn take(gateway: Option<u32>, runners: &[u32]) -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            gateway: gateway.and_then(tree_cpu_seconds),
            runners: runners.iter().filter_map(|p| cpu_seconds(*p)).sum(),
            clients: own_threads_cpu_seconds("loadtest-"),
            flood: own_threads_cpu_seconds("flood-"),
        }
    }

    /// Cores used from `self` to `later`.
    fn cores_until(&self, later: &CpuSnapshot) -> PhaseCpu {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let cores = |a: f64, b: f64| round2((b - a).max(0.0) / secs);
        PhaseCpu {
            gateway: match (self.gateway, later.gateway) {
                (Some(a), Some(b)) => Some(cores(a, b)),
                _ => None,
            },
            runners: cores(self.runners, later.runners),
            clients: cores(self.clients, later.clients),
            flood: cores(self.flood, later.flood),
        }
    }
}

/// What the flood watcher saw: CPU at the end of the warm-up, at the
/// flood's start and near the end; /metrics at the flood's start and end.
struct Watched {
    cpu: Vec<CpuSnapshot>,
    counters: std::collections::BTreeMap<String, f64>,
    gauge_peaks: std::collections::BTreeMap<String, f64>,
    metrics_error: Option<String>,
}

/// Gauges of the gateway's /metrics whose peak the flood report shows.
const PEAK_GAUGES: &[&str] = &["tether_client_connections", "tether_handshakes_in_progress"];

fn watch_flood(plan: &Plan, gateway: Option<u32>, runners: &[u32], done: &AtomicBool) -> Watched {
    let flood = plan.scenario.flood.as_ref().expect("a flood scenario");
    let flood_at = plan.flood_at.expect("a flood scenario");
    // Near the end: threads that have finished take their CPU time with them.
    let end = plan.stop_at - Duration::from_millis(100);
    let scrape = || crate::metrics::scrape(&flood.admin_url, &flood.admin_token);
    let metrics = !flood.admin_url.is_empty();
    let mut w = Watched {
        cpu: Vec::new(),
        counters: Default::default(),
        gauge_peaks: Default::default(),
        metrics_error: None,
    };
    let sleep_until = |at: Instant| {
        while Instant::now() < at {
            if done.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep((at - Instant::now()).min(Duration::from_millis(50)));
        }
        true
    };
    if !sleep_until(plan.measure_from) {
        return w;
    }
    w.cpu.push(CpuSnapshot::take(gateway, runners));
    if !sleep_until(flood_at) {
        return w;
    }
    let before = metrics.then(scrape);
    w.cpu.push(CpuSnapshot::take(gateway, runners));
    let mut next = flood_at;
    while metrics && next + Duration::from_millis(500) < end {
        next += Duration::from_millis(500);
        if !sleep_until(next) {
            return w;
        }
        if let Ok(m) = scrape() {
            for g in PEAK_GAUGES {
                if let Some(v) = m.get(*g) {
                    let peak = w.gauge_peaks.entry(g.to_string()).or_insert(0.0);
                    *peak = peak.max(*v);
                }
            }
        }
    }
    if !sleep_until(end) {
        return w;
    }
    w.cpu.push(CpuSnapshot::take(gateway, runners));
    match (before, metrics.then(scrape)) {
        (Some(Ok(a)), Some(Ok(b))) => w.counters = crate::metrics::counter_increase(&a, &b),
        (Some(Err(e)), _) | (_, Some(Err(e))) => w.metrics_error = Some(e),
        _ => {}
    }
    w
}

fn flood_report(
    plan: &Plan,
    total: &ThreadStats,
    flood_total: &FloodStats,
    w: Watched,
) -> FloodReport {
    let f = plan.scenario.flood.as_ref().expect("a flood scenario");
    let flood_at = plan.flood_at.expect("a flood scenario");
    let phase = |i: usize, seconds: f64| {
        let p = &total.probes[i];
        Phase {
            seconds: round2(seconds),
            round_trip_us: Percentiles::of(&total.phase_rtt[i]),
            newcomer_connect_us: Percentiles::of(&p.connect),
            newcomer_refused: p.refused.clone(),
            newcomer_failed: p.failed,
            cpu: w.cpu.get(i + 1).map(|later| w.cpu[i].cores_until(later)),
        }
    };
    let baseline = phase(0, flood_at.duration_since(plan.measure_from).as_secs_f64());
    let under = phase(1, plan.stop_at.duration_since(flood_at).as_secs_f64());
    let groups = f
        .groups()
        .iter()
        .zip(GROUPS)
        .map(|((name, source, clients), g)| FloodGroup {
            name: name.to_string(),
            source: source.to_string(),
            clients: *clients,
            peak_open: plan.flood_progress.peak[g as usize].load(Ordering::Relaxed),
            stats: flood_total.groups[g as usize].clone(),
        })
        .collect();
    let mut r = FloodReport::new(
        f.at.as_millis() as u64,
        baseline,
        under,
        f.max_slowdown,
        groups,
    );
    r.gateway_counters = w.counters;
    r.gateway_gauge_peaks = w.gauge_peaks;
    r.metrics_error = w.metrics_error;
    r
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
