//! tether's own record layer for an established session: records decrypted in place.
//!
//! rustls 0.23's unbuffered API decrypts a record in the caller's buffer and then hands the
//! plaintext out as a copy of its own, so a full 16 KiB record costs two 16 KiB buffers at
//! once, and an established rustls connection keeps its handshake's machinery (about 3 KB on
//! the heap) for the life of the connection. Once a handshake has completed, on either side,
//! [`Session`](crate::Session) therefore takes the traffic keys from rustls
//! ([`rustls::kernel`], the API rustls offers for kTLS) and does the records itself: each
//! record is opened in place in the session's input buffer, and the application reads its
//! plaintext from there. rustls keeps what it still owns after the handshake: new traffic
//! secrets on a TLS 1.3 key update and, for a client, the session tickets the server sends
//! (which go to the configuration's session cache, as before).
//!
//! What this layer does, per RFC 8446 section 5 and RFC 5246 section 6.2:
//! - opens records (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; TLS 1.2's explicit GCM nonce
//!   and additional data; TLS 1.3's inner content type and padding), with the size limits of
//!   each version; a record that fails to open is `bad_record_mac`, fatal;
//! - seals application data, close_notify and the alerts it sends on failure; and, for a
//!   session of either side that refuses its peer after the handshake
//!   ([`Session::refuse`](crate::Session::refuse)), the one alert it sends under keys taken
//!   from rustls for that purpose;
//! - post-handshake messages: TLS 1.3 NewSessionTicket (a client's, to rustls) and KeyUpdate
//!   (new receive keys; answered with a KeyUpdate of its own when the peer asks, one for
//!   any number of requests before the next application data), joined
//!   across records, never across a key change; a TLS 1.2 renegotiation request (a server's
//!   HelloRequest, a client's ClientHello) gets a no_renegotiation warning, as rustls answers
//!   it; anything else (a post-handshake CertificateRequest tether never offered, a ticket
//!   sent to a server) is refused;
//! - alerts: close_notify ends the stream, a fatal alert fails it, TLS 1.2 warnings are
//!   ignored, TLS 1.3 `user_canceled` too;
//! - a peer's misbehaviour is bounded as rustls bounds it (BoringSSL's limits): at most 4
//!   warning alerts, 1 renegotiation request, 32 KeyUpdates between two records of
//!   application data, and 32 empty records in a row;
//! - sequence numbers: a TLS 1.3 sender updates its keys before the suite's confidentiality
//!   limit; a TLS 1.2 sender stops there.

use alloc::vec::Vec;

use ring::aead::{self, Aad, LessSafeKey, Nonce};
use rustls::client::ClientConnectionData;
use rustls::crypto::cipher::AeadKey;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ContentType, Error, PeerMisbehaved, ProtocolVersion,
};

const HEADER: usize = 5;
const TAG: usize = 16;
const MAX_PLAINTEXT: usize = 16 * 1024;
/// RFC 8446 5.2: TLSCiphertext.length at most 2^14 + 256.
const MAX_CIPHERTEXT_13: usize = MAX_PLAINTEXT + 256;
/// RFC 5246 6.2.3: TLSCiphertext.length at most 2^14 + 2048.
const MAX_CIPHERTEXT_12: usize = MAX_PLAINTEXT + 2048;
/// Post-handshake messages larger than this are refused (a ticket is a few hundred bytes).
const MAX_HANDSHAKE_MESSAGE: usize = MAX_PLAINTEXT;
/// Records sealed before the suite's confidentiality limit at which a TLS 1.3 sender updates
/// its keys (rustls does the same with its own margin).
pub(crate) const KEY_UPDATE_MARGIN: u64 = 1 << 16;

const HS_HELLO_REQUEST: u8 = 0;
const HS_CLIENT_HELLO: u8 = 1;
const HS_NEW_SESSION_TICKET: u8 = 4;
const HS_KEY_UPDATE: u8 = 24;
/// A KeyUpdate message with request_update = update_not_requested.
const KEY_UPDATE: [u8; 5] = [HS_KEY_UPDATE, 0, 0, 1, 0];

