//! Serverless pools, the gateway's side (issue 15): the gateway starts
//! runners by calling a local function host's `/start`, moves actors off
//! each before the host's lifespan kills it, retires idle ones, backs off
//! when the host is down and refuses a pool whose `/metadata` is wrong.
//! Real sockets on loopback; every wait has a deadline.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::functions::{config_with, pool, FunctionHost};
use common::*;

const TEXT: u8 = 1;
const LOBBIES: usize = 20;
const MEMBERS: usize = 10;
const TALK: Duration = Duration::from_secs(30);

/// What `tether_serverless_runners` says for `phase` in pool fn.
fn runners(h: &Harness, phase: &str) -> f64 {
    let labels = [("namespace", "default"), ("pool", "fn"), ("phase", phase)];
    h.metrics()
        .get("tether_serverless_runners", &labels)
        .unwrap_or(0.0)
}

fn counter(h: &Harness, name: &str, label: (&str, &str)) -> f64 {
    let labels = [("namespace", "default"), ("pool", "fn"), label];
    h.metrics().get(name, &labels).unwrap_or(0.0)
}

/// Next text frame (answering pings), or a panic naming `who`: a client
/// must never be disconnected.
fn next_text(ws: &mut RawWs, who: &str) -> String {
    loop {
        let f = ws.recv().unwrap_or_else(|| panic!("{who}: disconnected"));
        match f.opcode {
            TEXT => return String::from_utf8(f.payload).unwrap(),
            9 => ws.send(true, 10, &f.payload),
            8 => panic!("{who}: closed with {:?}", f.close_code()),
            _ => {}
        }
    }
}

