//! A device skeleton: the pieces a microcontroller port of tether supplies, in one `#![no_std]`
//! program (docs/PORTING.md walks through them).
//!
//! - `port.rs`: entropy (a hardware RNG registered with getrandom), the monotonic and wall
//!   clocks, a fixed-size heap;
//! - `link.rs`: a [`tether::socket::Transport`] over the device's link (here, in memory, to a
//!   small gateway: a tether server session with 1 KiB records);
//! - this file: the application. It builds the smallest client configuration a device uses
//!   (TLS 1.3 only, X25519 only, no resumption cache, certificate validity checked against the
//!   wall clock), connects a blocking [`TlsSocket`] (which drives a `tether::Session`) with 512
//!   bytes per transport read, verifies the gateway's certificate against the CA, sends 1 KiB,
//!   reads the echo back, checks it and closes with close_notify.
//!
//! Built with the `nostd` profile it is a static binary without std or libc (the runtime
//! pieces in `../../rt.rs`, shared with nostd-check), run by `scripts/test`; it prints what it
//! did and the heap it used, and exits 0 (1 on failure, 101 on a panic). In other profiles it is
//! an ordinary std program doing the same (without the heap figure).

#![cfg_attr(panic = "abort", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

#[cfg(panic = "abort")]
extern crate nostd_check_memfuncs as _;

mod link;
#[allow(unsafe_code)]
mod port;

#[cfg(panic = "abort")]
#[allow(unsafe_code, dead_code)]
#[path = "../../rt.rs"]
mod rt;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use tether::socket::TlsSocket;
use tether::{
    CertificateDer, ClientConfig, Identity, NamedGroup, ServerConfig, TimePolicy, TlsVersion,
    Trust, WallClock,
};

/// The test PKI of nostd-check (`certs/`): an EC P-256 CA and a server leaf for "localhost".
/// The CA as DER in the image: the trust anchor borrows its name and key from flash
/// (`Trust::with_static_root`) instead of copying them to the heap.
static CA: CertificateDer<'static> =
    CertificateDer::from_slice(include_bytes!("../../../certs/ca.der"));
const GATEWAY_CERT_PEM: &[u8] = include_bytes!("../../../certs/server.pem");
const GATEWAY_KEY_PEM: &[u8] = include_bytes!("../../../certs/server.key.pem");

/// What the device sends (and gets back).
const MESSAGE: usize = 1024;
/// Bytes the socket asks of each transport read: the session's input buffer grows by at most
/// this much past the record it is collecting.
const READ_CHUNK: usize = 512;

fn err(what: &'static str) -> impl FnOnce(tether::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// The device's configuration: the smallest one that still verifies the gateway.
fn device_config() -> Result<ClientConfig, String> {
    let rtc: Arc<dyn WallClock> = Arc::new(port::Rtc);
    ClientConfig::builder(Trust::new().with_static_root(&CA).map_err(err("CA"))?)
        .versions(TlsVersion::Tls13, TlsVersion::Tls13)
        .kx_groups(&[NamedGroup::X25519])
        .resumption(false)
        .time_policy(TimePolicy::Clock(rtc))
        // Each transport read asks for this much, from the ClientHello on.
        .read_chunk(READ_CHUNK)
        .build()
        .map_err(err("client config"))
}

fn gateway_config() -> Result<ServerConfig, String> {
    let rtc: Arc<dyn WallClock> = Arc::new(port::Rtc);
    let identity =
        Identity::from_pem(GATEWAY_CERT_PEM, GATEWAY_KEY_PEM).map_err(err("identity"))?;
    ServerConfig::builder(identity)
        .max_record_size(link::GATEWAY_RECORD)
        .time_policy(TimePolicy::Clock(rtc))
        .build()
        .map_err(err("gateway config"))
}

/// Connects, exchanges 1 KiB both ways, closes. `Ok` holds the report.
fn run() -> Result<String, String> {
    // A health check of the entropy source before anything depends on it.
    let mut seed = [0u8; 32];
    // (Its error is printed by code: getrandom's `Display` asks libc's strerror_r, which a
    // device does not have.)
    port::hardware_rng(&mut seed).map_err(|e| format!("hardware RNG: error {}", e.code()))?;
    if seed.iter().all(|&b| b == 0) {
        return Err("hardware RNG: 32 zero bytes".into());
    }

    let link = link::GatewayLink::new(&gateway_config()?).map_err(err("gateway session"))?;
    let config = device_config()?;
    let mut socket =
        TlsSocket::client(link, &config, "localhost", port::now).map_err(err("client"))?;
    socket.handshake().map_err(err("handshake"))?;
    let suite = socket.session().cipher_suite();

    let message: Vec<u8> = (0..MESSAGE).map(|i| (i % 251) as u8).collect();
    socket.write_all(&message).map_err(err("write"))?;
    let mut echo = alloc::vec![0u8; MESSAGE];
    let mut got = 0;
    while got < MESSAGE {
        match socket.read(&mut echo[got..]).map_err(err("read"))? {
            0 => return Err(format!("the gateway closed after {got} of {MESSAGE} bytes")),
            n => got += n,
        }
    }
    if echo != message {
        return Err("the echo differs from what was sent".into());
    }
    socket.close().map_err(err("close"))?;
    Ok(format!(
        "device_skeleton: TLS 1.3 to the gateway ok ({suite:?}, certificate verified), {MESSAGE} bytes echoed, closed at {} ms\n",
        port::now().as_millis()
    ))
}

/// The no_std entry (called by `rt`'s `_start`).
#[cfg(panic = "abort")]
fn entry() -> i32 {
    use core::fmt::Write as _;
    match run() {
        Ok(report) => {
            let mut out = rt::Fd(1);
            let _ = out.write_str(&report);
            let (peak, size) = port::stats();
            let _ = writeln!(
                out,
                "device_skeleton: heap peak {peak} of {size} bytes (device and gateway together)"
            );
            0
        }
        Err(failure) => {
            let _ = writeln!(rt::Fd(2), "device_skeleton: FAILED: {failure}");
            1
        }
    }
}

#[cfg(not(panic = "abort"))]
fn main() {
    match run() {
        Ok(report) => print!("{report}"),
        Err(failure) => {
            eprintln!("device_skeleton: FAILED: {failure}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_device_talks_to_its_gateway() {
        let report = crate::run().unwrap_or_else(|e| panic!("{e}"));
        assert!(report.contains("certificate verified"), "{report}");
    }
}
