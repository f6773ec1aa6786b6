//! Jobs: one-off and cron-scheduled batch work (Metronome's model), the
//! pure part. `spec` is a job as Strata keeps it and what is checked of
//! it, `file` reads a job file (`metronome` for Metronome's JSON,
//! `native` for Strata's TOML), `cron` reads a schedule's expression and
//! walks its times in a time zone, `tz` finds IANA zones in the database
//! built into the binary, `record` is what the masters store of jobs,
//! schedules and runs, `plan` is the scheduling master's plan of a
//! job's schedules (which times start a run, which are skipped) and
//! `runs` its plan of the runs (place, retry, stop, end, trim), `apply`
//! the leader's round over the stored records (both plans, placement with
//! the apps' placer, the writes that carry them out), and `view` what the
//! job API answers. No clock and no file: every time is an argument, in
//! unix seconds.
//!
//! The design, and what of it is built, is `docs/design/jobs.md`.

pub mod apply;
pub mod cron;
pub mod file;
pub mod metronome;
pub mod native;
pub mod plan;
pub mod record;
pub mod runs;
pub mod spec;
pub mod tz;
pub mod view;

pub use file::{JobFile, read, read_schedule};
pub use spec::{JobId, JobSpec, RunSpec, ScheduleSpec};
