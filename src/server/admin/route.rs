//! The admin listener's routes, parsed without IO.

use crate::http::route::{percent_decode, route, ActorPath, Route};

/// Items a list answers when `?limit=` does not say…
pub const DEFAULT_LIMIT: usize = 100;
/// …and the most it may ask for.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
pub enum AdminRoute {
    Healthz,
    /// 200 once every worker serves (and a runner is connected, if
    /// `admin.ready_needs_runner`); 503 before.
    Readyz,
    /// Prometheus text format.
    Metrics,
    /// `/`: the inspector page (static; its data needs the token).
    Inspector,
    /// `/events`: the inspector's event stream (SSE).
    Events,
    /// `/runners[?limit=N]`
    Runners(usize),
    /// `/actors[?limit=N]`
    Actors(usize),
    /// `/actors/{name}/{key…}`: the actor's state.
    Actor(ActorPath),
    /// `/actors/{name}/{key…}/connections[?limit=N]`
    Connections(ActorPath, usize),
    /// `/actors/{name}/{key…}/publish`
    Publish(ActorPath),
    /// `/actors/{name}/{key…}/migrate`
    Migrate(ActorPath),
    /// `/runners/{key}/drain`
    DrainRunner(String),
    /// `/serverless`: the serverless pools (file and API).
    Pools,
    /// `/serverless/{pool}` (namespace default) or
    /// `/ns/{ns}/serverless/{pool}`: GET, PUT or DELETE one pool.
    Pool(PoolPath),
}

/// A serverless pool a route names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPath {
    pub ns: String,
    pub pool: String,
}

/// Why a target has no route.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// 404
    NotFound,
    /// 400, with why.
    BadQuery(&'static str),
}

