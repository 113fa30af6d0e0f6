//! Who may call an admin route. `admin.token` reaches every route; a
//! namespace's access tokens reach its actors' routes, its serverless
//! pools, and the lists (`/runners`, `/actors`, `/serverless`), which are
//! then narrowed to that namespace.
//! Every candidate token is compared, in constant time each, so timing
//! does not tell which one matched.

use std::fmt;

use super::route::{admin_route, AdminRoute, NoRoute};
use super::AdminSide;
use crate::config::NamespaceConfig;
use crate::http::{RequestHead, Status};
use crate::server::conn::reply::Refusal;

/// Who sent an admin request (for lists: what they may see; for logs: who).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// `admin.token`, or a route that needs no token.
    Admin,
    /// An access token of this namespace.
    Namespace(String),
}

impl Caller {
    /// The namespace a list is narrowed to (`None`: every namespace).
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Namespace(ns) => Some(ns),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Admin => f.write_str("admin token"),
            Caller::Namespace(ns) => write!(f, "access token of namespace {ns}"),
        }
    }
}

impl AdminSide {
    /// The route of an admin request, if its path, method and token are right.
    pub(super) fn check(&self, head: &RequestHead) -> Result<(AdminRoute, Caller), Refusal> {
        let route = admin_route(&head.target).map_err(|no| match no {
            NoRoute::NotFound => Refusal::new(Status::NOT_FOUND, "no such path"),
            NoRoute::BadQuery(why) => Refusal::new(Status::BAD_REQUEST, why),
        })?;
        if !route.allows(&head.method) {
            let methods = route.methods();
            return Err(Refusal::method_not_allowed(
                methods,
                format!("use {methods}"),
            ));
        }
        let caller = match route.needs_token() {
            true => self.authorize(head, &route)?,
            false => Caller::Admin,
        };
        Ok((route, caller))
    }

    fn authorize(&self, head: &RequestHead, route: &AdminRoute) -> Result<Caller, Refusal> {
        let config = self.env.config();
        let namespaces: Vec<&NamespaceConfig> = match route.namespace() {
            Some(ns) => config.namespace(ns).into_iter().collect(),
            None if route.takes_access_tokens() => config.namespaces.iter().collect(),
            None => Vec::new(),
        };
        let admin = &config.admin.token;
        if admin.is_empty() && namespaces.iter().all(|ns| ns.access_tokens.is_empty()) {
            let reason = "admin.token is not configured: the admin API is disabled";
            return Err(Refusal::new(Status::FORBIDDEN, reason));
        }
        let by_admin = !admin.is_empty() && head.bearer_is(admin);
        let mut by_access = None;
        for ns in &namespaces {
            let hit = ns
                .access_tokens
                .iter()
                .fold(false, |hit, t| hit | head.bearer_is(t));
            if hit && by_access.is_none() {
                by_access = Some(ns.name.clone());
            }
        }
        match (by_admin, by_access) {
            (true, _) => Ok(Caller::Admin),
            (false, Some(ns)) => Ok(Caller::Namespace(ns)),
            (false, None) => Err(Refusal::unauthorized("missing or wrong admin token")),
        }
    }
}
