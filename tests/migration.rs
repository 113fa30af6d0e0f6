//! Live migration and failover: runners die, drain, are replaced or are
//! asked to give up an actor, and no client notices — no disconnect, no
//! message lost, duplicated or reordered.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::Load;
use common::*;
use tether::runner::{
    Actor, ActorFactory, BuiltinActors, ConnId, ConnInfo, Ctx, KillSwitch, Message,
};

const TEXT: u8 = 1;

fn text_of(ws: &mut RawWs) -> String {
    loop {
        let f = ws.recv().expect("connection open");
        match f.opcode {
            TEXT => return String::from_utf8(f.payload).unwrap(),
            9 => ws.send(true, 10, &f.payload),
            other => panic!("unexpected frame {other}: {f:?}"),
        }
    }
}

fn migration_config() -> tether::Config {
    let mut c = test_config();
    c.actors.start_timeout = Duration::from_secs(5);
    c.actors.idle_timeout = Duration::ZERO;
    c
}

fn assert_clean(report: &common::load::LoadReport) {
    assert_eq!(report.disconnects, 0, "{:?}", report.sequence_errors);
    assert!(
        report.sequence_errors.is_empty(),
        "{} errors, first: {:?}",
        report.sequence_errors.len(),
        &report.sequence_errors[..report.sequence_errors.len().min(5)]
    );
}

#[test]
fn a_killed_runner_under_load_loses_nothing_and_disconnects_no_one() {
    let mut h = start_bare(migration_config());
    for _ in 0..3 {
        let o = h.runner_options();
        h.add_runner(o, BuiltinActors);
    }
    let load = Load::start(h.client_addr, 300, 30, 6);
    // Every client answered twice: all 30 actors run, under load.
    load.wait_rounds(2);
    let victim = h.take_runner(1);
    assert!(victim.running_actors() > 0, "the victim ran some actors");
    victim.kill();
    // The victim's actors failed over and every client was answered after
    // the kill; and enough traffic went through to mean something.
    wait_for("a failover", || {
        h.stat(|s| &s.failovers) > 0 || load.broken()
    });
    load.wait_rounds(2);
    load.wait_messages(3000);
    let report = load.finish();
    assert_clean(&report);
    assert!(report.messages > 3000, "{report:?}");
    eprintln!(
        "kill: {} messages, longest pause {:?}",
        report.messages, report.max_pause
    );
    let failovers = h.stat(|s| &s.failovers);
    assert!(failovers > 0);
    h.shutdown();
}

#[test]
fn a_rolling_drain_of_every_runner_under_load_loses_nothing() {
    let mut h = start_bare(migration_config());
    for _ in 0..3 {
        let o = h.runner_options();
        h.add_runner(o, BuiltinActors);
    }
    let load = Load::start(h.client_addr, 200, 20, 4);
    // Every client answered twice: all 20 actors run, under load.
    load.wait_rounds(2);
    // Replace each of the original three in turn, as an upgrade would.
    for _ in 0..3 {
        let o = h.runner_options();
        h.add_runner(o, BuiltinActors);
        let old = h.take_runner(0);
        assert!(old.drain(Duration::from_secs(10)), "drain completes");
        assert_eq!(old.running_actors(), 0, "nothing left on a drained runner");
        old.stop();
        // Every client answered again before the next runner goes.
        load.wait_rounds(2);
    }
    let report = load.finish();
    assert_clean(&report);
    eprintln!(
        "rolling drain: {} messages, longest pause {:?}",
        report.messages, report.max_pause
    );
    h.shutdown();
}

#[test]
fn an_operator_moves_an_actor_and_drains_a_runner_over_the_admin_api() {
    let mut h = start_bare(migration_config());
    let mut a = h.runner_options();
    a.key = "runner-a".into();
    h.add_runner(a, BuiltinActors);
    let mut client = RawWs::connect(h.client_addr, "/actors/counter/moved");
    client.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut client), "1");
    let status = h.admin("GET", "/actors/counter/moved");
    assert!(status.contains("\"runner\":\"runner-a\""), "{status}");
    assert!(status.contains("\"state\":\"running\""), "{status}");

    let mut b = h.runner_options();
    b.key = "runner-b".into();
    h.add_runner(b, BuiltinActors);
    let moved = h.admin("POST", "/actors/counter/moved/migrate");
    assert_eq!(status_of(&moved), 200, "{moved}");
    assert!(moved.contains("\"runner\":\"runner-b\""), "{moved}");
    client.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut client), "2", "state moved with the actor");

    // Draining runner-b moves it back to runner-a; runner-b is told it may exit.
    let drained = h.admin("POST", "/runners/runner-b/drain");
    assert_eq!(status_of(&drained), 202, "{drained}");
    assert!(drained.contains("\"moving\":1"), "{drained}");
    wait_for("runner-b drained", || h.runner(1).is_drained());
    assert!(h
        .admin("GET", "/actors/counter/moved")
        .contains("\"runner\":\"runner-a\""));
    client.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut client), "3");

    // Clear answers for what cannot be done.
    assert_eq!(status_of(&h.admin("POST", "/runners/nobody/drain")), 404);
    assert_eq!(
        status_of(&h.admin("POST", "/actors/counter/never/migrate")),
        404
    );
    let anonymous = raw_exchange(
        h.admin_addr,
        b"POST /actors/counter/moved/migrate HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status_of(&anonymous), 401);
    h.shutdown();
}