/// Member `me` of a lobby: sends numbered lines (each once the lobby has
/// broadcast its previous one) while `talking`, then reads until it has
/// seen every member's last line. Returns every line it saw, in order.
fn member(
    mut ws: RawWs,
    me: String,
    talking: Arc<AtomicBool>,
    go: Arc<Barrier>,
    done: Arc<Barrier>,
    sent: Arc<Mutex<BTreeMap<String, usize>>>,
    lobby: Vec<String>,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut n = 0;
    go.wait(); // every member is in its lobby: each sees every line
    while talking.load(Ordering::Relaxed) {
        let line = format!("{me} {n}");
        ws.send(true, TEXT, line.as_bytes());
        loop {
            let got = next_text(&mut ws, &me);
            seen.push(got.clone());
            if got == line {
                break;
            }
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    sent.lock().unwrap().insert(me.clone(), n);
    done.wait();
    let sent = sent.lock().unwrap().clone();
    for other in &lobby {
        let last = format!("{other} {}", sent[other] - 1);
        while !seen.contains(&last) {
            seen.push(next_text(&mut ws, &me));
        }
    }
    seen
}

/// Each sender's lines, as `who` saw them, are exactly 0..sent in order:
/// nothing lost, repeated or reordered.
#[track_caller]
fn assert_each_senders_sequence(
    who: &str,
    seen: &[String],
    sent: &BTreeMap<String, usize>,
    lobby: &[String],
) {
    for sender in lobby {
        let numbers: Vec<usize> = seen
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{sender} ")))
            .map(|n| n.parse().unwrap())
            .collect();
        let want: Vec<usize> = (0..sent[sender]).collect();
        assert_eq!(numbers, want, "{who} saw {sender}'s lines");
    }
}

#[test]
fn lobbies_keep_talking_while_runners_are_started_and_retired_then_the_pool_scales_to_zero() {
    // The host kills each runner 4 s after its start; the gateway drains
    // it 1.5 s before, and starts its replacement ahead of that.
    let host = FunctionHost::start(Some(Duration::from_secs(4)));
    let mut config = config_with(pool(&host.url()));
    config.actors.idle_timeout = Duration::from_secs(1);
    let h = start_bare(config);
    let talking = Arc::new(AtomicBool::new(true));
    let go = Arc::new(Barrier::new(LOBBIES * MEMBERS + 1));
    let done = Arc::new(Barrier::new(LOBBIES * MEMBERS));
    let sent = Arc::new(Mutex::new(BTreeMap::new()));
    let mut members = Vec::new();
    for l in 0..LOBBIES {
        let lobby: Vec<String> = (0..MEMBERS).map(|m| format!("l{l}m{m}")).collect();
        for me in &lobby {
            let ws = RawWs::connect(h.client_addr, &format!("/actors/chat/lobby-{l}"));
            let (me, lobby) = (me.clone(), lobby.clone());
            let (talking, go, done) = (talking.clone(), go.clone(), done.clone());
            let sent = sent.clone();
            let member = std::thread::spawn(move || member(ws, me, talking, go, done, sent, lobby));
            members.push((l, member));
        }
    }
    go.wait();
    let began = Instant::now();
    while began.elapsed() < TALK {
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            members.iter().all(|(_, m)| !m.is_finished()),
            "a member gave up"
        );
    }
    talking.store(false, Ordering::Relaxed);
    let seen: Vec<(usize, Vec<String>)> = members
        .into_iter()
        .map(|(l, m)| (l, m.join().unwrap()))
        .collect();
    let sent = sent.lock().unwrap().clone();
    for (i, (l, lines)) in seen.iter().enumerate() {
        let lobby: Vec<String> = (0..MEMBERS).map(|m| format!("l{l}m{m}")).collect();
        assert_each_senders_sequence(&format!("member {i}"), lines, &sent, &lobby);
    }
    let total: usize = sent.values().sum();
    assert!(total > LOBBIES * MEMBERS * 20, "they talked: {total} lines");

    // Runners came and went under the clients, every few seconds, each
    // drained before the host's kill.
    let drains = counter(
        &h,
        "tether_serverless_retirements_total",
        ("reason", "lifespan"),
    );
    assert!(drains >= 6.0, "lifespan drains: {drains}");
    let died = counter(
        &h,
        "tether_serverless_retirements_total",
        ("reason", "died"),
    );
    assert_eq!(
        died, 0.0,
        "every runner was drained before the host killed it"
    );
    let failures: f64 = ["http", "connect", "timeout", "protocol"]
        .iter()
        .map(|c| counter(&h, "tether_serverless_start_failures_total", ("cause", c)))
        .sum();
    assert_eq!(failures, 0.0);

    // No client: the actors sleep, the runners retire, none is started.
    drop(seen);
    wait_for("the pool to scale to zero", || {
        ["starting", "live", "retiring"]
            .iter()
            .all(|p| runners(&h, p) == 0.0)
            && h.stat(|s| &s.tunnels) == 0
    });
}

#[test]
fn a_function_host_that_is_down_gives_503_start_failed_and_recovers_when_it_comes_back() {
    let mut host = FunctionHost::start(None);
    let h = start_bare(config_with(pool(&host.url())));
    host.go_down();
    let (status, answer, _) = upgrade_from("127.0.0.1", h.client_addr, "/actors/echo/down");
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("start_failed"), "{answer}");
    assert!(answer.contains("unreachable"), "the reason: {answer}");
    let refused = counter(
        &h,
        "tether_serverless_start_failures_total",
        ("cause", "connect"),
    );
    assert!(refused >= 1.0);
    // While the pool backs off, a client is answered at once.
    let (status, answer, _) = upgrade_from("127.0.0.1", h.client_addr, "/actors/echo/down-2");
    assert_eq!(status, 503, "{answer}");

    host.come_back();
    let mut ws = None;
    wait_for("a start after the backoff", || {
        let (status, _, stream) = upgrade_from("127.0.0.1", h.client_addr, "/actors/echo/up");
        ws = (status == 101).then(|| Handshake::from_stream(stream));
        status == 101
    });
    drop(ws);
    let mut client = RawWs::connect(h.client_addr, "/actors/echo/up-again");
    client.echo("served by a started runner");
    assert!(runners(&h, "live") >= 1.0);
}

/// A host that answers every request with `response`, for `/metadata`.
fn fake_host(response: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head);
            let _ = s.write_all(response.as_bytes());
        }
    });
    url
}

