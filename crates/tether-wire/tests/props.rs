//! Property tests: round trips in any split, hostile bytes, the size limit.

use proptest::collection::vec;
use proptest::prelude::*;
use tether_wire::{DecodeError, Decoder, ErrorCode, Frame, FrameType, HEADER_LEN, Header, reply};

/// Frame types, mostly the named ones, sometimes any code at all.
fn frame_type() -> impl Strategy<Value = FrameType> {
    prop_oneof![
        3 => prop::sample::select(vec![1u32, 2, 3, 255]).prop_map(FrameType::from),
        1 => any::<u32>().prop_map(FrameType::from),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (frame_type(), vec(any::<u8>(), 0..300)).prop_map(|(kind, body)| Frame::new(kind, body))
}

/// Splits `bytes` at the given points (taken modulo the length), in order.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() })
        .collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Pushes each piece and drains after each push, as the docs say; returns the frames and the
/// error, if any. Checks the decoder's invariants on the way.
fn drive(decoder: &mut Decoder, pieces: &[&[u8]]) -> (Vec<Frame>, Option<DecodeError>) {
    let mut frames = Vec::new();
    let mut error = None;
    for piece in pieces {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.body.len() <= decoder.max_body() as usize);
                    frames.push(frame);
                }
                Ok(None) => {
                    // Drained: only a partial frame is held.
                    let held = decoder.buffered();
                    assert_eq!(held == 0, decoder.is_idle());
                    break;
                }
                Err(e) => {
                    // Stays failed, holds nothing.
                    assert_eq!(decoder.next_frame(), Err(e));
                    assert!(decoder.is_idle());
                    assert_eq!(decoder.buffered(), 0);
                    error = Some(e);
                    break;
                }
            }
        }
    }
    (frames, error)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frames_survive_any_split(
        frames in vec(frame(), 0..12),
        cuts in vec(any::<usize>(), 0..40),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            f.encode_into(&mut wire);
        }
        prop_assert_eq!(wire.len(), frames.iter().map(Frame::encoded_len).sum::<usize>());
        let mut decoder = Decoder::new(300);
        let (decoded, error) = drive(&mut decoder, &split(&wire, &cuts));
        prop_assert_eq!(error, None);
        prop_assert_eq!(decoded, frames);
        prop_assert!(decoder.is_idle());
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn partial_frames_hold_only_their_own_bytes(
        frames in vec(frame(), 1..6),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            f.encode_into(&mut wire);
        }
        let mut decoder = Decoder::new(300);
        let mut pushed = 0;
        let mut consumed = 0;
        for piece in split(&wire, &cuts) {
            decoder.push(piece);
            pushed += piece.len();
            while let Some(f) = decoder.next_frame().unwrap() {
                consumed += f.encoded_len();
            }
            prop_assert_eq!(decoder.buffered(), pushed - consumed);
        }
    }

    #[test]
    fn hostile_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..2000),
        cuts in vec(any::<usize>(), 0..40),
        max_body in prop_oneof![0u32..64, Just(tether_wire::DEFAULT_MAX_BODY), Just(u32::MAX)],
    ) {
        let mut decoder = Decoder::new(max_body);
        let (frames, error) = drive(&mut decoder, &split(&bytes, &cuts));
        // What came out is exactly a prefix of the input, re-encoded.
        let mut again = Vec::new();
        for f in &frames {
            f.encode_into(&mut again);
            let _ = reply(f, 0);
            let _ = f.parse_error();
            let _ = f.parse_time();
        }
        prop_assert_eq!(&bytes[..again.len()], &again[..]);
        if error.is_none() {
            prop_assert_eq!(decoder.buffered(), bytes.len() - again.len());
        }
    }

    #[test]
    fn oversize_is_caught_on_the_header(
        max_body in 0u32..100_000,
        excess in 1u32..1000,
        kind in any::<u32>(),
        extra in vec(any::<u8>(), 0..500),
        cuts in vec(any::<usize>(), 0..10),
        drain in any::<bool>(),
    ) {
        let len = max_body.saturating_add(excess);
        prop_assume!(len > max_body);
        let mut wire = Header { kind: FrameType::from(kind), len }.encode().to_vec();
        wire.extend_from_slice(&extra);
        let expected = DecodeError::TooLarge { len, max: max_body };
        let mut decoder = Decoder::new(max_body);
        let mut pushed = 0;
        for piece in split(&wire, &cuts) {
            decoder.push(piece);
            pushed += piece.len();
            if pushed < HEADER_LEN {
                prop_assert_eq!(decoder.buffered(), pushed);
                if drain {
                    prop_assert_eq!(decoder.next_frame(), Ok(None));
                }
            } else {
                // Whether or not the caller drained, nothing of the body is held.
                prop_assert_eq!(decoder.buffered(), 0);
                prop_assert!(decoder.is_idle());
                if drain {
                    prop_assert_eq!(decoder.next_frame(), Err(expected));
                }
            }
        }
        prop_assert_eq!(decoder.next_frame(), Err(expected));
        prop_assert_eq!(decoder.next_frame(), Err(expected));
    }

    #[test]
    fn headers_round_trip(kind in any::<u32>(), len in any::<u32>()) {
        let h = Header { kind: FrameType::from(kind), len };
        let bytes = h.encode();
        prop_assert_eq!(&bytes[..4], &kind.to_be_bytes()[..]);
        prop_assert_eq!(&bytes[4..], &len.to_be_bytes()[..]);
        prop_assert_eq!(Header::decode(&bytes), h);
        prop_assert_eq!(FrameType::from(kind).code(), kind);
    }

    #[test]
    fn slice_encoding_matches_vec_encoding(f in frame(), size in 0usize..400) {
        let mut buf = vec![0u8; size];
        match f.encode_to_slice(&mut buf) {
            Ok(n) => {
                prop_assert_eq!(n, f.encoded_len());
                prop_assert_eq!(&buf[..n], &f.to_vec()[..]);
            }
            Err(e) => {
                prop_assert!(size < f.encoded_len());
                prop_assert_eq!(e.needed, f.encoded_len());
                prop_assert_eq!(e.available, size);
            }
        }
    }

    #[test]
    fn error_frames_round_trip(code in any::<u32>(), text in ".{0,80}") {
        let f = Frame::error(ErrorCode::from(code), &text);
        let (got, got_text) = f.parse_error().unwrap();
        prop_assert_eq!(got.code(), code);
        prop_assert_eq!(got, ErrorCode::from(code));
        prop_assert_eq!(got_text, text.as_str());
    }

    #[test]
    fn time_round_trip(millis in any::<u64>()) {
        prop_assert_eq!(Frame::time_reply(millis).parse_time(), Some(millis));
        prop_assert_eq!(reply(&Frame::new(FrameType::Time, Vec::new()), millis).parse_time(), Some(millis));
    }

    #[test]
    fn replies_keep_the_request_type(f in frame(), now in any::<u64>()) {
        let r = reply(&f, now);
        match f.kind {
            FrameType::Echo => prop_assert_eq!(&r, &f),
            FrameType::Reverse => {
                prop_assert_eq!(r.kind, FrameType::Reverse);
                let mut back = r.body.clone();
                back.reverse();
                prop_assert_eq!(back, f.body);
            }
            FrameType::Time => prop_assert_eq!(r, Frame::time_reply(now)),
            _ => prop_assert_eq!(r.parse_error().map(|(c, _)| c), Some(ErrorCode::UnknownType)),
        }
    }
}
