//! Proves that the tether core, rustls and ring link and run without std.
//!
//! Built with the workspace's `nostd` profile (`panic = "abort"`), this crate is a `#![no_std]`,
//! `#![no_main]` static Linux binary with its own entry point, allocator, panic handler and
//! `mem*` functions, linked without libc (see `build.rs` and `src/rt.rs`). If any dependency
//! pulled in std, the build would fail with E0152 (duplicate lang item `panic_impl`).
//!
//! In every other profile (`panic = "unwind"`, as in `cargo build/test/clippy --workspace`,
//! where feature unification switches std on anyway) it is an ordinary std binary running the
//! same checks, so the workspace commands build and test it too.
//!
//! Either way it runs a TLS 1.3 and a TLS 1.2 handshake in memory between a client and a server
//! `tether::Session`, exchanges application data both ways (see `handshake.rs`), prints a
//! summary and exits 0, or prints the failure on stderr and exits 1.

#![cfg_attr(panic = "abort", no_std, no_main)]
// Unsafe code lives in `rt` only.
#![deny(unsafe_code)]

extern crate alloc;

// memcpy & co. for the libc-less link (the crate is empty in unwinding builds).
#[cfg(panic = "abort")]
extern crate nostd_check_memfuncs as _;

mod handshake;

#[cfg(panic = "abort")]
#[allow(unsafe_code)]
mod rt;

#[cfg(panic = "abort")]
#[allow(unsafe_code)]
mod bump;

/// The no_std entry (called by `rt`'s `_start`): runs the check, prints the result and the
/// heap figures, returns the exit code.
#[cfg(panic = "abort")]
fn entry() -> i32 {
    match check() {
        Ok(report) => {
            let mut out = rt::Fd(1);
            let _ = out.write_str(&report);
            let (peak, used, size) = bump::stats();
            let _ = writeln!(
                out,
                "nostd-check:   heap: peak {peak} bytes live, {used} bytes of the {size} byte arena used",
            );
            0
        }
        Err(failure) => {
            let _ = rt::Fd(2).write_str(&failure);
            1
        }
    }
}

use alloc::format;
use alloc::string::String;
use core::fmt::Write as _;

/// Runs both exchanges. `Ok` holds the report for stdout, `Err` the failure for stderr; each
/// ends with a newline.
fn check() -> Result<String, String> {
    match handshake::run() {
        Ok(outcomes) => {
            let mut report = String::from("nostd-check:");
            for (i, o) in outcomes.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(report, "{sep} {} ok", o.label);
            }
            report.push('\n');
            for o in &outcomes {
                let _ = writeln!(
                    report,
                    "nostd-check:   {}: {:?}, {} rounds",
                    o.label, o.suite, o.rounds
                );
            }
            Ok(report)
        }
        Err(failure) => Err(format!("nostd-check: FAILED: {failure}\n")),
    }
}

#[cfg(not(panic = "abort"))]
fn main() {
    match check() {
        Ok(report) => print!("{report}"),
        Err(failure) => {
            eprint!("{failure}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use tether::CipherSuite;

    #[test]
    fn tls13_and_tls12_exchanges_succeed() {
        let [tls13, tls12] = crate::handshake::run().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tls13.label, "TLS 1.3");
        assert_eq!(tls12.label, "TLS 1.2");
        assert!(
            format!("{:?}", tls13.suite).starts_with("TLS13_"),
            "{:?}",
            tls13.suite
        );
        assert!(
            matches!(
                tls12.suite,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                    | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ),
            "{:?}",
            tls12.suite
        );
    }

    #[test]
    fn report_has_the_summary_line() {
        let report = crate::check().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.starts_with("nostd-check: TLS 1.3 ok, TLS 1.2 ok\n"),
            "{report}"
        );
    }
}