#[test]
fn a_pool_whose_metadata_is_wrong_or_missing_refuses_the_configuration() {
    let body = r#"{"protocol":"tether-serverless","version":2,"actor_names":["chat"]}"#;
    let wrong = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let cases = [
        (fake_host(wrong), "version 2"),
        (
            fake_host("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            "404: missing",
        ),
        (fake_host("SSH-2.0-OpenSSH\r\n\r\n"), "bad answer"),
        (
            {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                format!("http://{}", l.local_addr().unwrap())
            },
            "unreachable",
        ),
    ];
    for (url, why) in cases {
        let err = match tether::Gateway::start(config_with(pool(&url))) {
            Ok(_) => panic!("{url}: the gateway started"),
            Err(e) => e,
        };
        assert!(err.contains("serverless pool default/fn"), "{err}");
        assert!(err.contains(why), "{err:?} should say {why:?}");
    }
    // A function that answers as the runner library does passes.
    let host = FunctionHost::start(None);
    let meta = tether::server::fetch_metadata_blocking(&pool(&host.url())).expect("passes");
    assert!(meta.actor_names.contains(&"chat".to_owned()));
}

/// A function that answers `/metadata` as the runner library does and
/// `/start` with `start` (its connection then held open, as a function
/// whose runner never dials back).
fn fake_function(start: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let meta = r#"{"protocol":"tether-serverless","version":1,"actor_names":["echo","chat"]}"#;
        let mut held = Vec::new();
        for mut s in listener.incoming().flatten() {
            let mut head = [0u8; 2048];
            let n = s.read(&mut head).unwrap_or(0);
            if head[..n].starts_with(b"GET /metadata") {
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{meta}",
                    meta.len()
                );
                let _ = s.write_all(answer.as_bytes());
            } else {
                let _ = s.write_all(start.as_bytes());
                held.push(s);
            }
        }
    });
    url
}

#[test]
fn a_start_answered_with_an_error_or_never_registering_is_a_start_failure_with_its_reason() {
    let h = start_bare(config_with(pool(&fake_function(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
    ))));
    let refused = upgrade_from("127.0.0.1", h.client_addr, "/actors/echo/e500");
    assert_start_failed(&h, refused, "answered 500", "http");
    drop(h);

    // 200 and a stream, but no runner ever registers: the start times out
    // at the pool's start_timeout; meanwhile the actor says what it waits for.
    let mut silent = pool(&fake_function(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: started\n\n",
    ));
    silent.start_timeout = Duration::from_secs(1);
    let h = start_bare(config_with(silent));
    let addr = h.client_addr;
    let client = std::thread::spawn(move || upgrade_from("127.0.0.1", addr, "/actors/echo/silent"));
    wait_for("the actor's status to say what it waits for", || {
        let (_, status) = h.admin_json("/actors/echo/silent");
        status["waiting_for"]
            .as_str()
            .is_some_and(|w| w.contains("serverless pool default/fn"))
    });
    let refused = client.join().unwrap();
    assert_start_failed(
        &h,
        refused,
        "did not register within start_timeout",
        "timeout",
    );
}

/// The client got 503 start_failed saying `says`, and one start failed
/// with `cause`.
#[track_caller]
fn assert_start_failed(
    h: &Harness,
    (status, answer, _): (u16, String, std::net::TcpStream),
    says: &str,
    cause: &str,
) {
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.contains("start_failed") && answer.contains(says),
        "{answer}"
    );
    let failed = counter(
        h,
        "tether_serverless_start_failures_total",
        ("cause", cause),
    );
    assert_eq!(failed, 1.0, "failures by {cause}");
}

/// The file of a gateway whose pool `fn` calls `url`.
fn toml(url: &str) -> String {
    format!(
        "[server]\nworkers = 2\nshutdown_drain = \"100ms\"\n\
         [client]\nlisten = \"127.0.0.1:0\"\n\
         [runners]\nlisten = \"127.0.0.2:0\"\n\
         [admin]\nlisten = \"127.0.0.3:0\"\ntoken = \"{ADMIN_TOKEN}-0001\"\n\
         [actors.pools]\necho = \"fn\"\n\
         [[serverless]]\npool = \"fn\"\nurl = \"{url}\"\n"
    )
}

#[test]
fn the_binary_refuses_a_pool_whose_function_is_unreachable_at_start_up_and_on_reload() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = child::temp_dir("serverless-refused");
    let file = dir.join("tether.toml");
    std::fs::write(&file, toml(&dead)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("serverless pool default/fn") && stderr.contains("unreachable"),
        "{stderr}"
    );

    let host = FunctionHost::start(None);
    let mut g = child::ChildGateway::start(&toml(&host.url()));
    let line = g.reload(&toml(&dead));
    assert!(line.contains("not reloaded"), "{line}");
    assert!(line.contains("serverless pool default/fn"), "{line}");
    assert!(g.is_running(), "the old configuration serves on");
    let line = g.reload(&toml(&host.url()));
    assert!(line.contains("configuration reloaded"), "{line}");
}