/// Warning alerts a peer may send over a connection's life (rustls' and BoringSSL's limit).
const MAX_WARNING_ALERTS: u8 = 4;
/// TLS 1.2 renegotiation requests refused with a warning before the next one is fatal.
const MAX_RENEGOTIATION_REQUESTS: u8 = 1;
/// KeyUpdates a peer may send between two records of application data.
const MAX_KEY_UPDATES: u8 = 32;
/// Empty records of application data a peer may send in a row.
const MAX_EMPTY_RECORDS: u8 = 32;

/// What rustls keeps of an established connection: the key schedule for key updates, and a
/// client's session cache for the tickets its server sends.
pub(crate) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update_rx_secret(&mut self) -> Result<(u64, ConnectionTrafficSecrets), Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }

    fn update_tx_secret(&mut self) -> Result<(u64, ConnectionTrafficSecrets), Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }

    fn format(&self) -> Result<(bool, u64), Error> {
        match self {
            Kernel::Client(k) => format_of(k),
            Kernel::Server(k) => format_of(k),
        }
    }
}

/// How many more of each kind of misbehaviour the peer may show (see the module docs).
struct Temper {
    warnings: u8,
    renegotiations: u8,
    key_updates: u8,
    empty_records: u8,
}

impl Default for Temper {
    fn default() -> Temper {
        Temper {
            warnings: MAX_WARNING_ALERTS,
            renegotiations: MAX_RENEGOTIATION_REQUESTS,
            key_updates: MAX_KEY_UPDATES,
            empty_records: MAX_EMPTY_RECORDS,
        }
    }
}

/// Takes one from `left`, or fails with `err` when none is left.
fn spend(left: &mut u8, err: PeerMisbehaved) -> Result<(), Error> {
    *left = left.checked_sub(1).ok_or(Error::PeerMisbehaved(err))?;
    Ok(())
}

/// One direction's keys: the key bytes (zeroised on drop, by `AeadKey`), set up as a ring key
/// on the stack for each record, and the IV. A ring key held set up is 544 bytes (AES-GCM's
/// round keys and GHASH table); two of them were a third of an idle session's heap. Setting
/// one up costs about 160 ns with AES instructions: 7% of sealing a full 16 KiB record, less
/// than a system call per record (docs/PERFORMANCE.md, "Device RAM").
struct Keys {
    alg: &'static aead::Algorithm,
    key: AeadKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Keys, Error> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => {
                return Err(Error::General(
                    "unsupported cipher for tether's record layer".into(),
                ));
            }
        };
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| Error::General("bad traffic iv".into()))?;
        // A key ring refuses fails here, not at the first record.
        crate::suites::ring_key(alg, key.as_ref())
            .map_err(|_| Error::General("bad traffic key".into()))?;
        Ok(Keys { alg, key, iv, seq })
    }

    /// The ring key for one record.
    fn ring_key(&self) -> Result<LessSafeKey, Error> {
        crate::suites::ring_key(self.alg, self.key.as_ref())
    }

    /// The per-record nonce ([`crate::suites::nonce`]).
    fn nonce(&self) -> [u8; 12] {
        crate::suites::nonce(&self.iv, self.seq)
    }

    fn next_seq(&mut self) -> Result<(), Error> {
        self.seq = self.seq.checked_add(1).ok_or(Error::EncryptError)?;
        Ok(())
    }
}

/// What [`Records::open`] found at the start of the input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// No whole record yet.
    NeedMore,
    /// Application data: the plaintext is `input[start..end]`, opened in place; the record
    /// takes `input[..len]`.
    Data {
        start: usize,
        end: usize,
        len: usize,
    },
    /// A record with nothing for the application (a ticket, a key update, a warning alert, an
    /// empty record): `input[..len]` may go.
    Consumed { len: usize },
    /// close_notify: the stream has ended; nothing after it counts.
    Closed,
}

/// The sending half of a record layer: the send keys and what the record format needs.
struct Sealer {
    tls13: bool,
    /// AES-GCM (TLS 1.2 sends its explicit nonce); ChaCha20-Poly1305 otherwise.
    gcm: bool,
    keys: Keys,
    /// The suite's confidentiality limit: records one key may seal.
    limit: u64,
}

