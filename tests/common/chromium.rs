//! Debian's headless Chromium for tests of pages: whether it is there
//! (installed by `scripts/install-chromium` if missing; tests print
//! SKIPPED and pass without it), and a page driven over the DevTools
//! protocol: evaluate an expression, take a screenshot.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{wait_for, WAIT};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Flags for a quiet headless browser on a closed network.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

pub fn available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-chromium");
    let installed = Command::new(script).status().is_ok_and(|s| s.success());
    if !installed {
        eprintln!(
            "SKIPPED: Chromium is not installed and scripts/install-chromium could not install it"
        );
    }
    installed
}

/// A page open in headless Chromium, driven over the DevTools protocol.
pub struct Page {
    browser: Child,
    devtools: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl Page {
    /// Opens `url` in a new browser whose profile lives in `dir`.
    pub fn open(dir: &Path, url: &str) -> Page {
        let profile = dir.join("profile");
        let _ = std::fs::remove_dir_all(&profile);
        let browser = Command::new(CHROMIUM)
            .args(FLAGS)
            .args([
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let port = devtools_port(&profile);
        let target = page_target(port);
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let (devtools, _) = tungstenite::client::client(target.as_str(), stream).unwrap();
        Page {
            browser,
            devtools,
            next_id: 0,
        }
    }

    /// Sends a DevTools command and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        let text = command.to_string();
        self.devtools
            .send(tungstenite::Message::Text(text.into()))
            .unwrap();
        loop {
            let message = self.devtools.read().expect("a DevTools answer");
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(answer) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression (a string, or "" if not one).
    pub fn eval(&mut self, expression: &str) -> String {
        let params = json!({ "expression": expression, "returnByValue": true });
        let result = self.call("Runtime.evaluate", params);
        result["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the text of the elements `selector` matches contains
    /// every one of `wanted`; returns that text.
    #[track_caller]
    pub fn wait_for_text(&mut self, selector: &str, wanted: &[&str]) -> String {
        let expression = format!(
            "Array.from(document.querySelectorAll({selector:?})).map(e => e.innerText).join('\\n')"
        );
        let mut text = String::new();
        let what = format!("{selector} to show {wanted:?}");
        wait_for(&what, || {
            text = self.eval(&expression);
            wanted.iter().all(|w| text.contains(w))
        });
        text
    }

    /// A PNG of the page as it is now, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.browser.kill();
        let _ = self.browser.wait();
    }
}

/// The port Chromium's DevTools listen on (it writes it into the profile).
fn devtools_port(profile: &Path) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let mut port = None;
    wait_for("Chromium's DevTools port", || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        port = text.lines().next().and_then(|l| l.trim().parse().ok());
        port.is_some()
    });
    port.unwrap()
}

/// The DevTools WebSocket URL of the browser's page.
fn page_target(port: u16) -> String {
    let mut url = None;
    wait_for("Chromium's page target", || {
        let targets = http_get_json(port, "/json/list");
        url = targets.as_array().into_iter().flatten().find_map(|t| {
            let page =
                t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with("http"));
            page.then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))?
        });
        url.is_some()
    });
    url.unwrap()
}

/// A GET to Chromium's DevTools HTTP endpoint, read up to its Content-Length.
fn http_get_json(port: u16, path: &str) -> Value {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Value::Null;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                return serde_json::from_str(body).unwrap_or(Value::Null);
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return Value::Null,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}
