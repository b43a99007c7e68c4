//! `device-https`: a device calling an HTTPS API over its own TCP/IP stack.
//!
//! A smoltcp interface on a TAP device gets its address by DHCP, resolves the server's name by
//! DNS (falling back to configured addresses when DNS fails), opens TLS 1.3 with tether over a
//! smoltcp TCP socket, verifies the server against a CA file and/or an SPKI pin, sends
//! `GET /v1/models`, reads the whole response, closes with close_notify, and prints the status
//! and the body. This is the moteOS flow (seeds/000) with verification on, and with smaller
//! fixed buffers: the TCP buffers are the caller's choice (4 KiB + 2 KiB here, moteOS used
//! 2 x 16 KiB), and tether holds TLS record buffers only while a record is in flight.
//!
//! The network flow (`flow.rs`, `http.rs`) uses only smoltcp and `tether::smoltcp`, as on a
//! microcontroller; this file is the host part: the TAP device, the clock (`now_ms`), the sleep
//! (`sleep_ms`, which returns early when a frame arrives), a wall clock for certificate
//! validity, and the command line.
//!
//! ```text
//! ip tuntap add tap0 mode tap && ip link set tap0 up    # next to a DHCP + DNS server
//! device-https --tap tap0 --host api.device.test --ca pki/ca.pem
//! device-https --tap tap0 --host api.device.test --pin "$(tether pki pin pki/server.pem)"
//! ```
//!
//! Exit codes: 0 success; 2 usage; 3 bad input (CA file, pin); 4 the TAP device cannot be
//! opened; 10 DHCP timeout; 11 DNS timeout; 12 DNS failure; 13 TCP connect failure; 14 TLS
//! handshake failure; 15 certificate rejected; 16 HTTP failure (sending, reading, parsing).

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

extern crate alloc;

mod flow;
mod http;

use std::io::Write as _;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::Parser;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Medium, TunTapInterface};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, Ipv4Address};
use tether::smoltcp::Stack;
use tether::{ClientConfig, Pin, TimePolicy, TlsVersion, Trust, WallClock};

/// Exit code: bad input (CA file, pin).
const EXIT_BAD_INPUT: u8 = 3;
/// Exit code: the TAP device cannot be opened.
const EXIT_TAP: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "device-https",
    version,
    about = "A device on its own smoltcp TCP/IP stack (TAP device) calling an HTTPS API with verified TLS 1.3.",
    long_about = "A device on its own smoltcp TCP/IP stack calling an HTTPS API with verified TLS 1.3.\n\n\
        It opens a TAP device, gets an address by DHCP, resolves --host by DNS (using the \
        --fallback addresses when DNS times out or fails), connects with TLS 1.3, verifies the \
        server against --ca and/or --pin, sends GET --path with a Host header, reads the whole \
        response, closes with close_notify, and prints the status line and the body on stdout \
        (progress on stderr).",
    after_help = "Exit codes: 0 success, 2 usage, 3 bad input (CA file, pin), 4 TAP device, \
        10 DHCP timeout, 11 DNS timeout, 12 DNS failure, 13 TCP connect failure, \
        14 TLS handshake failure, 15 certificate rejected, 16 HTTP failure."
)]
struct Args {
    /// The TAP device to open (it must exist: `ip tuntap add NAME mode tap`).
    #[arg(long, env = "DEVICE_HTTPS_TAP", default_value = "tap0")]
    tap: String,
    /// The server's name: resolved by DNS, sent as SNI and Host, checked in its certificate.
    #[arg(long, default_value = "api.device.test")]
    host: String,
    /// The server's TCP port.
    #[arg(long, default_value_t = 443)]
    port: u16,
    /// The request path.
    #[arg(long, default_value = "/v1/models")]
    path: String,
    /// Trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", required_unless_present = "pin")]
    ca: Option<PathBuf>,
    /// Trust a server key by its SPKI pin, `sha256/BASE64` (as `tether pki pin` prints it).
    /// Repeatable. With --ca as well, the chain must verify against the CA and a key in it
    /// must match a pin.
    #[arg(long, value_name = "PIN")]
    pin: Vec<String>,
    /// An address to connect to when DNS fails (times out or has no answer). Repeatable.
    #[arg(long, value_name = "IPV4")]
    fallback: Vec<Ipv4Address>,
    /// Ask this DNS server instead of the ones DHCP gives.
    #[arg(long, value_name = "IPV4")]
    dns_server: Option<Ipv4Address>,
    /// How long to wait for a DHCP lease, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    dhcp_timeout: u64,
    /// How long to wait for the DNS answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    dns_timeout: u64,
    /// How long to wait for each TCP connection, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    connect_timeout: u64,
    /// How long the TLS handshake may take, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    tls_timeout: u64,
    /// How long each read or write may wait after the handshake, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    io_timeout: u64,
    /// The largest response accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_response: usize,
    /// TCP receive buffer, in bytes (the caller's choice; moteOS used 16 KiB).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    tcp_rx_buffer: usize,
    /// TCP send buffer, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 2048)]
    tcp_tx_buffer: usize,
}

