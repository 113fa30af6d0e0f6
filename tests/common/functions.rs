//! A local function host for serverless pools: the runner library's
//! serverless handler (`/metadata`, `/start`) on a loopback port, with
//! the reference actors, one state store shared by every runner it starts
//! (as a function's instances share their database), and optionally a
//! platform's lifespan: each started runner is killed that long after its
//! `/start`.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tether::config::ServerlessPool;
use tether::runner::serverless::{http, ServerlessHandler};
use tether::runner::{ActorFactory, BuiltinActors, MemoryStore, StateStore};

pub struct FunctionHost {
    pub addr: SocketAddr,
    server: Option<http::HttpServer>,
    store: Arc<dyn StateStore>,
    lifespan: Option<Duration>,
}

impl FunctionHost {
    pub fn start(lifespan: Option<Duration>) -> FunctionHost {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        FunctionHost::serve(listener, Arc::new(MemoryStore::default()), lifespan)
    }

    fn serve(
        listener: TcpListener,
        store: Arc<dyn StateStore>,
        lifespan: Option<Duration>,
    ) -> FunctionHost {
        let factory: Arc<dyn ActorFactory> = Arc::new(BuiltinActors);
        let mut handler = ServerlessHandler::new(factory, Some(store.clone()))
            .keepalive(Duration::from_millis(500));
        if let Some(l) = lifespan {
            handler = handler.lifespan(l);
        }
        let addr = listener.local_addr().unwrap();
        let server = http::serve(listener, handler).expect("serves");
        FunctionHost {
            addr,
            server: Some(server),
            store,
            lifespan,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting: the port refuses connections (requests in flight,
    /// and their runners, go on).
    pub fn go_down(&mut self) {
        self.server = None;
    }

    /// Serves again on the same port.
    pub fn come_back(&mut self) {
        let listener = TcpListener::bind(self.addr).expect("the same port again");
        *self = FunctionHost::serve(listener, self.store.clone(), self.lifespan);
    }
}

/// A serverless pool `fn` of the default namespace on `url`.
pub fn pool(url: &str) -> ServerlessPool {
    ServerlessPool {
        pool: "fn".into(),
        url: url.into(),
        max_runners: 4,
        request_lifespan: Duration::from_secs(4),
        drain_grace: Duration::from_millis(1500),
        slots_per_runner: 100,
        start_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// The test configuration with `pool`, and `chat` and `echo` actors in it.
pub fn config_with(pool: ServerlessPool) -> tether::Config {
    let mut c = super::test_config();
    c.actors.pools.insert("chat".into(), pool.pool.clone());
    c.actors.pools.insert("echo".into(), pool.pool.clone());
    c.actors.new_burst_per_address = 10_000;
    c.actors.new_per_second_per_address = 10_000;
    c.client.max_connections_per_address = 10_000;
    c.client.new_burst_per_address = 10_000;
    c.client.new_per_second_per_address = 10_000;
    c.serverless.push(pool);
    c
}
