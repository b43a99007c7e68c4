//! Endpoint provisioning (no_std, no features): the gateway endpoint a device reads from memory.
//!
//! Emulated devices (Renode running Zephyr, in the Wasmbed setup) find their gateway in a memory
//! blob written before boot: a `u32` little-endian length, then that many bytes of UTF-8
//! `"host:port"`, the last 32-bit word padded with zeros. `tether provision HOST:PORT --base ADDR`
//! prints the Renode commands that write it (`sysbus WriteDoubleWord ADDR VALUE`, the length
//! word first). For `"10.42.0.12:8081"` at `0x20001000`:
//!
//! ```text
//! 0x20001000  0x0000000f   length 15
//! 0x20001004  0x342e3031   "10.4"  (bytes 31 30 2e 34: the first byte is the low byte)
//! 0x20001008  0x2e302e32   "2.0."
//! 0x2000100c  0x383a3231   "12:8"
//! 0x20001010  0x00313830   "081" and one zero byte of padding
//! ```
//!
//! [`read_endpoint`] parses such a blob into an [`Endpoint`] that borrows the host from it (no
//! allocation), [`write_blob`] makes one into a caller buffer, and [`parse_endpoint`] checks a
//! `"host:port"` string by the same rules. Every way a blob can be wrong has its own
//! [`ProvisionError`] variant, so a device can report exactly what its provisioning got wrong:
//!
//! | blob | error |
//! |---|---|
//! | fewer than 4 bytes | [`NoLengthWord`](ProvisionError::NoLengthWord) |
//! | length 0 | [`LengthZero`](ProvisionError::LengthZero) |
//! | length above [`MAX_ENDPOINT_LEN`] | [`LengthPastLimit`](ProvisionError::LengthPastLimit) |
//! | length past the end of the blob | [`LengthPastBlob`](ProvisionError::LengthPastBlob) |
//! | bytes not UTF-8 | [`NotUtf8`](ProvisionError::NotUtf8) |
//! | no `:port` | [`MissingPort`](ProvisionError::MissingPort) |
//! | port empty, not decimal digits, 0 or above 65535 | [`BadPort`](ProvisionError::BadPort) |
//! | empty host (`":8081"`, `"[]:8081"`) | [`EmptyHost`](ProvisionError::EmptyHost) |
//! | host with spaces or control characters, an IPv6 literal without brackets, a bracketed host that is not IPv6 | [`BadHost`](ProvisionError::BadHost) |
//!
//! IPv6 literals are written in brackets, `"[::1]:8081"`; [`Endpoint::host`] is then `"::1"`.
//!
//! ```
//! use tether::provision::{read_endpoint, write_blob, ProvisionError};
//!
//! let mut mem = [0u8; 64];
//! let n = write_blob("10.42.0.12:8081", &mut mem)?;
//! assert_eq!(n, 4 + 16); // length word + 15 bytes padded to a whole word
//! assert_eq!(&mem[..8], &[0x0f, 0, 0, 0, b'1', b'0', b'.', b'4']);
//! let ep = read_endpoint(&mem)?;
//! assert_eq!((ep.host(), ep.port()), ("10.42.0.12", 8081));
//! assert_eq!(read_endpoint(&[0, 0, 0, 0]), Err(ProvisionError::LengthZero));
//! # Ok::<(), ProvisionError>(())
//! ```

use core::fmt;
use core::net::Ipv6Addr;

/// The longest endpoint accepted, in bytes: a DNS name of the maximum 253 characters, `:`, and
/// a five-digit port. A longer length word is treated as corrupt memory, not as an endpoint.
pub const MAX_ENDPOINT_LEN: usize = 253 + 1 + 5;

/// Bytes of the length word that starts the blob.
pub const LENGTH_WORD: usize = 4;

/// A gateway endpoint: a host (DNS name, IPv4 address, or IPv6 address without its brackets)
/// and a port (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint<'a> {
    host: &'a str,
    port: u16,
}

impl<'a> Endpoint<'a> {
    /// The host: a name or address to connect to and to verify the certificate for. IPv6
    /// addresses come without brackets.
    pub fn host(&self) -> &'a str {
        self.host
    }

    /// The TCP port (1 to 65535).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when the host is an IPv6 address (it was written in brackets).
    pub fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }
}

