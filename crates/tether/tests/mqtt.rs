//! MQTT over TLS against a real broker: rust-mqtt (no_std, async) over
//! `tether::asynch::AsyncTlsSocket`, over real TCP on 127.0.0.1, to `mosquitto` (started by the
//! test through `testpeers::mosquitto`, killed by PID on drop) with a TLS listener that requires
//! client certificates from the test CA (made by `tether_pki`) and a plain listener beside it.
//!
//! - The client capped at TLS 1.2, then at TLS 1.3: connect, subscribe, publish (QoS 1),
//!   receive its own message, disconnect, close_notify; the negotiated version is asserted.
//! - A broker whose certificate comes from another CA is refused with the certificate category,
//!   before any MQTT byte is sent.
//! - Nothing in plaintext: a recording relay between client and broker sees only TLS records,
//!   never the client id, topic or payload; the broker's log shows no connection on the plain
//!   port. A control run over the plain port through a second relay shows that the same checks
//!   do see plaintext and plain-port connections when they happen.
//! - A client without a certificate is refused by the broker.
//!
//! A missing mosquitto fails the tests under `CI=true` and skips them elsewhere.

mod relay;
mod support;

use embedded_io_adapters::tokio_1::FromTokio;
use rust_mqtt::Bytes;
use rust_mqtt::buffer::AllocBuffer;
use rust_mqtt::client::Client;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, DisconnectOptions, PublicationOptions, SubscriptionOptions, TopicReference,
};
use rust_mqtt::types::{MqttString, TopicFilter, TopicName};
use testpeers::mosquitto::{Mosquitto, MosquittoOpts};
use testpeers::{free_port, skip_or_fail};
use tether::TlsVersion::{self, Tls12, Tls13};
use tether::asynch::AsyncTlsSocket;
use tether::net::StdClock;
use tether::{ClientConfig, Error};
use tokio::net::TcpStream;

use relay::{Relay, contains, tls_records};
use support::{BOTH, Pki, WAIT, only};

/// Two free ports, distinct.
fn two_ports() -> (u16, u16) {
    let a = free_port();
    loop {
        let b = free_port();
        if b != a {
            return (a, b);
        }
    }
}

/// A broker with a TLS listener (certificate from `pki`, client certificates from `pki`'s CA
/// required, TLS 1.2 minimum) and a plain listener.
fn broker(pki: &Pki) -> Mosquitto {
    let (tls_port, plain_port) = two_ports();
    Mosquitto::start(&MosquittoOpts {
        tls_port,
        plain_port: Some(plain_port),
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
        ca: pki.ca_pem.clone(),
        require_certificate: true,
        tls_version: Some("tlsv1.2".into()),
    })
    .unwrap()
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("the broker did not answer in time")
}

