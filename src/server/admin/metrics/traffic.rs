//! What passes through client connections: handshake results, messages
//! and bytes each way, and closes.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::families::family;
use super::Workers;
use crate::server::conn::stats::{
    WorkerStats, CLOSE_CODES, HANDSHAKE_STATUSES, HTTP_STATUSES, OTHER,
};

#[derive(Debug)]
pub(super) struct Traffic(pub Workers);

impl Collector for Traffic {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.handshakes(&mut e)?;
        self.messages(&mut e)?;
        self.http(&mut e)?;
        self.closes(&mut e)
    }
}

impl Traffic {
    fn handshakes(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut counts = [0; HANDSHAKE_STATUSES.len()];
        for s in self.0.each() {
            s.handshake_results.add_to(&mut counts);
        }
        let series = labelled("status", &HANDSHAKE_STATUSES, &counts);
        let help = "Requests on the client listener answered, by status (101: upgraded).";
        family(e, MetricType::Counter, "tether_handshakes", help, series)
    }

    fn messages(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let sum = |f: fn(&WorkerStats) -> &AtomicU64| self.0.sum(|s| f(s).load(Ordering::Relaxed));
        let messages = [
            ("client_to_actor", sum(|s| &s.messages_in)),
            ("actor_to_client", sum(|s| &s.messages_out)),
        ];
        let bytes = [
            ("client_to_actor", sum(|s| &s.bytes_in)),
            ("actor_to_client", sum(|s| &s.bytes_out)),
        ];
        let by_direction = |pairs: [(&'static str, u64); 2]| {
            pairs.map(|(direction, n)| ([("direction", direction)], n))
        };
        let help = "Messages from clients to their actors (as they arrive) and to clients (as queued for them).";
        let name = "tether_messages";
        family(e, MetricType::Counter, name, help, by_direction(messages))?;
        let help = "Payload bytes of those messages.";
        let name = "tether_message_bytes";
        family(e, MetricType::Counter, name, help, by_direction(bytes))
    }

    fn http(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut counts = [0; HTTP_STATUSES.len()];
        for s in self.0.each() {
            s.http_results.add_to(&mut counts);
        }
        let series = labelled("status", &HTTP_STATUSES, &counts);
        let help =
            "HTTP requests to actors answered, by status (the actor's or the gateway's own).";
        family(e, MetricType::Counter, "tether_http_requests", help, series)?;
        let sum = |f: fn(&WorkerStats) -> &AtomicU64| self.0.sum(|s| f(s).load(Ordering::Relaxed));
        let bytes = [
            (
                [("direction", "client_to_actor")],
                sum(|s| &s.http_bytes_in),
            ),
            (
                [("direction", "actor_to_client")],
                sum(|s| &s.http_bytes_out),
            ),
        ];
        let help =
            "HTTP body bytes forwarded: request bodies to actors, response bodies to clients.";
        family(
            e,
            MetricType::Counter,
            "tether_http_body_bytes",
            help,
            bytes,
        )
    }

    fn closes(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut counts = [0; CLOSE_CODES.len()];
        for s in self.0.each() {
            s.closes.add_to(&mut counts);
        }
        let series = labelled("code", &CLOSE_CODES, &counts);
        let help = "Client WebSockets closed, by the code of the first close frame (either side's); 1006: lost without one.";
        family(e, MetricType::Counter, "tether_client_closes", help, series)
    }
}

/// `label="code"` series from a code table and its counts (`OTHER`: "other").
fn labelled<'a>(
    label: &'static str,
    codes: &'a [u16],
    counts: &'a [u64],
) -> impl Iterator<Item = ([(&'static str, Cow<'static, str>); 1], u64)> + 'a {
    codes.iter().zip(counts).map(move |(&code, &n)| {
        let value = match code {
            OTHER => Cow::Borrowed("other"),
            code => Cow::Owned(code.to_string()),
        };
        ([(label, value)], n)
    })
}
