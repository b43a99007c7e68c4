//! `tether::provision`: the endpoint blob of the Renode/Zephyr provisioning document (a `u32`
//! little-endian length, then UTF-8 `"host:port"`): the document's own example word for word,
//! one test per error, IPv6 literals, the writer's buffer check, and a round-trip property
//! test (any valid endpoint written and read back is the same endpoint; any bytes at all read
//! without a panic).

use proptest::prelude::*;
use tether::provision::{
    HostError, LENGTH_WORD, MAX_ENDPOINT_LEN, PortError, ProvisionError, blob_len, parse_endpoint,
    read_endpoint, words, write_blob,
};

/// A blob with length word `len` followed by `bytes`.
fn blob(len: u32, bytes: &[u8]) -> Vec<u8> {
    let mut b = len.to_le_bytes().to_vec();
    b.extend_from_slice(bytes);
    b
}

/// The blob for `s` with the length word set to its size.
fn blob_of(s: &[u8]) -> Vec<u8> {
    blob(s.len() as u32, s)
}

#[test]
fn the_documents_example_word_for_word() {
    // seeds/001: "10.42.0.12:8081" (15 bytes) at 0x20001000.
    let mut mem = [0xAAu8; 32];
    let n = write_blob("10.42.0.12:8081", &mut mem).unwrap();
    assert_eq!(n, 20);
    assert_eq!(n, blob_len(15));
    assert_eq!(
        words(&mem[..n]).collect::<Vec<_>>(),
        [0x0000000f, 0x342e3031, 0x2e302e32, 0x383a3231, 0x00313830]
    );
    // Past the blob, the buffer is left alone.
    assert!(mem[n..].iter().all(|&b| b == 0xAA));
    let ep = read_endpoint(&mem).unwrap();
    assert_eq!(ep.host(), "10.42.0.12");
    assert_eq!(ep.port(), 8081);
    assert!(!ep.is_ipv6());
    assert_eq!(ep.to_string(), "10.42.0.12:8081");
}

#[test]
fn reads_the_exact_length_and_ignores_padding_and_what_follows() {
    let mut b = blob_of(b"gw.local:8081");
    b.extend_from_slice(&[0, 0, 0, 0xFF, 0xFF, b':', b'1']);
    let ep = read_endpoint(&b).unwrap();
    assert_eq!((ep.host(), ep.port()), ("gw.local", 8081));
    // Exactly as long as needed: no padding at all.
    let b = blob_of(b"a:1");
    let ep = read_endpoint(&b).unwrap();
    assert_eq!((ep.host(), ep.port()), ("a", 1));
}

#[test]
fn fewer_than_four_bytes_is_no_length_word() {
    for n in 0..LENGTH_WORD {
        assert_eq!(
            read_endpoint(&[0x0f; 3][..n]),
            Err(ProvisionError::NoLengthWord { available: n })
        );
    }
}

#[test]
fn length_zero() {
    assert_eq!(
        read_endpoint(&blob(0, b"")),
        Err(ProvisionError::LengthZero)
    );
    // Zeroed memory, as on a device whose endpoint was never written.
    assert_eq!(read_endpoint(&[0u8; 64]), Err(ProvisionError::LengthZero));
}

#[test]
fn length_past_the_blob() {
    assert_eq!(
        read_endpoint(&blob(16, b"10.42.0.12:8081")),
        Err(ProvisionError::LengthPastBlob {
            length: 16,
            available: 15
        })
    );
    assert_eq!(
        read_endpoint(&blob(1, b"")),
        Err(ProvisionError::LengthPastBlob {
            length: 1,
            available: 0
        })
    );
}

