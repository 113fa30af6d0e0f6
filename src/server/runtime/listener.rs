//! Listening sockets: one SO_REUSEPORT socket per worker on the client port,
//! after making sure no other process is already listening there.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Connections the kernel queues per listener before we accept them.
const LISTEN_BACKLOG: i32 = 4096;

/// Why a listener could not be set up, naming the address.
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub what: &'static str,
    pub source: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.source.kind() == io::ErrorKind::AddrInUse {
            write!(
                f,
                "{} address {} (port {}) is already in use: is another tether (or another server) running there?",
                self.what,
                self.addr,
                self.addr.port()
            )
        } else {
            write!(
                f,
                "cannot listen on {} address {}: {}",
                self.what, self.addr, self.source
            )
        }
    }
}

impl std::error::Error for BindError {}

/// Binds `count` sockets sharing one port with SO_REUSEPORT, so each worker
/// accepts on its own. Port 0 picks a free port for all of them.
///
/// SO_REUSEPORT would also let a second gateway join the same port and
/// silently take half the traffic, so first a plain bind probes the port: it
/// fails if anyone is listening there.
pub fn bind_shared(
    addr: SocketAddr,
    count: usize,
    nonblocking: bool,
    what: &'static str,
) -> Result<Vec<std::net::TcpListener>, BindError> {
    let err = |source| BindError { addr, what, source };
    if addr.port() != 0 {
        probe_unused(addr).map_err(err)?;
    }
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let l = bind_one(bound, true, nonblocking).map_err(err)?;
        bound = l.local_addr().map_err(err)?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Binds one ordinary (exclusive) listener.
pub fn bind_exclusive(
    addr: SocketAddr,
    nonblocking: bool,
    what: &'static str,
) -> Result<std::net::TcpListener, BindError> {
    bind_one(addr, false, nonblocking).map_err(|source| BindError { addr, what, source })
}

fn probe_unused(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR ignores our own TIME_WAIT leftovers after a restart, but
    // not a live listener.
    probe.set_reuse_address(true)?;
    probe.bind(&SockAddr::from(addr))
}

fn bind_one(
    addr: SocketAddr,
    reuse_port: bool,
    nonblocking: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(nonblocking)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_gateway_on_the_same_port_is_refused() {
        let first = bind_shared("127.0.0.1:0".parse().unwrap(), 2, false, "client").unwrap();
        let port = first[0].local_addr().unwrap().port();
        assert_eq!(first[1].local_addr().unwrap().port(), port);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let err = bind_shared(addr, 2, false, "client").unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&format!("port {port}")), "{err}");
    }
}
