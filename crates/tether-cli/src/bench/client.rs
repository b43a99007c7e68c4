//! The bench client's driver: one [`tether::Session`] over one tokio [`TcpStream`].
//!
//! The same approach as the gateway's driver: wait for readability, read straight into the
//! session's input buffer, write what the session queues. Failures are sorted into categories
//! for the error table (`connect`, `timeout`, `tls_<category>`, `io`, `closed`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tether::{Recv, Session};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};

use super::{Plan, now};

/// Bytes read from the socket at a time: a whole TLS record and some.
const READ_CHUNK: usize = 16 * 1024 + 512;
/// Largest plaintext per `Session::send` call, and the room its records need.
const SEND_CHUNK: usize = 16 * 1024;
const SEND_ROOM: usize = SEND_CHUNK + 64;
/// How long a close waits for the server's close_notify and FIN.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Why a connection failed: a category for the table and a message for a person.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub category: String,
    pub detail: String,
}

impl Failure {
    pub(crate) fn new(category: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            category: category.into(),
            detail: detail.into(),
        }
    }

    fn tls(e: &tether::Error) -> Failure {
        Failure::new(format!("tls_{}", e.category()), e.to_string())
    }

    pub(crate) fn io(what: &str, e: &io::Error) -> Failure {
        Failure::new(
            match e.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => "reset",
                _ => "io",
            },
            format!("{what}: {e}"),
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.category)
    }
}

/// Opens a TCP connection to `addr`, from `source` when given.
pub(crate) async fn tcp_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, Failure> {
    let fail = |e: io::Error| {
        Failure::new(
            match e.kind() {
                io::ErrorKind::ConnectionRefused => "connect_refused",
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => "connect_no_port",
                _ if e.raw_os_error() == Some(24) => "connect_no_descriptor",
                _ => "connect",
            },
            format!("TCP connect to {addr}: {e}"),
        )
    };
    let tcp = match source {
        None => TcpStream::connect(addr).await.map_err(fail)?,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4(),
                IpAddr::V6(_) => TcpSocket::new_v6(),
            }
            .map_err(fail)?;
            socket.bind(SocketAddr::new(ip, 0)).map_err(fail)?;
            socket.connect(addr).await.map_err(fail)?
        }
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// A TLS client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    tcp: TcpStream,
    session: Session,
}

