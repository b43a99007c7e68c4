//! MQTT over TLS with client certificates: rust-mqtt (no_std, async) over
//! `tether::asynch::AsyncTlsSocket`, the flow of an ESP32-class device talking to a broker.
//!
//! ```text
//! cargo run -p tether --example mqtt_tls
//!     makes a throwaway CA, broker and device certificates (tether_pki, what `tether pki` runs),
//!     starts mosquitto on 127.0.0.1 (TLS listener, client certificates required), then connects
//!     twice: capped at TLS 1.2, then at TLS 1.3.
//! cargo run -p tether --example mqtt_tls -- HOST:PORT CA.pem DEVICE.pem DEVICE.key [SERVER_NAME]
//!     the same against your broker.
//! ```
//!
//! The flow, per connection:
//! 1. TCP connect (here tokio, seen through `embedded_io_adapters::tokio_1::FromTokio`; on a
//!    device, the network stack's socket).
//! 2. `AsyncTlsSocket::connect`: the TLS handshake, the broker's certificate verified against
//!    the CA and the name, our device certificate presented. Any failure is a categorised
//!    `tether::Error` (certificate, version, handshake...) and the program stops: there is no
//!    plaintext fallback, in this example or in tether.
//! 3. The TLS socket is an `embedded_io_async::{Read, Write}` transport: rust-mqtt's `Client`
//!    takes it. CONNECT, SUBSCRIBE, PUBLISH (QoS 1), receive our own message, DISCONNECT.
//! 4. `close()` sends close_notify.

use std::net::ToSocketAddrs;
use std::process::ExitCode;

use embedded_io_adapters::tokio_1::FromTokio;
use rust_mqtt::Bytes;
use rust_mqtt::buffer::AllocBuffer;
use rust_mqtt::client::Client;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, DisconnectOptions, PublicationOptions, SubscriptionOptions, TopicReference,
};
use rust_mqtt::types::{MqttString, TopicFilter, TopicName};
use tether::asynch::AsyncTlsSocket;
use tether::net::StdClock;
use tether::{ClientConfig, Identity, TlsVersion, Trust};
use tokio::net::TcpStream;

type Failure = Box<dyn std::error::Error>;

/// One MQTT session over TLS. Returns the negotiated TLS version.
async fn session(
    addr: &str,
    server_name: &str,
    config: &ClientConfig,
    client_id: &str,
) -> Result<TlsVersion, Failure> {
    let sockaddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let tcp = TcpStream::connect(sockaddr).await?;
    tcp.set_nodelay(true)?;

    // 2. TLS, verified. An error here ends the program: no fallback.
    let mut tls =
        AsyncTlsSocket::connect(FromTokio::new(tcp), config, server_name, StdClock::new()).await?;
    // rust-mqtt writes a packet field by field, then flushes: gather each packet in one record.
    tls.set_write_buffer(2048);
    let version = tls.session().version().ok_or("no version negotiated")?;
    println!(
        "  TLS {version:?} with {server_name}, suite {:?}",
        tls.session().cipher_suite()
    );

    // 3. MQTT over the TLS socket.
    let mut buffer = AllocBuffer;
    let mut client = Client::<'_, '_, _, _, 2, 2, 2, 1, 4, 0, 0>::new(&mut buffer);
    let id = MqttString::try_from(client_id).map_err(|e| format!("client id: {e:?}"))?;
    client
        .connect(tls, &ConnectOptions::new().clean_start(), Some(id))
        .await
        .map_err(|e| format!("MQTT CONNECT: {e:?}"))?;
    println!("  MQTT connected as {client_id}");

    let topic = MqttString::try_from("tether/example").map_err(|e| format!("{e:?}"))?;
    let filter = TopicFilter::new(topic.as_borrowed()).ok_or("bad topic filter")?;
    client
        .subscribe(filter, &SubscriptionOptions::new().at_least_once())
        .await
        .map_err(|e| format!("SUBSCRIBE: {e:?}"))?;
    let payload = format!("hello over TLS {version:?}");
    let mut published = false;
    let (mut acked, mut received) = (false, false);
    while !(acked && received) {
        match client.poll().await.map_err(|e| format!("poll: {e:?}"))? {
            Event::Suback(_) if !published => {
                let name = TopicName::new(topic.as_borrowed()).ok_or("bad topic name")?;
                client
                    .publish(
                        &PublicationOptions::new(TopicReference::Name(name)).at_least_once(),
                        Bytes::from(payload.as_bytes()),
                    )
                    .await
                    .map_err(|e| format!("PUBLISH: {e:?}"))?;
                published = true;
                println!("  published {payload:?} to tether/example");
            }
            Event::PublishAcknowledged(_) => acked = true,
            Event::Publish(p) => {
                println!("  received {:?}", String::from_utf8_lossy(&p.message));
                received = true;
            }
            other => println!("  event {other:?}"),
        }
    }
    let mut tls = client
        .disconnect(&DisconnectOptions::new())
        .await
        .map_err(|e| format!("DISCONNECT: {e:?}"))?;

    // 4. close_notify.
    tls.close().await?;
    println!("  disconnected, close_notify sent");
    Ok(version)
}