#[test]
fn a_pool_with_min_idle_runners_keeps_them_started_with_no_client() {
    let host = FunctionHost::start(None);
    let mut warm = pool(&host.url());
    warm.min_idle_runners = 1;
    let h = start_bare(config_with(warm));
    wait_for("a runner started with no demand", || {
        runners(&h, "live") == 1.0
    });
    // Idle past idle_after (1 s), and across its lifespan's hand-over
    // (2.5 s): one is always there (the replacement is up before the old
    // one goes, which is then retired as idle).
    assert_stays("one runner kept", Duration::from_secs(4), || {
        let (live, starting) = (runners(&h, "live"), runners(&h, "starting"));
        live + starting >= 1.0 && live <= 2.0
    });
    // One start, and one per lifespan since (the replacement of a runner
    // about to retire): no churn of idle retirements and restarts.
    let labels = [("namespace", "default"), ("pool", "fn")];
    let starts = h.metrics().value("tether_serverless_starts_total", &labels);
    assert!((1.0..=4.0).contains(&starts), "{starts} starts");
    let mut client = RawWs::connect(h.client_addr, "/actors/echo/warm");
    client.echo("no cold start");
}

#[test]
fn a_runner_that_dies_before_its_drain_fails_over_and_an_asleep_actor_wakes_on_a_new_one() {
    // The host kills runners after 1 s, long before the pool's drain
    // (2.5 s): each death fails its actors over to a runner started for
    // them, and the chat's clients stay connected, nothing lost.
    let host = FunctionHost::start(Some(Duration::from_secs(1)));
    let mut config = config_with(pool(&host.url()));
    config.actors.idle_timeout = Duration::from_secs(1);
    let h = start_bare(config);
    let mut ws = RawWs::connect(h.client_addr, "/actors/chat/dies");
    let mut n = 0;
    wait_for("a runner to die under the room", || {
        let line = format!("line {n}");
        ws.send(true, TEXT, line.as_bytes());
        assert_eq!(next_text(&mut ws, "member"), line, "in order, once");
        n += 1;
        counter(
            &h,
            "tether_serverless_retirements_total",
            ("reason", "died"),
        ) >= 1.0
    });

    // Quiet: the room sleeps (its socket hibernates), its runner is retired
    // or dies, the pool has none; a message wakes the room on a new one.
    wait_for("the pool at zero with the client connected", || {
        ["starting", "live", "retiring"]
            .iter()
            .all(|p| runners(&h, p) == 0.0)
    });
    ws.send(true, TEXT, b"/history");
    let history = next_text(&mut ws, "member");
    assert!(history.ends_with(&format!("line {}", n - 1)), "{history}");
}

/// A function whose `/start` starts a real runner and then streams body
/// past any bound: the gateway cuts the request.
fn flooding_function() -> String {
    use tether::runner::{BuiltinActors, Runner, RunnerOptions};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let meta = r#"{"protocol":"tether-serverless","version":1,"actor_names":["echo"]}"#;
        for mut s in listener.incoming().flatten() {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            if head.starts_with("GET /metadata") {
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{meta}",
                    meta.len()
                );
                let _ = s.write_all(answer.as_bytes());
                continue;
            }
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut options =
                RunnerOptions::new(&header("x-tether-gateway"), &header("x-tether-token"));
            options.pool = header("x-tether-pool");
            options.key = header("x-tether-runner-key");
            let runner = Runner::start(options, BuiltinActors);
            std::thread::spawn(move || {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n");
                let flood = vec![b':'; 64 * 1024];
                while s.write_all(&flood).is_ok() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_secs(3));
                runner.stop();
            });
        }
    });
    url
}

#[test]
fn a_start_whose_body_runs_past_its_bound_is_cut_and_its_runner_drained() {
    let h = start_bare(config_with(pool(&flooding_function())));
    let mut client = RawWs::connect(h.client_addr, "/actors/echo/flooded");
    client.echo("served before the flood is cut");
    // 1 MiB of "keepalive" later the request is cut: the pool forgets the
    // runner (counted as died) and every worker drains its tunnel; the
    // actor moves to a runner started for it.
    wait_for("the flooding request cut", || {
        counter(
            &h,
            "tether_serverless_retirements_total",
            ("reason", "died"),
        ) >= 1.0
    });
    client.echo("still served");
}