impl AdminRoute {
    /// The methods a route answers, as an `Allow` header lists them.
    pub fn methods(&self) -> &'static str {
        match self {
            AdminRoute::Publish(_) | AdminRoute::Migrate(_) | AdminRoute::DrainRunner(_) => "POST",
            AdminRoute::Pool(_) => "GET, PUT, DELETE",
            _ => "GET",
        }
    }

    pub fn allows(&self, method: &str) -> bool {
        self.methods().split(", ").any(|m| m == method)
    }

    /// The namespace the route is about, if it is about one (its access
    /// tokens reach it).
    pub fn namespace(&self) -> Option<&str> {
        match self {
            AdminRoute::Pool(p) => Some(&p.ns),
            _ => self.actor().map(|a| a.ns.as_str()),
        }
    }

    /// The actor the route is about, if it is about one.
    pub fn actor(&self) -> Option<&ActorPath> {
        match self {
            AdminRoute::Actor(a)
            | AdminRoute::Connections(a, _)
            | AdminRoute::Publish(a)
            | AdminRoute::Migrate(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the admin token (or an access token) is required. The
    /// inspector page holds no data: its scripts ask with the token.
    pub fn needs_token(&self) -> bool {
        !matches!(
            self,
            AdminRoute::Healthz | AdminRoute::Readyz | AdminRoute::Inspector
        )
    }

    /// Whether a namespace's access token reaches the route (lists are then
    /// narrowed to that namespace); the others need `admin.token`.
    pub fn takes_access_tokens(&self) -> bool {
        self.namespace().is_some()
            || matches!(
                self,
                AdminRoute::Runners(_) | AdminRoute::Actors(_) | AdminRoute::Pools
            )
    }

    /// Whether the request visits every worker (each does its part).
    pub fn visits_every_worker(&self) -> bool {
        matches!(
            self,
            AdminRoute::Runners(_) | AdminRoute::Actors(_) | AdminRoute::DrainRunner(_)
        )
    }
}

pub fn admin_route(target: &str) -> Result<AdminRoute, NoRoute> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    match path {
        "/" => return Ok(AdminRoute::Inspector),
        "/healthz" => return Ok(AdminRoute::Healthz),
        "/readyz" => return Ok(AdminRoute::Readyz),
        "/metrics" => return Ok(AdminRoute::Metrics),
        "/events" => return Ok(AdminRoute::Events),
        "/runners" => return limit(query).map(AdminRoute::Runners),
        "/actors" => return limit(query).map(AdminRoute::Actors),
        "/serverless" => return Ok(AdminRoute::Pools),
        _ => {}
    }
    if let Some(pool) = pool_path(path) {
        return pool.map(AdminRoute::Pool);
    }
    if let Some(rest) = path.strip_prefix("/runners/") {
        let key = rest.strip_suffix("/drain").ok_or(NoRoute::NotFound)?;
        if key.is_empty() || key.contains('/') {
            return Err(NoRoute::NotFound);
        }
        let key = percent_decode(key).map_err(|_| NoRoute::NotFound)?;
        return Ok(AdminRoute::DrainRunner(key));
    }
    let actor = |p: &str| {
        let rebuilt = match query {
            Some(q) => format!("{p}?{q}"),
            None => p.to_owned(),
        };
        match route(&rebuilt) {
            Ok(Route::Actor(a)) => Ok(a),
            _ => Err(NoRoute::NotFound),
        }
    };
    if let Some(p) = path.strip_suffix("/publish") {
        return actor(p).map(AdminRoute::Publish);
    }
    if let Some(p) = path.strip_suffix("/migrate") {
        return actor(p).map(AdminRoute::Migrate);
    }
    if let Some(p) = path.strip_suffix("/connections") {
        let limit = limit(query)?;
        return actor(p).map(|a| AdminRoute::Connections(a, limit));
    }
    actor(path).map(AdminRoute::Actor)
}

/// `/serverless/{pool}` or `/ns/{ns}/serverless/{pool}`; `None`: not a
/// pool's path at all.
fn pool_path(path: &str) -> Option<Result<PoolPath, NoRoute>> {
    let (ns, rest) = match path.strip_prefix("/ns/") {
        Some(r) => {
            let (ns, rest) = r.split_once('/')?;
            (ns, rest.strip_prefix("serverless/")?)
        }
        None => (
            crate::config::DEFAULT_NAMESPACE,
            path.strip_prefix("/serverless/")?,
        ),
    };
    let named = |s: &str| crate::config::is_namespace_name(s);
    Some(match (named(ns), named(rest)) {
        (true, true) => Ok(PoolPath {
            ns: ns.to_owned(),
            pool: rest.to_owned(),
        }),
        _ => Err(NoRoute::NotFound),
    })
}

/// `limit=N` of a list's query (other parameters are ignored).
fn limit(query: Option<&str>) -> Result<usize, NoRoute> {
    let given = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("limit="))
        .next_back();
    let Some(given) = given else {
        return Ok(DEFAULT_LIMIT);
    };
    match given.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(NoRoute::BadQuery("limit must be a number from 1 to 1000")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(name: &str, key: &[&str]) -> ActorPath {
        ActorPath {
            ns: "default".into(),
            name: name.into(),
            key: key.iter().map(|k| k.to_string()).collect(),
            query: None,
        }
    }

    #[test]
    fn every_route_parses() {
        assert_eq!(admin_route("/healthz"), Ok(AdminRoute::Healthz));
        assert_eq!(admin_route("/metrics"), Ok(AdminRoute::Metrics));
        assert_eq!(admin_route("/"), Ok(AdminRoute::Inspector));
        assert_eq!(admin_route("/events"), Ok(AdminRoute::Events));
        assert_eq!(
            admin_route("/runners"),
            Ok(AdminRoute::Runners(DEFAULT_LIMIT))
        );
        assert_eq!(admin_route("/actors?limit=5"), Ok(AdminRoute::Actors(5)));
        assert_eq!(
            admin_route("/actors/chat/room/1"),
            Ok(AdminRoute::Actor(actor("chat", &["room", "1"])))
        );
        assert_eq!(
            admin_route("/actors/chat/lobby/migrate"),
            Ok(AdminRoute::Migrate(actor("chat", &["lobby"])))
        );
        assert_eq!(
            admin_route("/runners/host%2Da/drain"),
            Ok(AdminRoute::DrainRunner("host-a".into()))
        );
        let pool = |ns: &str, pool: &str| {
            Ok(AdminRoute::Pool(PoolPath {
                ns: ns.into(),
                pool: pool.into(),
            }))
        };
        assert_eq!(admin_route("/serverless"), Ok(AdminRoute::Pools));
        assert_eq!(admin_route("/serverless/fns"), pool("default", "fns"));
        assert_eq!(admin_route("/ns/acme/serverless/fns"), pool("acme", "fns"));
        assert_eq!(admin_route("/serverless/a/b"), Err(NoRoute::NotFound));
        assert_eq!(admin_route("/ns/acme/serverless/"), Err(NoRoute::NotFound));
        match admin_route("/actors/chat/lobby/publish?conn=5") {
            Ok(AdminRoute::Publish(a)) => assert_eq!(a.query.as_deref(), Some("conn=5")),
            other => panic!("{other:?}"),
        }
        match admin_route("/actors/chat/lobby/connections?limit=7") {
            Ok(AdminRoute::Connections(a, 7)) => assert_eq!(a.key, ["lobby"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_are_bounded() {
        let bad = Err(NoRoute::BadQuery("limit must be a number from 1 to 1000"));
        for t in ["/actors?limit=0", "/runners?limit=1001", "/actors?limit=x"] {
            assert_eq!(admin_route(t), bad, "{t}");
        }
        assert_eq!(
            admin_route("/actors?limit=1000"),
            Ok(AdminRoute::Actors(1000))
        );
        assert_eq!(
            admin_route("/actors?x=1"),
            Ok(AdminRoute::Actors(DEFAULT_LIMIT))
        );
        assert_eq!(
            admin_route("/actors/chat/a/connections?limit=-1"),
            bad,
            "an actor's connections too"
        );
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for t in [
            "/index.html",
            "/runners//drain",
            "/runners/a/b/drain",
            "/runners/a",
            "/runners/%zz/drain",
            "/actors/",
            "/metrics2",
            "/events/",
        ] {
            assert_eq!(admin_route(t), Err(NoRoute::NotFound), "{t}");
        }
    }
}
