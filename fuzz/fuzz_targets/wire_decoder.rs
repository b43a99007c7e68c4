//! Hostile bytes into a tether-wire Decoder, in chunks whose sizes come from the input: never a
//! panic; frames out are exactly a prefix of the input; an oversized header is refused before its
//! body is buffered; after an error the decoder stays failed and holds nothing.
#![no_main]

use tether_wire::{DecodeError, Decoder, HEADER_LEN, Header, reply};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the body limit: small limits exercise the error path.
    let (max_body, mut rest) = match data {
        [a, b, tail @ ..] => (u32::from(u16::from_be_bytes([*a, *b])), tail),
        _ => return,
    };
    let mut decoder = Decoder::new(max_body);
    let mut decoded = Vec::new(); // the decoded frames, re-encoded
    let mut input = Vec::new(); // every byte pushed
    let mut error: Option<DecodeError> = None;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        decoder.push(chunk);
        input.extend_from_slice(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(error.is_none(), "a frame after an error");
                    assert!(frame.body.len() <= max_body as usize);
                    frame.encode_into(&mut decoded);
                    let _ = reply(&frame, u64::MAX);
                    let _ = frame.parse_error();
                    let _ = frame.parse_time();
                }
                Ok(None) => {
                    assert!(error.is_none(), "need-more after an error");
                    // Drained: the decoder holds exactly the bytes not yet decoded, and the
                    // header it holds (if complete) is within the limit.
                    let held = decoder.buffered();
                    assert_eq!(held, input.len() - decoded.len());
                    assert_eq!(held == 0, decoder.is_idle());
                    if held >= HEADER_LEN {
                        let at = decoded.len();
                        let header: [u8; HEADER_LEN] =
                            input[at..at + HEADER_LEN].try_into().unwrap();
                        assert!(Header::decode(&header).len <= max_body);
                    }
                    break;
                }
                Err(e) => {
                    if let Some(first) = error {
                        assert_eq!(e, first, "the error changed");
                    }
                    error = Some(e);
                    if let DecodeError::TooLarge { len, max } = e {
                        assert!(len > max && max == max_body);
                    }
                    assert!(decoder.is_idle());
                    assert_eq!(decoder.buffered(), 0);
                    let _ = e.error_frame();
                    break;
                }
            }
        }
        assert_eq!(&input[..decoded.len()], &decoded[..]);
    }
});
