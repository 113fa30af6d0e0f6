//! Client credentials and signed connect tokens: whatever a client puts in
//! its request head (Authorization, the `token` query parameter, a
//! `tether-token.*` subprotocol), extracting, stripping and verifying never
//! panic, a stripped target carries no token parameter, and no token
//! verifies without the secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::http::credential::{client_token, strip_token_protocol, strip_token_query};
use tether::http::token::verify;
use tether::http::HeadReader;

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Ok(Some((mut head, _))) = HeadReader::new(8192, 64).poll(data) else {
        // Not a head: the bytes as a bare token.
        if let Ok(text) = std::str::from_utf8(data) {
            assert!(verify(text, &[SECRET], 0).is_err(), "verified without signing");
        }
        return;
    };
    if let Ok(Some(credential)) = client_token(&head) {
        let _ = verify(credential.token(), &[SECRET], 0);
    }
    let stripped = strip_token_query(&head.target);
    let query = stripped.split_once('?').map_or("", |(_, q)| q);
    assert!(
        !query.split('&').any(|kv| kv == "token" || kv.starts_with("token=")),
        "{stripped}"
    );
    strip_token_protocol(&mut head);
    let _ = client_token(&head);
});