#[test]
fn a_pool_removed_by_a_reload_retires_its_runners_and_starts_no_more() {
    let host = FunctionHost::start(None);
    let mut warm = pool(&host.url());
    warm.min_idle_runners = 1;
    let config = config_with(warm);
    let h = start_bare(config.clone());
    wait_for("a runner started with no demand", || {
        runners(&h, "live") == 1.0 && h.stat(|s| &s.tunnels) > 0
    });
    let mut without = config;
    without.serverless.clear();
    without.actors.pools.clear();
    assert!(h.reload(&without), "reloaded");
    wait_for("the removed pool's runner drained and gone", || {
        h.stat(|s| &s.tunnels) == 0
    });
    // Past its lifespan (4 s): no replacement, no min_idle start.
    assert_stays(
        "no runner of the removed pool",
        Duration::from_secs(5),
        || h.stat(|s| &s.tunnels) == 0 && runners(&h, "starting") == 0.0,
    );
}

#[test]
fn a_pool_start_timeout_longer_than_the_actors_still_gives_the_client_start_failed() {
    // The defaults scaled down (actors 10 s, pool 15 s): the client waits
    // for the pool's verdict, not the generic start timeout.
    let mut silent = pool(&fake_function(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: started\n\n",
    ));
    silent.start_timeout = Duration::from_millis(1500);
    let mut config = config_with(silent);
    config.actors.start_timeout = Duration::from_secs(1);
    let h = start_bare(config);
    let refused = upgrade_from("127.0.0.1", h.client_addr, "/actors/echo/slow-start");
    assert_start_failed(
        &h,
        refused,
        "did not register within start_timeout",
        "timeout",
    );
}

