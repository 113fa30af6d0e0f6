//! What a SIGHUP puts in force, decided without IO: the new file must be
//! valid as written (else nothing changes, and each error says its line
//! and column); the settings that need a restart keep the values the
//! gateway runs on, the others take the new file's. The result is checked
//! again as a whole, since a kept value and a new one must still agree
//! (a development runner token is refused on a listener that stays public).

use toml::Table;

use super::diff::{classify, lookup, set};
use super::{Config, ConfigError};

/// A reload that may go ahead.
#[derive(Debug)]
pub struct Reload {
    /// What to run on: the new file, restart-only settings as they run.
    pub config: Config,
    /// Its text, to compare the next reload with (so a change that waits
    /// for a restart is reported again until then).
    pub running: String,
    /// Changed settings now in force.
    pub applied: Vec<String>,
    /// Changed settings that wait for a restart.
    pub needs_restart: Vec<String>,
}

/// The reload from the running text to `new`, or every error that stops it.
pub fn plan(running: &str, new: &str) -> Result<Reload, Vec<ConfigError>> {
    Config::parse(new)?;
    let changes = classify(running, new);
    let old: Table = running.parse().unwrap_or_default();
    let mut merged: Table = new.parse().unwrap_or_default();
    for key in &changes.needs_restart {
        set(&mut merged, key, lookup(&old, key));
    }
    let text = toml::to_string(&merged).map_err(|e| vec![unlocated(e.to_string())])?;
    let config = Config::parse(&text).map_err(|errors| {
        let kept = "with the settings that need a restart kept as they run";
        errors
            .into_iter()
            .map(|e| unlocated(format!("{} ({kept})", e.message)))
            .collect::<Vec<_>>()
    })?;
    Ok(Reload {
        config,
        running: text,
        applied: changes.applied,
        needs_restart: changes.needs_restart,
    })
}

/// An error about the merged text, whose lines are not the file's.
fn unlocated(message: String) -> ConfigError {
    ConfigError {
        line: None,
        column: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "[client]\nlisten = \"127.0.0.1:8080\"\nmax_connections = 10\n";

    #[test]
    fn restart_settings_keep_their_running_values_and_the_rest_change() {
        let new =
            "[client]\nlisten = \"127.0.0.1:9999\"\nmax_connections = 5\n[server]\nworkers = 3\n";
        let reload = plan(RUNNING, new).unwrap();
        assert_eq!(reload.config.client.max_connections, 5);
        assert_eq!(reload.config.client.listen.port(), 8080);
        assert_eq!(reload.config.server.workers, 0, "unset as it runs");
        assert_eq!(reload.applied, ["client.max_connections"]);
        assert_eq!(reload.needs_restart, ["client.listen", "server.workers"]);
        let again = plan(&reload.running, new).unwrap();
        assert_eq!(again.needs_restart, reload.needs_restart, "still waiting");
        assert!(again.applied.is_empty());
    }

    #[test]
    fn an_invalid_file_is_refused_with_its_positions() {
        let errors = plan(RUNNING, "[client]\nmax_connections = \"many\"\n").unwrap_err();
        assert_eq!(errors[0].line, Some(2));
    }

    #[test]
    fn a_kept_value_must_agree_with_the_new_ones() {
        let public = "[runners]\nlisten = \"0.0.0.0:8081\"\ntoken = \"a-real-secret-token\"\n";
        let dev_token = "[runners]\nlisten = \"127.0.0.1:8081\"\n";
        let errors = plan(public, dev_token).unwrap_err();
        assert!(
            errors[0].message.contains("development token"),
            "{errors:?}"
        );
        assert!(errors[0].message.contains("kept as they run"), "{errors:?}");
    }
}
