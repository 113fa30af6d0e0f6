//! The JSON admin API over loopback: runners and actors listed from every
//! worker, an actor's connections, who may ask (and what they then see),
//! and every change logged with who asked.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::rooms::Rooms;
use common::*;
use serde_json::Value;
use tether::config::NamespaceConfig;
use tether::runner::BuiltinActors;

const TEXT: u8 = 1;
const RUNNER_KEY: &str = "inspected-runner";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A gateway with two workers and a `room` runner keyed `RUNNER_KEY`.
fn rooms_gateway(config: tether::Config) -> Harness {
    let mut h = start_bare(config);
    let mut o = h.runner_options();
    o.key = RUNNER_KEY.into();
    h.add_runner(o, Rooms);
    h
}

/// The actor named `name` with key `key` in a `/actors` answer.
fn actor<'a>(list: &'a Value, name: &str, key: &str) -> Option<&'a Value> {
    list["actors"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name && a["key"][0] == key)
}

#[test]
fn runners_list_every_tunnel_as_one_runner_with_its_pool_and_connection_time() {
    let before = now_ms();
    let h = rooms_gateway(test_config());
    let (status, list) = h.admin_json("/runners");
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        (list["total"].as_u64(), list["truncated"].as_bool()),
        (Some(1), Some(false))
    );
    let r = &list["runners"][0];
    assert_eq!(r["key"], RUNNER_KEY);
    assert_eq!(
        (r["pool"].as_str(), r["namespace"].as_str()),
        (Some("default"), Some("default"))
    );
    assert_eq!(r["identity"], "default");
    assert_eq!(r["actor_names"], serde_json::json!(["room"]));
    assert_eq!(r["tunnels"], 2, "one per worker: {r}");
    assert_eq!(
        (r["actors"].as_u64(), r["draining"].as_bool()),
        (Some(0), Some(false))
    );
    assert!(r["capacity"].as_u64().unwrap() > 0);
    let since = r["connected_since_ms"].as_u64().unwrap();
    assert!(
        (before..=now_ms()).contains(&since),
        "{since} not after {before}"
    );
    h.shutdown();
}

#[test]
fn actors_and_their_connections_show_state_and_hibernation() {
    let h = rooms_gateway(test_config());
    let mut ann = RawWs::connect(h.client_addr, "/actors/room/lobby?name=ann");
    let mut bob = RawWs::connect(h.client_addr, "/actors/room/lobby?name=bob");
    let _carl = RawWs::connect(h.client_addr, "/actors/room/attic?name=carl");
    ann.send(true, TEXT, b"hello");
    assert_eq!(bob.recv().map(|f| f.payload), Some(b"hello".to_vec()));
    let (_, list) = h.admin_json("/actors");
    let lobby = actor(&list, "room", "lobby").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(lobby["state"], "running");
    assert_eq!(lobby["runner"], RUNNER_KEY);
    assert_eq!(
        lobby["connections"],
        serde_json::json!({"open": 2, "hibernated": 0})
    );
    assert!(
        actor(&list, "room", "attic").is_some(),
        "from either worker: {list}"
    );
    assert_eq!(
        (list["total"].as_u64(), list["truncated"].as_bool()),
        (Some(2), Some(false))
    );
    let (_, one) = h.admin_json("/actors?limit=1");
    assert_eq!(one["actors"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (one["total"].as_u64(), one["truncated"].as_bool()),
        (Some(2), Some(true))
    );

    // The room sleeps: its connections stay, hibernated.
    ann.send(true, TEXT, b"sleep");
    wait_for("the lobby to sleep", || {
        let (_, list) = h.admin_json("/actors");
        actor(&list, "room", "lobby").is_some_and(|a| a["state"] == "asleep")
    });
    let (_, list) = h.admin_json("/actors");
    let lobby = actor(&list, "room", "lobby").unwrap();
    assert_eq!(
        lobby["connections"],
        serde_json::json!({"open": 2, "hibernated": 2})
    );
    assert_eq!(lobby["runner"], Value::Null);

    let (status, conns) = h.admin_json("/actors/room/lobby/connections");
    assert_eq!(status, 200, "{conns}");
    assert_eq!(conns["total"], 2);
    let all = conns["connections"].as_array().unwrap();
    for c in all {
        assert_eq!(
            (c["hibernated"].as_bool(), c["hibernatable"].as_bool()),
            (Some(true), Some(true))
        );
        assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
        assert_eq!(c["attachment_bytes"], 3, "ann or bob: {c}");
    }
    // ann sent two messages; the runner acknowledged both before it stopped.
    assert!(
        all.iter()
            .any(|c| c["last_acked"] == 2 && c["last_sent"] == 2),
        "{conns}"
    );
    let (_, first) = h.admin_json("/actors/room/lobby/connections?limit=1");
    assert_eq!(
        (first["total"].as_u64(), first["truncated"].as_bool()),
        (Some(2), Some(true))
    );
    let (status, _) = h.admin_json("/actors/room/nobody/connections");
    assert_eq!(status, 404);
    h.shutdown();
}

#[test]
fn lists_need_a_token_and_a_namespace_token_sees_only_its_namespace() {
    let mut c = test_config();
    c.namespaces = vec![
        NamespaceConfig::implicit_default(),
        NamespaceConfig {
            name: "acme".into(),
            access_tokens: vec!["acme-access-0123456789".into()],
            ..NamespaceConfig::implicit_default()
        },
    ];
    let h = rooms_gateway(c);
    let _ann = RawWs::connect(h.client_addr, "/actors/room/lobby?name=ann");
    let ask = |path: &str, token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n");
        raw_exchange(h.admin_addr, request.as_bytes())
    };
    for path in [
        "/runners",
        "/actors",
        "/events",
        "/actors/room/lobby/connections",
    ] {
        assert_eq!(status_of(&ask(path, None)), 401, "{path} without a token");
        assert_eq!(
            status_of(&ask(path, Some("wrong"))),
            401,
            "{path} with a wrong one"
        );
    }
    // An access token of acme lists acme's runners and actors: none.
    let acme = Some("acme-access-0123456789");
    for path in ["/runners", "/actors"] {
        let answer = ask(path, acme);
        assert_eq!(status_of(&answer), 200, "{answer}");
        assert!(answer.contains("\"total\":0"), "{answer}");
    }
    assert_eq!(
        status_of(&ask("/events", acme)),
        401,
        "the inspector is the operator's"
    );
    assert_eq!(status_of(&ask("/actors/room/lobby/connections", acme)), 401);
    // The admin token sees them.
    let (_, list) = h.admin_json("/actors");
    assert!(actor(&list, "room", "lobby").is_some(), "{list}");
    // Bounded and exact answers.
    assert_eq!(status_of(&ask("/actors?limit=0", Some(ADMIN_TOKEN))), 400);
    assert_eq!(
        status_of(&ask("/runners?limit=1001", Some(ADMIN_TOKEN))),
        400
    );
    assert_eq!(status_of(&h.admin("POST", "/actors")), 405);
    h.shutdown();
}

