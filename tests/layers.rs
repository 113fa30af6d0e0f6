//! The gateway's modules depend one way only (docs/ARCHITECTURE.md): each
//! layer of `src/server` may use the layers below it, never one above it;
//! the sans-IO cores and the runner library never use the gateway.
//!
//! Read from the source, not the compiler: every `crate::…`, `super::…` and
//! `self::…` path (groups included) is resolved against the file's module
//! and matched against the table below. Comments and string literals are
//! blanked out first; `use crate as …`, `#[path]` and files directly in
//! `src/server` (other than its mod.rs) are refused, as they would hide paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers of `src/server`, top first.
const SERVER_LAYERS: &[&str] = &[
    "runtime",
    "admin",
    "edge",
    "runners",
    "peers",
    "actors",
    "serverless",
    "tunnels",
    "conn",
];

/// Top-level modules that must never reach into `server` (or the runner
/// library): plain code over bytes and values, and `cluster` (the etcd
/// directory: its model is sans-IO, and its client thread talks to the
/// workers only through queues the gateway will own).
const SANS_IO: &[&str] = &[
    "cluster",
    "ws",
    "http",
    "tunnel",
    "config",
    "handover",
    "tls",
    "logging",
    "allocator",
];

/// A file's module path: `server/edge/parker.rs` → [server, edge, parker].
fn module_path(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// What the checker compares: `server/<layer>` inside the gateway, else the
/// top-level module.
fn unit(path: &[String]) -> String {
    match path {
        [server, layer, ..] if server == "server" => format!("server/{layer}"),
        [top, ..] => top.clone(),
        [] => "crate".to_owned(),
    }
}

/// The code with comments removed and string and char literals emptied.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if b.get(i + 1) == Some(&b'\\') || b.get(i + 2) == Some(&b'\'') => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Reads a use tree or path at `s` (after its first segment's `::`):
/// every full path it names, as segment lists.
fn tree(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 1;
        let mut items = vec![String::new()];
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => {
                    items.push(String::new());
                    continue;
                }
                _ => {}
            }
            items.last_mut().expect("an item").push(c);
        }
        return items
            .iter()
            .filter(|item| !item.trim().is_empty())
            .flat_map(|item| tree(item))
            .collect();
    }
    let ident: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        return vec![vec![]];
    }
    let rest = s[ident.len()..].trim_start();
    match rest.strip_prefix("::") {
        Some(more) => tree(more)
            .into_iter()
            .map(|mut tail| {
                tail.insert(0, ident.clone());
                tail
            })
            .collect(),
        None => vec![vec![ident]],
    }
}

/// Where a file's paths lead, as units; `Err` for constructs that hide them.
fn uses(file: &Path, text: &str) -> Result<BTreeSet<String>, String> {
    let code = strip(text);
    if code.contains("#[path") {
        return Err("#[path] hides which module a file is".into());
    }
    let here = module_path(file);
    let bytes = code.as_bytes();
    let mut found = BTreeSet::new();
    for anchor in ["crate", "super", "self"] {
        for (at, _) in code.match_indices(anchor) {
            let before_ok = at == 0 || !is_ident(bytes[at - 1]) && bytes[at - 1] != b':';
            let after = code[at + anchor.len()..].trim_start();
            if !before_ok {
                continue;
            }
            if anchor == "crate" && after.starts_with("as ") {
                return Err("`crate as …` hides which module a path names".into());
            }
            let Some(rest) = after.strip_prefix("::") else {
                continue;
            };
            for tail in tree(rest) {
                found.insert(unit(&resolve(&here, anchor, tail)));
            }
        }
    }
    Ok(found)
}

/// `anchor::tail` seen in module `here` → an absolute module path.
fn resolve(here: &[String], anchor: &str, tail: Vec<String>) -> Vec<String> {
    let mut base: Vec<String> = match anchor {
        "crate" => vec![],
        "self" => here.to_vec(),
        _ => here[..here.len().saturating_sub(1)].to_vec(),
    };
    let mut tail = tail.into_iter().peekable();
    while tail.peek().is_some_and(|s| s == "super") {
        tail.next();
        base.pop();
    }
    base.extend(tail);
    base
}

