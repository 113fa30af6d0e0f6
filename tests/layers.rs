//! The gateway's modules depend one way only (docs/ARCHITECTURE.md): each
//! layer of `src/server` may use the layers below it, never one above it;
//! the sans-IO cores and the runner library never use the gateway.
//!
//! Read from the source, not the compiler: every `crate::…` and `super::…`
//! path in a file is matched against the table below.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers of `src/server`, top first.
const SERVER_LAYERS: &[&str] = &[
    "runtime", "admin", "edge", "runners", "actors", "tunnels", "conn",
];

/// Top-level modules that must never reach into `server` (or the runner
/// library): plain code over bytes and values.
const SANS_IO: &[&str] = &["ws", "http", "tunnel", "config", "logging", "allocator"];

/// A module of the crate, as a path below `src`: `server/actors`, `ws`, …
fn module_of(file: &Path) -> String {
    let parts: Vec<String> = file
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    match parts.as_slice() {
        [server, layer, ..] if server == "server" && parts.len() > 2 => format!("server/{layer}"),
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

/// Where a file's `crate::…` and `super::…` paths lead, as modules.
fn uses(file: &Path, text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        found.extend(crate_path(&code[at + "crate::".len()..]));
    }
    let is_layer_root = file.file_name().is_some_and(|f| f == "mod.rs");
    let in_server_layer = file.starts_with("server") && file.iter().count() > 2;
    for (at, _) in code.match_indices("super::") {
        let rest = &code[at + "super::".len()..];
        if rest.starts_with("super::") && in_server_layer {
            found.insert("<super::super>".to_owned());
        } else if in_server_layer && is_layer_root {
            // `super` of a layer's mod.rs is `server` itself.
            found.extend(crate_path(&format!("server::{rest}")));
        }
    }
    found
}

/// `server::actors::…`, `server::{edge, runners}`, `ws::…` → modules.
fn crate_path(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(inner) = rest.strip_prefix("server::") {
        if let Some(group) = inner.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            return group
                .split(',')
                .map(|item| ident(item.trim()))
                .filter(|l| !l.is_empty())
                .map(|l| format!("server/{l}"))
                .collect();
        }
        return vec![format!("server/{}", ident(inner))];
    }
    let top = ident(rest);
    if top.is_empty() {
        vec![]
    } else {
        vec![top]
    }
}

/// Why `from` may not use `to`, if it may not.
fn violation(from: &str, to: &str) -> Option<String> {
    if to == "<super::super>" {
        return Some("climbs out of its layer with super::super (name the layer)".into());
    }
    if from == to {
        return None;
    }
    let rank = |m: &str| {
        m.strip_prefix("server/")
            .and_then(|l| SERVER_LAYERS.iter().position(|x| *x == l))
    };
    if from.starts_with("server/") {
        return match (rank(from), rank(to)) {
            (None, _) => Some(format!("{from} is not a declared layer")),
            (Some(_), None) if to.starts_with("server/") || to == "server" => {
                Some(format!("{to} is not a declared layer"))
            }
            (Some(f), Some(t)) if t < f => Some(format!("{to} is a layer above {from}")),
            _ => None,
        };
    }
    let gateway = to == "server" || to.starts_with("server/");
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
        let text = std::fs::read_to_string(path).unwrap();
        let from = module_of(file);
        for to in uses(file, &text) {
            if let Some(why) = violation(&from, &to) {
                broken.push(format!("src/{}: {why}", file.display()));
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
fn every_server_folder_is_a_declared_layer() {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    for entry in std::fs::read_dir(server).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                SERVER_LAYERS.contains(&name.as_str()),
                "src/server/{name} is not in the layer table of tests/layers.rs"
            );
        }
    }
}

#[test]
fn the_checker_sees_upward_and_sideways_imports() {
    let edge = Path::new("server/conn/session.rs");
    let found = uses(
        edge,
        "use crate::server::actors::Actors;\nuse super::env::ConnEnv;",
    );
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec!["server/actors"]);
    assert!(violation("server/conn", "server/actors").is_some());
    assert!(violation("server/actors", "server/conn").is_none());
    assert!(violation("ws", "server/conn").is_some());
    assert!(violation("runner", "server").is_some());
    let root = Path::new("server/edge/mod.rs");
    let found = uses(
        root,
        "use super::runtime::Worker; use crate::server::{conn, admin};",
    );
    assert!(found.contains("server/runtime") && found.contains("server/admin"));
    let deep = Path::new("server/edge/parker.rs");
    assert!(uses(deep, "use super::super::conn::io;").contains("<super::super>"));
    // Comments do not count.
    assert!(uses(deep, "// see crate::server::runtime").is_empty());
}
