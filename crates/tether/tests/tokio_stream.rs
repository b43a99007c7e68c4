//! `tether::tokio::TlsStream` (feature `tokio`) over real TCP on 127.0.0.1: a tether client
//! against `openssl s_server` and a tether server against `openssl s_client` (TLS 1.2 and 1.3,
//! client certificates required), tether against tether with 1 MiB each way through
//! `tokio::io::copy`, close_notify as EOF, truncation, a certificate from another CA, and the
//! handshake timeout against a silent server.
//!
//! Every await that waits for a peer is bounded by `tokio::time::timeout(WAIT, ..)`, so a
//! broken peer fails the test instead of hanging it; OpenSSL peers are killed on drop.

mod support;

use std::io::ErrorKind;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use testpeers::{SServerOpts, skip_or_fail};
use tether::TlsVersion::{self, Tls12, Tls13};
use tether::error::{HandshakeError, Timeout};
use tether::tokio::{TlsStream, connect_named};
use tether::{ClientConfig, Error, ServerConfig};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
    ReadBuf,
};
use tokio::net::{TcpListener, TcpStream};

use support::{BOTH, Pki, VERSIONS, WAIT, only, peer_version};

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("the peer did not answer in time")
}

async fn listen() -> (TcpListener, u16) {
    let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

async fn connect(port: u16, config: &ClientConfig) -> Result<TlsStream<TcpStream>, Error> {
    within(connect_named(
        &format!("127.0.0.1:{port}"),
        "localhost",
        config,
    ))
    .await
}

async fn accept(listener: &TcpListener, config: &ServerConfig) -> TlsStream<TcpStream> {
    let (tcp, _) = within(listener.accept()).await.unwrap();
    within(TlsStream::accept(tcp, config)).await.unwrap()
}

/// The tether error inside an `io::Error` from the stream.
fn inner(e: &std::io::Error) -> &Error {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("no tether error in {e:?}"))
}

