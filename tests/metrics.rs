//! `/metrics` over real sockets: a gateway, runners and raw clients on
//! loopback, and the admin listener scraped (with its token) and parsed
//! while they run. Each test moves a series and checks it moved by exactly
//! what was done.

mod common;

use common::metrics::Metrics;
use common::*;
use tether::runner::{
    Actor, ActorFactory, BuiltinActors, ConnId, ConnInfo, Ctx, Message, OpenDecision,
};

const TEXT: u8 = 1;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

/// Echoes text; "sleep" asks the gateway to put it to sleep, "bye" makes
/// it close the sender with 4001. Its connections hibernate.
struct Sleepy;

impl Actor for Sleepy {
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &ConnInfo) -> OpenDecision {
        OpenDecision::Accept {
            protocol: None,
            hibernatable: Some(true),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        match message {
            Message::Text(t) if t == "sleep" => ctx.sleep(),
            Message::Text(t) if t == "bye" => ctx.close(conn, 4001, "bye"),
            other => ctx.send(conn, &other),
        }
    }
}

struct Sleepies;

impl ActorFactory for Sleepies {
    fn actor_names(&self) -> Vec<String> {
        vec!["sleepy".into()]
    }
    fn create(&self, _: &str, _: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(Sleepy))
    }
}

fn text_of(ws: &mut RawWs) -> String {
    loop {
        let f = ws.recv().expect("connection open");
        match f.opcode {
            TEXT => return String::from_utf8(f.payload).unwrap(),
            PING => ws.send(true, PONG, &f.payload),
            other => panic!("unexpected frame {other}: {f:?}"),
        }
    }
}

/// Waits until a scrape satisfies `cond`; returns that scrape.
#[track_caller]
fn scrape_until(h: &Harness, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = None;
    wait_for(what, || {
        let m = h.metrics();
        let done = cond(&m);
        last = Some(m);
        done
    });
    last.unwrap()
}

fn actors_in(m: &Metrics, state: &str) -> f64 {
    m.value("tether_actors", &[("state", state)])
}

fn handshakes(m: &Metrics, status: &str) -> f64 {
    m.value("tether_handshakes_total", &[("status", status)])
}

fn closes(m: &Metrics, code: &str) -> f64 {
    m.value("tether_client_closes_total", &[("code", code)])
}

fn messages(m: &Metrics, direction: &str) -> (f64, f64) {
    let labels = [("direction", direction)];
    (
        m.value("tether_messages_total", &labels),
        m.value("tether_message_bytes_total", &labels),
    )
}

