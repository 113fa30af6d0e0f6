//! A `TlsServer` wired to an in-memory rustls `ClientConnection`; client
//! bytes reach the server in chunks of a size the test chooses.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig};

use crate::tls::{TlsError, TlsServer};

/// Who failed first while bytes were moving.
#[derive(Debug)]
pub(crate) enum Failure {
    Server(TlsError),
    Client(rustls::Error),
}

pub(crate) struct Pair {
    pub(crate) client: ClientConnection,
    pub(crate) server: TlsServer,
    /// The server's `incoming`, `plaintext` and `outgoing` buffers.
    pub(crate) incoming: BytesMut,
    pub(crate) plaintext: BytesMut,
    pub(crate) outgoing: BytesMut,
    /// Client bytes not yet handed to the server.
    wire: Vec<u8>,
    pub(crate) peer_closed: bool,
    /// Set on the `read_tls` call during which the handshake completed.
    pub(crate) plaintext_with_finished: Option<usize>,
    /// What the client decrypted, drained as it arrives (its own buffer is
    /// limited).
    client_plain: Vec<u8>,
    pub(crate) client_closed: bool,
    /// The server's error on the client's alert, after a client failure.
    pub(crate) server_error: Option<TlsError>,
}

impl Pair {
    pub(crate) fn new(server: Arc<ServerConfig>, client: Arc<ClientConfig>, sni: &str) -> Self {
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        Self {
            client: ClientConnection::new(client, name).unwrap(),
            server: TlsServer::new(server).unwrap(),
            incoming: BytesMut::new(),
            plaintext: BytesMut::new(),
            outgoing: BytesMut::new(),
            wire: Vec::new(),
            peer_closed: false,
            plaintext_with_finished: None,
            server_error: None,
            client_plain: Vec::new(),
            client_closed: false,
        }
    }

    /// Moves bytes both ways until neither side has anything to send; each
    /// delivery to the server is `chunk(remaining)` bytes long.
    pub(crate) fn pump_with(
        &mut self,
        chunk: &mut dyn FnMut(usize) -> usize,
    ) -> Result<(), Failure> {
        for _ in 0..10_000 {
            self.flush_client();
            let mut moved = false;
            while !self.wire.is_empty() {
                self.deliver(chunk(self.wire.len()))?;
                moved = true;
            }
            moved |= self.flush_server()?;
            if !moved {
                return Ok(());
            }
        }
        panic!("pump did not settle");
    }

    /// Takes what the client wants to send.
    pub(crate) fn flush_client(&mut self) {
        while self.client.wants_write() {
            self.client.write_tls(&mut self.wire).unwrap();
        }
    }

    /// Hands the server the next `n` bytes the client sent.
    pub(crate) fn deliver(&mut self, n: usize) -> Result<(), Failure> {
        let n = n.clamp(1, self.wire.len());
        self.incoming.extend_from_slice(&self.wire[..n]);
        self.wire.drain(..n);
        self.server_read()
    }

    /// Hands the client what the server sent; whether there was anything.
    pub(crate) fn flush_server(&mut self) -> Result<bool, Failure> {
        if self.outgoing.is_empty() {
            return Ok(false);
        }
        let bytes = self.outgoing.split();
        self.client_read(&bytes)?;
        Ok(true)
    }

    pub(crate) fn pump(&mut self) -> Result<(), Failure> {
        self.pump_with(&mut |remaining| remaining)
    }

    pub(crate) fn handshake(&mut self) {
        self.pump().unwrap();
        assert!(!self.server.is_handshaking());
        assert!(!self.client.is_handshaking());
    }

    pub(crate) fn client_send(&mut self, data: &[u8]) {
        self.client.writer().write_all(data).unwrap();
    }

    pub(crate) fn server_send(&mut self, data: &[u8]) {
        self.server.write_plain(data, &mut self.outgoing).unwrap();
    }

    /// What the client has decrypted since the last call.
    pub(crate) fn client_received(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.client_plain)
    }

    fn drain_client(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.client.reader().read(&mut buf) {
                Ok(0) => {
                    self.client_closed = true;
                    return;
                }
                Ok(n) => self.client_plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    fn server_read(&mut self) -> Result<(), Failure> {
        let was_handshaking = self.server.is_handshaking();
        let progress = self
            .server
            .read_tls(&mut self.incoming, &mut self.plaintext, &mut self.outgoing)
            .map_err(Failure::Server)?;
        assert_eq!(progress.handshake_done, !self.server.is_handshaking());
        if was_handshaking && progress.handshake_done {
            self.plaintext_with_finished = Some(progress.plaintext);
        }
        self.peer_closed |= progress.peer_closed;
        Ok(())
    }

    /// Feeds the client; on a client error, its alert still reaches the
    /// server before the failure is returned.
    pub(crate) fn client_read(&mut self, mut bytes: &[u8]) -> Result<(), Failure> {
        while !bytes.is_empty() {
            self.client.read_tls(&mut bytes).unwrap();
            if let Err(error) = self.client.process_new_packets() {
                while self.client.wants_write() {
                    self.client.write_tls(&mut self.wire).unwrap();
                }
                self.incoming.extend_from_slice(&self.wire);
                self.wire.clear();
                if let Err(Failure::Server(e)) = self.server_read() {
                    self.server_error = Some(e);
                }
                return Err(Failure::Client(error));
            }
            self.drain_client();
        }
        Ok(())
    }
}
