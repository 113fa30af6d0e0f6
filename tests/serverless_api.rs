//! Serverless pools through the admin API (issue 15): made, shown,
//! replaced and removed per namespace; kept in `admin.state_file` across a
//! restart and a reload; the configuration file wins; who may change what.

mod common;

use common::functions::FunctionHost;
use common::*;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use tether::config::NamespaceConfig;

/// A function host answering `/metadata` and `/start` as the runner
/// library does.
fn function_host() -> FunctionHost {
    FunctionHost::start(None)
}

/// `method path` on the admin listener with `token` and a JSON `body`:
/// the status and the body (as JSON, `Null` if it is not).
fn call(admin: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = raw_exchange(admin, request.as_bytes());
    let text = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    (status_of(&response), json)
}

fn pool_body(url: &str, max_runners: u32) -> String {
    format!(
        r#"{{"url":"{url}","headers":{{"x-bypass":"a-secret"}},"max_runners":{max_runners},"request_lifespan":"60s","drain_grace":"5s"}}"#
    )
}

fn state_file(what: &str) -> PathBuf {
    tether_temp_dir(what).join("pools.json")
}

fn tether_temp_dir(what: &str) -> PathBuf {
    common::child::temp_dir(what)
}

fn config_with_state(path: &Path) -> tether::Config {
    let mut c = test_config();
    c.admin.state_file = path.display().to_string();
    c
}

