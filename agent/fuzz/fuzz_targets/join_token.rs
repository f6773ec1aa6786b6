//! Join tokens (from user-data and from `POST /v1/join`): parsing never
//! panics, and a token that parses prints as a token that parses to it.
#![no_main]

use agent::pki::JoinToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = JoinToken::parse(text) {
        let again = JoinToken::parse(&token.to_string()).expect("a printed token parses");
        assert_eq!(again, token);
    }
});