impl Sealer {
    fn new(tls13: bool, tx: (u64, ConnectionTrafficSecrets), limit: u64) -> Result<Sealer, Error> {
        let gcm = !matches!(tx.1, ConnectionTrafficSecrets::Chacha20Poly1305 { .. });
        Ok(Sealer {
            tls13,
            gcm,
            keys: Keys::new(tx.0, tx.1)?,
            limit,
        })
    }

    /// Bytes a record adds to its plaintext.
    fn overhead(&self) -> usize {
        match (self.tls13, self.gcm) {
            (true, _) => HEADER + 1 + TAG,
            (false, true) => HEADER + 8 + TAG,
            (false, false) => HEADER + TAG,
        }
    }

    /// Seals one record of `content` carrying `data` (at most 2^14 bytes) at the end of `out`;
    /// a record that cannot be sealed leaves `out` as it was.
    fn seal(&mut self, content: ContentType, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        append(out, self.overhead() + data.len(), |o| {
            self.seal_into(content, data, o)
        })
    }

    /// Seals a fatal alert (level 2) at the end of `out`.
    fn fatal_alert(&mut self, desc: AlertDescription, out: &mut Vec<u8>) -> Result<(), Error> {
        self.seal(ContentType::Alert, &[2, u8::from(desc)], out)
    }

    /// Seals one record into `out`, which must hold `data.len() + overhead()`; returns its size.
    fn seal_into(
        &mut self,
        content: ContentType,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        if self.keys.seq >= self.limit {
            return Err(Error::EncryptError);
        }
        let total = self.overhead() + data.len();
        let out = &mut out[..total];
        let body_len = (total - HEADER) as u16;
        let (outer, explicit, inner_len) = if self.tls13 {
            (ContentType::ApplicationData, 0, data.len() + 1)
        } else if self.gcm {
            (content, 8, data.len())
        } else {
            (content, 0, data.len())
        };
        out[0] = u8::from(outer);
        out[1..3].copy_from_slice(&[0x03, 0x03]);
        out[3..5].copy_from_slice(&body_len.to_be_bytes());
        let nonce = self.keys.nonce();
        let (header, rest) = out.split_at_mut(HEADER);
        rest[explicit..explicit + data.len()].copy_from_slice(data);
        if self.tls13 {
            rest[data.len()] = u8::from(content);
        }
        if explicit > 0 {
            rest[..8].copy_from_slice(&nonce[4..]);
        }
        let (body, tag) = rest[explicit..].split_at_mut(inner_len);
        let aad_12;
        let aad: &[u8] = if self.tls13 {
            header
        } else {
            let mut a = [0u8; 13];
            a[..8].copy_from_slice(&self.keys.seq.to_be_bytes());
            a[8..11].copy_from_slice(&header[..3]);
            a[11..].copy_from_slice(&(data.len() as u16).to_be_bytes());
            aad_12 = a;
            &aad_12
        };
        let t = self
            .keys
            .ring_key()?
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| Error::EncryptError)?;
        tag.copy_from_slice(t.as_ref());
        self.keys.next_seq()?;
        Ok(total)
    }
}

