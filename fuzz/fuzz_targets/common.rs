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
        // Whatever came before, a driver is told to read something: a chunk, or what a larger
        // record lacks, never past the largest record TLS allows.
        let size = session.read_size(1024);
        assert!((1..=18_437).contains(&size), "read_size(1024) = {size}");
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

pub fn dtls_server_config() -> &'static tether::dtls::ServerConfig {
    static C: OnceLock<tether::dtls::ServerConfig> = OnceLock::new();
    C.get_or_init(|| {
        tether::dtls::ServerConfig::builder(Identity::from_pem(CERT, KEY).unwrap())
            .versions(
                tether::dtls::DtlsVersion::Dtls12,
                tether::dtls::DtlsVersion::Dtls13,
            )
            .client_auth(ClientAuth::Required(Trust::from_pem(CA).unwrap()))
            .build()
            .unwrap()
    })
}

/// Splits `data` into datagrams: each starts with a length byte (0 to 255 bytes follow).
pub fn datagrams(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    core::iter::from_fn(move || {
        let (&len, tail) = data.split_first()?;
        let n = usize::from(len).min(tail.len());
        let (d, rest) = tail.split_at(n);
        data = rest;
        Some(d)
    })
}

/// Feeds hostile datagrams into a DTLS session, moving its clock and timers along: no panic in
/// the engine (`guarded` would report one as "failed internally"), never Connected, never data.
pub fn feed_dtls<'a>(
    mut session: tether::dtls::Session,
    datagrams: impl Iterator<Item = &'a [u8]>,
) {
    let mut buf = [0u8; 2048];
    for (i, d) in datagrams.enumerate() {
        let now = Instant::from_millis(i as u64 * 50);
        let r = session.handle_datagram(now, d);
        if let Err(tether::Error::Protocol(m)) = &r {
            assert!(!m.contains("internally"), "dimpl panicked: {m}");
        }
        if session.poll_timeout().is_some_and(|t| t <= now) {
            let _ = session.handle_timeout(now);
        }
        while session.pop_datagram().is_some() {}
        assert!(session.is_handshaking() || session.is_failed());
        while let Some(e) = session.poll_event() {
            assert_ne!(e, tether::Event::Connected);
        }
        assert!(!matches!(session.recv(&mut buf), Ok(Recv::Data(_))));
    }
}

/// A DTLS client config for a version range.
pub fn dtls_client_config_for(
    min: tether::dtls::DtlsVersion,
    max: tether::dtls::DtlsVersion,
) -> &'static tether::dtls::ClientConfig {
    static C12: OnceLock<tether::dtls::ClientConfig> = OnceLock::new();
    static C13: OnceLock<tether::dtls::ClientConfig> = OnceLock::new();
    let cell = if max == tether::dtls::DtlsVersion::Dtls12 {
        &C12
    } else {
        &C13
    };
    cell.get_or_init(|| {
        tether::dtls::ClientConfig::builder(Trust::from_pem(CA).unwrap())
            .versions(min, max)
            .build()
            .unwrap()
    })
}

/// `original` changed by `ops`, three bytes per change: a position (big-endian, modulo the
/// length), then a value XORed in there; a zero value cuts the bytes at that position instead.
pub fn changed(original: &[u8], ops: &[u8]) -> Vec<u8> {
    let mut out = original.to_vec();
    for op in ops.chunks_exact(3) {
        if out.is_empty() {
            break;
        }
        let at = usize::from(u16::from_be_bytes([op[0], op[1]])) % out.len();
        match op[2] {
            0 => out.truncate(at),
            v => out[at] ^= v,
        }
    }
    out
}
