//! A `wss://` client over rustls and tungstenite, trusting only a test CA.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

pub type Wss = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// A TLS connection to `addr` for `name`, trusting only the CA at `ca`.
pub fn tls_to(
    addr: SocketAddr,
    name: &str,
    ca: &Path,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let config = tether::tls::load_client_config(Some(ca)).unwrap();
    tls_with(addr, name, config)
}

/// As [`tls_to`], with a client configuration of the test's own.
pub fn tls_with(
    addr: SocketAddr,
    name: &str,
    config: std::sync::Arc<ClientConfig>,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = ClientConnection::new(config, server_name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

pub fn wss(addr: SocketAddr, name: &str, ca: &Path, path: &str) -> Wss {
    let stream = tls_to(addr, name, ca).expect("TLS handshake");
    upgrade(stream, name, path)
}

/// The WebSocket upgrade over an established TLS stream.
pub fn upgrade(stream: StreamOwned<ClientConnection, TcpStream>, name: &str, path: &str) -> Wss {
    let request = format!("ws://{name}{path}").into_client_request().unwrap();
    tungstenite::client::client(request, stream)
        .expect("upgrade")
        .0
}

/// Sends `text` and returns the next text message.
pub fn echo(ws: &mut Wss, text: &str) -> String {
    ws.send(Message::text(text)).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return t.to_string(),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            Err(e) => panic!("{e}"),
        }
    }
}
