//! A node of a cluster (issue 16): what its directory asked of etcd, by
//! kind (the cost of the directory: a claim per actor start, keep-alives
//! at steady state, nothing per message), and whether its lease is
//! confirmed now. Read from the directory's counters once per scrape.

use std::fmt;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::families::family;
use crate::cluster::directory::RequestCounts;

#[derive(Debug)]
pub(super) struct Cluster {
    pub requests: RequestCounts,
    pub lease_confirmed: bool,
}

impl Cluster {
    pub fn of(directory: &crate::cluster::directory::Directory) -> Cluster {
        Cluster {
            requests: directory.requests(),
            lease_confirmed: directory.fence_alive(Instant::now()),
        }
    }
}

impl Collector for Cluster {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let e = &mut e;
        let r = &self.requests;
        let kinds = [
            ("grant", r.grants),
            ("keepalive", r.keepalives),
            ("revoke", r.revokes),
            ("claim", r.claims),
            ("release", r.releases),
            ("leave", r.leaves),
            ("placed", r.placements),
            ("runner_record", r.runner_records),
            ("range", r.ranges),
            ("put", r.puts),
            ("auth", r.auths),
            ("watch_open", r.watch_opens),
        ];
        let series = kinds.map(|(kind, n)| ([("kind", kind.to_owned())], n));
        let help = "Requests this node's directory sent to etcd, by kind (claim: one per actor this node serves clients of; leave: one when this node's clients of an actor owned elsewhere all left; placed: one per start on this node's runners; keep-alives: four per lease TTL).";
        family(
            e,
            MetricType::Counter,
            "tether_cluster_etcd_requests",
            help,
            series,
        )?;
        let help = "1 while this node's cluster lease is confirmed; 0 while it is fenced (its actors stopped until it has a lease again).";
        let confirmed = [(
            Vec::<(String, String)>::new(),
            u64::from(self.lease_confirmed),
        )];
        family(
            e,
            MetricType::Gauge,
            "tether_cluster_lease_confirmed",
            help,
            confirmed,
        )
    }
}
