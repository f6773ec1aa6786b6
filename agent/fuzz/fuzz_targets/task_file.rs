//! Task files an operator writes (TOML) and task requests the API reads
//! (JSON): parsing never panics, and a request that passes the API's
//! checks reads back the same after a round trip through JSON.
#![no_main]

use control::model::TaskRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = control::task::file::parse("fuzz.toml", text);
        let _ = control::task::spec::parse_size(text);
        let _ = control::access::parse_duration(text);
    }
    if let Ok(req) = serde_json::from_slice::<TaskRequest>(data)
        && req.spec.validate_assignment().is_ok()
    {
        let json = serde_json::to_vec(&req).expect("a task request serializes");
        let again: TaskRequest = serde_json::from_slice(&json).expect("it reads back");
        assert_eq!(again, req);
        assert!(again.spec.validate_assignment().is_ok());
    }
});
