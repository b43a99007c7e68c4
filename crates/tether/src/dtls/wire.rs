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

const EXT_COOKIE: u16 = 44;
const EXT_PADDING: u16 = 21;

/// Where the fields a stateless listener needs sit in a datagram that starts with a whole,
/// unfragmented, plaintext ClientHello (offsets into the datagram).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ClientHello {
    /// End of the record that holds the ClientHello (what follows it is ignored).
    pub record_end: usize,
    /// The client's random.
    pub random: [u8; 32],
    /// The legacy (DTLS 1.2 HelloVerifyRequest) cookie, without its length byte.
    pub legacy_cookie: core::ops::Range<usize>,
    /// The cipher suite list, without its length.
    pub suites: core::ops::Range<usize>,
    /// Offset of the extensions' u16 length, if there are extensions.
    pub extensions_len_at: Option<usize>,
    /// The whole cookie extension (DTLS 1.3 HelloRetryRequest cookie), header included.
    pub cookie_extension: Option<core::ops::Range<usize>>,
    /// The whole padding extension, header included.
    pub padding_extension: Option<core::ops::Range<usize>>,
}

impl ClientHello {
    /// True when the client echoes a cookie (either kind).
    pub fn has_cookie(&self) -> bool {
        !self.legacy_cookie.is_empty() || self.cookie_extension.is_some()
    }
}

fn u16_at(d: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *d.get(at)?,
        *d.get(at + 1)?,
    ])))
}

fn u24_at(d: &[u8], at: usize) -> Option<usize> {
    let b = d.get(at..at + 3)?;
    Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
}

/// Parses the ClientHello at the start of `datagram`: a plaintext handshake record of epoch 0
/// holding one whole, unfragmented ClientHello whose lengths all agree. `None` otherwise.
pub(super) fn client_hello(datagram: &[u8]) -> Option<ClientHello> {
    let h = datagram.get(..HEADER)?;
    if h[0] != HANDSHAKE || h[1] != 0xfe || h[3..5] != [0, 0] {
        return None;
    }
    let record_end = HEADER + u16_at(datagram, 11)?;
    let record = datagram.get(..record_end)?;
    // Handshake header: type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3).
    if *record.get(HEADER)? != CLIENT_HELLO {
        return None;
    }
    let length = u24_at(record, HEADER + 1)?;
    if u24_at(record, HEADER + 6)? != 0 || u24_at(record, HEADER + 9)? != length {
        return None;
    }
    let body_at = HEADER + 12;
    if body_at + length != record_end {
        return None;
    }
    // legacy_version(2) random(32) session_id<1> cookie<1> cipher_suites<2> compression<1>
    // extensions<2>
    let mut random = [0u8; 32];
    random.copy_from_slice(record.get(body_at + 2..body_at + 34)?);
    let mut at = body_at + 34;
    at += 1 + usize::from(*record.get(at)?);
    let cookie_len = usize::from(*record.get(at)?);
    let legacy_cookie = at + 1..at + 1 + cookie_len;
    at = legacy_cookie.end;
    let suites_len = u16_at(record, at)?;
    let suites = at + 2..at + 2 + suites_len;
    at = suites.end;
    at += 1 + usize::from(*record.get(at)?);
    if at > record_end {
        return None;
    }
    let mut hello = ClientHello {
        record_end,
        random,
        legacy_cookie,
        suites,
        extensions_len_at: None,
        cookie_extension: None,
        padding_extension: None,
    };
    if at == record_end {
        return Some(hello);
    }
    let ext_len = u16_at(record, at)?;
    hello.extensions_len_at = Some(at);
    at += 2;
    if at + ext_len != record_end {
        return None;
    }
    while at < record_end {
        let kind = u16_at(record, at)?;
        let len = u16_at(record, at + 2)?;
        let end = at + 4 + len;
        if end > record_end {
            return None;
        }
        match kind as u16 {
            EXT_COOKIE => hello.cookie_extension = Some(at..end),
            EXT_PADDING => hello.padding_extension = Some(at..end),
            _ => {}
        }
        at = end;
    }
    Some(hello)
}

fn put_u16(d: &mut [u8], at: usize, v: usize) {
    let v = u16::try_from(v).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(s) = d.get_mut(at..at + 2) {
        s.copy_from_slice(&v);
    }
}

fn put_u24(d: &mut [u8], at: usize, v: usize) {
    let v = u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes();
    if let Some(s) = d.get_mut(at..at + 3) {
        s.copy_from_slice(&v[1..]);
    }
}