#[test]
fn without_an_admin_token_the_api_is_disabled_but_the_page_loads() {
    let mut c = test_config();
    c.admin.token = String::new();
    let h = start_bare(c);
    let get = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        raw_exchange(h.admin_addr, request.as_bytes())
    };
    for path in ["/runners", "/actors", "/events"] {
        let answer = get(path);
        assert_eq!(status_of(&answer), 403, "{answer}");
        assert!(answer.contains("admin.token is not configured"), "{answer}");
    }
    let page = get("/");
    assert_eq!(status_of(&page), 200);
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'none'"));
    assert!(page.contains("<title>Tether inspector</title>"));
    h.shutdown();
}

/// The gateway binary, its stderr a pipe, and its admin and runner addresses.
struct Logged {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    dir: std::path::PathBuf,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Logged {
    fn start() -> (Logged, String) {
        let dir = std::env::temp_dir().join(format!("tether-admin-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("tether.toml");
        let body = format!(
            "[server]\nworkers = 2\n[client]\nlisten = \"127.0.0.1:0\"\n[runners]\nlisten = \"127.0.0.2:0\"\n[admin]\nlisten = \"127.0.0.3:0\"\ntoken = \"{ADMIN_TOKEN}\"\n"
        );
        std::fs::write(&cfg, body).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("--config")
            .arg(&cfg)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut logged = Logged { child, lines, dir };
        let serving = logged.line_with("tether is serving");
        (logged, serving)
    }

    fn line_with(&mut self, wanted: &str) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) if line.contains(wanted) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no log line with {wanted:?}: {e}"),
            }
        }
    }
}

/// `name=ADDR` in a log line.
fn address(line: &str, name: &str) -> std::net::SocketAddr {
    line.split(&format!("{name}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|a| a.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {name} address in {line}"))
}

fn post(admin: std::net::SocketAddr, path: &str, body: &str) -> String {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_exchange(admin, request.as_bytes())
}

#[test]
fn every_change_is_logged_with_who_asked() {
    let (mut gw, serving) = Logged::start();
    let (client, runners, admin) = (
        address(&serving, "client"),
        address(&serving, "runners"),
        address(&serving, "admin"),
    );
    let mut o = tether::runner::RunnerOptions::new(
        &format!("ws://{runners}"),
        tether::config::DEV_RUNNER_TOKEN,
    );
    o.key = "logged-runner".into();
    let runner = tether::runner::Runner::start(o, BuiltinActors);
    assert!(runner.wait_connected(WAIT));
    let _ws = RawWs::connect(client, "/actors/echo/logged");

    let answer = post(admin, "/actors/echo/logged/publish", "news");
    assert_eq!(status_of(&answer), 200, "{answer}");
    let line = gw.line_with("admin: published to actor");
    for part in [
        "by=admin token",
        "peer=127.0.0.1:",
        "actor=echo",
        "bytes=4",
        "delivered=1",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }

    let answer = post(admin, "/actors/echo/logged/migrate", "");
    assert_eq!(status_of(&answer), 200, "{answer}");
    let line = gw.line_with("admin: migrating actor");
    assert!(
        line.contains("by=admin token") && line.contains("actor=echo"),
        "{line}"
    );
    assert!(line.contains("\"logged\""), "the key: {line}");

    let answer = post(admin, "/runners/logged-runner/drain", "");
    assert_eq!(status_of(&answer), 202, "{answer}");
    let line = gw.line_with("admin: draining runner");
    for part in ["by=admin token", "runner=logged-runner", "tunnels=2"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    runner.stop();
}