impl Conn {
    /// TCP connect and TLS handshake, within the plan's timeout.
    pub(crate) async fn open(plan: &Plan, source: Option<IpAddr>) -> Result<Conn, Failure> {
        let Some(config) = &plan.config else {
            return Err(Failure::new("config", "no TLS config (plain TCP plan)"));
        };
        let open = async {
            let tcp = tcp_connect(plan.addr, source).await?;
            let session =
                Session::client(config, &plan.server_name, now()).map_err(|e| Failure::tls(&e))?;
            let mut conn = Conn { tcp, session };
            conn.handshake().await?;
            Ok(conn)
        };
        match tokio::time::timeout(plan.timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                "timeout",
                format!(
                    "connect + handshake took over {:.1} s",
                    plan.timeout.as_secs_f64()
                ),
            )),
        }
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    async fn handshake(&mut self) -> Result<(), Failure> {
        loop {
            self.flush().await?;
            if let Some(e) = self.session.error() {
                return Err(Failure::tls(e));
            }
            if !self.session.is_handshaking() {
                return Ok(());
            }
            self.read_input().await?;
        }
    }

    /// Waits for input and passes it to the session; `Ok(false)` at end of file.
    pub(crate) async fn read_input(&mut self) -> Result<bool, Failure> {
        loop {
            self.tcp
                .readable()
                .await
                .map_err(|e| Failure::io("wait for input", &e))?;
            if let Some(more) = self.try_read_input()? {
                return Ok(more);
            }
        }
    }

    /// Passes what the socket holds now to the session: `None` when it holds nothing.
    fn try_read_input(&mut self) -> Result<Option<bool>, Failure> {
        loop {
            let buf = self.session.input_buffer(READ_CHUNK);
            match self.tcp.try_read(buf) {
                Ok(0) => {
                    let _ = self.session.commit_input(now(), 0);
                    self.session.handle_eof();
                    return Ok(Some(false));
                }
                Ok(n) => {
                    self.session
                        .commit_input(now(), n)
                        .map_err(|e| Failure::tls(&e))?;
                    return Ok(Some(true));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = self.session.commit_input(now(), 0);
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    let _ = self.session.commit_input(now(), 0);
                }
                Err(e) => {
                    let _ = self.session.commit_input(now(), 0);
                    return Err(Failure::io("read", &e));
                }
            }
        }
    }

    /// Writes what the session has queued.
    async fn flush(&mut self) -> Result<(), Failure> {
        if !self.session.wants_transmit() {
            return Ok(());
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = self.session.poll_transmit(&mut buf);
            if n == 0 {
                return Ok(());
            }
            self.tcp
                .write_all(&buf[..n])
                .await
                .map_err(|e| Failure::io("write", &e))?;
        }
    }

    /// Encrypts and writes `data`.
    pub(crate) async fn send(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), Failure> {
        while !data.is_empty() {
            self.flush().await?;
            let chunk = data.len().min(SEND_CHUNK);
            out.resize(SEND_ROOM, 0);
            let sent = self
                .session
                .send(&data[..chunk], out)
                .map_err(|e| Failure::tls(&e))?;
            if sent.consumed == 0 && sent.written == 0 {
                return Err(Failure::new("closed", "the session takes no more data"));
            }
            data = &data[sent.consumed..];
            self.tcp
                .write_all(&out[..sent.written])
                .await
                .map_err(|e| Failure::io("write", &e))?;
        }
        self.flush().await
    }

    /// Decrypted bytes into `buf`, waiting for input when there are none. `Ok(0)`: the server
    /// closed (close_notify).
    pub(crate) async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        loop {
            match self.session.recv(buf) {
                Ok(Recv::Data(n)) => return Ok(n),
                Ok(Recv::Closed) => return Ok(0),
                Ok(Recv::Pending) => {}
                Err(e) => return Err(Failure::tls(&e)),
            }
            // Replies (tickets, alerts) may be queued by what was read.
            self.flush().await?;
            self.read_input().await?;
        }
    }

    /// Waits until the server sends something or closes: `Ok` when the session is still
    /// healthy afterwards (e.g. it received session tickets), `Err` when it ended.
    pub(crate) async fn wait_input(&mut self) -> Result<(), Failure> {
        let more = self.read_input().await?;
        self.flush().await?;
        if let Some(e) = self.session.error() {
            return Err(Failure::tls(e));
        }
        if self.session.is_peer_closed() {
            return Err(Failure::new("closed", "the server sent close_notify"));
        }
        if !more {
            return Err(Failure::new("closed", "the server closed the connection"));
        }
        // Drain plaintext the server may have sent (nothing is expected while idle).
        let mut sink = [0u8; 512];
        while let Ok(Recv::Data(_)) = self.session.recv(&mut sink) {}
        Ok(())
    }

    /// close_notify, FIN, then reads (tickets, the server's close_notify) until the server
    /// closes or the linger passes. `Err` says why the close was not clean: a category
    /// `tls_*` when the server refused the session after all (TLS 1.3 clients finish their
    /// handshake before the server has checked their certificate), else `unclean_close`.
    pub(crate) async fn close(self) -> Result<(), Failure> {
        self.close_with(Fin::First).await
    }

    /// Like [`close`](Self::close), with the order of the FINs chosen: `Fin::AfterServer`
    /// sends ours only once the server's has come, so that the server closes first and the
    /// TIME_WAIT state stays on its side. The held sessions of `idle` close that way: their
    /// sockets are bound to chosen source addresses, and a bind to port 0 searches past every
    /// port of that address still in TIME_WAIT, a kernel cost that grows with each earlier
    /// run (tens of seconds of client CPU for 10,000 sessions after a few runs).
    pub(crate) async fn close_with(mut self, fin: Fin) -> Result<(), Failure> {
        self.session.close();
        let closed = tokio::time::timeout(CLOSE_LINGER, async {
            self.flush().await?;
            if fin == Fin::First {
                let _ = self.tcp.shutdown().await;
            }
            loop {
                if !self.read_input().await? {
                    return Ok::<(), Failure>(());
                }
                let mut sink = [0u8; 512];
                while let Ok(Recv::Data(_)) = self.session.recv(&mut sink) {}
            }
        })
        .await;
        if let Some(e) = self.session.error()
            && !matches!(e, tether::Error::Truncated | tether::Error::Closed)
        {
            return Err(Failure::tls(e));
        }
        match closed {
            Ok(Ok(())) if self.session.is_peer_closed() => Ok(()),
            Ok(Ok(())) => Err(Failure::new(
                "unclean_close",
                "the server closed TCP without close_notify",
            )),
            Ok(Err(f)) => Err(Failure::new("unclean_close", f.detail)),
            Err(_) => Err(Failure::new(
                "unclean_close",
                format!(
                    "no close_notify and FIN from the server in {} s",
                    CLOSE_LINGER.as_secs()
                ),
            )),
        }
    }
}

/// Who sends the first FIN when a connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fin {
    /// The client, right after its close_notify (it keeps the TIME_WAIT).
    First,
    /// The server: the client waits for the server's FIN, then closes.
    AfterServer,
}

/// Opens one connection and closes it: proves the target, the certificates and the policy
/// work before a run starts. Returns the negotiated (version, suite, group).
pub(crate) async fn probe(plan: &Plan) -> Result<(String, String, String), Failure> {
    let conn = Conn::open(plan, plan.source(0)).await?;
    let described = describe(conn.session());
    match conn.close().await {
        Err(f) if f.category.starts_with("tls_") => Err(f),
        _ => Ok(described),
    }
}

/// The negotiated (version, suite, group) of a session.
pub(crate) fn describe(s: &Session) -> (String, String, String) {
    (
        s.version().map(|v| v.to_string()).unwrap_or_default(),
        s.cipher_suite()
            .and_then(|c| c.as_str())
            .unwrap_or("unknown")
            .to_owned(),
        s.kx_group().map(|g| format!("{g:?}")).unwrap_or_default(),
    )
}
