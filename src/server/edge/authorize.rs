//! Whether a client may connect to an actor of a namespace, decided from
//! the request head alone, before any actor starts or wakes:
//! - the namespace must exist (else 404);
//! - an open namespace admits anyone;
//! - else the client presents a token (in `Authorization: Bearer`, a
//!   `token` query parameter, or a `tether-token.<token>` subprotocol
//!   entry): one of the namespace's publishable tokens (any actor), or a
//!   signed connect token (`http::token`) that grants this actor. No token
//!   or a wrong one: 401; a valid signed token for another actor: 403.
//!
//! Tokens are compared in constant time and never logged.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, NamespaceConfig};
use crate::http::credential::{client_token, ClientCredential, TokenSource};
use crate::http::route::ActorPath;
use crate::http::token::{self, TOKEN_PREFIX};
use crate::http::{RequestHead, Status};
use crate::server::conn::reply::Refusal;

/// A client let in: its credential, if it gave one.
pub(crate) struct Admitted {
    pub credential: Option<ClientCredential>,
    /// The gateway checked the credential (the namespace is not open): it
    /// is the gateway's, and the runner must not see it.
    pub consumed: bool,
}

impl Admitted {
    /// Whether the `Authorization` header carried a token the gateway used.
    pub fn consumed_authorization(&self) -> bool {
        self.consumed
            && self
                .credential
                .as_ref()
                .is_some_and(|c| c.source() == TokenSource::Bearer)
    }
}

/// Lets the client in, or says why not.
pub(crate) fn authorize(
    config: &Config,
    head: &RequestHead,
    actor: &ActorPath,
) -> Result<Admitted, Refusal> {
    let Some(ns) = config.namespace(&actor.ns) else {
        return Err(Refusal::new(Status::NOT_FOUND, "no such namespace"));
    };
    let credential =
        client_token(head).map_err(|e| Refusal::new(Status(e.status()), e.reason()))?;
    if ns.open {
        let consumed = false;
        return Ok(Admitted {
            credential,
            consumed,
        });
    }
    let Some(given) = &credential else {
        return Err(Refusal::unauthorized("this namespace needs a client token"));
    };
    check_token(ns, given, actor, unix_now())?;
    let consumed = true;
    Ok(Admitted {
        credential,
        consumed,
    })
}

fn check_token(
    ns: &NamespaceConfig,
    given: &ClientCredential,
    actor: &ActorPath,
    now: u64,
) -> Result<(), Refusal> {
    // Every publishable token is compared, so timing does not tell which matched.
    let publishable = ns
        .publishable_tokens
        .iter()
        .fold(false, |hit, t| hit | given.matches(t.as_bytes()));
    if publishable {
        return Ok(());
    }
    if !given.token().starts_with(TOKEN_PREFIX) || ns.connect_token_secrets.is_empty() {
        return Err(Refusal::unauthorized("invalid client token"));
    }
    let secrets: Vec<&[u8]> = ns
        .connect_token_secrets
        .iter()
        .map(|s| s.as_bytes())
        .collect();
    match token::verify(given.token(), &secrets, now) {
        Ok(grant) if grant.allows(&actor.ns, &actor.name, &actor.key) => Ok(()),
        Ok(_) => Err(Refusal::new(
            Status::FORBIDDEN,
            "the token does not grant this actor",
        )),
        Err(e) => Err(Refusal::unauthorized(format!(
            "connect token: {}",
            e.reason()
        ))),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::route::{route, Route};

    const PK: &str = "pk-acme-0123456789abcdef";
    const SECRET: &str = "secret-acme-0123456789abcdef";

    fn config() -> Config {
        Config {
            namespaces: vec![NamespaceConfig {
                name: "acme".into(),
                open: false,
                publishable_tokens: vec![PK.into()],
                connect_token_secrets: vec![SECRET.into()],
                ..NamespaceConfig::implicit_default()
            }],
            ..Config::default()
        }
    }

    fn head(target: &str, auth: Option<&str>) -> RequestHead {
        let mut headers = vec![("Host".to_owned(), b"x".to_vec())];
        if let Some(a) = auth {
            headers.push((
                "Authorization".to_owned(),
                format!("Bearer {a}").into_bytes(),
            ));
        }
        RequestHead {
            method: "GET".into(),
            target: target.into(),
            version: 1,
            headers,
        }
    }

    fn status(target: &str, auth: Option<&str>) -> u16 {
        let Ok(Route::Actor(actor)) = route(target) else {
            panic!("{target}")
        };
        match authorize(&config(), &head(target, auth), &actor) {
            Ok(_) => 200,
            Err(r) => r.status.0,
        }
    }

    fn signed(name: &str, key: &[&str], ttl: u64) -> String {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        token::sign_for(
            SECRET.as_bytes(),
            "acme",
            name,
            &key,
            false,
            ttl,
            unix_now(),
        )
    }

    #[test]
    fn the_default_namespace_is_open_and_unknown_ones_do_not_exist() {
        assert_eq!(status("/actors/chat/a", None), 200);
        assert_eq!(status("/ns/nope/actors/chat/a", Some(PK)), 404);
    }

    #[test]
    fn a_closed_namespace_wants_a_publishable_or_signed_token() {
        assert_eq!(status("/ns/acme/actors/chat/a", None), 401);
        assert_eq!(status("/ns/acme/actors/chat/a", Some("pk-wrong")), 401);
        assert_eq!(status("/ns/acme/actors/chat/a", Some(PK)), 200);
        let t = signed("chat", &["a"], 60);
        assert_eq!(status("/ns/acme/actors/chat/a", Some(&t)), 200);
        assert_eq!(
            status("/ns/acme/actors/chat/b", Some(&t)),
            403,
            "another key"
        );
        assert_eq!(
            status(&format!("/ns/acme/actors/chat/a?token={t}"), None),
            200
        );
        let expired = signed("chat", &["a"], 0);
        assert_eq!(status("/ns/acme/actors/chat/a", Some(&expired)), 401);
    }
}
