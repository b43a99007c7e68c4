//! `tether::smoltcp` over two real smoltcp stacks wired in memory (Ethernet frames through
//! queues, ARP included), each driven by its own thread with `now_ms` / `sleep_ms` callbacks:
//! a tether server over smoltcp and a tether client over smoltcp. Verified TLS 1.3 echo,
//! close_notify seen by the peer, a large transfer over a link that loses frames, TCP refused /
//! unanswered / unaddressable, a rejected certificate, a pin, truncation, a reset, read and
//! write timeouts, non-blocking reads.
//!
//! Every thread is joined; every wait has a deadline (a broken adapter fails a test, it does
//! not hang it).

#![cfg(feature = "smoltcp")]

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use tether::error::{CertificateError, Timeout, TransportError};
use tether::smoltcp::{Stack, TcpTransport, TlsStream};
use tether::socket::{TlsSocket, Transport};
use tether::{ClientConfig, Error, Identity, ServerConfig, TimePolicy, TlsVersion, Trust};

const CA: &[u8] = include_bytes!("data/ca.pem");
const OTHER_CA: &[u8] = include_bytes!("data/other-ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("data/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("data/server.key");

const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const PORT: u16 = 4433;
/// The bound of every wait in these tests.
const WAIT_MS: u64 = 20_000;

// ---------------------------------------------------------------------------------------------
// An Ethernet wire in memory.

/// Frames travelling one way, with a condition variable so that `sleep_ms` returns when one
/// arrives (what a device's network interrupt does).
#[derive(Default)]
struct Queue {
    frames: Mutex<VecDeque<Vec<u8>>>,
    arrived: Condvar,
}

impl Queue {
    fn push(&self, frame: Vec<u8>) {
        self.frames.lock().unwrap().push_back(frame);
        self.arrived.notify_all();
    }

    fn pop(&self) -> Option<Vec<u8>> {
        self.frames.lock().unwrap().pop_front()
    }

    /// Waits up to `ms` for a frame to be queued.
    fn wait(&self, ms: u64) {
        let frames = self.frames.lock().unwrap();
        if frames.is_empty() {
            let _ = self
                .arrived
                .wait_timeout(frames, Duration::from_millis(ms))
                .unwrap();
        }
    }
}

/// One end of the wire. Received frames whose number (from 0) is in `lose` are dropped.
struct Port {
    rx: Arc<Queue>,
    tx: Arc<Queue>,
    lose: &'static [usize],
    received: usize,
}

fn wire() -> (Port, Port) {
    let (a, b) = (Arc::new(Queue::default()), Arc::new(Queue::default()));
    (
        Port {
            rx: Arc::clone(&a),
            tx: Arc::clone(&b),
            lose: &[],
            received: 0,
        },
        Port {
            rx: b,
            tx: a,
            lose: &[],
            received: 0,
        },
    )
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a Queue);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl Device for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        loop {
            let frame = self.rx.pop()?;
            self.received += 1;
            if !self.lose.contains(&(self.received - 1)) {
                return Some((Rx(frame), Tx(&self.tx)));
            }
        }
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(&self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

// ---------------------------------------------------------------------------------------------
// Stacks.

type Clock = fn() -> u64;

fn now_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap()
}

type Sleep = Box<dyn FnMut(u64) + Send>;
type TestStack<D> = Stack<'static, D, Clock, Sleep>;
type TestTls<'n, D> = TlsStream<'n, 'static, D, Clock, Sleep>;

/// A stack on `device` with `ip` (or no address), one TCP socket with `buf`-byte buffers, and
/// a `sleep_ms` that wakes on the next frame for `rx`.
fn stack<D: Device>(
    mut device: D,
    rx: Arc<Queue>,
    mac: u8,
    ip: Option<Ipv4Address>,
    buf: usize,
) -> (TestStack<D>, SocketHandle) {
    let mut config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, mac]).into());
    config.random_seed = u64::from(mac).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::from_millis(0));
    if let Some(ip) = ip {
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap();
        });
    }
    let mut sockets = SocketSet::new(Vec::new());
    let handle = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buf]),
        tcp::SocketBuffer::new(vec![0; buf]),
    ));
    let sleep: Sleep = Box::new(move |ms: u64| rx.wait(ms));
    (
        Stack::new(iface, device, sockets, now_ms as Clock, sleep),
        handle,
    )
}