/// The device's monotonic clock: milliseconds since the program started.
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock for certificate validity (a device would read its RTC or SNTP time).
#[derive(Debug)]
struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn unix_seconds(&self) -> Option<u64> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "device-https: error: {message}");
    ExitCode::from(code)
}

fn trust(args: &Args) -> Result<Trust, String> {
    let mut trust = match &args.ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            Trust::from_pem(&pem).map_err(|e| {
                format!(
                    "the CA file {} holds no usable certificate: {e}",
                    path.display()
                )
            })?
        }
        None => Trust::new(),
    };
    for p in &args.pin {
        let pin: Pin = p.parse().map_err(|e| format!("--pin {p}: {e}"))?;
        trust = trust.with_pin(pin);
    }
    Ok(trust)
}

/// A seed for smoltcp, the MAC address and the local port: the process id and the time.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (u64::from(std::process::id()) << 32 ^ nanos).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let trust = match trust(&args) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_BAD_INPUT, &e),
    };
    let config = match ClientConfig::builder(trust)
        .versions(TlsVersion::Tls13, TlsVersion::Tls13)
        .handshake_timeout(std::time::Duration::from_millis(args.tls_timeout))
        .time_policy(TimePolicy::Clock(Arc::new(SystemWallClock)))
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(EXIT_BAD_INPUT, &format!("{e}")),
    };

    let mut device = match TunTapInterface::new(&args.tap, Medium::Ethernet) {
        Ok(d) => d,
        Err(e) => {
            return fail(
                EXIT_TAP,
                &format!(
                    "cannot open the TAP device {:?}: {e}; create it with `ip tuntap add {} mode tap` \
                     (as root) and run this as a user allowed to open it",
                    args.tap, args.tap
                ),
            );
        }
    };
    let fd = device.as_raw_fd();
    // The clock's origin: the device's "boot".
    let _ = now_ms();
    let seed = seed();
    let mac = seed.to_le_bytes();
    // Locally administered, unicast.
    let mac = EthernetAddress([0x02, mac[1], mac[2], mac[3], mac[4], mac[5]]);
    let mut iface_config = Config::new(mac.into());
    iface_config.random_seed = seed;
    let iface = Interface::new(
        iface_config,
        &mut device,
        smoltcp::time::Instant::from_millis(0),
    );
    let mut sockets = SocketSet::new(Vec::new());
    let tcp = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; args.tcp_rx_buffer.max(536)]),
        tcp::SocketBuffer::new(vec![0; args.tcp_tx_buffer.max(536)]),
    ));
    // sleep_ms: wait for a frame on the TAP device, at most `ms` (the device's interrupt).
    let sleep_ms = move |ms: u64| {
        let _ = smoltcp::phy::wait(fd, Some(smoltcp::time::Duration::from_millis(ms)));
    };
    let mut stack = Stack::new(iface, device, sockets, now_ms as fn() -> u64, sleep_ms);
    stack.set_max_sleep_ms(50);

    let plan = flow::Plan {
        host: args.host.clone(),
        port: args.port,
        path: args.path.clone(),
        fallback: args.fallback.clone(),
        dns_server: args.dns_server,
        dhcp_timeout_ms: args.dhcp_timeout,
        dns_timeout_ms: args.dns_timeout,
        connect_timeout_ms: args.connect_timeout,
        io_timeout_ms: args.io_timeout,
        local_port: 49152 + (seed >> 48) as u16 % 16000,
        max_response: args.max_response,
    };
    let mut log = |a: std::fmt::Arguments<'_>| {
        let _ = writeln!(std::io::stderr(), "device-https: [{:>5} ms] {a}", now_ms());
    };
    match flow::run(&mut stack, tcp, &config, &plan, &mut log) {
        Ok(outcome) => {
            log(format_args!(
                "done: {} (address {}, by {}), {}",
                outcome.server,
                outcome.lease.address,
                match &outcome.resolved {
                    flow::Resolved::Literal => "literal",
                    flow::Resolved::Dns => "DNS",
                    flow::Resolved::Fallback(_) => "fallback",
                },
                outcome
                    .version
                    .map_or_else(|| "?".to_owned(), |v| v.to_string())
            ));
            let mut out = std::io::stdout().lock();
            let r = &outcome.response;
            let _ = writeln!(out, "HTTP {} {}", r.status, r.reason);
            let _ = out.write_all(&r.body);
            if !r.body.ends_with(b"\n") {
                let _ = writeln!(out);
            }
            let _ = out.flush();
            if (200..300).contains(&r.status) {
                ExitCode::SUCCESS
            } else {
                fail(
                    16,
                    &format!(
                        "HTTP failure: the server answered {} {}",
                        r.status, r.reason
                    ),
                )
            }
        }
        Err(e) => fail(e.exit_code(), &e.to_string()),
    }
}
