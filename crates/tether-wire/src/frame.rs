//! Frame types, error codes, the header and whole frames.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;

/// Length of a frame header on the wire: a `u32` type then a `u32` body length, both big-endian.
pub const HEADER_LEN: usize = 8;

/// The body-length limit a [`Decoder`](crate::Decoder) uses by default: 64 KiB.
pub const DEFAULT_MAX_BODY: u32 = 64 * 1024;

/// The type of a frame: the first `u32` of its header.
///
/// A reply carries the type of its request; ERROR replies carry [`FrameType::Error`].
/// Convert with `FrameType::from(u32)` and [`FrameType::code`] (or `u32::from`). Codes without
/// a named variant map to [`FrameType::Unknown`]; `From<u32>` never yields `Unknown` for a code
/// that has a named variant, so build values with `From<u32>` to compare them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameType {
    /// `1`: the reply carries the same body.
    Echo,
    /// `2`: the reply carries the body reversed byte-wise.
    Reverse,
    /// `3`: the request body is ignored (send it empty); the reply body is the server's time,
    /// 8 bytes: `u64` big-endian milliseconds since the Unix epoch (1970-01-01T00:00:00Z).
    Time,
    /// `255`: the body is a `u32` big-endian [`ErrorCode`] followed by UTF-8 text.
    Error,
    /// Any other type code. A server replies to it with ERROR code 2 ([`ErrorCode::UnknownType`]).
    Unknown(u32),
}

impl FrameType {
    /// The type code on the wire.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            FrameType::Echo => 1,
            FrameType::Reverse => 2,
            FrameType::Time => 3,
            FrameType::Error => 255,
            FrameType::Unknown(code) => code,
        }
    }

    /// The frame type for a code on the wire (same as `From<u32>`, usable in `const`).
    #[must_use]
    pub const fn from_code(code: u32) -> FrameType {
        match code {
            1 => FrameType::Echo,
            2 => FrameType::Reverse,
            3 => FrameType::Time,
            255 => FrameType::Error,
            other => FrameType::Unknown(other),
        }
    }
}

impl From<u32> for FrameType {
    fn from(code: u32) -> FrameType {
        FrameType::from_code(code)
    }
}

impl From<FrameType> for u32 {
    fn from(kind: FrameType) -> u32 {
        kind.code()
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameType::Echo => f.write_str("ECHO (1)"),
            FrameType::Reverse => f.write_str("REVERSE (2)"),
            FrameType::Time => f.write_str("TIME (3)"),
            FrameType::Error => f.write_str("ERROR (255)"),
            FrameType::Unknown(code) => write!(f, "unknown frame type {code}"),
        }
    }
}

/// The code at the start of an ERROR frame's body (`u32` big-endian).
///
/// | code | variant | meaning |
/// |---|---|---|
/// | 1 | [`TooLarge`](ErrorCode::TooLarge) | a frame announced a body over the receiver's limit |
/// | 2 | [`UnknownType`](ErrorCode::UnknownType) | the request's frame type is not one the server serves |
/// | 3 | [`Malformed`](ErrorCode::Malformed) | the frame is not well formed for its type |
/// | 4 | [`ShuttingDown`](ErrorCode::ShuttingDown) | the server is shutting down; reconnect later |
/// | 5 | [`RateLimited`](ErrorCode::RateLimited) | rate limited, or too many connections; back off |
/// | other | [`Other`](ErrorCode::Other) | a code this version does not name |
///
/// Convert with `ErrorCode::from(u32)` and [`ErrorCode::code`] (or `u32::from`). `From<u32>`
/// never yields `Other` for a named code, so build values with `From<u32>` to compare them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `1`: frame too large.
    TooLarge,
    /// `2`: unknown frame type.
    UnknownType,
    /// `3`: malformed frame.
    Malformed,
    /// `4`: server shutting down.
    ShuttingDown,
    /// `5`: rate limited / too many connections.
    RateLimited,
    /// Any other code.
    Other(u32),
}

impl ErrorCode {
    /// The code on the wire.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            ErrorCode::TooLarge => 1,
            ErrorCode::UnknownType => 2,
            ErrorCode::Malformed => 3,
            ErrorCode::ShuttingDown => 4,
            ErrorCode::RateLimited => 5,
            ErrorCode::Other(code) => code,
        }
    }

    /// The error code for a code on the wire (same as `From<u32>`, usable in `const`).
    #[must_use]
    pub const fn from_code(code: u32) -> ErrorCode {
        match code {
            1 => ErrorCode::TooLarge,
            2 => ErrorCode::UnknownType,
            3 => ErrorCode::Malformed,
            4 => ErrorCode::ShuttingDown,
            5 => ErrorCode::RateLimited,
            other => ErrorCode::Other(other),
        }
    }
}

