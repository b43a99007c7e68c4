//! The few DTLS wire details tether reads itself, around dimpl: plaintext (epoch 0) record
//! headers, to send an unprotected alert with a fresh sequence number, and the negotiated
//! cipher suite and group from the ServerHello / ServerKeyExchange (dimpl does not report them).
//!
//! Contract: every function takes untrusted bytes, reads them only through checked `get`s, and
//! returns `None` (or nothing) for anything it does not understand; none of them panics.

/// DTLSPlaintext header: type(1) version(2) epoch(2) sequence(6) length(2).
const HEADER: usize = 13;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const HELLO_VERIFY_REQUEST: u8 = 3;
const SERVER_KEY_EXCHANGE: u8 = 12;
const KEY_SHARE: u16 = 51;
const SUPPORTED_VERSIONS: u16 = 43;

/// One plaintext record of a datagram: (content type, epoch, sequence, fragment).
struct Record<'a> {
    content_type: u8,
    epoch: u16,
    sequence: u64,
    fragment: &'a [u8],
}

/// The DTLSPlaintext records at the start of `datagram`. Stops at the first record that is not
/// one (a DTLS 1.3 unified header, whose first bits are 001, or a truncated record).
fn records(datagram: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut rest = datagram;
    core::iter::from_fn(move || {
        let h = rest.get(..HEADER)?;
        let content_type = h[0];
        // Content types 20..=26; a unified header starts with 0b001xxxxx (32..=63).
        if !(20..=26).contains(&content_type) {
            return None;
        }
        let epoch = u16::from_be_bytes([h[3], h[4]]);
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&h[5..11]);
        let len = usize::from(u16::from_be_bytes([h[11], h[12]]));
        let fragment = rest.get(HEADER..HEADER + len)?;
        rest = rest.get(HEADER + len..).unwrap_or(&[]);
        Some(Record {
            content_type,
            epoch,
            sequence: u64::from_be_bytes(seq),
            fragment,
        })
    })
}

/// The highest epoch-0 sequence number in `datagram`, if it has epoch-0 records.
pub(super) fn max_epoch0_sequence(datagram: &[u8]) -> Option<u64> {
    records(datagram)
        .filter(|r| r.epoch == 0)
        .map(|r| r.sequence)
        .max()
}

/// An unprotected fatal alert record (epoch 0) with sequence number `sequence`.
pub(super) fn plaintext_alert(sequence: u64, description: u8) -> alloc::vec::Vec<u8> {
    let seq = sequence.to_be_bytes();
    let mut r = alloc::vec![ALERT, 0xfe, 0xfd, 0, 0];
    r.extend_from_slice(&seq[2..]);
    r.extend_from_slice(&[0, 2, 2, description]);
    r
}

/// True when `datagram` starts with a plaintext handshake record holding the start of a
/// ServerHello or HelloVerifyRequest: what a version-sensing client may receive first.
pub(super) fn may_be_first_answer(datagram: &[u8]) -> bool {
    let Some(r) = records(datagram).next() else {
        return false;
    };
    let Some(h) = r.fragment.get(..12) else {
        return false;
    };
    let fragment_len = usize::from(h[9]) << 16 | usize::from(h[10]) << 8 | usize::from(h[11]);
    r.content_type == HANDSHAKE
        && r.epoch == 0
        && matches!(h[0], SERVER_HELLO | HELLO_VERIFY_REQUEST)
        && h[6..9] == [0, 0, 0]
        && r.fragment.len() >= 12 + fragment_len
}

