//! Hostile memory blobs into the endpoint reader (what a device reads at boot): never a panic;
//! what it accepts, the writer writes back to the same bytes.
#![no_main]

use tether::provision::{blob_len, read_endpoint, write_blob};

libfuzzer_sys::fuzz_target!(|blob: &[u8]| {
    if let Ok(endpoint) = read_endpoint(blob) {
        assert!(!endpoint.host().is_empty());
        let len = u32::from_le_bytes(blob[..4].try_into().unwrap()) as usize;
        let text = core::str::from_utf8(&blob[4..4 + len]).unwrap();
        let mut out = vec![0u8; blob_len(len)];
        assert_eq!(write_blob(text, &mut out), Ok(blob_len(len)));
        assert_eq!(&out[..4 + len], &blob[..4 + len]);
    }
});
