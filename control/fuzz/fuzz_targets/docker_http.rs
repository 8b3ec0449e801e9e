//! Bytes from a Docker plugin socket through the HTTP/1.1 request parser, request after
//! request as on a keep-alive connection, and through the answer parser the driver uses on
//! Docker's API socket. Nothing may panic; what is accepted must respect the limits.
//! Run: `cd control/fuzz && cargo +nightly fuzz run docker_http -- -dict=dicts/http.dict`.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use uvlan_control::docker::http::{self, HttpError, MAX_BODY};

fuzz_target!(|data: &[u8]| {
    // A small buffer, so lines and bodies straddle refills as they do on a socket.
    let mut r = BufReader::with_capacity(16, data);
    for _ in 0..8 {
        match http::read_request(&mut r) {
            Ok(req) => {
                assert!(req.body.len() <= MAX_BODY);
                assert!(req.path.starts_with('/'));
                assert!(!req.method.is_empty() && !req.method.contains(' '));
            }
            Err(HttpError::Closed) => break,
            Err(e) => {
                assert!(matches!(e.status(), 400 | 413 | 501), "{e}");
                let _ = e.to_string();
                break;
            }
        }
    }
    let _ = http::parse_response(data);
});
