//! Jobs: one-off and cron-scheduled batch work (Metronome's model), the
//! pure part. `cron` reads a schedule's expression and walks its times in
//! a time zone, `tz` finds IANA zones in the database built into the
//! binary. No clock and no file: every time is an argument, in unix
//! seconds.
//!
//! The plan this grows into (records, the leader's planner, runs as
//! tasks) is `docs/design/jobs.md`.

pub mod cron;
pub mod tz;
