//! Running under systemd: logs fit for the journal and for log shippers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The gateway's first log lines (until it serves), started on free ports
/// with `extra` config, its stderr a pipe (not a terminal).
fn first_log_lines(extra: &str) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("tether-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join(format!("{}.toml", extra.len()));
    let body = format!(
        "[server]\nworkers = 1\n{extra}\n[client]\nlisten = \"127.0.0.1:0\"\n[runners]\nlisten = \"127.0.0.2:0\"\n[admin]\nlisten = \"127.0.0.3:0\"\n"
    );
    std::fs::write(&cfg, body).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_until_serving(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

fn read_until_serving(child: &mut Child) -> Vec<String> {
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let done = line.contains("tether is serving");
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let lines = first_log_lines("");
    assert!(
        lines.iter().any(|l| l.contains("tether is serving")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "{lines:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let lines = first_log_lines("log_format = \"json\"");
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}
