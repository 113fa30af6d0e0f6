//! `wss://`: echo traffic through a gateway that terminates TLS on both of
//! its listeners, with a throwaway CA (generated here, into a temporary
//! directory removed afterwards) given by `--ca` to the clients and to the
//! runner the load test starts; and a client that trusts another CA does
//! not get in.

use std::path::{Path, PathBuf};
use std::process::Command;

use tether::config::TlsCertificate;
use tether_testkit::ThrowawayPki;

/// The shared throwaway CA (`tether-testkit`), leaves as `TlsCertificate`s.
struct Pki(ThrowawayPki);

impl Pki {
    fn new(name: &str) -> Pki {
        Pki(ThrowawayPki::new(&format!("loadtest-{name}")))
    }

    fn ca_path(&self) -> PathBuf {
        self.0.ca_path()
    }

    /// A leaf for these DNS names, signed by the CA.
    fn leaf(&self, stem: &str, sans: &[&str]) -> TlsCertificate {
        let leaf = self.0.leaf(stem, sans);
        TlsCertificate {
            chain: leaf.chain,
            key: leaf.key,
            names: Vec::new(),
        }
    }
}

fn loadtest(args: &[&str], json: &Path) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .args(["--quiet", "--json"])
        .arg(json)
        .output()
        .expect("run loadtest");
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read_to_string(json)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let _ = std::fs::remove_file(json);
    (out.status.code().unwrap_or(-1), report, output)
}

#[test]
fn echo_over_wss_with_a_ca_file_loses_nothing() {
    let pki = Pki::new("gateway");
    let leaf = pki.leaf("localhost", &["localhost"]);
    let mut config = tether::Config::default();
    config.server.workers = 2;
    config.server.log_level = "warn".into();
    config.client.listen = "127.0.0.1:0".parse().unwrap();
    config.runners.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.client.tls = vec![leaf.clone()];
    config.runners.tls = vec![leaf];
    let gw = tether::Gateway::start(config).expect("gateway starts");
    let url = format!("wss://localhost:{}", gw.client_addr.port());
    let runner_url = format!("wss://localhost:{}", gw.runner_addr.port());
    let ca = pki.ca_path().display().to_string();
    let json =
        std::env::temp_dir().join(format!("tether-loadtest-tls-{}.json", std::process::id()));
    let common = [
        "--scenario",
        "smoke",
        "--actor",
        "echo",
        "--url",
        &url,
        "--runner-url",
        &runner_url,
        "--ca",
        &ca,
    ];

    // The smoke scenario: small messages, closed loop.
    let (code, report, output) = loadtest(&common, &json);
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["ok"], true, "{output}");
    assert_eq!(report["connections"]["opened"], 20, "{output}");
    assert!(
        report["messages"]["received"].as_u64().unwrap() > 100,
        "{output}"
    );
    for (kind, n) in report["errors"].as_object().unwrap() {
        assert_eq!(n, 0, "{kind}: {output}");
    }

    // Messages larger than a TLS record and than what rustls buffers at once.
    let mut big = common.to_vec();
    big.extend([
        "--clients",
        "4",
        "--message-bytes",
        "100000",
        "--duration",
        "1s",
    ]);
    let (code, report, output) = loadtest(&big, &json);
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["ok"], true, "{output}");
    assert!(
        report["messages"]["received"].as_u64().unwrap() > 4,
        "{output}"
    );
    assert!(
        report["messages"]["received_mib_per_second"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{output}"
    );

    // A client that trusts another CA does not get in.
    let other = Pki::new("other");
    let other_ca = other.ca_path().display().to_string();
    let (code, report, output) = loadtest(
        &[
            "--url",
            &url,
            "--ca",
            &other_ca,
            "--runners",
            "0",
            "--clients",
            "2",
            "--warmup",
            "0s",
            "--duration",
            "300ms",
            "--drain-timeout",
            "100ms",
        ],
        &json,
    );
    assert_eq!(code, 1, "{output}");
    assert_eq!(report["errors"]["connect_failed"], 2, "{output}");
    assert!(output.contains("TLS handshake"), "{output}");
    gw.shutdown();
}