async fn tcp(port: u16) -> FromTokio<TcpStream> {
    let s = within(TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    FromTokio::new(s)
}

/// TLS to the broker (verified, with the device certificate), then handed to MQTT.
async fn tls(
    port: u16,
    config: &ClientConfig,
) -> Result<AsyncTlsSocket<FromTokio<TcpStream>, StdClock>, Error> {
    let mut sock = within(AsyncTlsSocket::connect(
        tcp(port).await,
        config,
        "localhost",
        StdClock::new(),
    ))
    .await?;
    // rust-mqtt writes a packet field by field and then flushes: one record per packet.
    sock.set_write_buffer(2048);
    Ok(sock)
}

/// The MQTT session of these tests over any embedded-io-async transport: CONNECT as
/// `client_id`, SUBSCRIBE to `topic`, PUBLISH `payload` at QoS 1, wait for both the PUBACK and
/// our own message, DISCONNECT. Returns the transport.
async fn pub_sub<N>(net: N, client_id: &str, topic: &str, payload: &[u8]) -> N
where
    N: embedded_io_async::Read + embedded_io_async::Write,
{
    let mut buffer = AllocBuffer;
    let mut client = Client::<'_, '_, N, _, 2, 2, 2, 1, 4, 0, 0>::new(&mut buffer);
    within(client.connect(
        net,
        &ConnectOptions::new().clean_start(),
        Some(MqttString::try_from(client_id).unwrap()),
    ))
    .await
    .unwrap();
    let topic = MqttString::try_from(topic).unwrap();
    within(client.subscribe(
        TopicFilter::new(topic.as_borrowed()).unwrap(),
        &SubscriptionOptions::new().at_least_once(),
    ))
    .await
    .unwrap();
    match within(client.poll()).await.unwrap() {
        Event::Suback(s) => assert!(s.reason_code.is_success(), "{s:?}"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let name = TopicName::new(topic.as_borrowed()).unwrap();
    within(client.publish(
        &PublicationOptions::new(TopicReference::Name(name)).at_least_once(),
        Bytes::from(payload),
    ))
    .await
    .unwrap();
    let (mut acked, mut received) = (false, false);
    while !(acked && received) {
        match within(client.poll()).await.unwrap() {
            Event::PublishAcknowledged(_) => acked = true,
            Event::Publish(p) => {
                assert_eq!(&*p.message, payload);
                received = true;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    within(client.disconnect(&DisconnectOptions::new()))
        .await
        .unwrap()
}

async fn over_tls(v: TlsVersion) {
    if !skip_or_fail("mosquitto") {
        return;
    }
    let pki = Pki::new();
    let broker = broker(&pki);
    // Capped: the broker accepts 1.2 and 1.3 (tls_version is a minimum in mosquitto 2).
    let config = pki.client_config(only(v), true);
    let sock = tls(broker.tls_port(), &config).await.unwrap();
    assert_eq!(sock.session().version(), Some(v));
    let payload = format!("hello over {v:?}");
    let mut sock = pub_sub(sock, "tether-device-1", "tether/test", payload.as_bytes()).await;
    within(sock.close()).await.unwrap();
    assert!(sock.session().is_close_sent());
    broker
        .wait_for_log("Client tether-device-1 disconnected.", WAIT)
        .unwrap();
    assert_eq!(broker.connections_on(broker.tls_port()), 1);
    assert_eq!(broker.connections_on(broker.plain_port().unwrap()), 0);
}

#[tokio::test]
async fn mqtt_over_tls12_to_mosquitto() {
    over_tls(Tls12).await;
}

#[tokio::test]
async fn mqtt_over_tls13_to_mosquitto() {
    over_tls(Tls13).await;
}

/// A broker whose certificate comes from another CA (with the same name): the TLS handshake
/// fails with the certificate category, so MQTT never starts; nothing reaches the plain port.
#[tokio::test]
async fn broker_from_another_ca_is_refused() {
    if !skip_or_fail("mosquitto") {
        return;
    }
    let pki = Pki::new();
    let other = Pki::with_ca_name("tether test CA");
    // The broker trusts our device CA but presents a certificate from the other CA.
    let (tls_port, plain_port) = two_ports();
    let broker = Mosquitto::start(&MosquittoOpts {
        tls_port,
        plain_port: Some(plain_port),
        cert: other.server.cert.clone(),
        key: other.server.key.clone(),
        ca: pki.ca_pem.clone(),
        require_certificate: true,
        tls_version: Some("tlsv1.2".into()),
    })
    .unwrap();
    for v in [Tls12, Tls13] {
        let config = pki.client_config(only(v), true);
        let err = tls(broker.tls_port(), &config)
            .await
            .err()
            .expect("a certificate from another CA must be refused");
        assert!(matches!(err, Error::Certificate(_)), "{v:?}: {err:?}");
        assert_eq!(err.category(), "certificate");
    }
    // Both attempts reached the TLS port and no client ever got as far as CONNECT.
    broker
        .wait_for_log("on port", WAIT)
        .expect("the broker logged the connections");
    assert!(
        !broker.log().contains("New client connected"),
        "{}",
        broker.log()
    );
    assert_eq!(broker.connections_on(broker.plain_port().unwrap()), 0);
}

/// The broker requires a client certificate: a client without one does not get an MQTT
/// session.
#[tokio::test]
async fn client_without_certificate_is_refused() {
    if !skip_or_fail("mosquitto") {
        return;
    }
    let pki = Pki::new();
    let broker = broker(&pki);
    for v in [Tls12, Tls13] {
        let config = pki.client_config(only(v), false);
        // TLS 1.2: the broker refuses during the handshake. TLS 1.3: the client's handshake
        // completes first and the broker's refusal arrives with the first read.
        match tls(broker.tls_port(), &config).await {
            Err(e) => assert!(matches!(e, Error::Handshake(_)), "{v:?}: {e:?}"),
            Ok(sock) => {
                assert_eq!(v, Tls13, "TLS 1.2 must fail in the handshake");
                let mut buffer = AllocBuffer;
                let mut client = Client::<'_, '_, _, _, 2, 2, 2, 1, 4, 0, 0>::new(&mut buffer);
                let r = within(client.connect(
                    sock,
                    &ConnectOptions::new().clean_start(),
                    Some(MqttString::try_from("no-cert").unwrap()),
                ))
                .await;
                assert!(r.is_err(), "CONNACK without a client certificate");
            }
        }
    }
    assert!(
        !broker.log().contains("New client connected"),
        "{}",
        broker.log()
    );
}

/// Nothing in plaintext: through a recording relay, the client id, topic and payload never
/// appear on the wire, both directions are nothing but TLS records, and the broker's log shows
/// no connection on its plain port. Then a control run over the plain port (through another
/// relay) shows the same checks do catch plaintext and plain-port connections.
#[tokio::test]
async fn nothing_is_sent_in_plaintext() {
    if !skip_or_fail("mosquitto") {
        return;
    }
    let pki = Pki::new();
    let broker = broker(&pki);
    let plain_port = broker.plain_port().unwrap();
    let (client_id, topic, payload) = (
        "secret-device-7f3a",
        "plant/7f3a/telemetry",
        b"temperature=21.5;secret=7f3a".as_slice(),
    );

    for v in [Tls12, Tls13] {
        let relay = Relay::start(broker.tls_port());
        let config = pki.client_config(only(v), true);
        let sock = tls(relay.port(), &config).await.unwrap();
        assert_eq!(sock.session().version(), Some(v));
        let mut sock = pub_sub(sock, client_id, topic, payload).await;
        within(sock.close()).await.unwrap();
        broker
            .wait_for_log(&format!("Client {client_id} disconnected."), WAIT)
            .unwrap();
        // The broker has everything we sent, so the relay has recorded it.
        let wire = relay.recorded();
        assert_eq!(wire.connections, 1);
        for (dir, bytes) in [
            ("to broker", &wire.to_server),
            ("to client", &wire.to_client),
        ] {
            let records = tls_records(bytes);
            assert!(records.len() > 3, "{v:?} {dir}: {records:?}");
            for secret in [client_id.as_bytes(), topic.as_bytes(), payload] {
                assert!(
                    !contains(bytes, secret),
                    "{v:?} {dir}: {:?} crossed the wire in clear",
                    String::from_utf8_lossy(secret)
                );
            }
        }
        assert_eq!(broker.connections_on(plain_port), 0, "{}", broker.log());
    }
    assert_eq!(broker.connections_on(broker.tls_port()), 2);

    // Control: the same session over the plain listener is visible to both checks.
    let relay = Relay::start(plain_port);
    let mut net = pub_sub(tcp(relay.port()).await, client_id, topic, payload).await;
    embedded_io_async::Write::flush(&mut net).await.unwrap();
    broker
        .wait_for_log(&format!("on port {plain_port}."), WAIT)
        .unwrap();
    // Our own message came back through the relay, so all of it was recorded.
    let wire = relay.recorded();
    assert!(contains(&wire.to_server, payload));
    assert!(contains(&wire.to_server, client_id.as_bytes()));
    assert!(contains(&wire.to_server, topic.as_bytes()));
    assert_eq!(broker.connections_on(plain_port), 1);
}

/// The negotiated versions above are the client's cap, not a fallback: a client allowing both
/// gets TLS 1.3 from this broker.
#[tokio::test]
async fn uncapped_client_gets_tls13() {
    if !skip_or_fail("mosquitto") {
        return;
    }
    let pki = Pki::new();
    let broker = broker(&pki);
    let sock = tls(broker.tls_port(), &pki.client_config(BOTH, true))
        .await
        .unwrap();
    assert_eq!(sock.session().version(), Some(Tls13));
    let mut sock = pub_sub(sock, "tether-device-2", "tether/both", b"both").await;
    within(sock.close()).await.unwrap();
}
