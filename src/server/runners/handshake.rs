//! A connection on the runner listener, from its request head to its
//! tunnel session: path, token, tunnel index, upgrade.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::server::conn::stream::Stream;
use bytes::BytesMut;

use super::identity::Identity;
use super::session::TunnelRole;
use super::RunnerSide;
use crate::config::Config;
use crate::http::response::write_switching_protocols;
use crate::http::{RequestHead, Status};
use crate::server::conn::io::write_all_or_stall;
use crate::server::conn::reply::{refuse, Refusal};
use crate::server::conn::session::Session;
use crate::ws::handshake::validate_upgrade;

/// The worker a runner's connection belongs on: the one its `?tunnel=N` names.
pub(crate) fn home_worker(head: &RequestHead, this: usize, workers: usize) -> usize {
    tunnel_index(&head.target)
        .filter(|&i| i < workers)
        .unwrap_or(this)
}

/// `tunnel=N` in the query of a runner's connect request (absent: 0).
fn tunnel_index(target: &str) -> Option<usize> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    match query.split('&').find_map(|kv| kv.strip_prefix("tunnel=")) {
        Some(n) => n.parse().ok(),
        None => Some(0),
    }
}

pub(crate) async fn serve_runner(
    side: Rc<RunnerSide>,
    mut stream: Stream,
    buf: BytesMut,
    head: RequestHead,
) {
    let env = &side.env;
    let config = env.config();
    let identity = match precheck(&side, &config, &head) {
        Ok(identity) => identity,
        Err(refusal) => return refuse(env, stream, buf, refusal).await,
    };
    let upgrade = match validate_upgrade(&head) {
        Ok(u) => u,
        Err(r) => return refuse(env, stream, buf, r.into()).await,
    };
    let Some(permit) = side.quota.take(&identity.name) else {
        side.stats.tunnels_refused.fetch_add(1, Ordering::Relaxed);
        let reason =
            "too many tunnels open for this runner identity (runners.max_tunnels_per_identity)";
        let refusal = Refusal {
            status: Status::TOO_MANY_REQUESTS,
            headers: &[("Retry-After", "1")],
            reason: reason.into(),
        };
        return refuse(env, stream, buf, refusal).await;
    };
    let mut out = env.pool.take();
    write_switching_protocols(&mut out, &upgrade.accept_key, None);
    match write_all_or_stall(&mut stream, out, side.limits.get().send_timeout).await {
        Ok(out) => env.pool.give_back(out),
        Err(_) => return,
    }
    let registration = env.registry.register(Instant::now());
    let role = TunnelRole::new(registration.control.clone(), (identity, config), permit);
    monoio::spawn(Session::new(side.clone(), role).run(stream, buf, registration));
}

/// Path, method, token and tunnel index of a runner's connect request; the
/// identity its token belongs to.
fn precheck(side: &RunnerSide, config: &Config, head: &RequestHead) -> Result<Identity, Refusal> {
    let path = head
        .target
        .split_once('?')
        .map_or(head.target.as_str(), |(p, _)| p);
    match path {
        "/healthz" if head.method == "GET" => return Err(Refusal::new(Status::OK, "ok")),
        "/runners/connect" if head.method != "GET" => {
            return Err(Refusal::method_not_allowed("GET", "use GET"))
        }
        "/runners/connect" => {}
        "/cluster/connect" if head.method != "GET" => {
            return Err(Refusal::method_not_allowed("GET", "use GET"))
        }
        "/cluster/connect" => return node_precheck(side, config, head),
        _ => {
            let reason = "no such path; runners connect to /runners/connect";
            return Err(Refusal::new(Status::NOT_FOUND, reason));
        }
    }
    let Some(identity) = Identity::of(config, head) else {
        return Err(Refusal::unauthorized("missing or wrong runner token"));
    };
    let workers = side.worker_count;
    if tunnel_index(&head.target).is_none_or(|i| i >= workers) {
        let reason =
            format!("tunnel must be a number below {workers} (the gateway's worker count)");
        return Err(Refusal::new(Status::BAD_REQUEST, reason));
    }
    Ok(identity)
}

/// Another node's link: the cluster token, and a tunnel index this node
/// has (nodes of a cluster run as many workers each).
fn node_precheck(
    side: &RunnerSide,
    config: &Config,
    head: &RequestHead,
) -> Result<Identity, Refusal> {
    if config.cluster.is_none() {
        return Err(Refusal::new(
            Status::NOT_FOUND,
            "this node is not part of a cluster",
        ));
    }
    let Some(identity) = Identity::of_node(config, head) else {
        return Err(Refusal::unauthorized("missing or wrong cluster token"));
    };
    let workers = side.worker_count;
    if tunnel_index(&head.target).is_none_or(|i| i >= workers) {
        let reason = format!("tunnel must be a number below {workers} (this node's worker count; nodes of a cluster run as many workers each)");
        return Err(Refusal::new(Status::BAD_REQUEST, reason));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunnel_index_comes_from_the_query() {
        assert_eq!(tunnel_index("/runners/connect"), Some(0));
        assert_eq!(tunnel_index("/runners/connect?tunnel=3"), Some(3));
        assert_eq!(tunnel_index("/runners/connect?a=b&tunnel=1"), Some(1));
        assert_eq!(tunnel_index("/runners/connect?tunnel=x"), None);
    }
}
