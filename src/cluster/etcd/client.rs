//! Typed, blocking calls to etcd's JSON gateway over one kept-alive
//! connection, with failover: a call that cannot reach the current
//! endpoint (or gets garbage, or "no leader") moves on to the next one, each
//! endpoint tried once per call, all within the caller's deadline. With
//! credentials it authenticates first and again when etcd says the token
//! is no longer valid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustls::ClientConfig;

use super::conn::{Conn, Endpoint};
use super::reply::{self, Error, Lease, Range, TxnReply, MAX_BODY_BYTES};
use super::request;
use super::watch::WatchStream;
use crate::cluster::model::{LeaseId, Txn};
use crate::config::ClusterConfig;

const AUTHENTICATE: &str = "/v3/auth/authenticate";

/// Requests sent to etcd, by kind (every attempt counts).
#[derive(Debug, Default)]
pub struct Counters {
    pub grants: AtomicU64,
    pub keepalives: AtomicU64,
    pub revokes: AtomicU64,
    pub txns: AtomicU64,
    pub ranges: AtomicU64,
    pub puts: AtomicU64,
    pub auths: AtomicU64,
    pub watch_opens: AtomicU64,
    pub total: AtomicU64,
}

impl Counters {
    fn count(&self, path: &str) {
        let kind = match path {
            "/v3/lease/grant" => &self.grants,
            "/v3/lease/keepalive" => &self.keepalives,
            "/v3/lease/revoke" => &self.revokes,
            "/v3/kv/txn" => &self.txns,
            "/v3/kv/range" => &self.ranges,
            "/v3/kv/put" => &self.puts,
            "/v3/watch" => &self.watch_opens,
            _ => &self.auths,
        };
        kind.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Client {
    endpoints: Vec<Endpoint>,
    current: usize,
    /// The open connection, and whether it already carried a request.
    conn: Option<(Conn, bool)>,
    /// For https endpoints: the system's roots, or only the CA file
    /// `TETHER_ETCD_CA` names.
    tls: Option<Arc<ClientConfig>>,
    credentials: Option<(String, String)>,
    token: Option<String>,
    counters: Arc<Counters>,
}

/// Worth another endpoint: this one is unreachable, garbled or leaderless.
fn try_elsewhere(e: &Error) -> bool {
    matches!(
        e,
        Error::Io(_) | Error::Bad(_) | Error::Etcd { code: 14, .. }
    )
}

impl Client {
    pub fn new(config: &ClusterConfig, counters: Arc<Counters>) -> Result<Client, String> {
        let endpoints = config
            .etcd_endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("no etcd endpoint".into());
        }
        let credentials = config.etcd_user.clone().zip(config.etcd_password.clone());
        let tls = match endpoints.iter().any(|e| e.tls) {
            true => {
                let ca = std::env::var_os("TETHER_ETCD_CA").map(std::path::PathBuf::from);
                Some(crate::tls::load_client_config(ca.as_deref())?)
            }
            false => None,
        };
        Ok(Client {
            endpoints,
            current: 0,
            conn: None,
            tls,
            credentials,
            token: None,
            counters,
        })
    }

    fn advance(&mut self) {
        self.conn = None;
        self.current = (self.current + 1) % self.endpoints.len();
    }

    /// `POST path` → the 200 answer's body, trying every endpoint once (a
    /// kept-alive connection that fails gets one fresh retry first).
    pub fn call(&mut self, path: &str, body: &[u8], deadline: Instant) -> Result<Vec<u8>, Error> {
        let mut tries = self.endpoints.len() + 1;
        let mut reauthenticated = false;
        loop {
            let err = match self.call_once(path, body, deadline) {
                Ok(b) => return Ok(b),
                Err(e) => e,
            };
            tries -= 1;
            let retry = if err.is_invalid_token() && self.credentials.is_some() {
                self.token = None;
                !std::mem::replace(&mut reauthenticated, true)
            } else {
                try_elsewhere(&err) && tries > 0
            };
            if !retry || Instant::now() >= deadline {
                return Err(err);
            }
        }
    }

    fn call_once(&mut self, path: &str, body: &[u8], deadline: Instant) -> Result<Vec<u8>, Error> {
        if path != AUTHENTICATE && self.credentials.is_some() && self.token.is_none() {
            self.authenticate(deadline)?;
        }
        let token = self.token.clone().filter(|_| path != AUTHENTICATE);
        let (mut conn, reused) = match self.conn.take() {
            Some(c) => c,
            None => match Conn::connect(&self.endpoints[self.current], self.tls.as_ref(), deadline)
            {
                Ok(c) => (c, false),
                Err(e) => {
                    self.advance();
                    return Err(e);
                }
            },
        };
        self.counters.count(path);
        let answer = conn
            .send(path, token.as_deref(), body, deadline)
            .and_then(|()| conn.response(MAX_BODY_BYTES, deadline));
        match answer {
            Ok((status, body, reusable)) => {
                if reusable {
                    self.conn = Some((conn, true));
                }
                if status == 200 {
                    return Ok(body);
                }
                let e = reply::error(status, &body);
                if try_elsewhere(&e) {
                    self.advance();
                }
                Err(e)
            }
            // A kept-alive connection may just have been closed by etcd:
            // the retry reconnects to the same endpoint.
            Err(e) => {
                if !reused {
                    self.advance();
                }
                Err(e)
            }
        }
    }

    fn authenticate(&mut self, deadline: Instant) -> Result<(), Error> {
        let Some((name, password)) = self.credentials.clone() else {
            return Ok(());
        };
        let body = self.call_once(
            AUTHENTICATE,
            &request::authenticate(&name, &password),
            deadline,
        )?;
        self.token = Some(reply::auth_token(&body)?);
        Ok(())
    }

    pub fn lease_grant(&mut self, ttl_secs: i64, deadline: Instant) -> Result<Lease, Error> {
        let b = self.call("/v3/lease/grant", &request::lease_grant(ttl_secs), deadline)?;
        reply::lease_grant(&b)
    }

    /// One keep-alive; a `ttl` of 0 in the answer: the lease is gone.
    pub fn lease_keepalive(&mut self, lease: LeaseId, deadline: Instant) -> Result<Lease, Error> {
        let b = self.call("/v3/lease/keepalive", &request::lease_id(lease), deadline)?;
        reply::lease_keepalive(&b)
    }

    pub fn lease_revoke(&mut self, lease: LeaseId, deadline: Instant) -> Result<(), Error> {
        self.call("/v3/lease/revoke", &request::lease_id(lease), deadline)
            .map(drop)
    }

    pub fn txn(&mut self, t: &Txn, deadline: Instant) -> Result<TxnReply, Error> {
        let b = self.call("/v3/kv/txn", &request::txn(t), deadline)?;
        reply::txn(&b)
    }

    pub fn range(
        &mut self,
        key: &[u8],
        end: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Range, Error> {
        let b = self.call("/v3/kv/range", &request::range(key, end), deadline)?;
        reply::range(&b)
    }

    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: LeaseId,
        deadline: Instant,
    ) -> Result<(), Error> {
        self.call("/v3/kv/put", &request::put(key, value, lease), deadline)
            .map(drop)
    }

    /// Opens a watch of `[key, end)` from `start` on a connection of its
    /// own, trying each endpoint once.
    pub fn watch(
        &mut self,
        key: &[u8],
        end: &[u8],
        start: Option<i64>,
        deadline: Instant,
    ) -> Result<WatchStream, Error> {
        let body = request::watch_create(key, end, start);
        let mut last = Error::Io("no endpoint".into());
        for _ in 0..self.endpoints.len() {
            if self.credentials.is_some() && self.token.is_none() {
                self.authenticate(deadline)?;
            }
            let ep = &self.endpoints[self.current];
            self.counters.count("/v3/watch");
            match WatchStream::open(
                ep,
                self.tls.as_ref(),
                self.token.as_deref(),
                &body,
                deadline,
            ) {
                Ok(w) => return Ok(w),
                Err(e) if e.is_invalid_token() => {
                    self.token = None;
                    last = e;
                }
                Err(e) => {
                    self.advance();
                    last = e;
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests;