/// Why `from` may not use `to`, if it may not.
fn violation(from: &str, to: &str) -> Option<String> {
    if from == to || from == "main" || from == "crate" {
        return None;
    }
    let rank = |m: &str| {
        m.strip_prefix("server/")
            .and_then(|l| SERVER_LAYERS.iter().position(|x| *x == l))
    };
    let gateway = to == "server" || to.starts_with("server/");
    if from.starts_with("server/") {
        return match (rank(from), rank(to)) {
            (None, _) => Some(format!("{from} is not a declared layer")),
            (Some(_), None) if gateway => Some(format!("{to} is not a declared layer")),
            (Some(f), Some(t)) if t < f => Some(format!("{to} is a layer above {from}")),
            _ => None,
        };
    }
    if SANS_IO.contains(&from) && (gateway || to == "runner") {
        return Some(format!("{from} is sans-IO and may not use {to}"));
    }
    if from == "runner" && gateway {
        return Some("the runner library may not use the gateway".into());
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for path in &files {
        let file = path.strip_prefix(&src).unwrap();
        if file == Path::new("server/mod.rs") {
            continue; // declares the layers and re-exports the public API
        }
        let from = unit(&module_path(file));
        let text = std::fs::read_to_string(path).unwrap();
        match uses(file, &text) {
            Err(why) => broken.push(format!("src/{}: {why}", file.display())),
            Ok(found) => {
                for to in found {
                    if let Some(why) = violation(&from, &to) {
                        broken.push(format!("src/{}: {why}", file.display()));
                    }
                }
            }
        }
    }
    assert!(
        files.len() > 40,
        "read the source tree ({} files)",
        files.len()
    );
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn everything_in_src_server_is_a_declared_layer() {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    for entry in std::fs::read_dir(server).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            assert!(
                SERVER_LAYERS.contains(&name.as_str()),
                "src/server/{name} is not in the layer table of tests/layers.rs"
            );
        } else {
            assert_eq!(
                name, "mod.rs",
                "src/server/{name}: code belongs in a layer's folder"
            );
        }
    }
}

#[test]
fn the_checker_resolves_what_a_file_names() {
    let conn = Path::new("server/conn/session.rs");
    let found = uses(
        conn,
        "use crate::server::actors::Actors;\nuse super::env::ConnEnv;",
    );
    let want: BTreeSet<String> = ["server/actors", "server/conn"].map(String::from).into();
    assert_eq!(found, Ok(want));
    // Groups, nested groups and a group at the crate root.
    let found = uses(
        conn,
        "use crate::{server::{edge::{A, B}, runtime::C}, ws::D};",
    )
    .unwrap();
    assert!(found.contains("server/edge") && found.contains("server/runtime"));
    assert!(found.contains("ws"));
    // super:: from a layer's mod.rs and from deeper, and self::.
    let root = Path::new("server/edge/mod.rs");
    assert!(uses(root, "use super::runtime::Worker;")
        .unwrap()
        .contains("server/runtime"));
    let deep = Path::new("server/edge/parker.rs");
    assert!(uses(deep, "use super::super::admin::X;")
        .unwrap()
        .contains("server/admin"));
    let ws = Path::new("ws/frame.rs");
    assert!(uses(ws, "use super::super::server::conn::io;")
        .unwrap()
        .contains("server/conn"));
    // Comments and strings do not count; code after a string does.
    assert!(uses(deep, "// see crate::server::runtime\n")
        .unwrap()
        .is_empty());
    let found = uses(deep, "let u = \"http://x\"; crate::server::runtime::f();").unwrap();
    assert!(found.contains("server/runtime"));
    // Constructs that would hide a path are refused.
    assert!(uses(deep, "use crate as root;").is_err());
    assert!(uses(deep, "#[path = \"x.rs\"] mod x;").is_err());
    // The rule itself.
    assert!(violation("server/conn", "server/actors").is_some());
    assert!(violation("server/actors", "server/conn").is_none());
    assert!(violation("ws", "server/conn").is_some());
    assert!(violation("runner", "server").is_some());
    assert!(violation("server/edge", "server/nowhere").is_some());
}