fn client_config(trust: Trust) -> ClientConfig {
    ClientConfig::builder(trust)
        .versions(TlsVersion::Tls13, TlsVersion::Tls13)
        .time_policy(TimePolicy::IgnoreValidityTime)
        .handshake_timeout(Duration::from_millis(WAIT_MS))
        .build()
        .unwrap()
}

fn ca_trust() -> Trust {
    Trust::from_pem(CA).unwrap()
}

fn server_config() -> ServerConfig {
    ServerConfig::builder(Identity::from_pem(SERVER_CERT, SERVER_KEY).unwrap())
        .handshake_timeout(Duration::from_millis(WAIT_MS))
        .build()
        .unwrap()
}

/// What the server thread saw.
#[derive(Debug)]
struct ServerReport {
    /// Plaintext received before the end.
    received: Vec<u8>,
    /// How reading ended: `Ok(())` on close_notify, else the error.
    end: Result<(), Error>,
}

/// Reads until close_notify or an error.
fn read_to_end<D: Device>(tls: &mut TestTls<'_, D>) -> ServerReport {
    let mut received = Vec::new();
    let mut buf = [0u8; 1500];
    let end = loop {
        match tls.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    ServerReport { received, end }
}

/// Runs a smoltcp + tether server on `port` in a thread: accepts one connection, then `serve`.
fn server<F>(port: Port, serve: F) -> thread::JoinHandle<Result<ServerReport, Error>>
where
    F: FnOnce(&mut TestTls<'_, Port>) -> ServerReport + Send + 'static,
{
    thread::spawn(move || {
        let rx = Arc::clone(&port.rx);
        let (mut stack, handle) = stack(port, rx, 2, Some(SERVER_IP), 8192);
        let transport = TcpTransport::accept(&mut stack, handle, PORT, Some(WAIT_MS))?;
        let clock = transport.clock();
        let mut tls = TlsSocket::server(transport, &server_config(), clock)?;
        tls.set_io_timeout(Some(Duration::from_millis(WAIT_MS)));
        Ok(serve(&mut tls))
    })
}

/// A client stack on `port` (address 10.0.0.1, 4 KiB TCP buffers).
fn client_stack(port: Port) -> (TestStack<Port>, SocketHandle) {
    let rx = Arc::clone(&port.rx);
    stack(port, rx, 1, Some(CLIENT_IP), 4096)
}

/// TCP from `local_port` to the test server and a TLS handshake that trusts `config`'s roots.
fn connect<'n>(
    stack: &'n mut TestStack<Port>,
    handle: SocketHandle,
    config: &ClientConfig,
    local_port: u16,
) -> Result<TestTls<'n, Port>, Error> {
    tether::smoltcp::connect(
        stack,
        handle,
        config,
        "localhost",
        (SERVER_IP, PORT),
        local_port,
        WAIT_MS,
    )
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn tls13_echo_over_two_smoltcp_stacks_and_close_notify() {
    let (client_port, server_port) = wire();
    let server = server(server_port, |tls| {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while got.len() < 1024 {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    return ServerReport {
                        received: got,
                        end: Err(e),
                    };
                }
            }
        }
        if let Err(e) = tls.write_all(&got) {
            return ServerReport {
                received: got,
                end: Err(e),
            };
        }
        let mut rest = read_to_end(tls);
        got.append(&mut rest.received);
        ServerReport {
            received: got,
            end: rest.end,
        }
    });

    let (mut stack, handle) = client_stack(client_port);
    let config = client_config(ca_trust());
    let mut tls = connect(&mut stack, handle, &config, 49_152).unwrap();
    assert_eq!(tls.session().version(), Some(TlsVersion::Tls13));
    tls.set_io_timeout(Some(Duration::from_millis(WAIT_MS)));
    let data = pattern(1024);
    tls.write_all(&data).unwrap();
    let mut echoed = Vec::new();
    let mut buf = [0u8; 512];
    while echoed.len() < data.len() {
        let n = tls.read(&mut buf).unwrap();
        assert_ne!(n, 0, "the server closed before echoing everything");
        echoed.extend_from_slice(&buf[..n]);
    }
    assert_eq!(echoed, data);
    tls.close().unwrap();
    // After close: TCP is closing or closed, FIN acknowledged.
    let state = tls.transport_mut().state();
    assert!(
        matches!(
            state,
            tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed
        ),
        "{state}"
    );
    drop(tls);

    let report = server.join().unwrap().unwrap();
    assert_eq!(report.received, data);
    // The server's read ended with Ok(0): our close_notify arrived.
    assert_eq!(report.end, Ok(()));
}