/// Counts what reaches it; kills its own runner at the first restore it sees.
struct DiesOnRestore {
    kill: Arc<std::sync::Mutex<Option<KillSwitch>>>,
    restores: Arc<AtomicUsize>,
}

struct Doomed {
    kill: Arc<std::sync::Mutex<Option<KillSwitch>>>,
    restores: Arc<AtomicUsize>,
}

impl Actor for Doomed {
    fn on_restore(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _info: &ConnInfo) {
        self.restores.fetch_add(1, Ordering::SeqCst);
        if let Some(k) = self.kill.lock().unwrap().as_ref() {
            k.kill();
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        ctx.send(conn, &message);
    }
}

impl ActorFactory for DiesOnRestore {
    fn actor_names(&self) -> Vec<String> {
        vec!["echo".into()]
    }
    fn create(&self, _name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(Doomed {
            kill: self.kill.clone(),
            restores: self.restores.clone(),
        }))
    }
}

#[test]
fn a_runner_dying_in_the_middle_of_a_restore_is_survived() {
    let mut h = start_bare(migration_config());
    let first = h.runner_options();
    h.add_runner(first, BuiltinActors);
    let mut clients: Vec<RawWs> = (0..5)
        .map(|_| RawWs::connect(h.client_addr, "/actors/echo/fragile"))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(true, TEXT, format!("{i}:1").as_bytes());
        assert_eq!(text_of(c), format!("{i}:1"));
    }
    // The only other runner dies while restoring the actor's connections.
    let kill = Arc::new(std::sync::Mutex::new(None));
    let restores = Arc::new(AtomicUsize::new(0));
    let doomed = h.runner_options();
    let i = h.add_runner(
        doomed,
        DiesOnRestore {
            kill: kill.clone(),
            restores: restores.clone(),
        },
    );
    *kill.lock().unwrap() = Some(h.runner(i).kill_switch());
    h.take_runner(0).kill();
    // Messages sent meanwhile wait for a runner that survives.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(true, TEXT, format!("{i}:2").as_bytes());
    }
    wait_for("the doomed runner's restore", || {
        restores.load(Ordering::SeqCst) > 0
    });
    let third = h.runner_options();
    h.add_runner(third, BuiltinActors);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(text_of(c), format!("{i}:2"), "replayed after two failures");
        c.send(true, TEXT, format!("{i}:3").as_bytes());
        assert_eq!(text_of(c), format!("{i}:3"));
    }
    h.shutdown();
}

