//! A device that talks to the gateway over DTLS: a verified DTLS session (mTLS) to the
//! gateway's UDP port, an ECHO, a REVERSE and a TIME frame in one record, the replies, close.
//!
//! ```text
//! tether serve &                     # development PKI in ./tether-dev/, TLS and DTLS on 8081
//! cargo run -p tether-gateway --example dtls_device -- 127.0.0.1:8081 tether-dev
//! cargo run -p tether-gateway --example dtls_device -- 127.0.0.1:8081 tether-dev 1.3
//! ```
//!
//! Arguments: the gateway's address, the directory with `ca.pem`, `device-1.pem` and
//! `device-1.key` (as `tether serve` and `tether pki` lay them out), and optionally the DTLS
//! version (`1.2` or `1.3`; default: both offered, the gateway picks 1.3).

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use tether::dtls::{self, DtlsVersion};
use tether::{Identity, Trust};
use tether_wire::{Decoder, Frame, FrameType};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(dir)) = (args.next(), args.next().map(PathBuf::from)) else {
        eprintln!("usage: dtls_device HOST:PORT PKI-DIR [1.2|1.3]");
        std::process::exit(2);
    };
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let mut builder = dtls::ClientConfig::builder(Trust::from_pem(&read("ca.pem")?)?).identity(
        Identity::from_pem(&read("device-1.pem")?, &read("device-1.key")?)?,
    );
    match args.next().as_deref() {
        Some("1.2") => builder = builder.versions(DtlsVersion::Dtls12, DtlsVersion::Dtls12),
        Some("1.3") => builder = builder.versions(DtlsVersion::Dtls13, DtlsVersion::Dtls13),
        Some(other) => return Err(format!("{other:?} is not a DTLS version: 1.2 or 1.3").into()),
        None => {}
    }
    let config = builder.build()?;

    // The gateway's certificate names localhost and 127.0.0.1 (development PKI).
    let mut socket = dtls::connect_named(&addr, "localhost", &config)?;
    socket.set_io_timeout(Some(Duration::from_secs(5)));
    println!(
        "connected: {} {}",
        socket
            .session()
            .version()
            .map(|v| v.to_string())
            .unwrap_or_default(),
        socket
            .session()
            .cipher_suite()
            .and_then(|s| s.as_str())
            .unwrap_or("?")
    );

    // Three frames in one record (one datagram).
    let mut request = Vec::new();
    for frame in [
        Frame::new(FrameType::Echo, b"hello".to_vec()),
        Frame::new(FrameType::Reverse, b"hello".to_vec()),
        Frame::new(FrameType::Time, Vec::new()),
    ] {
        frame.encode_into(&mut request);
    }
    socket.send(&request)?;

    // Replies: records until three frames are decoded (DTLS may lose a record; a real device
    // would send again after the timeout).
    let mut decoder = Decoder::default();
    let mut buf = [0u8; 1500];
    let mut got = 0;
    while got < 3 {
        let n = socket.recv(&mut buf)?;
        if n == 0 {
            return Err("the gateway closed the session".into());
        }
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame()? {
            got += 1;
            match frame.kind {
                FrameType::Time => println!(
                    "TIME: {} ms since 1970",
                    frame.parse_time().ok_or("a TIME reply without a time")?
                ),
                kind => println!("{kind:?}: {}", String::from_utf8_lossy(&frame.body)),
            }
        }
    }
    socket.close()?;
    Ok(())
}