#[test]
fn large_transfer_over_a_link_that_loses_frames() {
    let (client_port, server_port) = wire();
    const LEN: usize = 64 * 1024;
    // Frames lost on the way to the client (handshake, data, close) and to the server (the
    // client's handshake flight, ACKs): each is retransmitted by smoltcp (1 s minimum RTO).
    let mut client_port = client_port;
    client_port.lose = &[4, 9, 30, 31, 55];
    let mut server_port = server_port;
    server_port.lose = &[5, 20];
    let server = server(server_port, |tls| {
        // Retransmissions can take seconds: linger long enough on close.
        tls.transport_mut().set_close_timeout_ms(WAIT_MS);
        let data = pattern(LEN);
        match tls.write_all(&data).and_then(|()| tls.close()) {
            Ok(()) => ServerReport {
                received: Vec::new(),
                end: Ok(()),
            },
            Err(e) => ServerReport {
                received: Vec::new(),
                end: Err(e),
            },
        }
    });
    let (mut stack, handle) = client_stack(client_port);
    let config = client_config(ca_trust());
    let mut tls = connect(&mut stack, handle, &config, 49_153).unwrap();
    tls.set_io_timeout(Some(Duration::from_millis(WAIT_MS)));
    let report = read_to_end(&mut tls);
    assert_eq!(report.end, Ok(()), "ended by close_notify");
    assert!(report.received == pattern(LEN), "data intact");
    tls.close().unwrap();
    drop(tls);
    server.join().unwrap().unwrap().end.unwrap();
    // The frames were really lost: the client's device got past the last one.
    assert!(stack.device.received > 55, "{}", stack.device.received);
}

#[test]
fn tcp_refused_when_nothing_listens() {
    let (client_port, server_port) = wire();
    // A server stack that polls but has no listening socket: it answers SYN with RST.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let peer = thread::spawn(move || {
        let rx = Arc::clone(&server_port.rx);
        let (mut stack, _) = stack(server_port, rx, 2, Some(SERVER_IP), 1024);
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            stack.poll();
            stack.sleep(None);
        }
    });
    let (mut stack, handle) = client_stack(client_port);
    let err =
        TcpTransport::connect(&mut stack, handle, (SERVER_IP, PORT), 49_154, WAIT_MS).unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    peer.join().unwrap();
    let text = err.to_string();
    assert!(
        matches!(err, Error::Transport(TransportError::Other(_))),
        "{err:?}"
    );
    assert!(text.contains("refused"), "{text}");
    assert!(text.contains("10.0.0.2:4433"), "{text}");
}

#[test]
fn tcp_connect_times_out_when_nobody_answers() {
    // Frames go into a queue nobody reads.
    let (client_port, _unread) = wire();
    let (mut stack, handle) = client_stack(client_port);
    let err =
        TcpTransport::connect(&mut stack, handle, (SERVER_IP, PORT), 49_155, 300).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no answer within 300 ms"), "{text}");
    // The socket can be used again.
    assert_eq!(
        stack.sockets.get::<tcp::Socket>(handle).state(),
        tcp::State::Closed
    );
}

