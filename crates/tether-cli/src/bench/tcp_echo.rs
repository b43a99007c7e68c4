//! `tether bench tcp-echo-server` (hidden): a plain TCP echo server on tokio.
//!
//! Two uses: the floor of the handshake figures (what one TCP accept, read-to-EOF and close
//! cost a tokio server, measured with `tether bench handshakes --plain` and `--measure-pid`),
//! and the upstream of a TLS terminator under test (nginx `proxy_pass`), whose echo makes ECHO
//! frames come back as they went. It echoes until the peer's FIN, then closes; an idle
//! connection holds no buffer.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0: any free port, printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime threads; 1 is a single-threaded runtime, like `tether serve --workers 1`
    /// [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = super::parse_count)]
    threads: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // One thread: a single-threaded runtime, as `tether serve --workers 1` runs.
    let mut builder = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args.listen))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let err = || format!("cannot listen on {addr}");
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .with_context(err)?;
    socket.set_reuseaddr(true).with_context(err)?;
    socket.bind(addr).with_context(err)?;
    let listener = socket.listen(4096).with_context(err)?;
    let local = listener.local_addr().with_context(err)?;
    say!("tether bench tcp-echo-server: listening on {local}");
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(echo(tcp));
            }
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn echo(mut tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    loop {
        if tcp.readable().await.is_err() {
            return;
        }
        // The buffer lives only between "readable" and the write.
        let mut buf = vec![0u8; 16 * 1024];
        match tcp.try_read(&mut buf) {
            Ok(0) => {
                let _ = tcp.shutdown().await;
                return;
            }
            Ok(n) => {
                if tcp.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
