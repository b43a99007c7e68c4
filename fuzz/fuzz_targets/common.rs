//! Shared set-up for the session fuzz targets: configs built once from the test PKI.
// Each target uses part of this module.
#![allow(dead_code)]

use std::sync::OnceLock;

use tether::{ClientAuth, ClientConfig, Identity, Instant, Recv, ServerConfig, Session, Trust};

const CA: &[u8] = include_bytes!("../../crates/tether/tests/data/ca.pem");
const CERT: &[u8] = include_bytes!("../../crates/tether/tests/data/server.pem");
const KEY: &[u8] = include_bytes!("../../crates/tether/tests/data/server.key");

pub fn server_config() -> &'static ServerConfig {
    static C: OnceLock<ServerConfig> = OnceLock::new();
    C.get_or_init(|| {
        ServerConfig::builder(Identity::from_pem(CERT, KEY).unwrap())
            .client_auth(ClientAuth::Optional(Trust::from_pem(CA).unwrap()))
            .build()
            .unwrap()
    })
}

pub fn client_config() -> &'static ClientConfig {
    static C: OnceLock<ClientConfig> = OnceLock::new();
    C.get_or_init(|| {
        ClientConfig::builder(Trust::from_pem(CA).unwrap())
            .build()
            .unwrap()
    })
}

/// Feeds `data` in chunks whose sizes come from the data itself; application data must never
/// come out of a session fed hostile bytes.
pub fn feed(mut session: Session, data: &[u8]) {
    let mut out = vec![0u8; 32 * 1024];
    let mut buf = [0u8; 1024];
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        if session.handle_input(Instant::ZERO, chunk).is_err() {
            break;
        }
        let _ = session.poll_transmit(&mut out);
        assert!(!matches!(session.recv(&mut buf), Ok(Recv::Data(_))));
    }
    session.handle_eof();
    assert!(!matches!(session.recv(&mut buf), Ok(Recv::Data(_))));
}

/// A client config for one TLS version (true: 1.3, false: 1.2).
pub fn client_config_for(tls13: bool) -> &'static ClientConfig {
    static C13: OnceLock<ClientConfig> = OnceLock::new();
    static C12: OnceLock<ClientConfig> = OnceLock::new();
    let (cell, v) = if tls13 {
        (&C13, tether::TlsVersion::Tls13)
    } else {
        (&C12, tether::TlsVersion::Tls12)
    };
    cell.get_or_init(|| {
        ClientConfig::builder(Trust::from_pem(CA).unwrap())
            .versions(v, v)
            .build()
            .unwrap()
    })
}

/// Moves everything `from` has to send into `to`.
fn pump(from: &mut Session, to: &mut Session) -> bool {
    let mut buf = vec![0u8; 32 * 1024];
    let mut moved = false;
    loop {
        let n = from.poll_transmit(&mut buf);
        if n == 0 {
            return moved;
        }
        moved = true;
        to.handle_input(Instant::ZERO, &buf[..n]).unwrap();
    }
}

/// A client and a server with their handshake done and its leftovers (tickets) delivered.
pub fn established(tls13: bool) -> (Session, Session) {
    let mut c = Session::client(client_config_for(tls13), "localhost", Instant::ZERO).unwrap();
    let mut s = Session::server(server_config(), Instant::ZERO).unwrap();
    while pump(&mut c, &mut s) | pump(&mut s, &mut c) {}
    assert!(!c.is_handshaking() && !s.is_handshaking());
    (c, s)
}
