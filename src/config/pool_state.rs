//! The state file of serverless pools made through the admin API
//! (`admin.state_file`): JSON, rewritten whole on every change (written
//! beside, synced, renamed over, the folder synced), so a crash leaves the
//! old file or the new one, never a torn one.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::serverless::{check_pools, PoolSource, ServerlessPool};
use super::MAX_SERVERLESS_POOLS;

/// The largest state file read (a pool is well under 16 KiB).
pub const MAX_STATE_FILE_BYTES: u64 = 16 << 20;
/// The layout this gateway writes and reads.
const LAYOUT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    layout: u32,
    serverless: Vec<ServerlessPool>,
}

/// The API's pools kept in `path`; no file yet is no pools. Every pool is
/// checked as the API checked it; any error refuses the whole file.
pub fn read_pool_state(path: &Path) -> Result<Vec<ServerlessPool>, String> {
    let shown = path.display();
    let text = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{shown}: {e}")),
        Ok(m) if m.len() > MAX_STATE_FILE_BYTES => {
            return Err(format!("{shown}: larger than {MAX_STATE_FILE_BYTES} bytes"))
        }
        Ok(_) => std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?,
    };
    parse_pool_state(&text).map_err(|e| format!("{shown}: {e}"))
}

fn parse_pool_state(text: &[u8]) -> Result<Vec<ServerlessPool>, String> {
    let state: StateFile =
        serde_json::from_slice(text).map_err(|e| format!("not a pool state file: {e}"))?;
    if state.layout != LAYOUT {
        return Err(format!(
            "layout {} (this gateway reads {LAYOUT})",
            state.layout
        ));
    }
    if state.serverless.len() > MAX_SERVERLESS_POOLS {
        return Err(format!("more than {MAX_SERVERLESS_POOLS} pools"));
    }
    let errors = check_pools(&state.serverless);
    if let Some(first) = errors.first() {
        return Err(first.clone());
    }
    let api = |p: ServerlessPool| ServerlessPool {
        source: PoolSource::Api,
        ..p
    };
    Ok(state.serverless.into_iter().map(api).collect())
}

/// Replaces the file at `path` with `pools`, durably.
pub fn write_pool_state(path: &Path, pools: &[ServerlessPool]) -> std::io::Result<()> {
    let state = StateFile {
        layout: LAYOUT,
        serverless: pools.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
    let mut beside = path.as_os_str().to_owned();
    beside.push(".new");
    let beside = std::path::PathBuf::from(beside);
    {
        // Readable by the gateway's user only: headers hold secrets.
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&beside)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&beside, path)?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> ServerlessPool {
        ServerlessPool {
            pool: name.into(),
            url: "http://127.0.0.1:9".into(),
            ..Default::default()
        }
    }

    #[test]
    fn pools_survive_a_write_and_a_read() {
        let dir = std::env::temp_dir().join(format!("tether-pools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(read_pool_state(&path), Ok(Vec::new()), "no file: no pools");
        let mut a = pool("a");
        a.headers.insert("x-bypass".into(), "s".into());
        write_pool_state(&path, &[a.clone(), pool("b")]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "headers hold secrets: {mode:o}");
        let read = read_pool_state(&path).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].headers, a.headers);
        assert!(read.iter().all(|p| p.source == PoolSource::Api));
        write_pool_state(&path, &[]).unwrap();
        assert_eq!(read_pool_state(&path), Ok(Vec::new()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_with_why() {
        let cases: [(&[u8], &str); 4] = [
            (b"{\"layout\":1,\"serverless\":[", "not a pool state file"),
            (b"{\"layout\":2,\"serverless\":[]}", "layout 2"),
            (
                b"{\"layout\":1,\"serverless\":[{\"pool\":\"a\",\"url\":\"ftp://x\"}]}",
                "https:// or http://",
            ),
            (
                b"{\"layout\":1,\"serverless\":[],\"extra\":1}",
                "unknown field",
            ),
        ];
        for (text, why) in cases {
            let err = parse_pool_state(text).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
