//! Which settings two configuration files set differently (dotted keys,
//! `client.max_connections`), so that a reload can say what it applied
//! and what needs a restart. Files are compared as written: a key added
//! with its default value counts as changed.

use toml::Value;

/// Settings a SIGHUP applies without a restart.
pub const LIVE_SETTINGS: &[&str] = &["client.tls", "runners.tls", "server.log_level"];

/// Dotted keys whose values differ between the two TOML texts (a table
/// compared key by key; arrays and scalars as a whole). Unparsable text
/// compares as empty.
pub fn changed_keys(old: &str, new: &str) -> Vec<String> {
    let parse = |t: &str| t.parse::<toml::Table>().unwrap_or_default();
    let mut changed = Vec::new();
    diff_tables("", &parse(old), &parse(new), &mut changed);
    changed.sort();
    changed
}

fn diff_tables(prefix: &str, old: &toml::Table, new: &toml::Table, out: &mut Vec<String>) {
    let keys = old
        .keys()
        .chain(new.keys().filter(|k| !old.contains_key(*k)));
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (old.get(key), new.get(key)) {
            (Some(Value::Table(a)), Some(Value::Table(b))) => diff_tables(&path, a, b, out),
            (a, b) if a != b => out.push(path),
            _ => {}
        }
    }
}

/// Whether `key` (or a key under it) is applied live.
pub fn is_live(key: &str) -> bool {
    LIVE_SETTINGS
        .iter()
        .any(|live| key == *live || key.starts_with(&format!("{live}.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_named_by_their_dotted_path() {
        let old =
            "[client]\nmax_connections = 10\nlisten = \"127.0.0.1:8080\"\n[admin]\ntoken = \"a\"\n";
        let new =
            "[client]\nmax_connections = 20\nlisten = \"127.0.0.1:8080\"\n[server]\nworkers = 4\n";
        assert_eq!(
            changed_keys(old, new),
            ["admin", "client.max_connections", "server"]
        );
        assert!(changed_keys(old, old).is_empty());
    }

    #[test]
    fn certificates_are_live_and_the_rest_needs_a_restart() {
        assert!(is_live("client.tls"));
        assert!(is_live("runners.tls"));
        assert!(!is_live("client.max_connections"));
        assert!(!is_live("client.tlsx"));
    }
}
