//! What a gateway does: [`GatewayConfig`], its client-auth policy, allow-list and ticket keys.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tether::{Identity, TicketKey, TlsVersion, Trust};

use crate::GatewayError;

/// Default TLS listener: the device port of the systems tether serves.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// Default HTTP API address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// Default handshake timeout.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default idle timeout: a connection that sends nothing for this long is closed (close_notify).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default drain timeout: how long a shutdown waits for connections to finish.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit of open connections (handshaking or established) in one gateway.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default limit of open connections from one IP address.
pub const DEFAULT_MAX_PER_IP: usize = 10_000;
/// Default interval at which a ticket key file is read again (a changed file is installed).
pub const DEFAULT_TICKET_RELOAD: Duration = Duration::from_secs(60);
/// Default interval between reads of the allow-list file.
pub const DEFAULT_ALLOW_RELOAD: Duration = Duration::from_secs(10);
/// Default interval between reads of the server certificate and key files.
pub const DEFAULT_IDENTITY_RELOAD: Duration = Duration::from_secs(60);
/// Default limit of DTLS sessions in their handshake at once.
pub const DEFAULT_DTLS_MAX_HANDSHAKING: usize = 4096;
/// Default rotation interval of generated ticket keys (no key file).
pub const DEFAULT_TICKET_ROTATION: Duration = Duration::from_secs(6 * 3600);

/// Everything a [`Gateway`](crate::Gateway) needs. Start from [`GatewayConfig::new`], which
/// fills in the defaults, and change fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The TLS listener (default 127.0.0.1:8081). Port 0 picks a free port; read it back with
    /// [`Gateway::local_addr`](crate::Gateway::local_addr).
    pub listen: SocketAddr,
    /// Several gateway processes listen on one TLS port (`SO_REUSEPORT`), the kernel spreading
    /// new connections across them: past one process's open-file limit, or one process per
    /// core (default off: a port in use is an error). Give the group one ticket key file
    /// ([`TicketSource::File`]) so that a device resumes on whichever process it reaches, each
    /// process its own HTTP address (or none), and the DTLS listener [`DtlsListen::Off`] or an
    /// address of each process's own: the kernel would send a DTLS device's datagrams to
    /// another process whenever one of the group starts or stops, so the DTLS listener is not
    /// shared (`SameAsTls` is refused with this option).
    pub reuse_port: bool,
    /// The HTTP API (default 127.0.0.1:8080); `None`: no HTTP API.
    pub http: Option<SocketAddr>,
    /// The server's certificate chain and key.
    pub identity: Identity,
    /// mTLS with a device CA (and an optional allow-list), or server-only TLS.
    pub client_auth: ClientAuthPolicy,
    /// The lowest TLS version accepted (default 1.2); the highest is always 1.3.
    pub min_tls: TlsVersion,
    /// A TLS handshake not complete after this long is cut (default 5 s).
    pub handshake_timeout: Duration,
    /// An established connection that sends nothing for this long is closed with close_notify
    /// (default 300 s).
    pub idle_timeout: Duration,
    /// Open connections at most, handshaking or established; more are closed at accept.
    pub max_connections: usize,
    /// Open connections from one IP address at most; more are closed at accept.
    pub max_per_ip: usize,
    /// The largest frame body accepted; a larger frame gets an ERROR frame (code 1), then
    /// close_notify.
    pub max_frame: u32,
    /// Client certificate chains remembered as verified (mTLS): a device reconnecting with the
    /// same chain skips its signature checks (times, pins and the handshake signature are still
    /// checked). Default [`tether::config::DEFAULT_VERIFIED_CACHE`]; 0 turns it off.
    pub verified_client_chains: usize,
    /// The cryptography for TLS handshakes and records (default
    /// [`tether::Crypto::fastest`]: AWS-LC's key exchange, which this crate builds with).
    pub crypto: tether::Crypto,
    /// How long a drain may take: connections still open after it are cut.
    pub drain_timeout: Duration,
    /// Where session-ticket keys come from.
    pub tickets: TicketSource,
    /// The DTLS listener (UDP): by default on the TLS listener's address and port.
    pub dtls: DtlsListen,
    /// DTLS sessions in their handshake at most; a valid-cookie ClientHello over the limit is
    /// dropped (the client retransmits).
    pub dtls_max_handshaking: usize,
    /// The file the allow-list came from (mTLS with an allow-list): read again every
    /// [`allow_reload_every`](Self::allow_reload_every). A changed list goes in force once
    /// two reads in a row find it (so a file caught half-written is never installed): it
    /// applies to new handshakes at once, and the established sessions of devices no longer
    /// listed get close_notify (counted with reason `revoked`). A file that cannot be read or
    /// parsed keeps the list in force (a warning is logged).
    pub allow_file: Option<PathBuf>,
    /// How often [`allow_file`](Self::allow_file) is read (default 10 s).
    pub allow_reload_every: Duration,
    /// The files [`identity`](Self::identity) came from (certificate chain, then key, PEM):
    /// read again every [`identity_reload_every`](Self::identity_reload_every), so that a
    /// renewed certificate goes in force without a restart. A change goes in force once two
    /// reads in a row find it (a certificate written before its key is never paired with the
    /// old key); new TLS and DTLS handshakes use it, sessions already open keep theirs. Files
    /// that cannot be read, parsed or paired keep the identity in force (a warning is logged,
    /// `tether_certificate_reloads_total{result="failed"}` counts it). `None`: never re-read.
    pub identity_files: Option<(PathBuf, PathBuf)>,
    /// How often [`identity_files`](Self::identity_files) are read (default 60 s).
    pub identity_reload_every: Duration,
    /// The file the device CA of [`client_auth`](Self::client_auth) came from (mTLS): read again
    /// with [`identity_files`](Self::identity_files), on its schedule and by its rules, so that
    /// a CA added to the file (a CA rotation) is trusted for new handshakes without a restart.
    /// Devices already connected stay (take a device off with the allow-list). `None`, or no
    /// `identity_files`: never re-read.
    pub ca_file: Option<PathBuf>,
}