#[test]
fn connections_messages_handshakes_and_closes_are_counted_exactly() {
    let h = start_default();
    let before = h.metrics();
    assert_eq!(before.value("tether_client_connections", &[]), 0.0);
    assert_eq!(messages(&before, "client_to_actor"), (0.0, 0.0));
    assert_eq!(before.total("tether_handshakes_total"), 0.0);
    assert_eq!(
        before
            .by("tether_worker_runner_tunnels", "worker")
            .into_values()
            .collect::<Vec<_>>(),
        [1.0, 1.0],
        "one tunnel of the runner on each of the two workers"
    );
    let pool = [("namespace", "default"), ("pool", "default")];
    assert_eq!(
        before.value("tether_runners", &pool),
        1.0,
        "runners, not tunnels"
    );

    let mut ws = RawWs::connect(h.client_addr, "/actors/echo/counted");
    let m = h.metrics();
    assert_eq!(m.value("tether_client_connections", &[]), 1.0);
    assert_eq!(handshakes(&m, "101"), 1.0);
    assert_eq!(m.total("tether_worker_client_connections"), 1.0);
    assert_eq!(actors_in(&m, "running"), 1.0);
    assert_eq!(m.total("tether_worker_actors"), 1.0);

    // Three messages each way: 1 + 22 + 300 payload bytes.
    for payload in ["a".to_string(), "b".repeat(22), "c".repeat(300)] {
        ws.send(true, TEXT, payload.as_bytes());
        assert_eq!(text_of(&mut ws), payload);
    }
    let m = h.metrics();
    assert_eq!(messages(&m, "client_to_actor"), (3.0, 323.0));
    assert_eq!(messages(&m, "actor_to_client"), (3.0, 323.0));

    // Refusals show their status: an unknown actor.
    let unknown = raw_exchange(
        h.client_addr,
        upgrade_request("/actors/nosuch/k").as_bytes(),
    );
    assert_eq!(status_of(&unknown), 404, "{unknown}");
    // A request that is no upgrade is an HTTP request for the actor
    // (PROTOCOL §7b), counted apart: echo answers it 200.
    let plain = raw_exchange(
        h.client_addr,
        b"GET /actors/echo/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&plain), 200, "{plain}");
    let m = h.metrics();
    assert_eq!(handshakes(&m, "404"), 1.0);
    let http_200 = m.value("tether_http_requests_total", &[("status", "200")]);
    assert_eq!(http_200, 1.0, "{plain}");
    assert_eq!(m.total("tether_handshakes_total"), 2.0);

    // Closes by code: the client's 1000, a protocol error the gateway
    // closes with 1002, an actor's own 4001 (counted as "other").
    ws.send(true, CLOSE, &1000u16.to_be_bytes());
    assert_eq!(ws.expect_close(), 1000);
    let mut bad = RawWs::connect(h.client_addr, "/actors/echo/bad");
    bad.send(true, 3, b"reserved opcode");
    assert_eq!(bad.expect_close(), 1002);
    let m = scrape_until(&h, "both closes counted", |m| {
        m.total("tether_client_closes_total") == 2.0
    });
    assert_eq!((closes(&m, "1000"), closes(&m, "1002")), (1.0, 1.0));
    let m = scrape_until(&h, "the connections gone", |m| {
        m.value("tether_client_connections", &[]) == 0.0
    });
    assert_eq!(m.total("tether_worker_client_connections"), 0.0);
    h.shutdown();
}

#[test]
fn an_actor_that_sleeps_and_wakes_shows_in_its_states_and_its_wake_latency() {
    let mut h = start_bare(test_config());
    let o = h.runner_options();
    h.add_runner(o, Sleepies);
    let mut ws = RawWs::connect(h.client_addr, "/actors/sleepy/nap");
    ws.send(true, TEXT, b"hello");
    assert_eq!(text_of(&mut ws), "hello");
    let wake = "tether_actor_wake_latency_seconds_count";
    assert_eq!(
        h.metrics().value(wake, &[]),
        0.0,
        "a first start is no wake"
    );

    ws.send(true, TEXT, b"sleep");
    let m = scrape_until(&h, "the actor asleep", |m| actors_in(m, "asleep") == 1.0);
    assert_eq!(actors_in(&m, "running"), 0.0);
    assert_eq!(m.value(wake, &[]), 0.0);
    assert_eq!(
        m.value("tether_client_connections", &[]),
        1.0,
        "kept while asleep"
    );

    // A message wakes it; it is measured before the reply can come back.
    ws.send(true, TEXT, b"again");
    assert_eq!(text_of(&mut ws), "again");
    let m = h.metrics();
    assert_eq!(actors_in(&m, "running"), 1.0);
    assert_eq!(actors_in(&m, "asleep"), 0.0);
    assert_eq!(m.value(wake, &[]), 1.0);
    let inf = m.value(
        "tether_actor_wake_latency_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, 1.0);
    let sum = m.value("tether_actor_wake_latency_seconds_sum", &[]);
    assert!(sum > 0.0 && sum < WAIT.as_secs_f64(), "{sum}");
    assert_eq!(m.types["tether_actor_wake_latency_seconds"], "histogram");

    // The actor closes its client: a code of its own counts as "other".
    ws.send(true, TEXT, b"bye");
    assert_eq!(ws.expect_close(), 4001);
    scrape_until(&h, "the actor's close counted", |m| {
        closes(m, "other") == 1.0
    });
    h.shutdown();
}

#[test]
fn a_migration_adds_one_pause_observation() {
    let mut h = start_bare(test_config());
    for key in ["runner-a", "runner-b"] {
        let mut o = h.runner_options();
        o.key = key.into();
        h.add_runner(o, BuiltinActors);
    }
    let pool = [("namespace", "default"), ("pool", "default")];
    assert_eq!(h.metrics().value("tether_runners", &pool), 2.0);
    let mut ws = RawWs::connect(h.client_addr, "/actors/counter/moving");
    ws.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut ws), "1");
    let pause = "tether_actor_migration_pause_seconds_count";
    assert_eq!(h.metrics().value(pause, &[]), 0.0);

    let moved = h.admin("POST", "/actors/counter/moving/migrate");
    assert_eq!(status_of(&moved), 200, "{moved}");
    let m = h.metrics();
    assert_eq!(m.value(pause, &[]), 1.0);
    assert_eq!(m.value("tether_actor_migrations_total", &[]), 1.0);
    assert_eq!(actors_in(&m, "running"), 1.0);
    assert_eq!(actors_in(&m, "migrating"), 0.0);
    let wake = "tether_actor_wake_latency_seconds_count";
    assert_eq!(m.value(wake, &[]), 0.0, "a move is no wake");
    ws.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut ws), "2", "the actor runs on");
    h.shutdown();
}