#[test]
fn length_past_the_limit() {
    let big = vec![b'a'; 1024];
    for len in [MAX_ENDPOINT_LEN as u32 + 1, 1000, u32::MAX] {
        assert_eq!(
            read_endpoint(&blob(len, &big)),
            Err(ProvisionError::LengthPastLimit {
                length: len,
                limit: MAX_ENDPOINT_LEN
            }),
            "{len}"
        );
    }
    // The limit itself is accepted: a 253-character name and a five-digit port.
    let host = format!("{}.{}", "a".repeat(63), "b".repeat(189));
    assert_eq!(host.len(), 253);
    let s = format!("{host}:65535");
    assert_eq!(s.len(), MAX_ENDPOINT_LEN);
    let b = blob_of(s.as_bytes());
    let ep = read_endpoint(&b).unwrap();
    assert_eq!((ep.host(), ep.port()), (host.as_str(), 65535));
    // The writer refuses what the reader would.
    let s = format!("{host}a:65535");
    let mut out = [0u8; 512];
    assert!(matches!(
        write_blob(&s, &mut out),
        Err(ProvisionError::LengthPastLimit { length: 260, .. })
    ));
}

#[test]
fn not_utf8() {
    assert_eq!(
        read_endpoint(&blob_of(b"gw\xff.local:8081")),
        Err(ProvisionError::NotUtf8 { valid_up_to: 2 })
    );
    // A two-byte character: whole, it is UTF-8 (and then lacks a port); cut by the length,
    // it is not.
    assert_eq!(
        read_endpoint(&blob(2, "é:1".as_bytes())),
        Err(ProvisionError::MissingPort)
    );
    assert_eq!(
        read_endpoint(&blob(1, "é:1".as_bytes())),
        Err(ProvisionError::NotUtf8 { valid_up_to: 0 })
    );
}

#[test]
fn missing_port() {
    for s in ["10.42.0.12", "gateway", "[::1]"] {
        assert_eq!(
            read_endpoint(&blob_of(s.as_bytes())),
            Err(ProvisionError::MissingPort),
            "{s}"
        );
    }
}

#[test]
fn bad_port() {
    for (s, why) in [
        ("gw:", PortError::Empty),
        ("gw:http", PortError::NotNumeric),
        ("gw:+80", PortError::NotNumeric),
        ("gw:-1", PortError::NotNumeric),
        ("gw:80 ", PortError::NotNumeric),
        ("gw:0", PortError::Zero),
        ("gw:00000", PortError::Zero),
        ("gw:65536", PortError::TooLarge),
        ("gw:99999999999999999999", PortError::TooLarge),
        ("[::1]:", PortError::Empty),
        ("[::1]:70000", PortError::TooLarge),
    ] {
        assert_eq!(
            read_endpoint(&blob_of(s.as_bytes())),
            Err(ProvisionError::BadPort(why)),
            "{s}"
        );
    }
    assert_eq!(parse_endpoint("gw:65535").unwrap().port(), 65535);
    assert_eq!(parse_endpoint("gw:08081").unwrap().port(), 8081);
}

#[test]
fn empty_host() {
    for s in [":8081", "[]:8081"] {
        assert_eq!(
            read_endpoint(&blob_of(s.as_bytes())),
            Err(ProvisionError::EmptyHost),
            "{s}"
        );
    }
}

#[test]
fn bad_host() {
    for (s, why) in [
        ("::1:8081", HostError::UnbracketedIpv6),
        ("fe80::1:443", HostError::UnbracketedIpv6),
        ("[::1:8081", HostError::UnbalancedBrackets),
        ("[::1]8081", HostError::UnbalancedBrackets),
        ("[10.0.0.1]:8081", HostError::NotIpv6),
        ("[gateway]:8081", HostError::NotIpv6),
        ("gate way:8081", HostError::BadCharacter),
        ("gw\n:8081", HostError::BadCharacter),
        ("user@gw:8081", HostError::BadCharacter),
        ("gw/path:8081", HostError::BadCharacter),
    ] {
        assert_eq!(
            read_endpoint(&blob_of(s.as_bytes())),
            Err(ProvisionError::BadHost(why)),
            "{s:?}"
        );
    }
}