impl From<u32> for ErrorCode {
    fn from(code: u32) -> ErrorCode {
        ErrorCode::from_code(code)
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> u32 {
        code.code()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ErrorCode::TooLarge => "frame too large",
            ErrorCode::UnknownType => "unknown frame type",
            ErrorCode::Malformed => "malformed frame",
            ErrorCode::ShuttingDown => "server shutting down",
            ErrorCode::RateLimited => "rate limited or too many connections",
            ErrorCode::Other(code) => return write!(f, "error code {code}"),
        };
        write!(f, "{text} (code {})", self.code())
    }
}

/// A frame header: the type and the body length that follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The frame type.
    pub kind: FrameType,
    /// The body length in bytes.
    pub len: u32,
}

impl Header {
    /// The 8 header bytes: type then length, both `u32` big-endian.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&self.kind.code().to_be_bytes());
        out[4..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Reads a header. Every 8-byte value is a header; whether its length is acceptable is the
    /// caller's limit to check (the [`Decoder`](crate::Decoder) does).
    #[must_use]
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let [t0, t1, t2, t3, l0, l1, l2, l3] = *bytes;
        Header {
            kind: FrameType::from(u32::from_be_bytes([t0, t1, t2, t3])),
            len: u32::from_be_bytes([l0, l1, l2, l3]),
        }
    }
}

/// A whole frame: its type and its body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The frame type.
    pub kind: FrameType,
    /// The body (the header's length is its length).
    pub body: Vec<u8>,
}

impl Frame {
    /// A frame of `kind` carrying `body`.
    #[must_use]
    pub fn new(kind: FrameType, body: impl Into<Vec<u8>>) -> Frame {
        Frame {
            kind,
            body: body.into(),
        }
    }

    /// An ERROR frame: `code` (`u32` big-endian) then `text` as UTF-8.
    #[must_use]
    pub fn error(code: ErrorCode, text: &str) -> Frame {
        let mut body = Vec::with_capacity(4 + text.len());
        body.extend_from_slice(&code.code().to_be_bytes());
        body.extend_from_slice(text.as_bytes());
        Frame::new(FrameType::Error, body)
    }

    /// A TIME reply: 8 bytes, `unix_millis` (milliseconds since the Unix epoch) as `u64`
    /// big-endian.
    #[must_use]
    pub fn time_reply(unix_millis: u64) -> Frame {
        Frame::new(FrameType::Time, unix_millis.to_be_bytes())
    }

    /// The header this frame is sent with.
    ///
    /// # Panics
    ///
    /// If the body is longer than `u32::MAX` bytes: the format cannot carry it.
    #[must_use]
    pub fn header(&self) -> Header {
        let len = u32::try_from(self.body.len())
            .expect("tether-wire: a frame body cannot be longer than u32::MAX bytes");
        Header {
            kind: self.kind,
            len,
        }
    }

    /// Bytes on the wire: [`HEADER_LEN`] plus the body length.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Appends the header and the body to `out`.
    ///
    /// # Panics
    ///
    /// If the body is longer than `u32::MAX` bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&self.header().encode());
        out.extend_from_slice(&self.body);
    }

    /// The header and the body as a new vector.
    ///
    /// # Panics
    ///
    /// If the body is longer than `u32::MAX` bytes.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Writes the header and the body at the start of `out`; returns the bytes written
    /// ([`encoded_len`](Frame::encoded_len)).
    ///
    /// # Errors
    ///
    /// [`BufferTooSmall`] if `out` is shorter than `encoded_len()`; nothing is written then.
    ///
    /// # Panics
    ///
    /// If the body is longer than `u32::MAX` bytes.
    pub fn encode_to_slice(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let needed = self.encoded_len();
        let Some(out) = out.get_mut(..needed) else {
            return Err(BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        let (head, body) = out.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&self.header().encode());
        body.copy_from_slice(&self.body);
        Ok(needed)
    }

    /// For an ERROR frame: its code and its text. `None` if this is not an ERROR frame, if the
    /// body is shorter than the 4-byte code, or if the text is not valid UTF-8.
    #[must_use]
    pub fn parse_error(&self) -> Option<(ErrorCode, &str)> {
        if self.kind != FrameType::Error {
            return None;
        }
        let (code, text) = self.body.split_first_chunk::<4>()?;
        let text = core::str::from_utf8(text).ok()?;
        Some((ErrorCode::from(u32::from_be_bytes(*code)), text))
    }

    /// For a TIME reply: the server's time in milliseconds since the Unix epoch. `None` if this
    /// is not a TIME frame or its body is not exactly 8 bytes.
    #[must_use]
    pub fn parse_time(&self) -> Option<u64> {
        if self.kind != FrameType::Time {
            return None;
        }
        let millis: [u8; 8] = self.body.as_slice().try_into().ok()?;
        Some(u64::from_be_bytes(millis))
    }
}

