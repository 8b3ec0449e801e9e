//! Arbitrary bytes through the pcap/pcapng reader, whole and as a stream cut at every
//! position the input's first byte picks: nothing may panic, and both must agree.
//! Run: `cd dataplane/fuzz && cargo +nightly fuzz run capture_read`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uvlan_dataplane::capture::{Decoder, Reader};

fuzz_target!(|data: &[u8]| {
    let mut whole = Vec::new();
    let mut r = Reader::new(data);
    while let Some(ev) = r.next_event() {
        match ev {
            Ok(e) => whole.push(format!("{e:?}")),
            Err(_) => break,
        }
    }
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut dec = Decoder::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut streamed = Vec::new();
    'feed: for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&buf) {
                Ok(Some((n, e))) => {
                    streamed.push(format!("{e:?}"));
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert_eq!(streamed, whole);
});
