//! The admin listener's routes, parsed without IO.

use crate::http::route::{percent_decode, route, ActorPath, Route};

#[derive(Debug, PartialEq, Eq)]
pub enum AdminRoute {
    Healthz,
    /// 200 once every worker serves (and a runner is connected, if
    /// `admin.ready_needs_runner`); 503 before.
    Readyz,
    /// Prometheus text format.
    Metrics,
    /// `/actors/{name}/{key…}`: the actor's state.
    Actor(ActorPath),
    /// `/actors/{name}/{key…}/publish`
    Publish(ActorPath),
    /// `/actors/{name}/{key…}/migrate`
    Migrate(ActorPath),
    /// `/runners/{key}/drain`
    DrainRunner(String),
}

impl AdminRoute {
    /// The one method each route answers.
    pub fn method(&self) -> &'static str {
        match self {
            AdminRoute::Healthz
            | AdminRoute::Readyz
            | AdminRoute::Metrics
            | AdminRoute::Actor(_) => "GET",
            _ => "POST",
        }
    }

    /// The actor the route is about, if it is about one.
    pub fn actor(&self) -> Option<&ActorPath> {
        match self {
            AdminRoute::Actor(a) | AdminRoute::Publish(a) | AdminRoute::Migrate(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the admin token is required.
    pub fn needs_token(&self) -> bool {
        !matches!(self, AdminRoute::Healthz | AdminRoute::Readyz)
    }
}

/// `None`: no such path (404).
pub fn admin_route(target: &str) -> Option<AdminRoute> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    match path {
        "/healthz" => return Some(AdminRoute::Healthz),
        "/readyz" => return Some(AdminRoute::Readyz),
        "/metrics" => return Some(AdminRoute::Metrics),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/runners/") {
        let key = rest.strip_suffix("/drain")?;
        if key.is_empty() || key.contains('/') {
            return None;
        }
        return percent_decode(key).ok().map(AdminRoute::DrainRunner);
    }
    let actor = |p: &str| {
        let rebuilt = match query {
            Some(q) => format!("{p}?{q}"),
            None => p.to_owned(),
        };
        match route(&rebuilt) {
            Ok(Route::Actor(a)) => Some(a),
            _ => None,
        }
    };
    if let Some(p) = path.strip_suffix("/publish") {
        return actor(p).map(AdminRoute::Publish);
    }
    if let Some(p) = path.strip_suffix("/migrate") {
        return actor(p).map(AdminRoute::Migrate);
    }
    actor(path).map(AdminRoute::Actor)
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
        assert_eq!(admin_route("/healthz"), Some(AdminRoute::Healthz));
        assert_eq!(admin_route("/metrics"), Some(AdminRoute::Metrics));
        assert_eq!(
            admin_route("/actors/chat/room/1"),
            Some(AdminRoute::Actor(actor("chat", &["room", "1"])))
        );
        assert_eq!(
            admin_route("/actors/chat/lobby/migrate"),
            Some(AdminRoute::Migrate(actor("chat", &["lobby"])))
        );
        assert_eq!(
            admin_route("/runners/host%2Da/drain"),
            Some(AdminRoute::DrainRunner("host-a".into()))
        );
        match admin_route("/actors/chat/lobby/publish?conn=5") {
            Some(AdminRoute::Publish(a)) => assert_eq!(a.query.as_deref(), Some("conn=5")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_paths_are_none() {
        for t in [
            "/",
            "/runners//drain",
            "/runners/a/b/drain",
            "/runners/a",
            "/runners/%zz/drain",
            "/actors",
            "/metrics2",
        ] {
            assert_eq!(admin_route(t), None, "{t}");
        }
    }
}
