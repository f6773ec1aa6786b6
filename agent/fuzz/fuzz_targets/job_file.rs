//! Job files an operator writes (Metronome's JSON, Strata's TOML) and
//! schedule files: reading never panics, a job that reads passes its own
//! checks, every schedule of it has a cron that parses and a zone that
//! exists, and it reads back the same after a round trip through JSON (as
//! the masters store it).
#![no_main]

use control::job::JobSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for origin in ["fuzz.json", "fuzz.toml"] {
        let _ = control::job::read_schedule(origin, text);
        let Ok(file) = control::job::read(origin, text) else {
            continue;
        };
        let job = file.job;
        let nowhere = |_: &str| control::app::Place {
            path: String::new(),
            line: 0,
            column: 0,
        };
        assert!(job.check(&nowhere).is_empty(), "{job:?}");
        for s in &job.schedules {
            let cron = s.parse_cron().expect("a read schedule's cron parses");
            let zone = s.zone().expect("a read schedule's zone exists");
            let _ = cron.next_after(&zone, 1_800_000_000);
        }
        let json = serde_json::to_vec(&job).expect("a job serializes");
        let again: JobSpec = serde_json::from_slice(&json).expect("it reads back");
        assert_eq!(again, job);
    }
});
