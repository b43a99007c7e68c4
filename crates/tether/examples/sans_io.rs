//! The simplest use of the core: a client and a server `Session` in one process, joined by two
//! in-memory "wires". No sockets, no threads, no clock: time is passed in.
//!
//! Run: `cargo run -p tether --example sans_io`

use tether::{ClientConfig, Event, Identity, Instant, Recv, ServerConfig, Session, Trust};

const CA: &[u8] = include_bytes!("../tests/data/ca.pem");
const CERT: &[u8] = include_bytes!("../tests/data/server.pem");
const KEY: &[u8] = include_bytes!("../tests/data/server.key");

fn main() -> Result<(), tether::Error> {
    let server_config = ServerConfig::builder(Identity::from_pem(CERT, KEY)?).build()?;
    let client_config = ClientConfig::builder(Trust::from_pem(CA)?).build()?;

    let mut now = Instant::ZERO;
    let mut client = Session::client(&client_config, "localhost", now)?;
    let mut server = Session::server(&server_config, now)?;
    let mut wire = vec![0u8; 20 * 1024];

    // Move bytes both ways until both sides are connected.
    while client.is_handshaking() || server.is_handshaking() {
        let n = client.poll_transmit(&mut wire);
        server.handle_input(now, &wire[..n])?;
        let n = server.poll_transmit(&mut wire);
        client.handle_input(now, &wire[..n])?;
        now = Instant::from_millis(now.as_millis() + 1);
    }
    assert_eq!(client.poll_event(), Some(Event::Connected));
    println!(
        "connected: {:?}, {:?}, {:?}",
        client.version(),
        client.cipher_suite(),
        client.kx_group()
    );

    // Application data is encrypted straight into the caller's buffer.
    let sent = client.send(b"hello over TLS", &mut wire)?;
    server.handle_input(now, &wire[..sent.written])?;
    let mut buf = [0u8; 64];
    if let Recv::Data(n) = server.recv(&mut buf)? {
        println!("server got {:?}", String::from_utf8_lossy(&buf[..n]));
    }

    // A clean close: close_notify, read as the end of the stream.
    server.close();
    let n = server.poll_transmit(&mut wire);
    client.handle_input(now, &wire[..n])?;
    assert_eq!(client.recv(&mut buf)?, Recv::Closed);
    println!("closed cleanly");
    Ok(())
}
