//! # tether-wire: the device↔gateway frame protocol
//!
//! The frames a device and a tether gateway exchange inside their TLS connection. `no_std` +
//! `alloc`, no dependencies, no `unsafe`; the [`Decoder`] never panics on peer input.
//!
//! ## The format, byte by byte
//!
//! Every frame is an 8-byte header followed by the body:
//!
//! | offset | size | field | encoding |
//! |---|---|---|---|
//! | 0 | 4 | type | `u32`, big-endian ([`FrameType`]) |
//! | 4 | 4 | body length `n` | `u32`, big-endian; at most the receiver's limit ([`DEFAULT_MAX_BODY`] = 65536) |
//! | 8 | `n` | body | depends on the type |
//!
//! Frames follow each other with nothing in between. There is no version field, padding or
//! checksum: TLS already frames, protects and authenticates the stream.
//!
//! | type | name | request body | reply body |
//! |---|---|---|---|
//! | 1 | ECHO | any bytes | the same bytes |
//! | 2 | REVERSE | any bytes | the same bytes in reverse order |
//! | 3 | TIME | ignored (send it empty) | 8 bytes: the server's time as `u64` big-endian milliseconds since the Unix epoch (1970-01-01T00:00:00Z, UTC, leap seconds not counted) |
//! | 255 | ERROR | (not a request) | 4 bytes `u32` big-endian [`ErrorCode`], then UTF-8 text for humans (may be empty) |
//!
//! A reply carries the type of its request; an ERROR reply carries 255. Replies come in the
//! order of the requests. Error codes:
//!
//! | code | [`ErrorCode`] | meaning | what the client does |
//! |---|---|---|---|
//! | 1 | `TooLarge` | a header announced a body over the server's limit | the server closes; send smaller frames |
//! | 2 | `UnknownType` | the server does not serve this frame type | the connection stays open |
//! | 3 | `Malformed` | the frame is not well formed for its type | see the text |
//! | 4 | `ShuttingDown` | the server is shutting down | reconnect later, to another gateway if there is one |
//! | 5 | `RateLimited` | rate limited, or too many connections | back off, then retry |
//!
//! Codes are open-ended: a receiver maps codes it does not know to [`ErrorCode::Other`].
//!
//! Example: ECHO of `"hi"`, as the 10 bytes `00 00 00 01  00 00 00 02  68 69`; the reply is the
//! same 10 bytes. A TIME request is `00 00 00 03  00 00 00 00`; its reply is
//! `00 00 00 03  00 00 00 08` followed by the 8 bytes of the time.
//!
//! ## Driving it
//!
//! Encoding: build a [`Frame`] ([`Frame::new`], [`Frame::error`], [`Frame::time_reply`]) and
//! append it to an output buffer with [`Frame::encode_into`] (or write it into a slice with
//! [`Frame::encode_to_slice`]). A server computes its answer with [`reply`].
//!
//! Decoding: one [`Decoder`] per connection. [`push`](Decoder::push) the bytes read, in
//! whatever split they arrived, then call [`next_frame`](Decoder::next_frame) until it returns
//! `Ok(None)`. An `Err` ends the stream: send [`DecodeError::error_frame`] and close.
//!
//! ```
//! use tether_wire::{reply, Decoder, Frame, FrameType};
//!
//! // The client's bytes, arriving at the server in awkward pieces.
//! let mut from_client = Vec::new();
//! Frame::new(FrameType::Reverse, &b"abc"[..]).encode_into(&mut from_client);
//! Frame::new(FrameType::Time, Vec::new()).encode_into(&mut from_client);
//!
//! let mut server = Decoder::default();
//! let mut to_client = Vec::new();
//! for piece in from_client.chunks(5) {
//!     server.push(piece);
//!     loop {
//!         match server.next_frame() {
//!             Ok(Some(request)) => reply(&request, 1_700_000_000_000).encode_into(&mut to_client),
//!             Ok(None) => break,
//!             Err(e) => {
//!                 e.error_frame().encode_into(&mut to_client); // send it, then close
//!                 return Err(e);
//!             }
//!         }
//!     }
//! }
//! assert!(server.is_idle()); // nothing left over, nothing allocated
//!
//! let mut client = Decoder::default();
//! client.push(&to_client);
//! assert_eq!(client.next_frame()?.unwrap().body, b"cba");
//! assert_eq!(client.next_frame()?.unwrap().parse_time(), Some(1_700_000_000_000));
//! # Ok::<(), tether_wire::DecodeError>(())
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

extern crate alloc;

mod decoder;
mod frame;

pub use decoder::{DecodeError, Decoder};
pub use frame::{
    BufferTooSmall, DEFAULT_MAX_BODY, ErrorCode, Frame, FrameType, HEADER_LEN, Header, reply,
};