#[test]
fn ipv6_literals_in_brackets() {
    for (s, host, port) in [
        ("[::1]:8081", "::1", 8081),
        ("[2001:db8::42]:8883", "2001:db8::42", 8883),
        ("[fe80::1:2:3:4]:1", "fe80::1:2:3:4", 1),
    ] {
        let mut out = [0u8; 64];
        let n = write_blob(s, &mut out).unwrap();
        let ep = read_endpoint(&out[..n]).unwrap();
        assert_eq!((ep.host(), ep.port()), (host, port));
        assert!(ep.is_ipv6());
        assert_eq!(ep.to_string(), s);
    }
}

#[test]
fn writer_checks_the_endpoint_and_the_buffer() {
    let mut out = [0u8; 19];
    assert_eq!(
        write_blob("10.42.0.12:8081", &mut out),
        Err(ProvisionError::BufferTooSmall {
            needed: 20,
            available: 19
        })
    );
    assert_eq!(
        write_blob("10.42.0.12", &mut [0u8; 64]),
        Err(ProvisionError::MissingPort)
    );
    assert_eq!(
        write_blob("", &mut [0u8; 64]),
        Err(ProvisionError::MissingPort)
    );
    assert_eq!(
        write_blob("gw:0", &mut [0u8; 64]),
        Err(ProvisionError::BadPort(PortError::Zero))
    );
    // A length that is a whole number of words: no padding word.
    let mut out = [0xAAu8; 12];
    assert_eq!(write_blob("ab:1234", &mut out), Ok(12));
    assert_eq!(write_blob("abc:1234", &mut out), Ok(12));
    assert_eq!(&out, b"\x08\0\0\0abc:1234");
}

#[test]
fn every_error_says_what_to_do() {
    let errors = [
        ProvisionError::NoLengthWord { available: 2 },
        ProvisionError::LengthZero,
        ProvisionError::LengthPastLimit {
            length: 999,
            limit: MAX_ENDPOINT_LEN,
        },
        ProvisionError::LengthPastBlob {
            length: 20,
            available: 4,
        },
        ProvisionError::NotUtf8 { valid_up_to: 3 },
        ProvisionError::MissingPort,
        ProvisionError::BadPort(PortError::TooLarge),
        ProvisionError::EmptyHost,
        ProvisionError::BadHost(HostError::UnbracketedIpv6),
        ProvisionError::BufferTooSmall {
            needed: 20,
            available: 8,
        },
    ];
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for (e, m) in errors.iter().zip(&messages) {
        assert!(
            m.starts_with("endpoint") || m.starts_with("the endpoint"),
            "{e:?}: {m}"
        );
        assert!(m.len() > 30, "{e:?}: {m}");
    }
    // Distinct messages for distinct errors.
    let mut unique = messages.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), messages.len());
}

/// A DNS name, an IPv4 address or an IPv6 literal.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..5)
            .prop_map(|labels| labels.join(".")),
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

proptest! {
    #[test]
    fn round_trip(host in host(), port in 1u16..=65535, junk in any::<u8>()) {
        let s = format!("{host}:{port}");
        let mut out = vec![junk; blob_len(s.len()) + 8];
        let n = write_blob(&s, &mut out).unwrap();
        prop_assert_eq!(n, blob_len(s.len()));
        prop_assert_eq!(n % 4, 0);
        // The words, as an emulator writes them, rebuild the same bytes.
        let rebuilt: Vec<u8> = words(&out[..n]).flat_map(u32::to_le_bytes).collect();
        prop_assert_eq!(&rebuilt[..], &out[..n]);
        let ep = read_endpoint(&out).unwrap();
        prop_assert_eq!(ep.host(), host.trim_start_matches('[').trim_end_matches(']'));
        prop_assert_eq!(ep.port(), port);
        prop_assert_eq!(ep.to_string(), s);
    }

    #[test]
    fn any_bytes_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = read_endpoint(&bytes);
    }

    #[test]
    fn any_length_word_read_without_panic(len in any::<u32>(), body in ".{0,280}") {
        if let Ok(ep) = read_endpoint(&blob(len, body.as_bytes())) {
            prop_assert!(len as usize <= MAX_ENDPOINT_LEN);
            prop_assert!(ep.port() != 0);
            prop_assert!(!ep.host().is_empty());
        }
    }
}