async fn client_to_openssl(v: TlsVersion) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, mut server) = pki.mtls_s_server(v);
    let config = pki.client_config(only(v), true);
    let mut tls = connect(port, &config).await.unwrap();
    assert_eq!(tls.session().version(), Some(v));
    assert_eq!(
        tls.session().peer_certificates().unwrap()[0].as_ref(),
        pki.server.der()
    );
    within(tls.write_all(b"hello over tokio\n")).await.unwrap();
    within(tls.flush()).await.unwrap();
    server.wait_for_output("hello over tokio", WAIT).unwrap();
    server.wait_for_output("CN = device-1", WAIT).unwrap();
    server.send_line("hello from openssl").unwrap();
    let mut lines = BufReader::new(tls);
    let mut line = String::new();
    within(lines.read_line(&mut line)).await.unwrap();
    assert_eq!(line, "hello from openssl\n");
    within(lines.into_inner().shutdown()).await.unwrap();
    // s_server prints DONE once the client's close_notify has arrived.
    server.wait_for_output("DONE", WAIT).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_client_to_openssl_tls12() {
    client_to_openssl(Tls12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_client_to_openssl_tls13() {
    client_to_openssl(Tls13).await;
}

async fn openssl_to_server(v: TlsVersion) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let config = pki.server_config(only(v), true);
    let (listener, port) = listen().await;
    let server = tokio::spawn(async move {
        let mut tls = accept(&listener, &config).await;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            assert_eq!(within(tls.read(&mut byte)).await.unwrap(), 1);
            line.push(byte[0]);
        }
        within(tls.write_all(b"tether got: ")).await.unwrap();
        within(tls.write_all(&line)).await.unwrap();
        within(tls.flush()).await.unwrap();
        let client_cert = tls.session().peer_certificates().unwrap()[0].to_vec();
        (
            String::from_utf8(line).unwrap(),
            tls.session().version(),
            client_cert,
        )
    });
    let mut client = pki.s_client(port, v, true);
    client
        .wait_for_output("Verify return code: 0 (ok)", WAIT)
        .unwrap();
    client.send_line("hello from s_client").unwrap();
    client
        .wait_for_output("tether got: hello from s_client", WAIT)
        .unwrap();
    let (line, version, cert) = within(server).await.unwrap();
    assert_eq!(line, "hello from s_client\n");
    assert_eq!(version, Some(v));
    assert_eq!(cert, pki.client.der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_to_tokio_server_tls12() {
    openssl_to_server(Tls12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_to_tokio_server_tls13() {
    openssl_to_server(Tls13).await;
}

/// tether to tether, client certificates required: 1 MiB each way, the server echoing through
/// `tokio::io::copy` over a split stream while the client writes in uneven pieces; then
/// close_notify each way, read as EOF (0 bytes) on both sides.
#[tokio::test]
async fn a_mebibyte_each_way_through_tokio_io_copy() {
    for v in VERSIONS {
        let pki = Pki::new();
        let server_config = pki.server_config(only(v), true);
        let (listener, port) = listen().await;
        let server = tokio::spawn(async move {
            let tls = accept(&listener, &server_config).await;
            let (mut r, mut w) = tokio::io::split(tls);
            // Until the client's close_notify: EOF for copy.
            let n = within(tokio::io::copy(&mut r, &mut w)).await.unwrap();
            within(w.shutdown()).await.unwrap();
            n
        });
        let config = pki.client_config(only(v), true);
        let tls = connect(port, &config).await.unwrap();
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (mut r, mut w) = tokio::io::split(tls);
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                let mut rest = &data[..];
                let mut step = 1;
                while !rest.is_empty() {
                    let n = within(w.write(&rest[..step.min(rest.len())]))
                        .await
                        .unwrap();
                    rest = &rest[n..];
                    step = step * 7 % 40_000 + 1;
                }
                within(w.shutdown()).await.unwrap();
            })
        };
        let mut back = Vec::new();
        within(r.read_to_end(&mut back)).await.unwrap();
        within(writer).await.unwrap();
        assert_eq!(back.len(), data.len(), "{v}");
        assert!(back == data, "{v}: the echo differs");
        assert_eq!(within(server).await.unwrap(), data.len() as u64);
    }
}

/// Full duplex through a pipe that holds 1,000 bytes, less than a record (`tokio::io::duplex`),
/// so that transport writes and reads wait all the time: each side split into a reading task
/// and a writing task
/// (the server echoing through `tokio::io::copy`), 256 KiB each way, on one thread and on
/// two. A read that wrote to the transport would take the writing task's wake-up and stall
/// both (bounded by the test's timeout).
#[test]
fn split_halves_in_separate_tasks_through_a_tiny_pipe() {
    for threads in [1, 2] {
        let rt = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(threads);
            b
        }
        .enable_all()
        .build()
        .unwrap();
        rt.block_on(async {
            let pki = Pki::new();
            for v in VERSIONS {
                let (a, b) = tokio::io::duplex(1000);
                let client_config = pki.client_config(only(v), true);
                let server_config = pki.server_config(only(v), true);
                // The server's handshake ends once its TLS 1.3 ticket is in the pipe, which
                // takes the client reading: a task of its own.
                let echo = tokio::spawn(async move {
                    let server = TlsStream::accept(b, &server_config).await.unwrap();
                    let (mut r, mut w) = tokio::io::split(server);
                    let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                    n
                });
                let client = within(TlsStream::connect(a, &client_config, "localhost"))
                    .await
                    .unwrap();
                let data: Vec<u8> = (0..256 * 1024).map(|i: u32| (i * 7 % 253) as u8).collect();
                let (mut r, mut w) = tokio::io::split(client);
                let writer = {
                    let data = data.clone();
                    tokio::spawn(async move {
                        for piece in data.chunks(3000) {
                            w.write_all(piece).await.unwrap();
                        }
                        w.shutdown().await.unwrap();
                    })
                };
                let mut back = Vec::new();
                within(r.read_to_end(&mut back)).await.unwrap();
                within(writer).await.unwrap();
                assert!(back == data, "{v}, {threads} thread(s): the echo differs");
                assert_eq!(within(echo).await.unwrap(), data.len() as u64);
            }
        });
    }
}

