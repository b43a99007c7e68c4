//! Mutated records into an established session, client or server (tether's own record layer,
//! records opened in place): never a panic, and the application only ever gets a prefix of
//! what the peer sent. Input: a mode byte (bit 0: TLS 1.2 instead of 1.3; bit 1: the server
//! receives), then (position, xor) edits of three bytes each, up to a zero byte; what follows
//! gives the chunk sizes.
#![no_main]

#[path = "common.rs"]
mod common;

use tether::{Instant, Recv};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let (client, server) = common::established(mode & 1 == 0);
    let (mut receiver, mut sender) = if mode & 2 == 0 {
        (client, server)
    } else {
        (server, client)
    };
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
    let mut wire = Vec::new();
    let mut out = vec![0u8; 17 * 1024];
    let mut left = &sent[..];
    while !left.is_empty() {
        let s = sender.send(left, &mut out).unwrap();
        wire.extend_from_slice(&out[..s.written]);
        left = &left[s.consumed..];
    }
    sender.close();
    loop {
        let n = sender.poll_transmit(&mut out);
        if n == 0 {
            break;
        }
        wire.extend_from_slice(&out[..n]);
    }
    while let [a, b, x, tail @ ..] = rest {
        rest = tail;
        if *x == 0 {
            break;
        }
        let at = usize::from(u16::from_be_bytes([*a, *b])) % wire.len();
        wire[at] ^= x;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 700];
    let mut sizes = rest.iter().cycle();
    let mut pos = 0;
    while pos < wire.len() {
        let n = sizes
            .next()
            .map_or(wire.len(), |&b| usize::from(b) * 16 + 1);
        let end = (pos + n).min(wire.len());
        if receiver.handle_input(Instant::ZERO, &wire[pos..end]).is_err() {
            break;
        }
        pos = end;
        while let Ok(Recv::Data(n)) = receiver.recv(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let _ = receiver.poll_transmit(&mut out);
    }
    assert!(
        sent.starts_with(&got),
        "the application got bytes the peer never sent"
    );
});