/// What a server replies to `request`, given its clock as milliseconds since the Unix epoch.
///
/// - ECHO: an ECHO frame with the same body.
/// - REVERSE: a REVERSE frame with the body reversed byte-wise.
/// - TIME: [`Frame::time_reply`]`(now_unix_millis)`; the request body is ignored.
/// - any other type, ERROR included (it is not a request): an ERROR frame with
///   [`ErrorCode::UnknownType`] and a text naming the type.
///
/// Body limits are the [`Decoder`](crate::Decoder)'s job: a reply is never larger than its
/// request, except a TIME reply (8 bytes) and an ERROR reply (a few dozen bytes).
#[must_use]
pub fn reply(request: &Frame, now_unix_millis: u64) -> Frame {
    match request.kind {
        FrameType::Echo => Frame::new(FrameType::Echo, request.body.clone()),
        FrameType::Reverse => {
            let mut body = request.body.clone();
            body.reverse();
            Frame::new(FrameType::Reverse, body)
        }
        FrameType::Time => Frame::time_reply(now_unix_millis),
        FrameType::Error => Frame::error(
            ErrorCode::UnknownType,
            "frame type 255 (ERROR) is not a request",
        ),
        FrameType::Unknown(code) => Frame::error(
            ErrorCode::UnknownType,
            &format!(
                "unknown frame type {code}; this server serves ECHO (1), REVERSE (2) and TIME (3)"
            ),
        ),
    }
}

/// [`Frame::encode_to_slice`] was given a buffer smaller than the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes the frame needs ([`Frame::encoded_len`]).
    pub needed: usize,
    /// Bytes the buffer had.
    pub available: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "buffer too small for the frame: it needs {} bytes and has {}; pass a buffer of at \
             least Frame::encoded_len() bytes",
            self.needed, self.available
        )
    }
}

impl core::error::Error for BufferTooSmall {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn frame_type_codes_round_trip() {
        let named = [
            (FrameType::Echo, 1),
            (FrameType::Reverse, 2),
            (FrameType::Time, 3),
            (FrameType::Error, 255),
        ];
        for (kind, code) in named {
            assert_eq!(kind.code(), code);
            assert_eq!(u32::from(kind), code);
            assert_eq!(FrameType::from(code), kind);
        }
        for code in [0, 4, 254, 256, u32::MAX] {
            assert_eq!(FrameType::from(code), FrameType::Unknown(code));
            assert_eq!(FrameType::Unknown(code).code(), code);
        }
        assert_eq!(FrameType::Echo.to_string(), "ECHO (1)");
        assert_eq!(FrameType::Unknown(9).to_string(), "unknown frame type 9");
    }

    #[test]
    fn error_codes_round_trip() {
        let named = [
            (ErrorCode::TooLarge, 1),
            (ErrorCode::UnknownType, 2),
            (ErrorCode::Malformed, 3),
            (ErrorCode::ShuttingDown, 4),
            (ErrorCode::RateLimited, 5),
        ];
        for (code, n) in named {
            assert_eq!(code.code(), n);
            assert_eq!(u32::from(code), n);
            assert_eq!(ErrorCode::from(n), code);
        }
        for n in [0, 6, 255, u32::MAX] {
            assert_eq!(ErrorCode::from(n), ErrorCode::Other(n));
            assert_eq!(ErrorCode::Other(n).code(), n);
        }
        assert_eq!(ErrorCode::TooLarge.to_string(), "frame too large (code 1)");
        assert_eq!(
            ErrorCode::RateLimited.to_string(),
            "rate limited or too many connections (code 5)"
        );
        assert_eq!(ErrorCode::Other(77).to_string(), "error code 77");
    }