/// A transport that records the buffer each read offers, and counts the bytes read.
struct Recording<S> {
    inner: S,
    reads: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.reads.lock().unwrap().push(buf.remaining());
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.received
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The stream reads 16 KiB + 512 at a time unless the config sets a read chunk (a whole
/// record per read; the device sockets default to 4 KiB): after the handshake, whose records
/// a client reads one at a time, a client with the default config offers 16,896 bytes, with
/// `read_chunk(1024)` 1,024.
#[tokio::test]
async fn the_read_chunk_is_a_whole_record_unless_the_config_sets_one() {
    let pki = Pki::new();
    for (chunk, expect) in [(None, 16 * 1024 + 512), (Some(1024), 1024)] {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server_config = pki.server_config(BOTH, false);
        let server = tokio::spawn(async move {
            let tls = TlsStream::accept(b, &server_config).await.unwrap();
            serve_until_closed(tls).await
        });
        let mut builder = ClientConfig::builder(pki.trust());
        if let Some(c) = chunk {
            builder = builder.read_chunk(c);
        }
        let reads = std::sync::Arc::default();
        let io = Recording {
            inner: a,
            reads: std::sync::Arc::clone(&reads),
            received: std::sync::Arc::default(),
        };
        let mut tls = within(TlsStream::connect(
            io,
            &builder.build().unwrap(),
            "localhost",
        ))
        .await
        .unwrap();
        within(tls.shutdown()).await.unwrap();
        // The server's close_notify: a read of the established stream.
        let mut buf = [0u8; 64];
        assert_eq!(within(tls.read(&mut buf)).await.unwrap(), 0);
        within(server).await.unwrap();
        // The handshake's records each alone, 64 bytes first; then whole chunks.
        let reads = reads.lock().unwrap().clone();
        assert_eq!(reads[0], 64, "{chunk:?}: {reads:?}");
        let first = reads.iter().position(|&r| r == expect);
        assert!(
            first.is_some_and(|i| reads[..i].iter().all(|&r| r < 1024)),
            "{chunk:?}: {reads:?}"
        );
    }
}

/// Reads until close_notify, then sends its own.
async fn serve_until_closed<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = [0u8; 1024];
    while within(s.read(&mut buf)).await.unwrap() > 0 {}
    within(s.shutdown()).await.unwrap();
}

/// A server whose certificate comes from another CA (same name): the client's `connect`
/// fails with the certificate category; the server is told why with an alert.
#[tokio::test]
async fn other_ca_is_refused_with_a_certificate_error() {
    let pki = Pki::new();
    let other = Pki::with_ca_name("tether test CA");
    let server_config = other.server_config(BOTH, false);
    let (listener, port) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = within(listener.accept()).await.unwrap();
        within(TlsStream::accept(tcp, &server_config))
            .await
            .expect_err("the client must refuse")
    });
    let err = connect(port, &pki.client_config(BOTH, false))
        .await
        .expect_err("another CA's certificate must be refused");
    assert!(matches!(err, Error::Certificate(_)), "{err:?}");
    let server_err = within(server).await.unwrap();
    assert!(
        matches!(
            server_err,
            Error::Handshake(HandshakeError::AlertReceived(_))
        ),
        "{server_err:?}"
    );
    // The same failure through the handshake a first write runs: an io::Error carrying it.
    let (listener, port) = listen().await;
    let server_config = other.server_config(BOTH, false);
    let server = tokio::spawn(async move {
        let (tcp, _) = within(listener.accept()).await.unwrap();
        let _ = within(TlsStream::accept(tcp, &server_config)).await;
    });
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let config = pki.client_config(BOTH, false);
    let mut tls = TlsStream::client(tcp, &config, "localhost").unwrap();
    let err = within(tls.write_all(b"never sent")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(matches!(inner(&err), Error::Certificate(_)), "{err:?}");
    within(server).await.unwrap();
}

/// A peer that closes TCP without close_notify after sending data: the data, then an error
/// of kind `UnexpectedEof` carrying `Truncated` (never a clean EOF).
#[tokio::test]
async fn eof_without_close_notify_is_truncated() {
    let pki = Pki::new();
    let server_config = pki.server_config(BOTH, false);
    let (listener, port) = listen().await;
    let server = tokio::spawn(async move {
        let mut tls = accept(&listener, &server_config).await;
        within(tls.write_all(b"last words")).await.unwrap();
        within(tls.flush()).await.unwrap();
        // The TCP stream dropped without close_notify.
        drop(tls.into_parts());
    });
    let mut tls = connect(port, &pki.client_config(BOTH, false))
        .await
        .unwrap();
    let mut got = Vec::new();
    let err = within(tls.read_to_end(&mut got)).await.unwrap_err();
    assert_eq!(got, b"last words");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(inner(&err), &Error::Truncated);
    within(server).await.unwrap();
}

/// A server that accepts TCP and never answers: `connect` gives up at the config's handshake
/// timeout with `Timeout::Handshake`, not at the test's bound.
#[tokio::test]
async fn a_silent_server_fails_at_the_handshake_timeout() {
    let pki = Pki::new();
    let config = tether::ClientConfig::builder(pki.trust())
        .handshake_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let (listener, port) = listen().await;
    let holder = tokio::spawn(async move {
        let (tcp, _) = within(listener.accept()).await.unwrap();
        // Held open, silent, until the client has given up.
        let mut tcp = tcp;
        let mut buf = [0u8; 512];
        while within(tcp.read(&mut buf)).await.unwrap_or(0) > 0 {}
    });
    let start = std::time::Instant::now();
    let err = connect(port, &config).await.expect_err("must time out");
    let took = start.elapsed();
    assert_eq!(err, Error::Timeout(Timeout::Handshake));
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    within(holder).await.unwrap();
}

