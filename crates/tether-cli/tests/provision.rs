//! `tether provision HOST:PORT --base ADDR`: the output is the provisioning document's own
//! Renode lines (seeds/001: `10.42.0.12:8081` at `0x20001000`), and reading the written words
//! back through `tether::provision` gives the endpoint again (IPv4, DNS names, IPv6, other
//! bases); bad endpoints and bad bases fail with a clear message and no output.

mod common;

use common::{tether, text};

/// The "Expected output" of the provisioning document, line for line.
const SEED_EXAMPLE: &str = "\
sysbus WriteDoubleWord 0x20001000 0x0000000f
sysbus WriteDoubleWord 0x20001004 0x342e3031
sysbus WriteDoubleWord 0x20001008 0x2e302e32
sysbus WriteDoubleWord 0x2000100c 0x383a3231
sysbus WriteDoubleWord 0x20001010 0x00313830
";

/// Runs `tether provision ARGS`, expecting success; returns stdout.
fn provision(args: &[&str]) -> String {
    let mut all = vec!["provision"];
    all.extend_from_slice(args);
    let o = tether(&all);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{all:?}: {err}");
    assert!(err.is_empty(), "{err}");
    out
}

/// Plays the lines into a simulated memory, as Renode would: (base address, bytes written).
fn replay(out: &str) -> (u32, Vec<u8>) {
    let mut base = None;
    let mut mem = Vec::new();
    for line in out.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 4, "{line:?}");
        assert_eq!(&parts[..2], ["sysbus", "WriteDoubleWord"], "{line:?}");
        for p in &parts[2..] {
            assert!(p.starts_with("0x") && p.len() == 10, "{line:?}: {p}");
        }
        let addr = u32::from_str_radix(&parts[2][2..], 16).unwrap();
        let value = u32::from_str_radix(&parts[3][2..], 16).unwrap();
        let base = *base.get_or_insert(addr);
        // One word after the other, from the base up.
        assert_eq!(addr, base + mem.len() as u32, "{line:?}");
        mem.extend_from_slice(&value.to_le_bytes());
    }
    (base.expect("no lines"), mem)
}

#[test]
fn prints_the_documents_lines_exactly() {
    assert_eq!(
        provision(&["10.42.0.12:8081", "--base", "0x20001000"]),
        SEED_EXAMPLE
    );
    // 0x20001000 is the default base, and decimal works too.
    assert_eq!(provision(&["10.42.0.12:8081"]), SEED_EXAMPLE);
    assert_eq!(
        provision(&["10.42.0.12:8081", "--base", "536875008"]),
        SEED_EXAMPLE
    );
}

#[test]
fn the_words_read_back_as_the_endpoint() {
    for (endpoint, base, host, port) in [
        ("10.42.0.12:8081", "0x20001000", "10.42.0.12", 8081),
        (
            "gateway.wasmbed.svc:8081",
            "0x20001000",
            "gateway.wasmbed.svc",
            8081,
        ),
        ("[::1]:8081", "0x20002000", "::1", 8081),
        ("[fd00::42]:65535", "0x0", "fd00::42", 65535),
        ("abc:1234", "0x10", "abc", 1234),
    ] {
        let out = provision(&[endpoint, "--base", base]);
        let (addr, mem) = replay(&out);
        assert_eq!(addr, u32::from_str_radix(&base[2..], 16).unwrap());
        // The length word first, then the text, zero-padded to a whole word.
        assert_eq!(mem.len(), 4 + endpoint.len().div_ceil(4) * 4, "{out}");
        assert_eq!(&mem[..4], &(endpoint.len() as u32).to_le_bytes());
        let ep = tether::provision::read_endpoint(&mem).unwrap();
        assert_eq!((ep.host(), ep.port()), (host, port), "{out}");
        assert_eq!(ep.to_string(), endpoint);
        assert!(mem[4 + endpoint.len()..].iter().all(|&b| b == 0));
    }
}

/// Runs `tether provision ARGS`, expecting failure; returns stderr.
fn refused(args: &[&str]) -> String {
    let mut all = vec!["provision"];
    all.extend_from_slice(args);
    let o = tether(&all);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{all:?} succeeded: {out}");
    assert!(out.is_empty(), "{all:?} printed {out}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_endpoints_are_refused_clearly() {
    for (endpoint, says) in [
        ("10.42.0.12", "has no port"),
        ("gw:0", "port is 0"),
        ("gw:65536", "above 65535"),
        ("gw:http", "not a decimal number"),
        (":8081", "host is empty"),
        ("::1:8081", "IPv6 address without brackets"),
        ("[gw]:8081", "not an IPv6 address"),
        ("gate way:8081", "contains a space"),
    ] {
        let err = refused(&[endpoint]);
        assert!(err.contains(says), "{endpoint}: {err}");
        assert!(err.contains(&format!("{endpoint:?}")), "{endpoint}: {err}");
    }
    let long = format!("{}:1", "a".repeat(300));
    let err = refused(&[&long]);
    assert!(err.contains("above the 259-byte limit"), "{err}");
}

#[test]
fn bad_bases_are_refused_clearly() {
    for (base, says) in [
        ("zz", "expected a 32-bit address"),
        ("0x", "expected a 32-bit address"),
        ("0x100000000", "expected a 32-bit address"),
        ("-4", "expected a 32-bit address"),
        ("", "expected a 32-bit address"),
        ("0x20001002", "not a multiple of 4"),
        ("0xfffffffc", "past the end of the 32-bit address space"),
    ] {
        let err = refused(&["10.42.0.12:8081", &format!("--base={base}")]);
        assert!(err.contains(says), "{base}: {err}");
    }
    // The last word may end exactly at the top of the address space.
    let out = provision(&["abc:1234", "--base", "0xfffffff4"]);
    assert_eq!(out.lines().count(), 3);
    assert!(out.ends_with("0xfffffffc 0x34333231\n"), "{out}");
}

#[test]
fn help_explains_the_layout() {
    let o = tether(&["provision", "--help"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    for needed in [
        "sysbus WriteDoubleWord",
        "u32 little-endian length",
        "HOST:PORT",
        "[ADDR]:PORT",
        "--base",
        "0x20001000",
    ] {
        assert!(out.contains(needed), "--help lacks {needed:?}:\n{out}");
    }
}
