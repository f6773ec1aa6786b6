//! The HTTP/1.x responses of a cloud's metadata service or a user-data
//! URL, as the bootstrap client parses them: never a panic, and a body
//! never longer than what arrived.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((status, body)) = bootstrap::fuzz_http_response(data) {
        assert!(status <= 999, "{status}");
        assert!(body <= data.len());
    }
});