/// `host:port`, with brackets around an IPv6 host: the form [`parse_endpoint`] reads.
impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ipv6() {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a port is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortError {
    /// Nothing after the `:`.
    Empty,
    /// Something other than decimal digits.
    NotNumeric,
    /// Port 0 (not a port one can connect to).
    Zero,
    /// Above 65535.
    TooLarge,
}

/// Why a host is not valid (other than being empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// A space, a control character, or one of `/ ? # @ [ ]` in the host.
    BadCharacter,
    /// An IPv6 address without brackets (`::1:8081` cannot be split): write `[::1]:8081`.
    UnbracketedIpv6,
    /// A `[` without its `]`, or text after the `]` other than `:port`.
    UnbalancedBrackets,
    /// Brackets around something that is not an IPv6 address.
    NotIpv6,
}

/// Everything that can be wrong with an endpoint blob or string. See the [module docs](self).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisionError {
    /// The blob is shorter than its 4-byte length word.
    NoLengthWord {
        /// Bytes available.
        available: usize,
    },
    /// The length word is 0: nothing was provisioned.
    LengthZero,
    /// The length word is larger than [`MAX_ENDPOINT_LEN`].
    LengthPastLimit {
        /// The length word.
        length: u32,
        /// [`MAX_ENDPOINT_LEN`].
        limit: usize,
    },
    /// The length word points past the end of the blob.
    LengthPastBlob {
        /// The length word.
        length: u32,
        /// Bytes available after the length word.
        available: usize,
    },
    /// The endpoint bytes are not UTF-8.
    NotUtf8 {
        /// Offset (in the endpoint) of the first byte that is not.
        valid_up_to: usize,
    },
    /// No `:port` after the host.
    MissingPort,
    /// The port is not a number from 1 to 65535.
    BadPort(PortError),
    /// The host is empty.
    EmptyHost,
    /// The host is not a name or an address.
    BadHost(HostError),
    /// [`write_blob`]: the buffer cannot hold the blob.
    BufferTooSmall {
        /// Bytes the blob needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProvisionError::NoLengthWord { available } => write!(
                f,
                "endpoint blob has {available} bytes, fewer than its 4-byte length word; \
                 read the blob from the provisioned address with its full size"
            ),
            ProvisionError::LengthZero => write!(
                f,
                "endpoint length is 0: no gateway endpoint was provisioned; write one with \
                 `tether provision HOST:PORT --base ADDR`"
            ),
            ProvisionError::LengthPastLimit { length, limit } => write!(
                f,
                "endpoint length {length} is above the {limit}-byte limit: the memory does not \
                 hold a provisioned endpoint (wrong address, or not written yet)"
            ),
            ProvisionError::LengthPastBlob { length, available } => write!(
                f,
                "endpoint length {length} runs past the blob ({available} bytes after the \
                 length word); read more memory, or re-provision the endpoint"
            ),
            ProvisionError::NotUtf8 { valid_up_to } => write!(
                f,
                "endpoint is not UTF-8 (bad byte at offset {valid_up_to}); re-provision it"
            ),
            ProvisionError::MissingPort => write!(
                f,
                "endpoint has no port: write it as HOST:PORT (IPv6 as [ADDR]:PORT)"
            ),
            ProvisionError::BadPort(e) => {
                let why = match e {
                    PortError::Empty => "is empty",
                    PortError::NotNumeric => "is not a decimal number",
                    PortError::Zero => "is 0",
                    PortError::TooLarge => "is above 65535",
                };
                write!(f, "endpoint port {why}: use a port from 1 to 65535")
            }
            ProvisionError::EmptyHost => write!(
                f,
                "endpoint host is empty: write it as HOST:PORT with a name or an address"
            ),
            ProvisionError::BadHost(e) => {
                let why = match e {
                    HostError::BadCharacter => {
                        "contains a space, a control character or one of / ? # @ [ ]"
                    }
                    HostError::UnbracketedIpv6 => {
                        "looks like an IPv6 address without brackets: write [ADDR]:PORT"
                    }
                    HostError::UnbalancedBrackets => {
                        "has unbalanced brackets: write an IPv6 endpoint as [ADDR]:PORT"
                    }
                    HostError::NotIpv6 => "is in brackets but is not an IPv6 address",
                };
                write!(f, "endpoint host {why}")
            }
            ProvisionError::BufferTooSmall { needed, available } => write!(
                f,
                "the endpoint blob needs {needed} bytes but the buffer has {available}"
            ),
        }
    }
}

impl core::error::Error for ProvisionError {}