#[test]
fn a_pool_made_through_the_api_is_shown_replaced_and_kept_across_a_restart() {
    let host = function_host();
    let url = host.url();
    let state = state_file("pools-restart");
    let h = start_bare(config_with_state(&state));
    let admin = h.admin_addr;
    let (status, made) = call(
        admin,
        ADMIN_TOKEN,
        "PUT",
        "/serverless/fns",
        &pool_body(&url, 3),
    );
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (made["pool"].as_str(), made["source"].as_str()),
        (Some("fns"), Some("api"))
    );
    assert_eq!(made["header_names"], serde_json::json!(["x-bypass"]));
    assert!(
        !made.to_string().contains("a-secret"),
        "header values are never shown: {made}"
    );
    let (status, replaced) = call(
        admin,
        ADMIN_TOKEN,
        "PUT",
        "/serverless/fns",
        &pool_body(&url, 5),
    );
    assert_eq!(
        (status, replaced["max_runners"].as_u64()),
        (200, Some(5)),
        "{replaced}"
    );
    let (_, list) = call(admin, ADMIN_TOKEN, "GET", "/serverless", "");
    assert_eq!(
        list["serverless"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    h.shutdown();

    let h = start_bare(config_with_state(&state));
    let (status, kept) = call(h.admin_addr, ADMIN_TOKEN, "GET", "/serverless/fns", "");
    assert_eq!(
        (status, kept["max_runners"].as_u64()),
        (200, Some(5)),
        "{kept}"
    );
    let (status, _) = call(h.admin_addr, ADMIN_TOKEN, "DELETE", "/serverless/fns", "");
    assert_eq!(status, 200);
    let (status, _) = call(h.admin_addr, ADMIN_TOKEN, "GET", "/serverless/fns", "");
    assert_eq!(status, 404);
    let (status, _) = call(h.admin_addr, ADMIN_TOKEN, "DELETE", "/serverless/fns", "");
    assert_eq!(status, 404);
    h.shutdown();
    let h = start_bare(config_with_state(&state));
    let (_, list) = call(h.admin_addr, ADMIN_TOKEN, "GET", "/serverless", "");
    assert_eq!(
        list["serverless"],
        serde_json::json!([]),
        "the removal was kept too"
    );
    h.shutdown();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

#[test]
fn a_pool_made_through_the_api_serves_its_actors_at_once() {
    let host = function_host();
    let state = state_file("pools-serve");
    let mut config = config_with_state(&state);
    config.actors.pools.insert("echo".into(), "fns".into());
    let h = start_bare(config);
    let before = raw_exchange(
        h.client_addr,
        upgrade_request("/actors/echo/early").as_bytes(),
    );
    assert_eq!(
        status_of(&before),
        503,
        "no pool yet, nothing runs echo: {before}"
    );
    let body = pool_body(&host.url(), 2);
    let (status, made) = call(h.admin_addr, ADMIN_TOKEN, "PUT", "/serverless/fns", &body);
    assert_eq!(status, 201, "{made}");
    let mut ws = RawWs::connect(h.client_addr, "/actors/echo/late");
    ws.echo("started by the gateway on the API's pool");
    h.shutdown();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

#[test]
fn bad_pools_and_changes_the_gateway_cannot_keep_are_refused_with_why() {
    let host = function_host();
    let url = host.url();
    let h = start_bare(test_config());
    let admin = h.admin_addr;
    let (status, why) = call(
        admin,
        ADMIN_TOKEN,
        "PUT",
        "/serverless/fns",
        &pool_body(&url, 1),
    );
    assert_eq!(status, 503, "no state file: {why}");
    assert!(
        why.as_str().unwrap_or("").contains("admin.state_file"),
        "{why}"
    );
    h.shutdown();

    let h = start_bare(config_with_state(&state_file("pools-bad")));
    let admin = h.admin_addr;
    let cases = [
        (r#"{"url":"ftp://x"}"#, "http://"),
        (
            r#"{"url":"http://h","min_idle_runners":50}"#,
            "min_idle_runners",
        ),
        (r#"{"url":"http://h","surprise":1}"#, "unknown field"),
        (r#"{"url":"http://h","pool":"other"}"#, "another pool"),
        (
            r#"{"url":"http://h","headers":{"x-tether-token":"t"}}"#,
            "set by the gateway",
        ),
        ("not json", "not a serverless pool"),
        (r#"{"url":"http://h","max_runners":5000}"#, "at most 1000"),
    ];
    for (body, why) in cases {
        let (status, answer) = call(admin, ADMIN_TOKEN, "PUT", "/serverless/fns", body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer.as_str().unwrap_or("").contains(why),
            "{body}: {answer}"
        );
    }
    let huge = format!(r#"{{"url":"http://h","runner":"{}"}}"#, "x".repeat(70_000));
    let (status, _) = call(admin, ADMIN_TOKEN, "PUT", "/serverless/fns", &huge);
    assert_eq!(status, 413);
    let (status, _) = call(admin, ADMIN_TOKEN, "POST", "/serverless/fns", "");
    assert_eq!(status, 405);
    let (status, _) = call(
        admin,
        "wrong-token",
        "PUT",
        "/serverless/fns",
        &pool_body(&url, 1),
    );
    assert_eq!(status, 401);
    h.shutdown();
}

#[test]
fn a_pool_whose_function_does_not_answer_right_is_refused_with_why() {
    let state = state_file("pools-metadata");
    let h = start_bare(config_with_state(&state));
    let admin = h.admin_addr;
    // Nothing listens there (the port was free a moment ago).
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let body = pool_body(&format!("http://{free}"), 1);
    let (status, why) = call(admin, ADMIN_TOKEN, "PUT", "/serverless/fns", &body);
    assert_eq!(status, 422, "{why}");
    assert!(why.as_str().unwrap_or("").contains("/metadata"), "{why}");
    // An HTTP server that is not a Tether function: the admin listener.
    let body = pool_body(&format!("http://{admin}"), 1);
    let (status, why) = call(admin, ADMIN_TOKEN, "PUT", "/serverless/fns", &body);
    assert_eq!(status, 422, "{why}");
    let (status, _) = call(admin, ADMIN_TOKEN, "GET", "/serverless/fns", "");
    assert_eq!(status, 404, "a refused pool is not kept");
    h.shutdown();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

#[test]
fn a_namespace_token_reaches_its_own_pools_only() {
    let host = function_host();
    let url = host.url();
    let mut config = config_with_state(&state_file("pools-ns"));
    for (name, token) in [
        ("acme", "acme-access-token-1234"),
        ("beta", "beta-access-token-1234"),
    ] {
        let mut ns = NamespaceConfig::implicit_default();
        ns.name = name.into();
        ns.open = true;
        ns.access_tokens = vec![token.into()];
        ns.runners = vec![tether::config::NamespaceRunner {
            name: "fns".into(),
            token: format!("{name}-runner-token-123456"),
            pools: vec![],
            key_prefix: format!("{name}-"),
        }];
        config.namespaces.push(ns);
    }
    let h = start_bare(config);
    let admin = h.admin_addr;
    let acme = "acme-access-token-1234";
    let body = pool_body(&url, 2);
    let (status, made) = call(admin, acme, "PUT", "/ns/acme/serverless/fns", &body);
    assert_eq!(
        (status, made["namespace"].as_str()),
        (201, Some("acme")),
        "{made}"
    );
    let (status, _) = call(admin, acme, "PUT", "/ns/beta/serverless/fns", &body);
    assert_eq!(status, 401, "another namespace's pools are not reachable");
    let (status, _) = call(admin, ADMIN_TOKEN, "PUT", "/ns/beta/serverless/fns", &body);
    assert_eq!(status, 201, "the admin token reaches every namespace");
    let (_, seen) = call(admin, acme, "GET", "/serverless", "");
    let seen = seen["serverless"].as_array().cloned().unwrap_or_default();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["namespace"], "acme");
    let (_, all) = call(admin, ADMIN_TOKEN, "GET", "/serverless", "");
    assert_eq!(all["serverless"].as_array().map(Vec::len), Some(2), "{all}");
    let (status, why) = call(
        admin,
        ADMIN_TOKEN,
        "PUT",
        "/ns/nowhere/serverless/fns",
        &body,
    );
    assert_eq!(status, 400, "{why}");
    h.shutdown();
}

/// The default namespace's runners are the gateway's own (`runners.token`,
/// `[[runners.identities]]`): a namespace access token may not hand them to
/// a URL of its choosing.
#[test]
fn a_namespace_token_cannot_hand_out_the_gateways_own_runner_tokens() {
    let host = function_host();
    let state = state_file("pools-own-tokens");
    let mut config = config_with_state(&state);
    let mut default = NamespaceConfig::implicit_default();
    default.access_tokens = vec!["default-access-token-1234".into()];
    config.namespaces.push(default);
    let h = start_bare(config);
    let body = pool_body(&host.url(), 1);
    let tenant = "default-access-token-1234";
    let (status, why) = call(h.admin_addr, tenant, "PUT", "/serverless/fns", &body);
    assert_eq!(status, 403, "{why}");
    assert!(why.as_str().unwrap_or("").contains("admin.token"), "{why}");
    let (status, _) = call(h.admin_addr, ADMIN_TOKEN, "PUT", "/serverless/fns", &body);
    assert_eq!(status, 201, "the admin token may");
    h.shutdown();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

#[test]
fn the_file_wins_and_a_reload_keeps_the_apis_pools() {
    let host = function_host();
    let url = host.url();
    let dir = tether_temp_dir("pools-reload");
    let state = dir.join("pools.json");
    let base = format!(
        "[server]\nworkers = 2\n[client]\nlisten = \"127.0.0.1:0\"\n[runners]\nlisten = \"127.0.0.2:0\"\n[admin]\nlisten = \"127.0.0.3:0\"\ntoken = \"{ADMIN_TOKEN}\"\nstate_file = \"{}\"\n",
        state.display()
    );
    let g = common::child::ChildGateway::start(&base);
    let admin = g.admin_addr;
    let (status, _) = call(
        admin,
        ADMIN_TOKEN,
        "PUT",
        "/serverless/api-pool",
        &pool_body(&url, 2),
    );
    assert_eq!(status, 201);
    let (status, _) = call(
        admin,
        ADMIN_TOKEN,
        "PUT",
        "/serverless/both",
        &pool_body(&url, 2),
    );
    assert_eq!(status, 201);
    let with_file_pool =
        format!("{base}[[serverless]]\npool = \"both\"\nurl = \"{url}\"\nmax_runners = 7\n");
    g.reload(&with_file_pool);
    let (_, api_pool) = call(admin, ADMIN_TOKEN, "GET", "/serverless/api-pool", "");
    assert_eq!(
        api_pool["source"], "api",
        "a reload keeps the API's pools: {api_pool}"
    );
    let (_, both) = call(admin, ADMIN_TOKEN, "GET", "/serverless/both", "");
    assert_eq!(
        (both["source"].as_str(), both["max_runners"].as_u64()),
        (Some("file"), Some(7))
    );
    let (status, why) = call(
        admin,
        ADMIN_TOKEN,
        "PUT",
        "/serverless/both",
        &pool_body(&url, 2),
    );
    assert_eq!(status, 409, "{why}");
    let (status, _) = call(admin, ADMIN_TOKEN, "DELETE", "/serverless/api-pool", "");
    assert_eq!(status, 200);
    let (status, _) = call(admin, ADMIN_TOKEN, "GET", "/serverless/api-pool", "");
    assert_eq!(status, 404);
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_state_file_that_does_not_parse_stops_the_start_with_why() {
    let state = state_file("pools-damaged");
    std::fs::write(&state, "{\"layout\":1,\"serverless\":[").unwrap();
    let err = tether::Gateway::start(config_with_state(&state)).err();
    let err = err.expect("the start is refused");
    assert!(
        err.contains("admin.state_file") && err.contains("pools.json"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}
