//! Test-only helpers shared by the gateway's tests, `bench/` and
//! `loadtest/`. Kept out of the gateway's own dependencies, so the release
//! binary carries none of it.

pub mod netns;
mod pki;

pub use pki::{Leaf, ThrowawayPki};
