//! `tether`: the command-line face of the tether secure-socket library.
//!
//! Subcommands:
//! - `tether pki ...`: make a small CA, issue server and device certificates, print SPKI pins.
//! - `tether connect HOST:PORT`: a diagnostic TLS client in the spirit of `openssl s_client`.
//! - `tether demo`: a self-contained tour (throwaway PKI, a server, mTLS clients, resumption).
//! - `tether serve`: the device gateway (TLS frame protocol, HTTP API, metrics, drain).
//! - `tether bench ...`: a load tool for gateways (handshakes/s, idle sessions, ECHO latency).
//! - `tether provision HOST:PORT --base ADDR`: the Renode commands that write a device's gateway
//!   endpoint into its memory.

use std::process::ExitCode;

/// `println!` that ignores write errors: `tether connect ... | head` must not panic when the
/// reader goes away (std ignores SIGPIPE, so writes fail with EPIPE instead).
macro_rules! say {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use clap::{Parser, Subcommand};

mod bench;
mod connect;
mod demo;
mod pki;
mod provision;
mod serve;

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Verified TLS secure sockets for devices and gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Certificates: a CA, server and device certificates, SPKI pins.
    Pki(pki::Args),
    /// Diagnose a TLS server: version, suite, group, chain, verification, handshake time.
    Connect(connect::Args),
    /// A self-contained tour: throwaway PKI, a server, mTLS clients over TLS 1.3 and 1.2,
    /// resumption, a refused anonymous client.
    Demo(demo::Args),
    /// The device gateway: mTLS device sessions speaking frames (ECHO, REVERSE, TIME), an HTTP
    /// API (/health, /devices, /metrics), shared ticket keys, drain on SIGTERM.
    Serve(serve::Args),
    /// Load a TLS gateway: handshakes per second, idle sessions held, ECHO round trips.
    Bench(bench::Args),
    /// Print the Renode `sysbus WriteDoubleWord` commands that write a gateway endpoint
    /// (u32 length + "host:port") into device memory.
    ///
    /// The blob is a u32 little-endian length, then the UTF-8 "host:port", zero-padded to a
    /// whole 32-bit word. Each word is printed as `sysbus WriteDoubleWord ADDR VALUE` (its first
    /// byte is the low byte), the length word first at --base. A device reads it back with
    /// tether::provision::read_endpoint.
    Provision(provision::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pki(args) => pki::run(args),
        Command::Connect(args) => connect::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Provision(args) => provision::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One clear line: the error and its causes, outermost first.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