/// Runs `write` on `len` new bytes at the end of `out`; a failed write leaves `out` as it was.
fn append(
    out: &mut Vec<u8>,
    len: usize,
    write: impl FnOnce(&mut [u8]) -> Result<usize, Error>,
) -> Result<(), Error> {
    let start = out.len();
    out.resize(start + len, 0);
    match write(&mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Seals one fatal alert under the send keys of a connection whose handshake has completed
/// (what rustls' `dangerous_into_kernel_connection` returns; either side). How a session
/// refuses its peer after the handshake: rustls offers no call that sends an alert of the
/// application's choosing.
pub(crate) fn seal_fatal_alert<D>(
    kernel: &KernelConnection<D>,
    secrets: rustls::ExtractedSecrets,
    desc: AlertDescription,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let (tls13, limit) = format_of(kernel)?;
    Sealer::new(tls13, secrets.tx, limit)?.fatal_alert(desc, out)
}

/// Whether the connection is TLS 1.3, and its suite's confidentiality limit.
fn format_of<D>(kernel: &KernelConnection<D>) -> Result<(bool, u64), Error> {
    let tls13 = match kernel.protocol_version() {
        ProtocolVersion::TLSv1_3 => true,
        ProtocolVersion::TLSv1_2 => false,
        _ => return Err(Error::General("unsupported TLS version".into())),
    };
    let limit = match kernel.negotiated_cipher_suite() {
        rustls::SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
        rustls::SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
    };
    Ok((tls13, limit))
}

/// The record layer of an established TLS connection, either side. See the
/// [module docs](self).
pub(crate) struct Records {
    kernel: Kernel,
    tls13: bool,
    gcm: bool,
    temper: Temper,
    rx: Keys,
    tx: Sealer,
    /// A post-handshake message split over records, until it is whole.
    hs: Vec<u8>,
    /// A KeyUpdate answering the peer's request has been sealed since the last application
    /// data: further requests before that data need no answer of their own (RFC 8446 4.6.3;
    /// rustls keeps one answer queued likewise).
    key_update_answered: bool,
}

impl Records {
    pub(crate) fn new(kernel: Kernel, secrets: rustls::ExtractedSecrets) -> Result<Records, Error> {
        let (tls13, limit) = kernel.format()?;
        let gcm = !matches!(
            secrets.rx.1,
            ConnectionTrafficSecrets::Chacha20Poly1305 { .. }
        );
        Ok(Records {
            tls13,
            gcm,
            rx: Keys::new(secrets.rx.0, secrets.rx.1)?,
            tx: Sealer::new(tls13, secrets.tx, limit)?,
            kernel,
            temper: Temper::default(),
            hs: Vec::new(),
            key_update_answered: false,
        })
    }

    /// Bytes a record adds to its plaintext.
    pub(crate) fn overhead(&self) -> usize {
        self.tx.overhead()
    }

    /// Opens the record at the start of `input`, in place.
    ///
    /// Messages to send in reply (a KeyUpdate) go to `tx`. On an error the caller sends
    /// [`alert_for`] of it and fails the connection.
    pub(crate) fn open(&mut self, input: &mut [u8], tx: &mut Vec<u8>) -> Result<Opened, Error> {
        if input.len() < HEADER {
            return Ok(Opened::NeedMore);
        }
        let typ = input[0];
        let len = usize::from(u16::from_be_bytes([input[3], input[4]]));
        let max = if self.tls13 {
            MAX_CIPHERTEXT_13
        } else {
            MAX_CIPHERTEXT_12
        };
        if len > max {
            return Err(Error::PeerSentOversizedRecord);
        }
        // Checked before the whole record is in, so that a bad header fails at once.
        if input[1] != 0x03 {
            return Err(Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType,
            ));
        }
        if input.len() < HEADER + len {
            return Ok(Opened::NeedMore);
        }
        let total = HEADER + len;
        let (header, rest) = input[..total].split_at_mut(HEADER);
        let (content, start, end) = if self.tls13 {
            // RFC 8446 5.2: every record after the handshake is application_data on the outside.
            if typ != u8::from(ContentType::ApplicationData) {
                return Err(unexpected(
                    "a record that is not encrypted after the handshake",
                ));
            }
            if len < TAG + 1 {
                return Err(Error::DecryptError);
            }
            let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
            let plain = self
                .rx
                .ring_key()?
                .open_in_place(nonce, Aad::from(&header[..]), rest)
                .map_err(|_| Error::DecryptError)?;
            // The inner content type is the last non-zero byte; zeros after it are padding.
            let Some(pos) = plain.iter().rposition(|&b| b != 0) else {
                return Err(unexpected("a record with no content type"));
            };
            if pos > MAX_PLAINTEXT {
                return Err(Error::PeerSentOversizedRecord);
            }
            (plain[pos], HEADER, HEADER + pos)
        } else {
            let explicit = if self.gcm { 8 } else { 0 };
            if len < explicit + TAG {
                return Err(Error::DecryptError);
            }
            let plain_len = len - explicit - TAG;
            if plain_len > MAX_PLAINTEXT {
                return Err(Error::PeerSentOversizedRecord);
            }
            let nonce = if self.gcm {
                let mut n = [0u8; 12];
                n[..4].copy_from_slice(&self.rx.iv[..4]);
                n[4..].copy_from_slice(&rest[..8]);
                n
            } else {
                self.rx.nonce()
            };
            let mut aad = [0u8; 13];
            aad[..8].copy_from_slice(&self.rx.seq.to_be_bytes());
            aad[8..11].copy_from_slice(&header[..3]);
            aad[11..].copy_from_slice(&(plain_len as u16).to_be_bytes());
            self.rx
                .ring_key()?
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut rest[explicit..],
                )
                .map_err(|_| Error::DecryptError)?;
            let start = HEADER + explicit;
            (typ, start, start + plain_len)
        };
        self.rx.seq = self.rx.seq.checked_add(1).ok_or(Error::DecryptError)?;
        let content = ContentType::from(content);
        if !self.hs.is_empty() && content != ContentType::Handshake {
            // RFC 8446 5.1: a message split over records is not interleaved with others.
            return Err(unexpected(
                "a record in the middle of a split handshake message",
            ));
        }
        match content {
            ContentType::ApplicationData if end > start => {
                self.temper.key_updates = MAX_KEY_UPDATES;
                self.temper.empty_records = MAX_EMPTY_RECORDS;
                Ok(Opened::Data {
                    start,
                    end,
                    len: total,
                })
            }
            ContentType::ApplicationData => {
                spend(
                    &mut self.temper.empty_records,
                    PeerMisbehaved::TooManyEmptyFragments,
                )?;
                Ok(Opened::Consumed { len: total })
            }
            ContentType::Alert => self.alert(&input[start..end], total),
            ContentType::Handshake => {
                let body = input[start..end].to_vec();
                self.handshake(&body, tx)?;
                Ok(Opened::Consumed { len: total })
            }
            _ => Err(unexpected(
                "a record type that is not allowed after the handshake",
            )),
        }
    }

    fn alert(&mut self, body: &[u8], total: usize) -> Result<Opened, Error> {
        let [level, desc] = *body else {
            return Err(decode_error("an alert that is not two bytes"));
        };
        let desc = AlertDescription::from(desc);
        if desc == AlertDescription::CloseNotify {
            return Ok(Opened::Closed);
        }
        // TLS 1.2 warnings are not fatal; in TLS 1.3 only user_canceled is (RFC 8446 6.1).
        let warning = level == 1;
        if warning {
            spend(
                &mut self.temper.warnings,
                PeerMisbehaved::TooManyWarningAlertsReceived,
            )?;
        }
        if warning && (!self.tls13 || desc == AlertDescription::UserCanceled) {
            return Ok(Opened::Consumed { len: total });
        }
        Err(Error::AlertReceived(desc))
    }

    fn handshake(&mut self, body: &[u8], tx: &mut Vec<u8>) -> Result<(), Error> {
        if body.is_empty() {
            return Err(unexpected("an empty handshake record"));
        }
        let mut joined;
        let mut msgs: &[u8] = if self.hs.is_empty() {
            body
        } else {
            joined = core::mem::take(&mut self.hs);
            joined.extend_from_slice(body);
            &joined
        };
        let renegotiation_request = match self.kernel {
            Kernel::Client(_) => HS_HELLO_REQUEST,
            Kernel::Server(_) => HS_CLIENT_HELLO,
        };
        while !msgs.is_empty() {
            let &[typ, a, b, c, ..] = msgs else {
                return self.keep_partial(msgs);
            };
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if len > MAX_HANDSHAKE_MESSAGE {
                return Err(Error::PeerSentOversizedRecord);
            }
            if msgs.len() < 4 + len {
                return self.keep_partial(msgs);
            }
            let payload = &msgs[4..4 + len];
            msgs = &msgs[4 + len..];
            match (typ, &mut self.kernel) {
                (HS_NEW_SESSION_TICKET, Kernel::Client(kernel)) if self.tls13 => {
                    kernel.handle_new_session_ticket(payload)?;
                }
                (HS_KEY_UPDATE, _) if self.tls13 => {
                    spend(
                        &mut self.temper.key_updates,
                        PeerMisbehaved::TooManyKeyUpdateRequests,
                    )?;
                    // RFC 8446 5.1: a key change ends the record.
                    if !msgs.is_empty() {
                        return Err(unexpected("data after a KeyUpdate in its record"));
                    }
                    let requested = match payload {
                        [0] => false,
                        [1] => true,
                        _ => {
                            return Err(Error::InvalidMessage(
                                rustls::InvalidMessage::InvalidKeyUpdate,
                            ));
                        }
                    };
                    let (seq, secrets) = self.kernel.update_rx_secret()?;
                    self.rx = Keys::new(seq, secrets)?;
                    if requested && !self.key_update_answered {
                        append(tx, self.overhead() + KEY_UPDATE.len(), |o| {
                            self.seal_key_update(false, o)
                        })?;
                        self.key_update_answered = true;
                    }
                }
                (t, _)
                    if t == renegotiation_request
                        && !self.tls13
                        && (t != HS_HELLO_REQUEST || payload.is_empty()) =>
                {
                    // TLS 1.2 renegotiation, which tether never does: refused with a warning
                    // (RFC 5246 7.4.1.1 and 7.4.1.2), as rustls does; the connection goes on,
                    // until a second request.
                    spend(
                        &mut self.temper.renegotiations,
                        PeerMisbehaved::TooManyRenegotiationRequests,
                    )?;
                    self.tx.seal(
                        ContentType::Alert,
                        &[1, u8::from(AlertDescription::NoRenegotiation)],
                        tx,
                    )?;
                }
                _ => {
                    // A message tether never asked for (a post-handshake CertificateRequest,
                    // a ticket sent to a server, ...).
                    return Err(unexpected("a handshake message after the handshake"));
                }
            }
        }
        Ok(())
    }

    fn keep_partial(&mut self, msgs: &[u8]) -> Result<(), Error> {
        self.hs = msgs.to_vec();
        Ok(())
    }

    /// Seals a KeyUpdate into `out` under the current send keys, then moves to the next ones;
    /// returns the record's size. tether only asks for the peer's update in tests.
    fn seal_key_update(&mut self, request: bool, out: &mut [u8]) -> Result<usize, Error> {
        let mut msg = KEY_UPDATE;
        msg[4] = u8::from(request);
        let n = self.tx.seal_into(ContentType::Handshake, &msg, out)?;
        let (seq, secrets) = self.kernel.update_tx_secret()?;
        self.tx.keys = Keys::new(seq, secrets)?;
        Ok(n)
    }

    /// Seals as much of `data` as fits `out` in records of at most `max_fragment` bytes;
    /// returns (consumed, written). `Ok((0, _))` with data left means `out` is too small for
    /// even one byte of it.
    pub(crate) fn seal_data(
        &mut self,
        data: &[u8],
        out: &mut [u8],
        max_fragment: usize,
    ) -> Result<(usize, usize), Error> {
        let overhead = self.overhead();
        let mut consumed = 0;
        let mut written = 0;
        while consumed < data.len() {
            // Near the suite's limit a TLS 1.3 sender updates its keys first; the KeyUpdate
            // needs room for its own record and one byte of data after it.
            if self.tls13 && self.tx.keys.seq >= self.tx.limit.saturating_sub(KEY_UPDATE_MARGIN) {
                if out.len() - written < 2 * overhead + KEY_UPDATE.len() {
                    break;
                }
                written += self.seal_key_update(false, &mut out[written..])?;
            }
            let room = (out.len() - written).saturating_sub(overhead);
            let n = (data.len() - consumed).min(max_fragment).min(room);
            if n == 0 {
                break;
            }
            written += self.tx.seal_into(
                ContentType::ApplicationData,
                &data[consumed..consumed + n],
                &mut out[written..],
            )?;
            consumed += n;
            self.key_update_answered = false;
        }
        Ok((consumed, written))
    }

    /// Records sealed under the current send keys.
    #[cfg(test)]
    pub(crate) fn tx_seq(&self) -> u64 {
        self.tx.keys.seq
    }

    /// Seals one record of any content type (tests: a peer that sends what tether never
    /// would).
    #[cfg(test)]
    pub(crate) fn seal_raw(
        &mut self,
        content: ContentType,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.tx.seal(content, data, out)
    }

    /// Seals a KeyUpdate (update_requested when `request`) and moves to the next send keys.
    #[cfg(test)]
    pub(crate) fn seal_key_update_raw(
        &mut self,
        request: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        append(out, self.overhead() + KEY_UPDATE.len(), |o| {
            self.seal_key_update(request, o)
        })
    }

    /// Moves the send keys' limit (tests: a real one is 2^23 to 2^64 records).
    #[cfg(test)]
    pub(crate) fn set_tx_limit(&mut self, limit: u64) {
        self.tx.limit = limit;
    }

    /// Queues a fatal alert (the connection is refused).
    pub(crate) fn fatal_alert(
        &mut self,
        desc: AlertDescription,
        tx: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.tx.fatal_alert(desc, tx)
    }

    /// Queues close_notify.
    pub(crate) fn close_notify(&mut self, tx: &mut Vec<u8>) {
        let _ = self.tx.seal(ContentType::Alert, &[1, 0], tx);
    }

    /// Queues the fatal alert that goes with `err`, if any (best effort: the connection fails
    /// either way).
    pub(crate) fn send_alert_for(&mut self, err: &Error, tx: &mut Vec<u8>) {
        if let Some(desc) = alert_for(err) {
            let _ = self.tx.fatal_alert(desc, tx);
        }
    }
}