/// A client built with `read_chunk(1024)` (1 KiB at each record boundary, then what a larger
/// record lacks) gets every byte of a server's 16 KiB records.
#[tokio::test]
async fn a_small_read_chunk_still_reads_full_records() {
    let pki = Pki::new();
    let server_config = pki.server_config(BOTH, false);
    let (listener, port) = listen().await;
    let server = tokio::spawn(async move {
        let mut tls = accept(&listener, &server_config).await;
        within(tls.write_all(&[0x5a; 40_000])).await.unwrap();
        within(tls.shutdown()).await.unwrap();
    });
    let config = tether::ClientConfig::builder(pki.trust())
        .read_chunk(1024)
        .build()
        .unwrap();
    let mut tls = connect(port, &config).await.unwrap();
    let mut got = Vec::new();
    within(tls.read_to_end(&mut got)).await.unwrap();
    assert!(got.len() == 40_000 && got.iter().all(|&b| b == 0x5a));
    within(server).await.unwrap();
}

/// `tether::tokio::connect` with an address that is not `HOST:PORT`, and to a port nothing
/// listens on: each a clear error, at once.
#[tokio::test]
async fn connect_says_what_is_wrong_with_the_address() {
    let pki = Pki::new();
    let config = pki.client_config(BOTH, false);
    let err = tether::tokio::connect("localhost", &config)
        .await
        .expect_err("no port");
    assert!(err.to_string().contains("expected HOST:PORT"), "{err}");
    // A port that was free a moment ago: refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = within(tether::tokio::connect(
        &format!("127.0.0.1:{port}"),
        &config,
    ))
    .await
    .expect_err("nothing listens there");
    assert!(
        matches!(&err, Error::Transport(_)) && err.to_string().contains("cannot connect to"),
        "{err}"
    );
}

/// TLS 1.3: `openssl s_server` asks for a key update (`K`) three times. The stream reads on
/// under the server's new keys, and its own KeyUpdate, which the read queues but does not send
/// (a read never writes), goes out ahead of its next write: OpenSSL could not decrypt that
/// write otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_key_updates_are_answered_with_the_next_write() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, mut server) = pki.s_server(&SServerOpts {
        version: Some(peer_version(Tls13)),
        ..SServerOpts::default()
    });
    let config = pki.client_config(only(Tls13), false);
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let io = Recording {
        inner: tcp,
        reads: std::sync::Arc::default(),
        received: received.clone(),
    };
    let tls = within(TlsStream::connect(io, &config, "localhost"))
        .await
        .unwrap();
    let mut tls = BufReader::new(tls);
    // s_server takes commands once it has read from the client.
    within(tls.get_mut().write_all(b"before\n")).await.unwrap();
    within(tls.get_mut().flush()).await.unwrap();
    server.wait_for_output("before", WAIT).unwrap();
    let mut line = String::new();
    for round in 0..3 {
        // s_server drops what follows a command in the same read of its stdin: the next line
        // waits until the KeyUpdate has reached the stream (read while waiting for a line).
        let seen = received.load(std::sync::atomic::Ordering::SeqCst);
        server.send_line("K").unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while received.load(std::sync::atomic::Ordering::SeqCst) == seen {
            let r = tokio::time::timeout(Duration::from_millis(20), tls.read_line(&mut line)).await;
            assert!(
                r.is_err(),
                "round {round}: {r:?} while waiting for the KeyUpdate"
            );
            assert!(std::time::Instant::now() < deadline, "no KeyUpdate arrived");
        }
        server.send_line(&format!("after update {round}")).unwrap();
        within(tls.read_line(&mut line)).await.unwrap();
        assert_eq!(line, format!("after update {round}\n"));
        line.clear();
        let reply = format!("tether after update {round}\n");
        within(tls.get_mut().write_all(reply.as_bytes()))
            .await
            .unwrap();
        within(tls.get_mut().flush()).await.unwrap();
        server
            .wait_for_output(&format!("tether after update {round}"), WAIT)
            .unwrap();
    }
    within(tls.into_inner().shutdown()).await.unwrap();
    server.wait_for_output("DONE", WAIT).unwrap();
    assert!(
        !server.output_so_far().contains("ERROR"),
        "{}",
        server.output_so_far()
    );
}
