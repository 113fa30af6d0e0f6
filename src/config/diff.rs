//! Which settings two configuration files set differently (dotted keys,
//! `client.max_connections`), and when a change to each takes effect: at
//! once on SIGHUP, or at the next start. One table, [`SETTINGS`], says it
//! for every key; the reload log, what a reload keeps as it runs
//! (`config::reload`) and the documentation follow it. Files are compared
//! as written: a key added with its default value counts as changed.

use toml::{Table, Value};

/// When a changed setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// On SIGHUP, from the next time the gateway uses it.
    Live,
    /// At the next start; until then the running value stays.
    Restart,
    /// Certificate files: re-read on SIGHUP; turning TLS on or off (the
    /// list becoming empty or not) needs a restart.
    Certificates,
}

use Effect::{Certificates, Live, Restart};

/// Every setting (or table whose keys all behave alike) and when a change
/// to it takes effect. A key not listed needs a restart.
pub const SETTINGS: &[(&str, Effect)] = &[
    // The process and its threads are set up once.
    ("server.workers", Restart),
    ("server.io_driver", Restart),
    ("server.io_uring_entries", Restart),
    ("server.log_level", Live),
    ("server.log_format", Restart),
    ("server.shutdown_drain", Live),
    ("server.return_freed_memory", Restart),
    ("server.pid_file", Restart),
    // Listeners are bound once; per-worker buffer pools are sized once.
    ("client.listen", Restart),
    ("client.max_header_bytes", Live),
    ("client.max_headers", Live),
    ("client.handshake_timeout", Live),
    ("client.max_message_bytes", Live),
    ("client.ping_interval", Live),
    ("client.ping_timeout", Live),
    ("client.close_timeout", Live),
    ("client.send_timeout", Live),
    ("client.read_buffer_bytes", Restart),
    ("client.buffer_pool_buffers", Restart),
    ("client.max_send_queue_bytes", Live),
    ("client.handshake_errors", Live),
    ("client.max_handshakes", Live),
    ("client.max_connections", Live),
    ("client.max_connections_per_address", Live),
    ("client.tls", Certificates),
    ("client.trusted_proxies", Live),
    ("client.new_per_second_per_address", Live),
    ("client.new_burst_per_address", Live),
    ("client.max_request_body_bytes", Live),
    ("client.http_idle_timeout", Live),
    ("client.http_response_timeout", Live),
    ("runners.listen", Restart),
    ("runners.token", Live),
    ("runners.max_message_bytes", Live),
    ("runners.max_send_queue_bytes", Live),
    ("runners.ping_interval", Live),
    ("runners.ping_timeout", Live),
    ("runners.close_timeout", Live),
    ("runners.send_timeout", Live),
    ("runners.identities", Live),
    ("runners.tls", Certificates),
    ("runners.max_tunnels_per_identity", Live),
    ("runners.max_actors_per_runner", Live),
    ("actors", Live),
    ("admin.listen", Restart),
    ("admin.token", Live),
    ("admin.ready_needs_runner", Live),
    ("admin.max_event_streams", Restart),
    ("admin.state_file", Restart),
    ("namespaces", Live),
    ("serverless", Live),
    // A node joins the cluster (or leaves it) with its lease, once.
    ("cluster", Restart),
];

/// When a change to `key` takes effect: the most specific row of
/// [`SETTINGS`] that is the key or a table holding it.
pub fn effect_of(key: &str) -> Effect {
    SETTINGS
        .iter()
        .filter(|(row, _)| key == *row || key.starts_with(&format!("{row}.")))
        .max_by_key(|(row, _)| row.len())
        .map_or(Restart, |(_, effect)| *effect)
}

/// What changed between two files, split by when it takes effect.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub applied: Vec<String>,
    pub needs_restart: Vec<String>,
}

/// The changed keys of `new` against `running`, each applied on SIGHUP or
/// needing a restart.
pub fn classify(running: &str, new: &str) -> Changes {
    let (old, new) = (parse(running), parse(new));
    let mut changed = Vec::new();
    diff_tables("", &old, &new, &mut changed);
    changed.sort();
    let mut changes = Changes::default();
    for key in changed {
        let live = match effect_of(&key) {
            Live => true,
            Restart => false,
            Certificates => has_entries(&old, &key) == has_entries(&new, &key),
        };
        match live {
            true => changes.applied.push(key),
            false => changes.needs_restart.push(key),
        }
    }
    changes
}

