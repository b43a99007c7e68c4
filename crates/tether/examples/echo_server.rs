//! A blocking mTLS echo server: one thread per connection, client certificates required.
//!
//! Run: `cargo run -p tether --example echo_server -- 127.0.0.1:4433 server.pem server.key ca.pem`
//! then `tether connect 127.0.0.1:4433 --ca ca.pem --sni localhost --cert device-1.pem
//! --key device-1.key --send hi`.

use std::net::TcpListener;

use tether::net::StdClock;
use tether::socket::TlsSocket;
use tether::{ClientAuth, Identity, ServerConfig, Trust};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cert, key, ca] = args.as_slice() else {
        eprintln!("usage: echo_server ADDR CERT.pem KEY.pem CA.pem");
        std::process::exit(2);
    };
    let identity = Identity::from_pem(&std::fs::read(cert)?, &std::fs::read(key)?)?;
    let config = ServerConfig::builder(identity)
        .client_auth(ClientAuth::Required(Trust::from_pem(&std::fs::read(ca)?)?))
        .build()?;
    let listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        let config = config.clone();
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let mut socket = match TlsSocket::server(stream, &config, StdClock::new()) {
                Ok(s) => s,
                Err(e) => return eprintln!("{peer}: {e}"),
            };
            let mut buf = [0u8; 4096];
            loop {
                match socket.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = socket.write_all(&buf[..n]) {
                            return eprintln!("{peer}: {e}");
                        }
                    }
                    Err(e) => return eprintln!("{peer}: {e}"),
                }
            }
            let _ = socket.close();
        });
    }
    Ok(())
}