#[test]
fn every_family_is_typed_and_the_process_counters_start_at_zero() {
    let h = start_default();
    let m = h.metrics();
    for (family, kind) in [
        ("tether_client_connections", "gauge"),
        ("tether_handshakes_in_progress", "gauge"),
        ("tether_hibernated_connections", "gauge"),
        ("tether_handshakes_total", "counter"),
        ("tether_client_closes_total", "counter"),
        ("tether_connections_refused_total", "counter"),
        ("tether_messages_total", "counter"),
        ("tether_message_bytes_total", "counter"),
        ("tether_broadcasts_total", "counter"),
        ("tether_actors", "gauge"),
        ("tether_actor_wake_latency_seconds", "histogram"),
        ("tether_actor_migration_pause_seconds", "histogram"),
        ("tether_runners", "gauge"),
        ("tether_worker_client_connections", "gauge"),
        ("tether_worker_actors", "gauge"),
        ("tether_worker_runner_tunnels", "gauge"),
        ("tether_reloads_total", "counter"),
        ("tether_upgrades_total", "counter"),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert_eq!(m.value("tether_upgrades_total", &[]), 0.0);
    assert_eq!(
        m.value("tether_reloads_total", &[("result", "applied")]),
        0.0
    );
    assert_eq!(
        m.value("tether_reloads_total", &[("result", "invalid")]),
        0.0
    );
    // Buckets are cumulative and end at +Inf.
    let buckets = m.by("tether_actor_wake_latency_seconds_bucket", "le");
    assert!(
        buckets.contains_key("+Inf") && buckets.contains_key("0.001"),
        "{buckets:?}"
    );
    h.shutdown();
}

#[test]
fn the_metrics_parser_reads_names_labels_values_and_types() {
    let m = Metrics::parse(
        "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"\\\\\"} 3\ng 2.5\nh_bucket{le=\"+Inf\"} 4\n",
    );
    assert_eq!(m.value("x_total", &[("a", "1"), ("b", "q\"\\")]), 3.0);
    assert_eq!(m.value("g", &[]), 2.5);
    assert_eq!(m.value("h_bucket", &[("le", "+Inf")]), 4.0);
    assert_eq!(m.types["x_total"], "counter");
    assert_eq!(
        m.get("x_total", &[("a", "1")]),
        None,
        "labels match exactly"
    );
}