/// Where the DTLS listener listens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DtlsListen {
    /// UDP on the TLS listener's address and port (the default). With TLS on port 0, the
    /// kernel's pick is taken again until the number is free on UDP too. When the identity
    /// cannot serve DTLS (DTLS needs an ECDSA P-256/P-384 key), the gateway logs a warning and
    /// runs without it.
    #[default]
    SameAsTls,
    /// UDP on this address (port 0: a free port). An identity that cannot serve DTLS is an
    /// error.
    At(SocketAddr),
    /// No DTLS listener.
    Off,
}

impl DtlsListen {
    /// Parses `off`, `same` (the TLS listener's address) or an address `IP:PORT`.
    pub fn parse(s: &str) -> Result<DtlsListen, String> {
        match s.trim() {
            "off" | "none" | "no" => Ok(DtlsListen::Off),
            "same" | "default" => Ok(DtlsListen::SameAsTls),
            a => a.parse().map(DtlsListen::At).map_err(|_| {
                format!("{a:?} is not a DTLS listen address: use IP:PORT, `same` (the TLS listener's address) or `off`")
            }),
        }
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("reuse_port", &self.reuse_port)
            .field("http", &self.http)
            .field("client_auth", &self.client_auth)
            .field("min_tls", &self.min_tls)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_per_ip", &self.max_per_ip)
            .field("max_frame", &self.max_frame)
            .field("verified_client_chains", &self.verified_client_chains)
            .field("crypto", &self.crypto)
            .field("drain_timeout", &self.drain_timeout)
            .field("tickets", &self.tickets)
            .field("dtls", &self.dtls)
            .field("dtls_max_handshaking", &self.dtls_max_handshaking)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// A configuration with every default: listen on 127.0.0.1:8081 (TLS over TCP and DTLS over
    /// UDP), HTTP API on 127.0.0.1:8080, TLS 1.2 minimum, 5 s handshake timeout, 300 s idle timeout,
    /// generated ticket keys.
    pub fn new(identity: Identity, client_auth: ClientAuthPolicy) -> GatewayConfig {
        GatewayConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            reuse_port: false,
            http: Some(DEFAULT_HTTP.parse().expect("a valid address")),
            identity,
            client_auth,
            min_tls: TlsVersion::Tls12,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_ip: DEFAULT_MAX_PER_IP,
            max_frame: tether_wire::DEFAULT_MAX_BODY,
            verified_client_chains: tether::config::DEFAULT_VERIFIED_CACHE,
            crypto: tether::Crypto::fastest(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            tickets: TicketSource::default(),
            dtls: DtlsListen::SameAsTls,
            dtls_max_handshaking: DEFAULT_DTLS_MAX_HANDSHAKING,
            allow_file: None,
            allow_reload_every: DEFAULT_ALLOW_RELOAD,
            identity_files: None,
            identity_reload_every: DEFAULT_IDENTITY_RELOAD,
            ca_file: None,
        }
    }
}

/// Whether devices must present certificates.
#[derive(Clone, Debug)]
pub enum ClientAuthPolicy {
    /// mTLS: a device presents a certificate issued by a CA in `trust`; its device id is the
    /// common name of the certificate's subject. With an allow-list, only listed ids may stay.
    Required {
        /// The device CA(s).
        trust: Trust,
        /// Device ids allowed to connect (`None`: every verified device).
        allow: Option<AllowList>,
    },
    /// Server-only TLS: devices are anonymous (their device id is absent).
    ServerOnly,
}

/// Device ids allowed to connect: one a line in a file, `#` starts a comment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    ids: BTreeSet<String>,
}