#[test]
fn tcp_connect_without_an_address_is_unaddressable() {
    let (client_port, _other) = wire();
    let rx = Arc::clone(&client_port.rx);
    let (mut stack, handle) = stack(client_port, rx, 1, None, 1024);
    let err =
        TcpTransport::connect(&mut stack, handle, (SERVER_IP, PORT), 49_156, 300).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("unaddressable"), "{text}");
    assert!(text.contains("DHCP"), "{text}");
}

#[test]
fn certificate_from_another_ca_is_rejected_and_no_data_flows() {
    let (client_port, server_port) = wire();
    let server = server(server_port, read_to_end);
    let (mut stack, handle) = client_stack(client_port);
    let config = client_config(Trust::from_pem(OTHER_CA).unwrap());
    let err = connect(&mut stack, handle, &config, 49_157).unwrap_err();
    assert_eq!(err, Error::Certificate(CertificateError::UnknownIssuer));
    // The client's stack keeps running so that its alert and the reset reach the server.
    let deadline = stack.now_ms() + 200;
    let _ = stack.wait_for(Some(deadline), |_| None::<()>);
    // The server never got application data: its handshake failed on our alert (unknown_ca),
    // which the transport sent before resetting the connection.
    let report = server.join().unwrap().unwrap();
    assert!(report.received.is_empty());
    assert_eq!(
        report.end,
        Err(Error::Handshake(
            tether::error::HandshakeError::AlertReceived(tether::error::Alert(48))
        )),
    );
}

#[test]
fn pinned_server_key_is_accepted_and_a_wrong_pin_is_not() {
    let cert = rustls_pki_types::pem::PemObject::from_pem_slice(SERVER_CERT).unwrap();
    let pin = tether::Pin::of_certificate(&cert).unwrap();
    for (trust, ok) in [
        (Trust::new().with_pin(pin), true),
        (
            Trust::new().with_pin(tether::Pin::of_spki(b"another key")),
            false,
        ),
    ] {
        let (client_port, server_port) = wire();
        let server = server(server_port, read_to_end);
        let (mut stack, handle) = client_stack(client_port);
        let config = client_config(trust);
        let err = match connect(&mut stack, handle, &config, 49_158) {
            Ok(mut tls) => {
                assert!(ok);
                tls.write_all(b"pinned").unwrap();
                tls.close().unwrap();
                None
            }
            Err(e) => Some(e),
        };
        match err {
            None => {
                let report = server.join().unwrap().unwrap();
                assert_eq!(report.received, b"pinned");
            }
            Some(e) => {
                assert!(!ok, "{e:?}");
                assert!(matches!(e, Error::PinMismatch { .. }), "{e:?}");
                let deadline = stack.now_ms() + 200;
                let _ = stack.wait_for(Some(deadline), |_| None::<()>);
                let _ = server.join().unwrap();
            }
        }
    }
}

#[test]
fn tcp_close_without_close_notify_is_truncation() {
    let (client_port, server_port) = wire();
    let server = server(server_port, |tls| {
        let r = tls.write_all(b"partial");
        // Close TCP only: no close_notify.
        tls.transport_mut().shutdown();
        ServerReport {
            received: Vec::new(),
            end: r,
        }
    });
    let (mut stack, handle) = client_stack(client_port);
    let config = client_config(ca_trust());
    let mut tls = connect(&mut stack, handle, &config, 49_159).unwrap();
    tls.set_io_timeout(Some(Duration::from_millis(WAIT_MS)));
    let report = read_to_end(&mut tls);
    assert_eq!(report.received, b"partial");
    assert_eq!(report.end, Err(Error::Truncated));
    drop(tls);
    server.join().unwrap().unwrap().end.unwrap();
}

