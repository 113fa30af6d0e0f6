//! The builtin actors, with every instance's life written down: when each
//! runner created an actor and when it dropped it (a runner drops its
//! actors with their tunnel). Tests read it to show that no key ever ran
//! in two places at once.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tether::runner::{
    Actor, ActorFactory, BuiltinActors, ConnId, ConnInfo, Ctx, HttpRequest, Message, OpenDecision,
    RequestId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Created,
    Dropped,
}

/// (runner, actor key, what happened, when)
pub type Entries = Arc<Mutex<Vec<(String, Vec<String>, Life, Instant)>>>;

/// `inner`'s actors (the builtin ones by default), logged.
#[derive(Clone)]
pub struct Logged<F = BuiltinActors> {
    pub runner: String,
    pub log: Entries,
    pub inner: F,
}

impl<F: ActorFactory> ActorFactory for Logged<F> {
    fn actor_names(&self) -> Vec<String> {
        self.inner.actor_names()
    }

    fn create(&self, name: &str, key: &[String]) -> Option<Box<dyn Actor>> {
        let inner = self.inner.create(name, key)?;
        let entry = (
            self.runner.clone(),
            key.to_vec(),
            Life::Created,
            Instant::now(),
        );
        self.log.lock().unwrap().push(entry);
        Some(Box::new(LoggedActor {
            inner,
            runner: self.runner.clone(),
            key: key.to_vec(),
            log: self.log.clone(),
        }))
    }
}

struct LoggedActor {
    inner: Box<dyn Actor>,
    runner: String,
    key: Vec<String>,
    log: Entries,
}

impl Drop for LoggedActor {
    fn drop(&mut self) {
        let entry = (
            self.runner.clone(),
            self.key.clone(),
            Life::Dropped,
            Instant::now(),
        );
        self.log.lock().unwrap().push(entry);
    }
}

impl Actor for LoggedActor {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, info: &ConnInfo) -> OpenDecision {
        self.inner.on_open(ctx, conn, info)
    }
    fn on_restore(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, info: &ConnInfo) {
        self.inner.on_restore(ctx, conn, info)
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        self.inner.on_message(ctx, conn, message)
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, code: u16, reason: &str) {
        self.inner.on_close(ctx, conn, code, reason)
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        self.inner.save_state()
    }
    fn load_state(&mut self, state: &[u8]) {
        self.inner.load_state(state)
    }
    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &HttpRequest) {
        self.inner.on_request(ctx, request)
    }
    fn on_request_body(&mut self, ctx: &mut Ctx<'_>, request: RequestId, data: &[u8]) {
        self.inner.on_request_body(ctx, request, data)
    }
    fn on_request_end(&mut self, ctx: &mut Ctx<'_>, request: RequestId) {
        self.inner.on_request_end(ctx, request)
    }
    fn on_request_cancelled(&mut self, ctx: &mut Ctx<'_>, request: RequestId) {
        self.inner.on_request_cancelled(ctx, request)
    }
    fn on_response_writable(&mut self, ctx: &mut Ctx<'_>, request: RequestId) {
        self.inner.on_response_writable(ctx, request)
    }
}

/// Every instance of `key` as (runner, created, dropped or `None` if it
/// still runs), in order of creation.
pub fn instances(log: &Entries, key: &[String]) -> Vec<(String, Instant, Option<Instant>)> {
    let log = log.lock().unwrap();
    let mut out: Vec<(String, Instant, Option<Instant>)> = Vec::new();
    for (runner, k, life, at) in log.iter().filter(|e| e.1 == key) {
        let _ = k;
        match life {
            Life::Created => out.push((runner.clone(), *at, None)),
            Life::Dropped => {
                if let Some(open) = out.iter_mut().find(|i| i.0 == *runner && i.2.is_none()) {
                    open.2 = Some(*at);
                }
            }
        }
    }
    out
}

/// Panics if two instances of `key` were alive at the same moment.
#[track_caller]
pub fn assert_never_twice(log: &Entries, key: &[String]) {
    let all = instances(log, key);
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let a_end = a.2.unwrap_or_else(Instant::now);
            assert!(
                a_end <= b.1,
                "{key:?} ran twice: on {} until {:?} and on {} from {:?}",
                a.0,
                a.2,
                b.0,
                b.1
            );
        }
    }
}
