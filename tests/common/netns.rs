//! The network-namespace lab (several hosts on one machine, a node cut off
//! the network), shared with the `cluster` benchmark: `tether_testkit::netns`.
// Not every test binary that includes `common` uses the lab.
#[allow(unused_imports)]
pub use tether_testkit::netns::*;