#[test]
fn read_timeout_and_non_blocking_reads() {
    let (client_port, server_port) = wire();
    let server = server(server_port, read_to_end);
    let (mut stack, handle) = client_stack(client_port);
    let config = client_config(ca_trust());
    let mut tls = connect(&mut stack, handle, &config, 49_160).unwrap();
    let mut buf = [0u8; 64];
    // The server sends nothing: a blocking read ends at the I/O timeout.
    tls.set_io_timeout(Some(Duration::from_millis(100)));
    assert_eq!(tls.read(&mut buf), Err(Error::Timeout(Timeout::Io)));
    // Non-blocking: would-block at once, and the connection still works afterwards.
    tls.set_nonblocking(true).unwrap();
    let e = tls.read(&mut buf).unwrap_err();
    assert!(e.is_would_block(), "{e:?}");
    tls.set_nonblocking(false).unwrap();
    tls.set_io_timeout(Some(Duration::from_millis(WAIT_MS)));
    tls.write_all(b"still here").unwrap();
    tls.close().unwrap();
    drop(tls);
    let report = server.join().unwrap().unwrap();
    assert_eq!(report.received, b"still here");
    assert_eq!(report.end, Ok(()));
}

#[test]
fn a_peer_that_stops_reading_makes_writes_time_out() {
    let (client_port, server_port) = wire();
    // The server completes the handshake, then reads nothing until the client gives up.
    let server = server(server_port, |tls| {
        let mut buf = [0u8; 1];
        // One byte, then silence: the buffers fill up.
        let r = tls.read(&mut buf);
        let deadline = now_ms() + WAIT_MS;
        while tls.transport_mut().state() == tcp::State::Established && now_ms() < deadline {
            let stack = tls.transport_mut().stack();
            stack.poll();
            stack.sleep(Some(now_ms() + 10));
        }
        ServerReport {
            received: buf.to_vec(),
            end: r.map(|_| ()),
        }
    });
    let (mut stack, handle) = client_stack(client_port);
    let config = client_config(ca_trust());
    let mut tls = connect(&mut stack, handle, &config, 49_161).unwrap();
    tls.set_io_timeout(Some(Duration::from_millis(300)));
    let err = tls.write_all(&vec![7u8; 1 << 20]).unwrap_err();
    assert_eq!(err, Error::Timeout(Timeout::Io));
    drop(tls);
    let report = server.join().unwrap().unwrap();
    assert_eq!(report.end, Ok(()));
    assert_eq!(report.received, [7]);
}

#[test]
fn a_reset_from_the_peer_is_a_transport_error() {
    let (client_port, server_port) = wire();
    let server = server(server_port, |tls| {
        let r = tls.write_all(b"then a reset");
        // Abort the TCP connection under the TLS socket: a reset, no close_notify, no FIN.
        let handle = tls.transport_mut().handle();
        let stack = tls.transport_mut().stack();
        stack.sockets.get_mut::<tcp::Socket>(handle).abort();
        stack.poll();
        ServerReport {
            received: Vec::new(),
            end: r,
        }
    });
    let (mut stack, handle) = client_stack(client_port);
    let config = client_config(ca_trust());
    let mut tls = connect(&mut stack, handle, &config, 49_162).unwrap();
    tls.set_io_timeout(Some(Duration::from_millis(WAIT_MS)));
    server.join().unwrap().unwrap().end.unwrap();
    let report = read_to_end(&mut tls);
    assert_eq!(report.end, Err(Error::Transport(TransportError::Reset)));
}

#[test]
fn a_write_right_after_the_handshake_leaves_without_waiting_for_an_ack() {
    let (client_port, server_port) = wire();
    let server = server(server_port, |tls| {
        let mut received = Vec::new();
        let mut buf = [0u8; 64];
        let end = loop {
            if received.len() >= 5 {
                break Ok(());
            }
            match tls.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        ServerReport { received, end }
    });
    let (mut stack, handle) = client_stack(client_port);
    let config = client_config(ca_trust());
    let mut tls = connect(&mut stack, handle, &config, 49_163).unwrap();
    // The client's Finished is not acknowledged yet. The write's record leaves during the
    // write (no Nagle delay behind the Finished), although the client's stack is not polled
    // again until the server has it.
    tls.write_all(b"hello").unwrap();
    let report = server.join().unwrap().unwrap();
    assert_eq!(report.end, Ok(()));
    assert_eq!(report.received, b"hello");
}
