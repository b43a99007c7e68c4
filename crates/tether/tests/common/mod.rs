//! A deterministic in-memory client/server harness: two byte queues for wires, a simulated
//! clock, and helpers to run handshakes and move data (in the style of quinn's tests/util.rs).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tether::{
    ClientAuth, ClientConfig, Error, Identity, Instant, Recv, ServerConfig, Session, TimePolicy,
    TlsVersion, Trust, WallClock,
};

pub fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn identity(name: &str) -> Identity {
    Identity::from_pem(&data(&format!("{name}.pem")), &data(&format!("{name}.key"))).unwrap()
}

pub fn ca_trust() -> Trust {
    Trust::from_pem(&data("ca.pem")).unwrap()
}

pub fn server_config(versions: (TlsVersion, TlsVersion), mtls: bool) -> ServerConfig {
    let mut b = ServerConfig::builder(identity("server")).versions(versions.0, versions.1);
    if mtls {
        b = b.client_auth(ClientAuth::Required(ca_trust()));
    }
    b.build().unwrap()
}

pub fn client_config(versions: (TlsVersion, TlsVersion), mtls: bool) -> ClientConfig {
    let mut b = ClientConfig::builder(ca_trust()).versions(versions.0, versions.1);
    if mtls {
        b = b.identity(identity("client"));
    }
    b.build().unwrap()
}

pub const BOTH: (TlsVersion, TlsVersion) = (TlsVersion::Tls12, TlsVersion::Tls13);
pub const V12: (TlsVersion, TlsVersion) = (TlsVersion::Tls12, TlsVersion::Tls12);
pub const V13: (TlsVersion, TlsVersion) = (TlsVersion::Tls13, TlsVersion::Tls13);

/// A fixed wall clock.
#[derive(Debug)]
pub struct FixedClock(pub u64);
impl WallClock for FixedClock {
    fn unix_seconds(&self) -> Option<u64> {
        Some(self.0)
    }
}

pub fn clock_at(unix: u64) -> TimePolicy {
    TimePolicy::Clock(Arc::new(FixedClock(unix)))
}

/// A client and a server session joined by two in-memory wires.
pub struct Pair {
    pub client: Session,
    pub server: Session,
    pub now: Instant,
    /// Bytes in flight client -> server and server -> client.
    pub c2s: Vec<u8>,
    pub s2c: Vec<u8>,
    /// Application data each side received.
    pub client_got: Vec<u8>,
    pub server_got: Vec<u8>,
    /// Bytes the server has sent in all (handshake, tickets, records).
    pub server_sent: usize,
}

impl Pair {
    pub fn new(client: &ClientConfig, name: &str, server: &ServerConfig) -> Pair {
        let now = Instant::from_millis(1_000);
        Pair {
            client: Session::client(client, name, now).unwrap(),
            server: Session::server(server, now).unwrap(),
            now,
            c2s: Vec::new(),
            s2c: Vec::new(),
            client_got: Vec::new(),
            server_got: Vec::new(),
            server_sent: 0,
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    fn pull(session: &mut Session, wire: &mut Vec<u8>) {
        let mut buf = [0u8; 4096];
        loop {
            let n = session.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            wire.extend_from_slice(&buf[..n]);
        }
    }

    /// Moves all pending bytes both ways once; returns whether anything moved and the first
    /// error (client's, then server's).
    pub fn step(&mut self) -> (bool, Result<(), Error>) {
        Self::pull(&mut self.client, &mut self.c2s);
        Self::pull(&mut self.server, &mut self.s2c);
        let moved = !self.c2s.is_empty() || !self.s2c.is_empty();
        let c2s = std::mem::take(&mut self.c2s);
        let s2c = std::mem::take(&mut self.s2c);
        self.server_sent += s2c.len();
        let rs = self.server.handle_input(self.now, &c2s);
        let rc = self.client.handle_input(self.now, &s2c);
        Self::drain(&mut self.client, &mut self.client_got);
        Self::drain(&mut self.server, &mut self.server_got);
        (moved, rc.and(rs))
    }

    fn drain(s: &mut Session, into: &mut Vec<u8>) {
        if s.is_handshaking() || s.is_failed() {
            return;
        }
        let mut buf = [0u8; 1000];
        while let Ok(Recv::Data(n)) = s.recv(&mut buf) {
            into.extend_from_slice(&buf[..n]);
        }
    }

    /// Runs until nothing moves; returns the first error seen.
    pub fn run(&mut self) -> Result<(), Error> {
        let mut first_err = Ok(());
        for _ in 0..100 {
            let (moved, r) = self.step();
            if first_err.is_ok() {
                first_err = r;
            }
            if !moved {
                break;
            }
        }
        first_err
    }

    pub fn handshake(&mut self) -> Result<(), Error> {
        self.run()?;
        assert!(!self.client.is_handshaking(), "client still handshaking");
        assert!(!self.server.is_handshaking(), "server still handshaking");
        Ok(())
    }

    pub fn client_send(&mut self, data: &[u8]) {
        send_all(&mut self.client, data, &mut self.c2s);
    }

    pub fn server_send(&mut self, data: &[u8]) {
        send_all(&mut self.server, data, &mut self.s2c);
    }
}

/// Everything `s` has queued to send.
pub fn take_output(s: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.poll_transmit(&mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

pub fn send_all(s: &mut Session, mut data: &[u8], wire: &mut Vec<u8>) {
    let mut out = vec![0u8; 17 * 1024];
    while !data.is_empty() {
        let sent = s.send(data, &mut out).unwrap();
        wire.extend_from_slice(&out[..sent.written]);
        data = &data[sent.consumed..];
    }
}