fn config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    v: TlsVersion,
) -> Result<ClientConfig, tether::Error> {
    ClientConfig::builder(Trust::from_pem(ca_pem)?)
        .identity(Identity::from_pem(cert_pem, key_pem)?)
        // Capped at one version, to show both work; a device would allow 1.2 to 1.3.
        .versions(v, v)
        .build()
}

async fn run() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [addr, ca, cert, key, rest @ ..] = args.as_slice() {
        let server_name = match rest.first() {
            Some(n) => n.clone(),
            None => addr
                .rsplit_once(':')
                .map_or(addr.clone(), |(h, _)| h.to_string()),
        };
        let (ca, cert, key) = (
            std::fs::read(ca)?,
            std::fs::read(cert)?,
            std::fs::read(key)?,
        );
        for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
            println!("{addr}, client capped at {v:?}:");
            session(
                addr,
                &server_name,
                &config(&ca, &cert, &key, v)?,
                "tether-example",
            )
            .await?;
        }
        return Ok(());
    }
    if !args.is_empty() {
        return Err(
            "usage: mqtt_tls [HOST:PORT CA.pem DEVICE.pem DEVICE.key [SERVER_NAME]]".into(),
        );
    }

    // Self-contained: a throwaway PKI and a local mosquitto.
    use tether_pki::{Ca, IssueOptions, KeyKind};
    let dir = tempfile::tempdir()?;
    let ca = Ca::init(KeyKind::EcdsaP256, "example CA")?;
    let server = ca.issue_server(
        &["localhost".into(), "127.0.0.1".into()],
        &IssueOptions::default(),
    )?;
    let device = ca.issue_client("device-1", &IssueOptions::default())?;
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), ca.cert_pem())?;
    std::fs::write(path("server.pem"), &server.cert_pem)?;
    std::fs::write(path("server.key"), &server.key_pem)?;
    let broker = testpeers::mosquitto::Mosquitto::start(&testpeers::mosquitto::MosquittoOpts {
        tls_port: testpeers::free_port(),
        plain_port: None,
        cert: path("server.pem"),
        key: path("server.key"),
        ca: path("ca.pem"),
        require_certificate: true,
        tls_version: Some("tlsv1.2".into()),
    })
    .map_err(|e| format!("could not start mosquitto (apt-get install mosquitto): {e}"))?;
    let addr = format!("127.0.0.1:{}", broker.tls_port());
    for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
        println!("mosquitto at {addr} (client certificates required), client capped at {v:?}:");
        let cfg = config(
            ca.cert_pem().as_bytes(),
            device.cert_pem.as_bytes(),
            device.key_pem.as_bytes(),
            v,
        )?;
        let got = session(&addr, "localhost", &cfg, "tether-example").await?;
        assert_eq!(got, v);
    }
    // The broker is stopped (by PID) and its directory removed here.
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