/// The DTLS versions a complete (unfragmented) ClientHello in `datagram` offers, as wire
/// values: its supported_versions extension, else its legacy version. `None` when the datagram
/// holds no complete ClientHello.
pub(super) fn client_hello_versions(datagram: &[u8]) -> Option<alloc::vec::Vec<u16>> {
    let r = records(datagram).next()?;
    let h = r.fragment.get(..12)?;
    let length = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
    let fragment_len = usize::from(h[9]) << 16 | usize::from(h[10]) << 8 | usize::from(h[11]);
    if r.content_type != HANDSHAKE
        || r.epoch != 0
        || h[0] != CLIENT_HELLO
        || h[6..9] != [0, 0, 0]
        || fragment_len != length
    {
        return None;
    }
    let body = r.fragment.get(12..12 + length)?;
    let legacy = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    // legacy_version(2) random(32) session_id<1> cookie<1> cipher_suites<2> compression<1>
    let mut at = 34;
    at += 1 + usize::from(*body.get(at)?);
    at += 1 + usize::from(*body.get(at)?);
    let suites = body.get(at..at + 2)?;
    at += 2 + usize::from(u16::from_be_bytes([suites[0], suites[1]]));
    at += 1 + usize::from(*body.get(at)?);
    let Some(ext_len) = body.get(at..at + 2) else {
        // No extensions at all.
        return Some(alloc::vec![legacy]);
    };
    let ext_len = usize::from(u16::from_be_bytes([ext_len[0], ext_len[1]]));
    let mut ext = body.get(at + 2..at + 2 + ext_len)?;
    while let Some(e) = ext.get(..4) {
        let kind = u16::from_be_bytes([e[0], e[1]]);
        let len = usize::from(u16::from_be_bytes([e[2], e[3]]));
        let data = ext.get(4..4 + len)?;
        if kind == SUPPORTED_VERSIONS {
            let list = data.get(1..1 + usize::from(*data.first()?))?;
            return Some(
                list.chunks_exact(2)
                    .map(|v| u16::from_be_bytes([v[0], v[1]]))
                    .collect(),
            );
        }
        ext = ext.get(4 + len..)?;
    }
    Some(alloc::vec![legacy])
}

/// The description of a plaintext (epoch 0) alert other than close_notify and
/// user_canceled at the start of `datagram`.
pub(super) fn plaintext_fatal_alert(datagram: &[u8]) -> Option<u8> {
    let r = records(datagram).next()?;
    match (r.content_type, r.epoch, r.fragment) {
        (ALERT, 0, &[_, description]) if description != 0 && description != 90 => Some(description),
        _ => None,
    }
}

/// What a datagram told about the negotiated parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Observed {
    pub suite: Option<u16>,
    pub group: Option<u16>,
}

/// Reads the cipher suite (ServerHello) and key-exchange group (DTLS 1.3 ServerHello key_share,
/// DTLS 1.2 ServerKeyExchange) from the plaintext handshake records of `datagram`, from
/// fragments that start at offset 0 (they hold the fields needed).
pub(super) fn observe(datagram: &[u8], seen: &mut Observed) {
    for r in records(datagram) {
        if r.content_type != HANDSHAKE || r.epoch != 0 {
            continue;
        }
        // Handshake header: type(1) length(3) message_seq(2) fragment_offset(3)
        // fragment_length(3).
        let Some(h) = r.fragment.get(..12) else {
            continue;
        };
        if h[6..9] != [0, 0, 0] {
            continue;
        }
        let body = r.fragment.get(12..).unwrap_or(&[]);
        match h[0] {
            SERVER_HELLO => {
                let _ = server_hello(body, seen);
            }
            SERVER_KEY_EXCHANGE => {
                // ECParameters: curve_type named_curve(3), then the group.
                if let Some(&[3, a, b]) = body.get(..3) {
                    seen.group = Some(u16::from_be_bytes([a, b]));
                }
            }
            _ => {}
        }
    }
}

fn server_hello(body: &[u8], seen: &mut Observed) -> Option<()> {
    // legacy_version(2) random(32) session_id<0..32> cipher_suite(2) compression(1)
    // extensions<0..2^16-1>
    let sid_len = usize::from(*body.get(34)?);
    let at = 35 + sid_len;
    let suite = body.get(at..at + 2)?;
    seen.suite = Some(u16::from_be_bytes([suite[0], suite[1]]));
    let ext_len = body.get(at + 3..at + 5)?;
    let ext_len = usize::from(u16::from_be_bytes([ext_len[0], ext_len[1]]));
    let mut ext = body.get(at + 5..at + 5 + ext_len)?;
    while let Some(h) = ext.get(..4) {
        let kind = u16::from_be_bytes([h[0], h[1]]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let data = ext.get(4..4 + len)?;
        if kind == KEY_SHARE {
            // ServerHello: a KeyShareEntry; HelloRetryRequest: the selected group alone.
            if let Some(g) = data.get(..2) {
                seen.group = Some(u16::from_be_bytes([g[0], g[1]]));
            }
        }
        ext = ext.get(4 + len..)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics() {
        let mut seen = Observed::default();
        for len in 0..64 {
            for fill in [0u8, 0x16, 0xff, 0x02] {
                let d = alloc::vec![fill; len];
                observe(&d, &mut seen);
                let _ = max_epoch0_sequence(&d);
            }
        }
    }

    #[test]
    fn alert_round_trips_through_the_record_reader() {
        let a = plaintext_alert(0x0102_0304_0506, 48);
        assert_eq!(a.len(), 15);
        assert_eq!(max_epoch0_sequence(&a), Some(0x0102_0304_0506));
    }
}
