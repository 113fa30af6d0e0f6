//! Admin request targets: routing never panics, and a routed actor path
//! respects the name and key limits clients have.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::http::route::{is_actor_name, MAX_KEY_BYTES, MAX_KEY_PARTS};
use tether::server::{admin_route, AdminRoute};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let actor = match admin_route(target) {
        Some(AdminRoute::Actor(a) | AdminRoute::Publish(a) | AdminRoute::Migrate(a)) => a,
        _ => return,
    };
    assert!(is_actor_name(&actor.name));
    assert!(!actor.key.is_empty() && actor.key.len() <= MAX_KEY_PARTS);
    assert!(actor.key.iter().map(String::len).sum::<usize>() <= MAX_KEY_BYTES);
});