/// Parses `"host:port"` (IPv6 as `"[addr]:port"`) by the rules in the [module docs](self).
pub fn parse_endpoint(s: &str) -> Result<Endpoint<'_>, ProvisionError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or(ProvisionError::BadHost(HostError::UnbalancedBrackets))?;
        if addr.is_empty() {
            return Err(ProvisionError::EmptyHost);
        }
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(ProvisionError::BadHost(HostError::NotIpv6));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => return Err(ProvisionError::MissingPort),
            None => return Err(ProvisionError::BadHost(HostError::UnbalancedBrackets)),
        };
        (addr, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or(ProvisionError::MissingPort)?;
        if host.is_empty() {
            return Err(ProvisionError::EmptyHost);
        }
        if host.contains(':') {
            return Err(ProvisionError::BadHost(HostError::UnbracketedIpv6));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@[]".contains(c))
        {
            return Err(ProvisionError::BadHost(HostError::BadCharacter));
        }
        (host, port)
    };
    Ok(Endpoint {
        host,
        port: parse_port(port)?,
    })
}

fn parse_port(p: &str) -> Result<u16, ProvisionError> {
    if p.is_empty() {
        return Err(ProvisionError::BadPort(PortError::Empty));
    }
    // Digits only (`u16::from_str` would take "+80").
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProvisionError::BadPort(PortError::NotNumeric));
    }
    let value = p.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    });
    match u16::try_from(value) {
        Ok(0) => Err(ProvisionError::BadPort(PortError::Zero)),
        Ok(port) => Ok(port),
        Err(_) => Err(ProvisionError::BadPort(PortError::TooLarge)),
    }
}

/// Reads the endpoint from a blob: the `u32` little-endian length, then that many bytes of
/// UTF-8 `"host:port"`. Bytes after them (the padding) are ignored. The host borrows from
/// `blob`.
pub fn read_endpoint(blob: &[u8]) -> Result<Endpoint<'_>, ProvisionError> {
    let (word, rest) =
        blob.split_first_chunk::<LENGTH_WORD>()
            .ok_or(ProvisionError::NoLengthWord {
                available: blob.len(),
            })?;
    let length = u32::from_le_bytes(*word);
    if length == 0 {
        return Err(ProvisionError::LengthZero);
    }
    let len = usize::try_from(length).unwrap_or(usize::MAX);
    if len > MAX_ENDPOINT_LEN {
        return Err(ProvisionError::LengthPastLimit {
            length,
            limit: MAX_ENDPOINT_LEN,
        });
    }
    let bytes = rest.get(..len).ok_or(ProvisionError::LengthPastBlob {
        length,
        available: rest.len(),
    })?;
    let s = core::str::from_utf8(bytes).map_err(|e| ProvisionError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    parse_endpoint(s)
}

/// The size of the blob for an endpoint of `endpoint_len` bytes: the length word, then the
/// endpoint padded with zeros to whole 32-bit words.
pub const fn blob_len(endpoint_len: usize) -> usize {
    LENGTH_WORD + endpoint_len.div_ceil(4) * 4
}

/// Writes the blob for `endpoint` (checked with [`parse_endpoint`] first, and at most
/// [`MAX_ENDPOINT_LEN`] bytes) at the start of `out`; returns its size, [`blob_len`]. The
/// padding bytes are written as zeros; the rest of `out` is left alone.
pub fn write_blob(endpoint: &str, out: &mut [u8]) -> Result<usize, ProvisionError> {
    parse_endpoint(endpoint)?;
    let len = endpoint.len();
    if len > MAX_ENDPOINT_LEN {
        return Err(ProvisionError::LengthPastLimit {
            length: u32::try_from(len).unwrap_or(u32::MAX),
            limit: MAX_ENDPOINT_LEN,
        });
    }
    let needed = blob_len(len);
    let available = out.len();
    let blob = out
        .get_mut(..needed)
        .ok_or(ProvisionError::BufferTooSmall { needed, available })?;
    // `len` is at most MAX_ENDPOINT_LEN: it fits a u32.
    let length = u32::try_from(len).unwrap_or(u32::MAX);
    let (word, rest) = blob.split_at_mut(LENGTH_WORD);
    word.copy_from_slice(&length.to_le_bytes());
    let (text, padding) = rest.split_at_mut(len);
    text.copy_from_slice(endpoint.as_bytes());
    padding.fill(0);
    Ok(needed)
}

/// The blob as the 32-bit words a debugger or emulator writes (`sysbus WriteDoubleWord`):
/// each word is 4 blob bytes read little-endian, so the first byte is the low byte. A last
/// partial word is padded with zeros.
pub fn words(blob: &[u8]) -> impl Iterator<Item = u32> + '_ {
    blob.chunks(4).map(|c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        u32::from_le_bytes(w)
    })
}
