//! What a serverless function and the gateway say to each other over HTTP
//! (issue 15): the function's `/metadata` answer and the headers of the
//! gateway's `/start` request. The runner library answers with these; the
//! gateway checks a function's answer with [`check_metadata`].

use serde::Deserialize;

/// The protocol a function speaks, and its version, in `/metadata`.
pub const PROTOCOL: &str = "tether-serverless";
pub const VERSION: u32 = 1;

/// The `/start` request's headers the gateway sets.
pub mod headers {
    /// The gateway's runner listener to dial (`ws://…` or `wss://…`).
    pub const GATEWAY: &str = "x-tether-gateway";
    pub const TOKEN: &str = "x-tether-token";
    pub const POOL: &str = "x-tether-pool";
    /// The key the started runner registers with.
    pub const RUNNER_KEY: &str = "x-tether-runner-key";
}

/// The longest `/metadata` answer the gateway reads.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The most actor names a function may offer (as a runner's hello).
pub const MAX_ACTOR_NAMES: usize = 1024;

/// What a function's `/metadata` says, once checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FunctionMetadata {
    pub protocol: String,
    pub version: u32,
    #[serde(default)]
    pub runner: String,
    pub actor_names: Vec<String>,
}

/// Checks a function's `/metadata` body: JSON of the protocol and version
/// this gateway speaks, within bounds. The error says what is wrong, for
/// the operator who configured the pool.
pub fn check_metadata(body: &[u8]) -> Result<FunctionMetadata, String> {
    if body.len() > MAX_METADATA_BYTES {
        return Err(format!("metadata larger than {MAX_METADATA_BYTES} bytes"));
    }
    let meta: FunctionMetadata = serde_json::from_slice(body)
        .map_err(|e| format!("metadata is not what a Tether function answers: {e}"))?;
    if meta.protocol != PROTOCOL {
        return Err(format!(
            "the function speaks `{}`, not `{PROTOCOL}`",
            meta.protocol
        ));
    }
    if meta.version != VERSION {
        return Err(format!(
            "the function speaks {PROTOCOL} version {}, this gateway version {VERSION}",
            meta.version
        ));
    }
    if meta.actor_names.is_empty() || meta.actor_names.len() > MAX_ACTOR_NAMES {
        return Err(format!(
            "the function offers {} actor names (1 to {MAX_ACTOR_NAMES})",
            meta.actor_names.len()
        ));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_functions_own_answer_passes() {
        let body = br#"{"protocol":"tether-serverless","version":1,"runner":"tether-rust/0.1.0","actor_names":["chat"]}"#;
        let meta = check_metadata(body).unwrap();
        assert_eq!(meta.actor_names, ["chat"]);
    }

    #[test]
    fn another_protocol_version_or_shape_is_refused_with_its_reason() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"protocol":"other","version":1,"actor_names":["a"]}"#,
                "not `tether-serverless`",
            ),
            (
                br#"{"protocol":"tether-serverless","version":2,"actor_names":["a"]}"#,
                "version 2",
            ),
            (
                br#"{"protocol":"tether-serverless","version":1,"actor_names":[]}"#,
                "0 actor names",
            ),
            (
                b"<html>not found</html>",
                "not what a Tether function answers",
            ),
            (
                br#"{"protocol":"tether-serverless"}"#,
                "not what a Tether function answers",
            ),
        ];
        for (body, why) in cases {
            let err = check_metadata(body).unwrap_err();
            assert!(err.contains(why), "{err:?} should say {why:?}");
        }
        let huge = vec![b' '; MAX_METADATA_BYTES + 1];
        assert!(check_metadata(&huge).unwrap_err().contains("larger than"));
    }
}
