//! `tether provision`: the Renode commands that write a gateway endpoint into device memory.
//!
//! ```text
//! tether provision HOST:PORT [--base ADDR]
//! ```
//!
//! The blob is `tether::provision`'s (a `u32` little-endian length, then UTF-8 `"host:port"`,
//! zero-padded to a whole word), printed as one `sysbus WriteDoubleWord ADDR VALUE` line per
//! 32-bit word, the length word first, exactly as the Wasmbed provisioning document writes it:
//!
//! ```text
//! $ tether provision 10.42.0.12:8081 --base 0x20001000
//! sysbus WriteDoubleWord 0x20001000 0x0000000f
//! sysbus WriteDoubleWord 0x20001004 0x342e3031
//! sysbus WriteDoubleWord 0x20001008 0x2e302e32
//! sysbus WriteDoubleWord 0x2000100c 0x383a3231
//! sysbus WriteDoubleWord 0x20001010 0x00313830
//! ```

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use tether::provision::{MAX_ENDPOINT_LEN, blob_len, words, write_blob};

/// The address the Wasmbed firmware reads its endpoint from.
const DEFAULT_BASE: &str = "0x20001000";

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  tether provision 10.42.0.12:8081 --base 0x20001000 >> device.resc\n  \
        tether provision [fd00::12]:8081"
)]
pub struct Args {
    /// The gateway endpoint: HOST:PORT, a DNS name or IPv4 address and a port from 1 to
    /// 65535; an IPv6 address in brackets: `[ADDR]:PORT`.
    #[arg(value_name = "HOST:PORT")]
    endpoint: String,
    /// Where the blob starts in device memory: hexadecimal with 0x, or decimal; a multiple of
    /// 4 (the writes are 32-bit words).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_BASE)]
    base: String,
}

/// Parses `0x...` (hexadecimal) or decimal into a 32-bit address.
fn parse_base(s: &str) -> anyhow::Result<u32> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    let base = parsed.with_context(|| {
        format!(
            "bad --base {s:?}: expected a 32-bit address, hexadecimal with 0x (0x20001000) or \
             decimal"
        )
    })?;
    if base % 4 != 0 {
        bail!(
            "bad --base {s:?}: not a multiple of 4; sysbus WriteDoubleWord writes aligned 32-bit \
             words (try {:#010x})",
            base & !3
        );
    }
    Ok(base)
}

/// The lines `tether provision` prints.
fn lines(endpoint: &str, base: &str) -> anyhow::Result<Vec<String>> {
    let base = parse_base(base)?;
    let mut blob = vec![0u8; blob_len(MAX_ENDPOINT_LEN)];
    let n =
        write_blob(endpoint, &mut blob).with_context(|| format!("bad endpoint {endpoint:?}"))?;
    let last = u32::try_from(n - 4)
        .ok()
        .and_then(|off| base.checked_add(off));
    if last.is_none() {
        bail!(
            "bad --base {base:#010x}: the {n}-byte blob would run past the end of the 32-bit \
             address space"
        );
    }
    Ok(words(&blob[..n])
        .enumerate()
        .map(|(i, w)| {
            // In range: checked above for the last word.
            let addr = base + 4 * i as u32;
            format!("sysbus WriteDoubleWord {addr:#010x} {w:#010x}")
        })
        .collect())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    for line in lines(&args.endpoint, &args.base)? {
        say!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