/// The client's first ClientHello, rebuilt from its second (the one that echoes our cookie):
/// the same record without the cookie, with message_seq and record sequence 0.
///
/// DTLS 1.2 (RFC 6347 4.2.1): the legacy cookie emptied (neither the first ClientHello nor
/// the HelloVerifyRequest enters the handshake hash, so only its random matters). DTLS 1.3
/// (RFC 8446 4.1.2): the cookie extension removed and, when the client pads its ClientHello
/// to a fixed size (RFC 7685, as dimpl does), the padding grown back by as much; the first
/// ClientHello enters the transcript, so this must give back its exact bytes, which holds
/// for clients that change nothing but the cookie and the padding between the two.
pub(super) fn first_client_hello(
    datagram: &[u8],
    hello: &ClientHello,
) -> Option<alloc::vec::Vec<u8>> {
    let record = datagram.get(..hello.record_end)?;
    let mut out = alloc::vec::Vec::with_capacity(record.len());
    let removed;
    if let Some(ext) = hello.cookie_extension.clone() {
        let grow = hello
            .padding_extension
            .clone()
            .filter(|p| p.start > ext.start);
        removed = if grow.is_some() { 0 } else { ext.len() };
        out.extend_from_slice(record.get(..ext.start)?);
        match grow {
            Some(p) => {
                out.extend_from_slice(record.get(ext.end..p.start)?);
                // The padding header with the longer length, then zeros.
                out.extend_from_slice(&(EXT_PADDING).to_be_bytes());
                let len = p.len() - 4 + ext.len();
                out.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
                out.resize(out.len() + len, 0);
                out.extend_from_slice(record.get(p.end..)?);
            }
            None => out.extend_from_slice(record.get(ext.end..)?),
        }
        if let Some(at) = hello.extensions_len_at {
            let n = u16_at(&out, at)?.checked_sub(removed)?;
            put_u16(&mut out, at, n);
        }
    } else {
        let c = hello.legacy_cookie.clone();
        removed = c.len();
        out.extend_from_slice(record.get(..c.start - 1)?);
        out.push(0);
        out.extend_from_slice(record.get(c.end..)?);
    }
    // Record header: sequence 0, shorter length; handshake header: shorter, message_seq 0.
    let body = u16_at(&out, 11)?.checked_sub(removed)?;
    put_u16(&mut out, 11, body);
    if let Some(seq) = out.get_mut(5..11) {
        seq.fill(0);
    }
    let length = u24_at(&out, HEADER + 1)?.checked_sub(removed)?;
    put_u24(&mut out, HEADER + 1, length);
    put_u16(&mut out, HEADER + 4, 0);
    put_u24(&mut out, HEADER + 9, length);
    Some(out)
}

/// True when `datagram` holds a HelloVerifyRequest or a HelloRetryRequest (a ServerHello
/// with the RFC 8446 4.1.3 random): a server asking for a cookie.
pub(super) fn is_cookie_request(datagram: &[u8]) -> bool {
    const HRR_RANDOM: [u8; 8] = [0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11];
    records(datagram).any(|r| {
        r.content_type == HANDSHAKE
            && match r.fragment.first() {
                Some(&HELLO_VERIFY_REQUEST) => true,
                // type(1) length(3) seq(2) off(3) flen(3) version(2) random(32)
                Some(&SERVER_HELLO) => r.fragment.get(14..22) == Some(&HRR_RANDOM[..]),
                _ => false,
            }
    })
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

    /// The listener's parsers take anything: truncations, bit flips and spliced lengths of a
    /// plausible ClientHello never panic, and what `client_hello` accepts stays in bounds.
    #[test]
    fn client_hello_parsers_never_panic() {
        // A DTLS 1.3 second ClientHello record: version, random, empty session id, empty legacy
        // cookie, two suites, null compression, a cookie extension and a padding extension.
        let mut body = alloc::vec![0xfe, 0xfd];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.push(0);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2b, 1, 0]);
        let ext = [
            &[0u8, 44, 0, 36, 0, 34][..],
            &[5; 34][..],
            &[0, 21, 0, 6][..],
            &[0; 6][..],
        ]
        .concat();
        body.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&ext);
        let len = body.len();
        let mut hs = alloc::vec![CLIENT_HELLO, 0, (len >> 8) as u8, len as u8, 0, 1, 0, 0, 0];
        hs.extend_from_slice(&[0, (len >> 8) as u8, len as u8]);
        hs.extend_from_slice(&body);
        let mut record = alloc::vec![HANDSHAKE, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
        record.extend_from_slice(&u16::try_from(hs.len()).unwrap().to_be_bytes());
        record.extend_from_slice(&hs);
        let hello = client_hello(&record).expect("the sample parses");
        assert!(hello.has_cookie());
        let first = first_client_hello(&record, &hello).expect("rebuilt");
        let first_hello = client_hello(&first).expect("the rebuilt one parses");
        assert!(!first_hello.has_cookie());
        assert_eq!(
            first.len(),
            record.len(),
            "padding grew back by the cookie's size"
        );

        let check = |d: &[u8]| {
            let _ = is_cookie_request(d);
            if let Some(h) = client_hello(d) {
                assert!(h.record_end <= d.len());
                assert!(h.legacy_cookie.end <= h.record_end && h.suites.end <= h.record_end);
                let _ = first_client_hello(d, &h);
            }
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for cut in 0..=record.len() {
            check(&record[..cut]);
        }
        for _ in 0..20_000 {
            let mut d = record.clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() as usize) % d.len();
                match next() % 3 {
                    0 => d[i] ^= 1 << (next() % 8),
                    1 => d[i] = next() as u8,
                    _ => d.truncate(i.max(1)),
                }
            }
            check(&d);
        }
    }

    #[test]
    fn alert_round_trips_through_the_record_reader() {
        let a = plaintext_alert(0x0102_0304_0506, 48);
        assert_eq!(a.len(), 15);
        assert_eq!(max_epoch0_sequence(&a), Some(0x0102_0304_0506));
    }
}