#[test]
fn a_counter_ends_exact_while_its_runner_is_killed_again_and_again() {
    let mut h = start_bare(migration_config());
    for _ in 0..2 {
        let o = h.runner_options();
        h.add_runner(o, BuiltinActors);
    }
    let clients = 8;
    let per_client = 400;
    let senders: Vec<_> = (0..clients)
        .map(|_| {
            let addr = h.client_addr;
            std::thread::spawn(move || {
                let mut c = RawWs::connect(addr, "/actors/counter/exact");
                c.stream.set_nodelay(true).unwrap();
                for n in 0..per_client {
                    c.send(true, TEXT, b"inc");
                    if n % 50 == 0 {
                        // Pacing: the sends span the kills below.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                c
            })
        })
        .collect();
    // Kill whichever runner holds the counter, several times, replacing it.
    for _ in 0..4 {
        // Pacing, not waiting: spreads the four kills over the senders' run.
        std::thread::sleep(Duration::from_millis(120));
        wait_for("the counter to run on a runner", || {
            (0..2).any(|i| h.runner(i).running_actors() > 0)
        });
        let holder = (0..2)
            .find(|&i| h.runner(i).running_actors() > 0)
            .unwrap_or(0);
        h.take_runner(holder).kill();
        let o = h.runner_options();
        h.add_runner(o, BuiltinActors);
    }
    let mut sockets: Vec<RawWs> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let total = clients * per_client;
    // Every increment is broadcast with the value it produced: the values
    // seen end at exactly `total`, and nothing above it ever appears.
    let checker = &mut sockets[0];
    let mut highest = 0usize;
    while highest < total {
        let v: usize = text_of(checker).parse().unwrap();
        assert!(v <= total, "an increment was applied twice: saw {v}");
        highest = highest.max(v);
    }
    // "get" is answered after every broadcast sent before it: up to that
    // answer (`total` itself), nothing above `total` may appear.
    checker.send(true, TEXT, b"get");
    loop {
        let v: usize = text_of(checker).parse().unwrap();
        assert!(v <= total, "an increment was applied twice: saw {v}");
        if v == total {
            break;
        }
    }
    let mut fresh = RawWs::connect(h.client_addr, "/actors/counter/exact");
    fresh.send(true, TEXT, b"get");
    assert_eq!(text_of(&mut fresh), total.to_string());
    h.shutdown();
}

/// A factory whose actors never start (the runner reports them stopped).
struct NeverStarts;

impl ActorFactory for NeverStarts {
    fn actor_names(&self) -> Vec<String> {
        vec!["flaky".into()]
    }
    fn create(&self, _name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        None
    }
}

#[test]
fn an_actor_that_keeps_failing_backs_off_and_is_reported_as_crash_looping() {
    let mut c = migration_config();
    c.actors.crash_backoff = Duration::from_millis(100);
    c.actors.crash_backoff_max = Duration::from_millis(400);
    let mut h = start_bare(c);
    let o = h.runner_options();
    h.add_runner(o, NeverStarts);
    let addr = h.client_addr;
    let started = Instant::now();
    let waiting = std::thread::spawn(move || {
        raw_exchange(addr, upgrade_request("/actors/flaky/loop").as_bytes())
    });
    // At least 1.5 s of retrying (without backoff, hundreds of attempts)
    // until the actor is reported crash-looping (before start_timeout ends
    // the wait: the client then goes, and the actor with it).
    let mut status = String::new();
    wait_for("the actor to be reported crash-looping, 1.5 s in", || {
        started.elapsed() >= Duration::from_millis(1500) && {
            status = h.admin("GET", "/actors/flaky/loop");
            status.contains("\"crash_looping\":true")
        }
    });
    let elapsed = started.elapsed();
    assert!(status.contains("\"crash_looping\":true"), "{status}");
    // Backing off, attempts start at 0, 0, 100, 300, 700, 1100, 1500 ms… (waits
    // of 0, 100, 200, then 400 ms): only a few fit in the time taken (7 in
    // 1.5 s; one more allowed), not hundreds. A slow machine only makes fewer.
    let failures: u32 = status
        .split("\"failures\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let most = attempts_within(elapsed) + 1;
    assert!(
        (3..=most).contains(&failures),
        "{failures} failures in {elapsed:?} (at most {most}): {status}"
    );
    let mut metrics = String::new();
    wait_for("a crash-looping restart to be counted", || {
        metrics = h.admin("GET", "/metrics");
        crash_loop_restarts(&metrics) >= 1
    });
    let restarts = crash_loop_restarts(&metrics);
    assert!(restarts >= 1, "{metrics}");
    let answer = waiting.join().unwrap();
    assert_eq!(status_of(&answer), 503, "{answer}");
    h.shutdown();
}

/// The most start attempts that backing off (100 ms doubling up to 400 ms,
/// the first restart at once) leaves room for within `t` of the first.
fn attempts_within(t: Duration) -> u32 {
    match t.as_millis() {
        0..=99 => 2,
        100..=299 => 3,
        ms => 4 + ((ms - 300) / 400) as u32,
    }
}

fn crash_loop_restarts(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tether_actor_crash_loop_restarts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"))
}

/// A reference runner process; dropped = killed.
struct RunnerProcess(std::process::Child);

impl RunnerProcess {
    /// Starts `tether runner` and waits until the gateway has welcomed it.
    fn start(h: &Harness, key: &str, state_dir: &std::path::Path) -> RunnerProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["runner", "--gateway", &h.runner_url(), "--key", key])
            .arg("--state-dir")
            .arg(state_dir)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("connected to the gateway") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("runner process connects");
        // Tunnels past the first follow within milliseconds. Nothing tells
        // (only tunnel 0 logs), and nothing depends on it: a tunnel still
        // missing only leaves that worker's actors to the other runners.
        std::thread::sleep(Duration::from_millis(200));
        RunnerProcess(child)
    }

    fn kill_9(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_9_of_one_of_three_runner_processes_under_load_is_invisible_to_500_clients() {
    let h = start_bare(migration_config());
    let dir = std::env::temp_dir().join(format!("tether-kill9-{}", std::process::id()));
    let mut runners: Vec<RunnerProcess> = (0..3)
        .map(|i| RunnerProcess::start(&h, &format!("proc-{i}"), &dir))
        .collect();
    let load = Load::start(h.client_addr, 500, 50, 10);
    // Every client answered twice: all 50 actors run, under load.
    load.wait_rounds(2);
    runners.remove(1).kill_9();
    // Every client answered twice more: a whole round sent after the kill,
    // through every actor, the victim's failed over.
    load.wait_rounds(2);
    let report = load.finish();
    assert_clean(&report);
    assert_eq!(report.clients, 500);
    eprintln!(
        "kill -9: {} messages, longest pause {:?}",
        report.messages, report.max_pause
    );
    drop(runners);
    h.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

/// Echoes, but the first message it ever sees freezes its runner's tunnel
/// thread for a while, as a network cut or a hung process would.
/// The flags: frozen, then thawed.
#[derive(Clone)]
struct FreezesOnce(Arc<(AtomicBool, AtomicBool)>);

struct Freezer(FreezesOnce);

impl Actor for Freezer {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        let (frozen, thawed) = &*(self.0).0;
        if !frozen.swap(true, Ordering::SeqCst) {
            // The freeze itself (the scenario), not a wait.
            std::thread::sleep(Duration::from_secs(3));
            thawed.store(true, Ordering::SeqCst);
        }
        ctx.send(conn, &message);
    }
}

impl ActorFactory for FreezesOnce {
    fn actor_names(&self) -> Vec<String> {
        vec!["echo".into()]
    }
    fn create(&self, _name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(Freezer(self.clone())))
    }
}

#[test]
fn a_runner_that_stops_answering_is_failed_over_after_its_keepalive_timeout() {
    let mut c = migration_config();
    c.runners.ping_interval = Duration::from_millis(200);
    c.runners.ping_timeout = Duration::from_millis(300);
    let mut h = start_bare(c);
    let freezes = FreezesOnce(Arc::default());
    let o = h.runner_options();
    h.add_runner(o, freezes.clone());
    let mut client = RawWs::connect(h.client_addr, "/actors/echo/cut");
    let o = h.runner_options();
    h.add_runner(o, BuiltinActors);
    let started = Instant::now();
    client.send(true, TEXT, b"through the cut");
    assert_eq!(text_of(&mut client), "through the cut");
    let (frozen, thawed) = &*freezes.0;
    assert!(frozen.load(Ordering::SeqCst), "the first runner froze");
    // Answered while that runner is still frozen (3 s), however slow the machine.
    assert!(
        !thawed.load(Ordering::SeqCst),
        "failed over on the keepalive timeout, not when the runner woke: {:?}",
        started.elapsed()
    );
    client.send(true, TEXT, b"after");
    assert_eq!(text_of(&mut client), "after", "exactly once, in order");
    h.shutdown();
}

#[test]
fn with_no_runner_to_move_to_clients_get_1013_past_the_buffer_then_1011() {
    let mut c = migration_config();
    c.actors.start_timeout = Duration::from_secs(1);
    c.actors.migration_buffer_bytes = 64 * 1024;
    let mut h = start_bare(c);
    let o = h.runner_options();
    h.add_runner(o, BuiltinActors);
    let mut greedy = RawWs::connect(h.client_addr, "/actors/echo/stranded");
    let mut patient = RawWs::connect(h.client_addr, "/actors/echo/stranded");
    greedy.send(true, TEXT, b"hello");
    assert_eq!(text_of(&mut greedy), "hello");
    h.take_runner(0).kill();
    wait_for("the gateway to look for another runner", || {
        h.admin("GET", "/actors/echo/stranded")
            .contains("\"state\":\"placing\"")
    });
    patient.send(true, TEXT, b"held");
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..5 {
        greedy.send(true, TEXT, &chunk);
    }
    assert_eq!(greedy.expect_close(), 1013, "past migration_buffer_bytes");
    let started = Instant::now();
    assert_eq!(
        patient.expect_close(),
        1011,
        "no runner within start_timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    h.shutdown();
}