impl AllowList {
    /// An allow-list of these ids.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> AllowList {
        AllowList {
            ids: ids.into_iter().map(Into::into).collect(),
        }
    }

    /// Parses the text of an allow-list file; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<AllowList, GatewayError> {
        let mut ids = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let id = line.split('#').next().unwrap_or("").trim();
            if id.is_empty() {
                continue;
            }
            tether_pki::validate_device_id(id)
                .map_err(|e| GatewayError::Config(format!("{source} line {}: {e}", i + 1)))?;
            ids.insert(id.to_owned());
        }
        Ok(AllowList { ids })
    }

    /// Reads and parses an allow-list file.
    pub fn load(path: &Path) -> Result<AllowList, GatewayError> {
        let bytes = std::fs::read(path).map_err(|e| {
            GatewayError::io(format!("cannot read allow-list {}", path.display()), e)
        })?;
        AllowList::parse_bytes(&bytes, &format!("allow-list {}", path.display()))
    }

    /// [`parse`](Self::parse) for a file's bytes: text that is not UTF-8 is refused with its
    /// line (device ids are ASCII).
    pub fn parse_bytes(bytes: &[u8], source: &str) -> Result<AllowList, GatewayError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let good = &bytes[..e.valid_up_to()];
            let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
            GatewayError::Config(format!(
                "{source} line {line}: not UTF-8 text; an allow-list has one device id a line \
                 (letters, digits, '.', '_' and '-'), '#' starts a comment"
            ))
        })?;
        AllowList::parse(text, source)
    }

    /// Whether `id` is listed.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// How many ids are listed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the list is empty (then no device may connect).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Where session-ticket keys come from.
///
/// Resumption makes a returning device's handshake cheap (no certificate chain, no signature).
/// For devices to resume on any gateway behind a balancer, every gateway must open every other's
/// tickets: give them all the same key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketSource {
    /// A random key made at start, replaced every `rotate_every` (the previous key still opens
    /// tickets for one more period). Tickets resume only on this process.
    Generated {
        /// How often a new key is generated.
        rotate_every: Duration,
    },
    /// Keys read from a file of 48-byte keys (16-byte name, 32-byte key) back to back: the first
    /// seals new tickets, the second (if any) still opens old ones. The file is read again every
    /// `reload_every`, and a change goes in force once two reads in a row find it (so a file
    /// caught half-written is never installed); to rotate a fleet, write a new file with the
    /// new key first and the old one second to every gateway.
    File {
        /// The key file (binary, 48 or 96 bytes; more keys are ignored).
        path: PathBuf,
        /// How often the file is read again.
        reload_every: Duration,
    },
}

impl Default for TicketSource {
    fn default() -> Self {
        TicketSource::Generated {
            rotate_every: DEFAULT_TICKET_ROTATION,
        }
    }
}

/// Reads a ticket key file: the current key, and the previous one if the file has two.
pub fn load_ticket_keys(path: &Path) -> Result<(TicketKey, Option<TicketKey>), GatewayError> {
    let bytes = std::fs::read(path)
        .map_err(|e| GatewayError::io(format!("cannot read ticket keys {}", path.display()), e))?;
    parse_ticket_keys(&bytes)
        .map_err(|e| GatewayError::Config(format!("ticket keys {}: {e}", path.display())))
}

/// Parses ticket keys: 48-byte keys back to back, first = current, second = previous.
pub fn parse_ticket_keys(bytes: &[u8]) -> Result<(TicketKey, Option<TicketKey>), String> {
    let len = TicketKey::LEN;
    if bytes.is_empty() || !bytes.len().is_multiple_of(len) {
        return Err(format!(
            "expected one or more {len}-byte keys (16-byte name, 32-byte key) back to back, \
             got {} bytes; make one with `head -c {len} /dev/urandom > FILE`",
            bytes.len()
        ));
    }
    let key = |i: usize| TicketKey::from_bytes(&bytes[i * len..(i + 1) * len]);
    let current = key(0).map_err(|e| e.to_string())?;
    let previous = if bytes.len() >= 2 * len {
        Some(key(1).map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok((current, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_parses_comments_and_reports_lines() {
        let list = AllowList::parse("device-1\n\n# comment\n device-2 # trailing\n", "t").unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.contains("device-1") && list.contains("device-2"));
        let err = AllowList::parse("ok\nbad id!\n", "allow.txt").unwrap_err();
        assert!(err.to_string().starts_with("allow.txt line 2:"), "{err}");
    }

    #[test]
    fn an_allow_list_that_is_not_text_names_its_line() {
        let err = AllowList::parse_bytes(b"device-1\n# ok\n\xff\xfe\n", "allow.txt").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("allow.txt line 3: not UTF-8 text"), "{msg}");
        assert!(msg.contains("one device id a line"), "{msg}");
        let list = AllowList::parse_bytes(b"device-1\n", "allow.txt").unwrap();
        assert!(list.contains("device-1"));
    }

    #[test]
    fn ticket_keys_are_48_byte_blocks() {
        let (cur, prev) = parse_ticket_keys(&[1u8; 48]).unwrap();
        assert_eq!(cur.to_bytes(), [1u8; 48]);
        assert!(prev.is_none());
        let mut two = vec![1u8; 48];
        two.extend([2u8; 48]);
        let (cur, prev) = parse_ticket_keys(&two).unwrap();
        assert_eq!(cur.to_bytes(), [1u8; 48]);
        assert_eq!(prev.unwrap().to_bytes(), [2u8; 48]);
        assert!(
            parse_ticket_keys(&[0u8; 47])
                .unwrap_err()
                .contains("got 47 bytes")
        );
        assert!(parse_ticket_keys(&[]).is_err());
    }
}
