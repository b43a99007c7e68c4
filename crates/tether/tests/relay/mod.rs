//! A recording TCP relay for the device-side tests (`tests/asynch.rs`, `tests/mqtt.rs`): it
//! sits between a client and a server on 127.0.0.1, forwards bytes both ways unchanged, and
//! keeps a copy of everything each side sent, so a test can look at the wire (TLS records, no
//! plaintext). Its threads stop when the relay is dropped (even when the test panics): the
//! listener is polled with a stop flag, and the forwarding threads end when either side closes
//! or the relay shuts their sockets down.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What crossed the relay, per direction, over all connections.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Bytes from the clients to the server.
    pub to_server: Vec<u8>,
    /// Bytes from the server to the clients.
    pub to_client: Vec<u8>,
    /// Connections accepted.
    pub connections: usize,
}

/// A relay from a free port on 127.0.0.1 to `127.0.0.1:target`.
pub struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    recorded: Arc<Mutex<Recorded>>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
    forwarders: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    pub fn start(target: u16) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let forwarders = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stop, recorded, sockets, forwarders) = (
                Arc::clone(&stop),
                Arc::clone(&recorded),
                Arc::clone(&sockets),
                Arc::clone(&forwarders),
            );
            thread::Builder::new()
                .name("relay-accept".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let client = match listener.accept() {
                            Ok((c, _)) => c,
                            Err(_) => {
                                thread::sleep(Duration::from_millis(5));
                                continue;
                            }
                        };
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        lock(&recorded).connections += 1;
                        {
                            let mut s = lock(&sockets);
                            s.push(client.try_clone().unwrap());
                            s.push(server.try_clone().unwrap());
                        }
                        let up = forward(
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            Arc::clone(&recorded),
                            true,
                        );
                        let down = forward(server, client, Arc::clone(&recorded), false);
                        lock(&forwarders).extend([up, down]);
                    }
                })
                .unwrap()
        };
        Relay {
            port,
            stop,
            recorded,
            sockets,
            acceptor: Some(acceptor),
            forwarders,
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A copy of what crossed so far.
    pub fn recorded(&self) -> Recorded {
        let r = lock(&self.recorded);
        Recorded {
            to_server: r.to_server.clone(),
            to_client: r.to_client.clone(),
            connections: r.connections,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    recorded: Arc<Mutex<Recorded>>,
    to_server: bool,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("relay-forward".into())
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                {
                    let mut r = lock(&recorded);
                    let v = if to_server {
                        &mut r.to_server
                    } else {
                        &mut r.to_client
                    };
                    v.extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            // Pass the close on (half-close, so the other direction can finish).
            let _ = to.shutdown(Shutdown::Write);
        })
        .unwrap()
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for s in lock(&self.sockets).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        for f in lock(&self.forwarders).drain(..) {
            let _ = f.join();
        }
    }
}

/// The TLS records in a byte stream: (content type, length). Fails on a stream that is not
/// a sequence of TLS records (which would mean something else crossed the wire).
pub fn tls_records(mut bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 5, "a partial record header: {bytes:?}");
        let (ty, version, len) = (
            bytes[0],
            u16::from_be_bytes([bytes[1], bytes[2]]),
            usize::from(u16::from_be_bytes([bytes[3], bytes[4]])),
        );
        assert!(
            (20..=23).contains(&ty),
            "not a TLS record: content type {ty}"
        );
        assert!(
            (0x0301..=0x0303).contains(&version),
            "not a TLS record: version {version:#06x}"
        );
        assert!(bytes.len() >= 5 + len, "a partial record");
        out.push((ty, len));
        bytes = &bytes[5 + len..];
    }
    out
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
