//! The streaming decoder: bytes in any split in, whole frames out.

use alloc::vec::Vec;
use core::fmt;

use crate::frame::{DEFAULT_MAX_BODY, ErrorCode, Frame, HEADER_LEN, Header};

/// Turns a byte stream into [`Frame`]s.
///
/// Drive it like this, for each read from the connection:
///
/// 1. [`push`](Decoder::push) the bytes read, whatever their split (a header may arrive one
///    byte at a time, several frames may arrive in one read);
/// 2. call [`next_frame`](Decoder::next_frame) until it returns `Ok(None)` ("need more
///    bytes"), handling each frame it returns;
/// 3. on `Err`, stop: the stream cannot be resynchronised. A server sends
///    [`DecodeError::error_frame`] and closes. The decoder stays failed: `next_frame` returns
///    the same error again and `push` discards what it is given.
///
/// Contract, for any input:
/// - it never panics;
/// - a header whose body length is over `max_body` is reported as [`DecodeError::TooLarge`]
///   as soon as those 8 header bytes are in, before any of the body is buffered;
/// - it holds only unread bytes, and grows with the data: a header is never a reason to
///   allocate its announced length. When no bytes are held (between frames, or after an error)
///   it holds no allocation either ([`is_idle`](Decoder::is_idle)), so an idle connection
///   costs only the `Decoder` itself. Bytes pushed and not yet taken with `next_frame` are
///   held, so drain after each push: then the buffer holds at most one partial frame, at most
///   `HEADER_LEN + max_body` bytes plus the size of one push.
///
/// ```
/// use tether_wire::{Decoder, Frame, FrameType};
///
/// let mut wire = Vec::new();
/// Frame::new(FrameType::Echo, &b"hello"[..]).encode_into(&mut wire);
/// Frame::new(FrameType::Time, Vec::new()).encode_into(&mut wire);
///
/// let mut decoder = Decoder::default();
/// let mut frames = Vec::new();
/// for chunk in wire.chunks(3) {
///     decoder.push(chunk);
///     while let Some(frame) = decoder.next_frame()? {
///         frames.push(frame);
///     }
/// }
/// assert_eq!(frames[0], Frame::new(FrameType::Echo, &b"hello"[..]));
/// assert_eq!(frames[1].kind, FrameType::Time);
/// assert!(decoder.is_idle());
/// # Ok::<(), tether_wire::DecodeError>(())
/// ```
#[derive(Debug)]
pub struct Decoder {
    /// Bytes received; `buf[pos..]` is not yet decoded.
    buf: Vec<u8>,
    pos: usize,
    max_body: u32,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// A decoder that refuses bodies longer than `max_body` bytes. Allocates nothing.
    #[must_use]
    pub const fn new(max_body: u32) -> Decoder {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            max_body,
            failed: None,
        }
    }

    /// The body-length limit.
    #[must_use]
    pub const fn max_body(&self) -> u32 {
        self.max_body
    }

    /// Adds bytes received from the peer, in any split. After an error they are discarded.
    ///
    /// If the bytes complete the header of the next frame and that header is over the limit,
    /// the decoder fails here and keeps none of the bytes; `next_frame` reports it.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || bytes.is_empty() {
            return;
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
        // Check the header of the next frame now, so an oversized body is never buffered even
        // when the caller pushes more before asking for frames.
        if let Some(header) = self.peek_header()
            && let Err(e) = self.check(header)
        {
            self.fail(e);
        }
    }

    /// The next whole frame: `Ok(Some(frame))`, or `Ok(None)` if more bytes are needed, or the
    /// error the stream failed with (again on every call after the first).
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLarge`] when the next header announces a body over `max_body`. The
    /// stream is lost: send [`DecodeError::error_frame`] and close.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let Some(header) = self.peek_header() else {
            self.compact();
            return Ok(None);
        };
        let body_len = match self.check(header) {
            Ok(body_len) => body_len,
            Err(e) => {
                self.fail(e);
                return Err(e);
            }
        };
        let start = self.pos + HEADER_LEN;
        // `check` bounded `body_len` by `max_body` (a u32), so this cannot overflow a usize of
        // 32 bits or more; `checked_add` keeps 16-bit targets honest.
        let Some(body) = start
            .checked_add(body_len)
            .and_then(|end| self.buf.get(start..end))
        else {
            self.compact();
            return Ok(None);
        };
        let frame = Frame::new(header.kind, body.to_vec());
        self.pos = start + body_len;
        if self.pos == self.buf.len() {
            self.release();
        }
        Ok(Some(frame))
    }

    /// Bytes held and not yet returned as frames.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when the decoder holds no bytes and no allocation: between frames, or after an
    /// error (check `next_frame` for that).
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.buf.capacity() == 0
    }

    /// The header at `pos`, if all 8 bytes are in.
    fn peek_header(&self) -> Option<Header> {
        let bytes = self.buf.get(self.pos..)?.first_chunk::<HEADER_LEN>()?;
        Some(Header::decode(bytes))
    }

    /// The body length of `header` as a `usize`, if it is within the limit.
    fn check(&self, header: Header) -> Result<usize, DecodeError> {
        let too_large = DecodeError::TooLarge {
            len: header.len,
            max: self.max_body,
        };
        if header.len > self.max_body {
            return Err(too_large);
        }
        usize::try_from(header.len).map_err(|_| too_large)
    }

    fn fail(&mut self, e: DecodeError) {
        self.failed = Some(e);
        self.release();
    }

    fn release(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
    }

    /// Drops the bytes already decoded, and gives back capacity a drained burst left behind.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        if len == 0 {
            self.release();
        } else if self.buf.capacity() > 2 * len.max(HEADER_LEN) {
            self.buf.shrink_to(len.max(HEADER_LEN));
        }
    }
}

impl Default for Decoder {
    /// A decoder with the [`DEFAULT_MAX_BODY`] limit.
    fn default() -> Decoder {
        Decoder::new(DEFAULT_MAX_BODY)
    }
}

/// Why a byte stream cannot be decoded. The stream is lost: close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A header announced a body of `len` bytes, over the decoder's limit of `max`.
    TooLarge {
        /// The announced body length.
        len: u32,
        /// The decoder's limit ([`Decoder::max_body`]).
        max: u32,
    },
}

impl DecodeError {
    /// The ERROR code that tells the peer about this error.
    #[must_use]
    pub const fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
        }
    }

    /// The ERROR frame a server sends before closing: [`code`](DecodeError::code) and this
    /// error's message.
    #[must_use]
    pub fn error_frame(&self) -> Frame {
        let mut text = alloc::string::String::new();
        // Writing to a String cannot fail.
        let _ = fmt::write(&mut text, format_args!("{self}"));
        Frame::error(self.code(), &text)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len, max } => write!(
                f,
                "frame too large: a header announced a {len}-byte body and the limit is {max} \
                 bytes; close the connection (a server replies ERROR code 1 first), or raise \
                 max_body on both ends if frames this large are intended"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameType;
    use alloc::string::ToString;

    #[test]
    fn one_frame_byte_by_byte() {
        let wire = Frame::new(FrameType::Reverse, &b"abcdef"[..]).to_vec();
        let mut d = Decoder::new(16);
        for (i, b) in wire.iter().enumerate() {
            assert_eq!(d.next_frame(), Ok(None));
            assert_eq!(d.buffered(), i);
            d.push(core::slice::from_ref(b));
        }
        assert_eq!(
            d.next_frame(),
            Ok(Some(Frame::new(FrameType::Reverse, &b"abcdef"[..])))
        );
        assert_eq!(d.buffered(), 0);
        assert!(d.is_idle());
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn several_frames_in_one_push() {
        let mut wire = Vec::new();
        Frame::new(FrameType::Echo, Vec::new()).encode_into(&mut wire);
        Frame::time_reply(5).encode_into(&mut wire);
        Frame::new(FrameType::Unknown(9), [1, 2]).encode_into(&mut wire);
        wire.extend_from_slice(&[0, 0, 0, 1, 0]); // a partial header
        let mut d = Decoder::default();
        d.push(&wire);
        assert_eq!(d.next_frame().unwrap().unwrap().kind, FrameType::Echo);
        assert_eq!(d.next_frame().unwrap().unwrap().parse_time(), Some(5));
        assert_eq!(
            d.next_frame().unwrap().unwrap(),
            Frame::new(FrameType::Unknown(9), [1, 2])
        );
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 5);
        assert!(!d.is_idle());
        assert!(
            d.buf.capacity() <= 2 * HEADER_LEN,
            "burst capacity given back"
        );
        d.push(&[0, 0, 1, b'z']);
        assert_eq!(
            d.next_frame(),
            Ok(Some(Frame::new(FrameType::Echo, &b"z"[..])))
        );
        assert!(d.is_idle());
    }

    #[test]
    fn max_body_is_inclusive() {
        let mut d = Decoder::new(4);
        d.push(&Frame::new(FrameType::Echo, [1, 2, 3, 4]).to_vec());
        assert_eq!(d.next_frame().unwrap().unwrap().body, [1, 2, 3, 4]);
        d.push(
            &Header {
                kind: FrameType::Echo,
                len: 5,
            }
            .encode(),
        );
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::TooLarge { len: 5, max: 4 })
        );
    }

    #[test]
    fn too_large_is_reported_on_the_header_alone() {
        let mut d = Decoder::new(1024);
        let header = Header {
            kind: FrameType::Echo,
            len: 1025,
        }
        .encode();
        d.push(&header[..7]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&header[7..]);
        let err = DecodeError::TooLarge {
            len: 1025,
            max: 1024,
        };
        assert_eq!(d.next_frame(), Err(err));
        assert!(d.is_idle());
        // Stays failed; later bytes are discarded.
        d.push(&[0; 100]);
        assert_eq!(d.buffered(), 0);
        assert!(d.is_idle());
        assert_eq!(d.next_frame(), Err(err));
        assert_eq!(d.next_frame(), Err(err));
    }

    #[test]
    fn push_refuses_an_oversized_body_without_next_frame() {
        let mut d = Decoder::new(10);
        let mut wire = Header {
            kind: FrameType::Echo,
            len: u32::MAX,
        }
        .encode()
        .to_vec();
        wire.extend_from_slice(&[0; 64]);
        d.push(&wire);
        assert_eq!(d.buffered(), 0);
        d.push(&[0; 64]);
        assert_eq!(d.buffered(), 0);
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::TooLarge {
                len: u32::MAX,
                max: 10
            })
        );
    }

    #[test]
    fn frames_before_an_oversized_one_come_out_first() {
        let mut wire = Frame::new(FrameType::Echo, &b"ok"[..]).to_vec();
        wire.extend_from_slice(
            &Header {
                kind: FrameType::Echo,
                len: 99,
            }
            .encode(),
        );
        let mut d = Decoder::new(10);
        d.push(&wire);
        assert_eq!(d.next_frame().unwrap().unwrap().body, b"ok");
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::TooLarge { len: 99, max: 10 })
        );
    }

    #[test]
    fn the_buffer_grows_with_the_data() {
        let mut d = Decoder::new(u32::MAX);
        d.push(
            &Header {
                kind: FrameType::Echo,
                len: u32::MAX,
            }
            .encode(),
        );
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.buf.capacity() < 64, "capacity {}", d.buf.capacity());
        d.push(&[0; 100]);
        assert!(d.buf.capacity() < 256, "capacity {}", d.buf.capacity());
    }

    #[test]
    fn errors_explain_themselves() {
        let e = DecodeError::TooLarge {
            len: 70000,
            max: 65536,
        };
        let text = e.to_string();
        assert!(text.contains("70000-byte body"), "{text}");
        assert!(text.contains("limit is 65536"), "{text}");
        assert!(text.contains("close the connection"), "{text}");
        let frame = e.error_frame();
        let (code, msg) = frame.parse_error().unwrap();
        assert_eq!(code, ErrorCode::TooLarge);
        assert_eq!(msg, text);
    }

    #[test]
    fn defaults() {
        let d = Decoder::default();
        assert_eq!(d.max_body(), DEFAULT_MAX_BODY);
        assert!(d.is_idle());
        assert_eq!(d.buffered(), 0);
    }
}
