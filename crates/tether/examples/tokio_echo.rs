//! An async mTLS echo server on tokio (feature `tokio`): one task per connection, client
//! certificates required, each connection echoed through `tokio::io::copy`.
//!
//! Run: `cargo run -p tether --example tokio_echo -- 127.0.0.1:4433 server.pem server.key ca.pem`
//! then `tether connect 127.0.0.1:4433 --ca ca.pem --sni localhost --cert device-1.pem
//! --key device-1.key --send hi`.

use tether::tokio::TlsStream;
use tether::{ClientAuth, Identity, ServerConfig, Trust};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cert, key, ca] = args.as_slice() else {
        eprintln!("usage: tokio_echo ADDR CERT.pem KEY.pem CA.pem");
        std::process::exit(2);
    };
    let identity = Identity::from_pem(&std::fs::read(cert)?, &std::fs::read(key)?)?;
    let config = ServerConfig::builder(identity)
        .client_auth(ClientAuth::Required(Trust::from_pem(&std::fs::read(ca)?)?))
        .build()?;
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let config = config.clone();
        tokio::spawn(async move {
            // The handshake, bounded by the config's handshake timeout (10 s by default).
            let tls = match TlsStream::accept(tcp, &config).await {
                Ok(tls) => tls,
                Err(e) => return eprintln!("{peer}: {e}"),
            };
            let (mut r, mut w) = tokio::io::split(tls);
            // Until the client's close_notify; a bare EOF is an error (truncation).
            match tokio::io::copy(&mut r, &mut w).await {
                Ok(n) => println!("{peer}: echoed {n} bytes"),
                Err(e) => eprintln!("{peer}: {e}"),
            }
            // Our close_notify, then the TCP FIN.
            let _ = w.shutdown().await;
        });
    }
}
