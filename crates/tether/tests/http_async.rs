//! HTTPS with a no_std async HTTP client: reqwless (HTTP/1.1 over any `embedded_io_async`
//! transport, its own TLS left out) over `tether::asynch::AsyncTlsSocket`, over real TCP on
//! 127.0.0.1, to nginx (started by the test through `testpeers::nginx`, killed by PID on drop)
//! serving a file with a certificate from the test CA (made by `tether_pki`).
//!
//! - TLS 1.2, then TLS 1.3: `GET /v1/models`, status 200, the whole body (larger than one
//!   record) byte for byte, close_notify; nginx logs both requests.
//! - An origin whose certificate comes from another CA (same names) is refused with the
//!   certificate category before any HTTP byte is sent: nginx logs no request.
//!
//! A missing nginx fails the tests under `CI=true` and skips them elsewhere.

mod support;

use embedded_io_adapters::tokio_1::FromTokio;
use reqwless::client::HttpConnection;
use reqwless::request::{Request, RequestBuilder as _};
use testpeers::nginx::{Nginx, Site};
use testpeers::{free_port, skip_or_fail};
use tether::TlsVersion::{self, Tls12, Tls13};
use tether::asynch::AsyncTlsSocket;
use tether::net::StdClock;
use tether::{ClientConfig, Error};
use tokio::net::TcpStream;

use support::{Pki, WAIT, only};

/// A JSON body of about 40 KB: more than two full TLS records.
fn models() -> Vec<u8> {
    let items: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"id":"model-{i:04}","object":"model"}}"#))
        .collect();
    format!(r#"{{"object":"list","data":[{}]}}"#, items.join(",")).into_bytes()
}

fn origin(pki_for_cert: &Pki, body: &[u8]) -> (Nginx, u16) {
    let port = free_port();
    let site = Site::new(
        "127.0.0.1",
        port,
        &pki_for_cert.server.cert,
        &pki_for_cert.server.key,
    )
    .file("/v1/models", "application/json", body);
    (Nginx::start(&site, None).unwrap(), port)
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("nginx did not answer in time")
}

async fn connect(
    port: u16,
    config: &ClientConfig,
) -> Result<AsyncTlsSocket<FromTokio<TcpStream>, StdClock>, Error> {
    let tcp = within(TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    within(AsyncTlsSocket::connect(
        FromTokio::new(tcp),
        config,
        "localhost",
        StdClock::new(),
    ))
    .await
}

/// `GET /v1/models` with reqwless over the TLS socket: (status, body). Closes with
/// close_notify.
async fn get_models(mut sock: AsyncTlsSocket<FromTokio<TcpStream>, StdClock>) -> (u16, Vec<u8>) {
    let mut rx = vec![0u8; 64 * 1024];
    let (status, body) = {
        // `Plain`: reqwless speaks HTTP only; the TLS is the socket's.
        let mut conn = HttpConnection::Plain(&mut sock);
        let request = Request::get("/v1/models").host("localhost").build();
        let response = within(conn.send(request, &mut rx)).await.unwrap();
        let status = response.status.0;
        let body = within(response.body().read_to_end()).await.unwrap();
        (status, body.to_vec())
    };
    within(sock.close()).await.unwrap();
    assert!(sock.session().is_close_sent());
    (status, body)
}

async fn https_get(v: TlsVersion) {
    if !skip_or_fail("nginx") {
        return;
    }
    let pki = Pki::new();
    let body = models();
    let (nginx, port) = origin(&pki, &body);
    let sock = connect(port, &pki.client_config(only(v), false))
        .await
        .unwrap();
    assert_eq!(sock.session().version(), Some(v));
    let (status, got) = get_models(sock).await;
    assert_eq!(status, 200);
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the body differs from the file nginx serves");
    let log = nginx.access_log();
    assert_eq!(log.matches("GET /v1/models").count(), 1, "{log}");
}

#[tokio::test]
async fn reqwless_get_over_tls12_to_nginx() {
    https_get(Tls12).await;
}

#[tokio::test]
async fn reqwless_get_over_tls13_to_nginx() {
    https_get(Tls13).await;
}

/// The origin presents a certificate from another CA with the same names: the handshake fails
/// with the certificate category, so reqwless never gets a socket and nginx sees no request.
#[tokio::test]
async fn origin_from_another_ca_is_refused_before_any_request() {
    if !skip_or_fail("nginx") {
        return;
    }
    let pki = Pki::new();
    let other = Pki::with_ca_name("tether test CA");
    let (nginx, port) = origin(&other, b"{}");
    for v in [Tls12, Tls13] {
        let Err(err) = connect(port, &pki.client_config(only(v), false)).await else {
            panic!("{v:?}: a certificate from another CA was accepted");
        };
        assert_eq!(err.category(), "certificate", "{v:?}: {err}");
    }
    let log = nginx.access_log();
    assert!(!log.contains("GET"), "{log}");
}