    #[test]
    fn header_bytes() {
        let h = Header {
            kind: FrameType::Reverse,
            len: 0x0102_0304,
        };
        assert_eq!(h.encode(), [0, 0, 0, 2, 1, 2, 3, 4]);
        assert_eq!(Header::decode(&h.encode()), h);
        let h = Header::decode(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(h.kind, FrameType::Unknown(0xdead_beef));
        assert_eq!(h.len, u32::MAX);
    }

    #[test]
    fn frame_encoding() {
        let f = Frame::new(FrameType::Echo, &b"hi"[..]);
        assert_eq!(f.encoded_len(), 10);
        assert_eq!(f.to_vec(), [0, 0, 0, 1, 0, 0, 0, 2, b'h', b'i']);
        let mut out = vec![7u8];
        f.encode_into(&mut out);
        assert_eq!(out, [7, 0, 0, 0, 1, 0, 0, 0, 2, b'h', b'i']);

        let mut buf = [0xaau8; 12];
        assert_eq!(f.encode_to_slice(&mut buf), Ok(10));
        assert_eq!(buf, [0, 0, 0, 1, 0, 0, 0, 2, b'h', b'i', 0xaa, 0xaa]);
        let mut small = [0xaau8; 9];
        let err = f.encode_to_slice(&mut small).unwrap_err();
        assert_eq!(
            err,
            BufferTooSmall {
                needed: 10,
                available: 9
            }
        );
        assert_eq!(small, [0xaa; 9], "nothing written on error");
        assert!(err.to_string().contains("needs 10 bytes and has 9"));

        let empty = Frame::new(FrameType::Time, Vec::new());
        assert_eq!(empty.to_vec(), [0, 0, 0, 3, 0, 0, 0, 0]);
    }

    #[test]
    fn error_frames() {
        let f = Frame::error(ErrorCode::ShuttingDown, "bye");
        assert_eq!(f.kind, FrameType::Error);
        assert_eq!(f.body, [0, 0, 0, 4, b'b', b'y', b'e']);
        assert_eq!(f.parse_error(), Some((ErrorCode::ShuttingDown, "bye")));
        assert_eq!(
            f.to_vec(),
            [0, 0, 0, 255, 0, 0, 0, 7, 0, 0, 0, 4, b'b', b'y', b'e']
        );

        let bare = Frame::new(FrameType::Error, [0, 0, 0, 9]);
        assert_eq!(bare.parse_error(), Some((ErrorCode::Other(9), "")));
        assert_eq!(Frame::new(FrameType::Error, [0, 0, 1]).parse_error(), None);
        let bad_utf8 = Frame::new(FrameType::Error, [0, 0, 0, 1, 0xff]);
        assert_eq!(bad_utf8.parse_error(), None);
        let not_error = Frame::new(FrameType::Echo, [0, 0, 0, 1]);
        assert_eq!(not_error.parse_error(), None);
    }

    #[test]
    fn time_frames() {
        let f = Frame::time_reply(1_700_000_000_123);
        assert_eq!(f.kind, FrameType::Time);
        assert_eq!(f.body, 1_700_000_000_123u64.to_be_bytes());
        assert_eq!(f.parse_time(), Some(1_700_000_000_123));
        assert_eq!(Frame::new(FrameType::Time, [0; 7]).parse_time(), None);
        assert_eq!(Frame::new(FrameType::Time, [0; 9]).parse_time(), None);
        assert_eq!(Frame::new(FrameType::Echo, [0; 8]).parse_time(), None);
    }

    #[test]
    fn replies() {
        let echo = Frame::new(FrameType::Echo, &b"abc"[..]);
        assert_eq!(reply(&echo, 0), echo);
        let rev = Frame::new(FrameType::Reverse, &b"abc"[..]);
        assert_eq!(reply(&rev, 0), Frame::new(FrameType::Reverse, &b"cba"[..]));
        let time = Frame::new(FrameType::Time, &b"ignored"[..]);
        assert_eq!(reply(&time, 42), Frame::time_reply(42));
        assert_eq!(reply(&time, 42).parse_time(), Some(42));

        let unknown = reply(&Frame::new(FrameType::Unknown(7), &b"x"[..]), 0);
        let (code, text) = unknown.parse_error().unwrap();
        assert_eq!(code, ErrorCode::UnknownType);
        assert!(text.contains("unknown frame type 7"), "{text}");

        let error = reply(&Frame::error(ErrorCode::Malformed, "?"), 0);
        assert_eq!(error.parse_error().unwrap().0, ErrorCode::UnknownType);
    }
}