/// Dotted keys whose values differ between the two TOML texts (tables
/// compared key by key, a missing one as empty; arrays and scalars as a
/// whole). Unparsable text compares as empty.
pub fn changed_keys(old: &str, new: &str) -> Vec<String> {
    let mut changed = Vec::new();
    diff_tables("", &parse(old), &parse(new), &mut changed);
    changed.sort();
    changed
}

fn parse(text: &str) -> Table {
    text.parse::<Table>().unwrap_or_default()
}

fn diff_tables(prefix: &str, old: &Table, new: &Table, out: &mut Vec<String>) {
    let empty = Table::new();
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
            (Some(Value::Table(a)), None) => diff_tables(&path, a, &empty, out),
            (None, Some(Value::Table(b))) => diff_tables(&path, &empty, b, out),
            (a, b) if a != b => out.push(path),
            _ => {}
        }
    }
}

/// The value at dotted `key`, if the table sets it.
pub fn lookup<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let (first, rest) = key
        .split_once('.')
        .map_or((key, None), |(f, r)| (f, Some(r)));
    match (table.get(first)?, rest) {
        (value, None) => Some(value),
        (Value::Table(inner), Some(rest)) => lookup(inner, rest),
        _ => None,
    }
}

/// Sets dotted `key` of `table` to `value`, or removes it (`None`).
pub fn set(table: &mut Table, key: &str, value: Option<&Value>) {
    match key.split_once('.') {
        None => {
            match value {
                Some(v) => table.insert(key.to_owned(), v.clone()),
                None => table.remove(key),
            };
        }
        Some((first, rest)) => {
            let inner = table
                .entry(first)
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(inner) = inner {
                set(inner, rest, value);
            }
        }
    }
}

/// Whether the list at `key` has entries (a TLS listener has certificates).
fn has_entries(table: &Table, key: &str) -> bool {
    matches!(lookup(table, key), Some(Value::Array(a)) if !a.is_empty())
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
            ["admin.token", "client.max_connections", "server.workers"]
        );
        assert!(changed_keys(old, old).is_empty());
    }

    #[test]
    fn the_table_sorts_changes_into_applied_and_needing_a_restart() {
        let old = "[client]\nmax_connections = 10\n[actors]\npools = { chat = \"a\" }\n";
        let new = "[client]\nmax_connections = 5\nlisten = \"127.0.0.1:1\"\n[actors]\npools = { chat = \"b\" }\n[server]\nworkers = 2\nlog_level = \"debug\"\n";
        let changes = classify(old, new);
        assert_eq!(
            changes.applied,
            [
                "actors.pools.chat",
                "client.max_connections",
                "server.log_level"
            ]
        );
        assert_eq!(changes.needs_restart, ["client.listen", "server.workers"]);
    }

    #[test]
    fn certificates_are_live_unless_tls_is_turned_on_or_off() {
        let cert = |path: &str| format!("[[client.tls]]\nchain = \"{path}\"\nkey = \"k\"\n");
        let swapped = classify(&cert("a"), &cert("b"));
        assert_eq!(swapped.applied, ["client.tls"]);
        let turned_on = classify("", &cert("a"));
        assert_eq!(turned_on.needs_restart, ["client.tls"]);
        assert_eq!(effect_of("client.tlsx"), Restart, "not a prefix match");
    }

    /// Every key the documented example sets, and the lists it leaves
    /// out, has a row of its own (nothing falls to the restart default by
    /// omission), and every row names a real setting.
    #[test]
    fn every_setting_has_a_row_and_every_row_a_setting() {
        let example = parse(crate::config::EXAMPLE_TOML);
        let mut keys = Vec::new();
        diff_tables("", &Table::new(), &example, &mut keys);
        let lists = [
            "client.tls",
            "runners.tls",
            "runners.identities",
            "namespaces",
            "serverless",
            "cluster",
        ];
        keys.extend(lists.iter().map(|k| k.to_string()));
        for key in &keys {
            let row = SETTINGS
                .iter()
                .find(|(r, _)| key == r || key.starts_with(&format!("{r}.")));
            assert!(row.is_some(), "{key} has no row in SETTINGS");
        }
        for (row, _) in SETTINGS {
            let known = keys
                .iter()
                .any(|k| k == row || k.starts_with(&format!("{row}.")));
            assert!(known || *row == "actors", "{row} is not a setting");
        }
    }
}
