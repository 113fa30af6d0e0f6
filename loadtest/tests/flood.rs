//! The `flood` scenario, shrunk to seconds, against a gateway started here
//! with its default limits: the well-behaved group (127.0.0.2) loses
//! nothing and is never refused, the abusive groups (127.0.0.3…) are
//! refused by the per-address limits, and the gateway's /metrics agrees.

use std::process::Command;

#[test]
fn a_small_flood_is_refused_by_address_and_reported_by_phase() {
    let mut config = tether::Config::default();
    config.server.workers = 2;
    config.server.log_level = "warn".into();
    config.client.listen = "127.0.0.1:0".parse().unwrap();
    config.runners.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.token = "flood-test".into();
    let gw = tether::Gateway::start(config).expect("gateway starts");
    let json =
        std::env::temp_dir().join(format!("tether-loadtest-flood-{}.json", std::process::id()));
    let set = |kv: &str| ["--flood".to_string(), kv.to_string()];
    let mut args: Vec<String> = [
        "--scenario",
        "flood",
        "--quiet",
        "--clients",
        "6",
        "--rate",
        "50",
        "--warmup",
        "300ms",
        "--duration",
        "3s",
        "--drain-timeout",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--url".into(), format!("ws://{}", gw.client_addr)]);
    args.extend(["--runner-url".into(), format!("ws://{}", gw.runner_addr)]);
    for kv in [
        "at=\"1500ms\"",
        "storm_clients=4",
        "storm_rate=400",
        "idle_clients=30",
        "silent_clients=5",
        "spam_clients=2",
        "spam_rate=200",
        "probe_every=\"100ms\"",
        // Timing on a shared test machine proves nothing: report only.
        "max_slowdown=0",
        "admin_token=\"flood-test\"",
    ] {
        args.extend(set(kv));
    }
    args.extend(set(&format!("admin_url=\"http://{}\"", gw.admin_addr)));
    args.extend(["--json".into(), json.display().to_string()]);
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(&args)
        .output()
        .expect("run loadtest");
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("a report")).unwrap();
    let _ = std::fs::remove_file(&json);
    gw.shutdown();

    assert_eq!(out.status.code(), Some(0), "{output}");
    assert_eq!(report["ok"], true, "{output}");
    let flood = &report["flood"];
    for phase in ["baseline", "under_flood"] {
        assert!(
            flood[phase]["round_trip_us"]["count"].as_u64().unwrap() > 50,
            "{phase}: {output}"
        );
        assert!(
            flood[phase]["newcomer_connect_us"]["count"]
                .as_u64()
                .unwrap()
                > 3,
            "{phase}: {output}"
        );
        assert_eq!(
            flood[phase]["newcomer_refused"],
            serde_json::json!({}),
            "{output}"
        );
    }
    assert!(flood["p99_ratio"].as_f64().unwrap() > 0.0, "{output}");
    let group = |name: &str| {
        flood["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()
            .clone()
    };
    // Fresh actor keys at 400/s from two addresses: past 100 at once + 20/s each.
    let storm = group("storm");
    assert!(storm["refused"]["429"].as_u64().unwrap() > 0, "{output}");
    assert!(storm["opened"].as_u64().unwrap() >= 200, "{output}");
    assert_eq!(group("idle")["peak_open"], 30, "{output}");
    assert_eq!(group("silent")["opened"], 5, "{output}");
    let spam = group("spam");
    assert!(
        spam["messages_received"].as_u64().unwrap() > 100,
        "{output}"
    );
    let counters = &flood["gateway_counters"];
    assert!(
        counters["tether_connections_refused_total{reason=\"new_actors_per_address\"}"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{output}"
    );
    assert!(output.contains("slowdown under the flood"), "{output}");
}