fn decode_error(what: &str) -> Error {
    Error::General(alloc::format!("decode error: {what}"))
}

fn unexpected(what: &str) -> Error {
    Error::General(alloc::format!("unexpected message: {what}"))
}

/// tether's error for an error of this layer.
pub(crate) fn to_error(err: Error) -> crate::Error {
    match err {
        Error::General(m) => crate::Error::Protocol(m),
        Error::EncryptError => crate::Error::Protocol(
            "the connection sent as many records as its cipher suite allows under one key \
             (TLS 1.2 cannot change keys): reconnect"
                .into(),
        ),
        other => crate::error::from_rustls(other),
    }
}

/// The alert RFC 8446 6.2 names for an error of this layer.
fn alert_for(err: &Error) -> Option<AlertDescription> {
    Some(match err {
        Error::DecryptError => AlertDescription::BadRecordMac,
        Error::PeerSentOversizedRecord => AlertDescription::RecordOverflow,
        Error::InvalidMessage(_) => AlertDescription::DecodeError,
        Error::General(m) if m.starts_with("decode error") => AlertDescription::DecodeError,
        Error::General(m) if m.starts_with("unexpected message") => {
            AlertDescription::UnexpectedMessage
        }
        Error::PeerMisbehaved(_) => AlertDescription::UnexpectedMessage,
        Error::AlertReceived(_) => return None,
        _ => AlertDescription::InternalError,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_xors_the_sequence_into_the_last_eight_bytes() {
        let k = Keys {
            alg: &aead::AES_128_GCM,
            key: AeadKey::from([0; 32]),
            iv: [0xff; 12],
            seq: 0x0102,
        };
        let n = k.nonce();
        assert_eq!(&n[..10], &[0xff; 10]);
        assert_eq!(n[10..], [0xfe, 0xfd]);
    }

    #[test]
    fn alerts_for_errors() {
        assert_eq!(
            alert_for(&Error::DecryptError),
            Some(AlertDescription::BadRecordMac)
        );
        assert_eq!(
            alert_for(&unexpected("x")),
            Some(AlertDescription::UnexpectedMessage)
        );
        assert_eq!(
            alert_for(&Error::AlertReceived(AlertDescription::HandshakeFailure)),
            None
        );
    }
}