#[test]
fn a_runner_whose_key_is_not_a_start_of_its_serverless_pool_is_refused() {
    use tether::runner::{BuiltinActors, Runner};
    let host = FunctionHost::start(None);
    let h = start_bare(config_with(pool(&host.url())));
    // A key the gateway never started (a late dial-back, a key the
    // function invents, a runner left from before an upgrade).
    let mut options = h.runner_options();
    options.pool = "fn".into();
    options.key = "not-a-start".into();
    let intruder = Runner::start(options, BuiltinActors);
    wait_for("its tunnels refused and counted", || {
        let labels = [("namespace", "default"), ("pool", "fn")];
        h.metrics()
            .get("tether_serverless_runners_refused_total", &labels)
            .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(h.stat(|s| &s.tunnels), 0, "no tunnel of it is up");
    // Actors of the pool go to runners the gateway starts.
    let mut client = RawWs::connect(h.client_addr, "/actors/echo/not-intruded");
    client.echo("on a started runner");
    assert!(runners(&h, "live") >= 1.0);
    intruder.stop();
}

/// A function whose `/start` starts a runner with the key it is given
/// (the first at once, later ones after `delay`) and holds the request
/// open; the keys it was given are in `keys`, the first runner in `first`.
fn recording_function(
    delay: Duration,
    keys: Arc<Mutex<Vec<(String, tether::runner::RunnerOptions)>>>,
    first: Arc<Mutex<Option<tether::runner::Runner>>>,
) -> String {
    use tether::runner::{BuiltinActors, Runner, RunnerOptions};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let meta = r#"{"protocol":"tether-serverless","version":1,"actor_names":["echo"]}"#;
        for mut s in listener.incoming().flatten() {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            if head.starts_with("GET /metadata") {
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{meta}",
                    meta.len()
                );
                let _ = s.write_all(answer.as_bytes());
                continue;
            }
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut options =
                RunnerOptions::new(&header("x-tether-gateway"), &header("x-tether-token"));
            options.pool = header("x-tether-pool");
            options.key = header("x-tether-runner-key");
            let n = {
                let mut keys = keys.lock().unwrap();
                keys.push((options.key.clone(), options.clone()));
                keys.len()
            };
            let first = first.clone();
            std::thread::spawn(move || {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n");
                if n > 1 {
                    std::thread::sleep(delay);
                }
                let runner = Runner::start(options, BuiltinActors);
                if n == 1 {
                    *first.lock().unwrap() = Some(runner);
                } else {
                    std::mem::forget(runner);
                }
                while s.write_all(b": keepalive\n\n").is_ok() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    url
}

#[test]
fn a_retiring_runners_late_tunnel_takes_no_actor() {
    use tether::runner::{BuiltinActors, Runner};
    let keys = Arc::new(Mutex::new(Vec::new()));
    let first = Arc::new(Mutex::new(None));
    let url = recording_function(Duration::from_secs(2), keys.clone(), first.clone());
    let mut warm = pool(&url);
    warm.min_idle_runners = 1;
    warm.request_lifespan = Duration::from_secs(60);
    let h = start_bare(config_with(warm.clone()));
    wait_for("the idle runner up", || runners(&h, "live") == 1.0);
    // The pool is removed: its runner retires; its request stays open.
    let mut without = config_with(warm);
    without.serverless.clear();
    assert!(h.reload(&without));
    wait_for("the runner retiring", || runners(&h, "retiring") == 1.0);
    if let Some(r) = first.lock().unwrap().take() {
        r.stop();
    }
    wait_for("its tunnels gone", || h.stat(|s| &s.tunnels) == 0);
    // Back, and a client waits for a runner (started with a 2 s delay)
    // while the retiring runner's tunnel comes back: it must not take
    // the actor.
    assert!(h.reload(&config_with(pool(&url))));
    let addr = h.client_addr;
    let client = std::thread::spawn(move || RawWs::connect(addr, "/actors/echo/late"));
    wait_for("the actor waiting", || {
        let (_, status) = h.admin_json("/actors/echo/late");
        status["waiting_for"].is_string()
    });
    let late = keys.lock().unwrap()[0].1.clone();
    let again = Runner::start(late, BuiltinActors);
    assert!(again.wait_connected(Duration::from_secs(10)));
    let mut client = client.join().unwrap();
    client.echo("served");
    let late_key = keys.lock().unwrap()[0].0.clone();
    wait_for("the actor on a new runner", || {
        let (_, status) = h.admin_json("/actors/echo/late");
        status["runner"].as_str().is_some_and(|r| r != late_key)
    });
    client.echo("on the new runner");
    let migrations = h.metrics().value("tether_actor_migrations_total", &[]);
    assert_eq!(migrations, 0.0, "never placed on the retiring runner");
    again.stop();
}

#[test]
fn an_upgrade_goes_through_while_a_pools_function_is_down() {
    let mut host = FunctionHost::start(None);
    let dir = child::temp_dir("serverless-upgrade");
    let pid_file = dir.join("tether.pid");
    let config = toml(&host.url()).replace(
        "[server]\n",
        &format!("[server]\npid_file = \"{}\"\n", pid_file.display()),
    );
    let mut g = child::ChildGateway::start(&config);
    // The function goes down: the new process must not refuse to start
    // for it (it was checked when its pool was configured).
    host.go_down();
    let pid = || -> Option<i32> {
        let text = std::fs::read_to_string(&pid_file).ok()?;
        text.trim().parse().ok()
    };
    wait_for("the pid file", || pid().is_some());
    let first = pid().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["upgrade", "--timeout", "10s", "--pid-file"])
        .arg(&pid_file)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let new: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .filter(|p| *p != first);
    let kill_new = || {
        if let Some(pid) = new {
            // SAFETY: kill(2) on the gateway this test's upgrade started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    };
    if !out.status.success() {
        kill_new();
        panic!("the upgrade was refused: {said}");
    }
    wait_for("the old process gone", || !g.is_running());
    // The function back, the new process starts runners for the pool.
    host.come_back();
    let mut ws = None;
    wait_for("a client served after the upgrade", || {
        let (status, _, stream) = upgrade_from("127.0.0.1", g.client_addr, "/actors/echo/after");
        ws = (status == 101).then(|| Handshake::from_stream(stream));
        status == 101
    });
    kill_new();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_retiring_runners_request_is_cut_once_its_tunnels_are_gone() {
    // The function ignores the drain: its runner goes, its request stays.
    let keys = Arc::new(Mutex::new(Vec::new()));
    let first = Arc::new(Mutex::new(None));
    let url = recording_function(Duration::ZERO, keys, first.clone());
    let mut warm = pool(&url);
    warm.min_idle_runners = 1;
    warm.request_lifespan = Duration::from_secs(60);
    let h = start_bare(config_with(warm.clone()));
    wait_for("the idle runner up", || runners(&h, "live") == 1.0);
    let mut without = config_with(warm);
    without.serverless.clear();
    assert!(h.reload(&without));
    wait_for("the runner retiring", || runners(&h, "retiring") == 1.0);
    if let Some(r) = first.lock().unwrap().take() {
        r.stop();
    }
    wait_for("its tunnels gone", || h.stat(|s| &s.tunnels) == 0);
    wait_for("its request cut, long before its lifespan", || {
        runners(&h, "retiring") == 0.0
    });
}
