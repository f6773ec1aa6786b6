//! Reading a job file: `.json` is Metronome's job JSON, `.toml` Strata's
//! TOML (any other name is told apart by its first character), and a
//! schedule file the same way. Every problem of the file is reported, each
//! at its place (a JSON path, or a TOML line and column), and a file with
//! any problem gives no job.

use super::spec::{JobSpec, ScheduleSpec};
use super::{metronome, native};
use crate::app::FileError;
use crate::app::doc::{self, Node, Problems, Syntax};
use crate::app::group::Places;

/// The job of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFile {
    pub syntax: Syntax,
    pub job: JobSpec,
}

fn syntax_of(origin: &str, text: &str) -> Syntax {
    if origin.ends_with(".json") {
        Syntax::Json
    } else if origin.ends_with(".toml") {
        Syntax::Toml
    } else if text.trim_start().starts_with('{') {
        Syntax::Json
    } else {
        Syntax::Toml
    }
}

fn parse(origin: &str, text: &str) -> Result<(Syntax, Node), FileError> {
    let syntax = syntax_of(origin, text);
    let fail = |problems| FileError {
        origin: origin.to_string(),
        problems,
    };
    let root = match syntax {
        Syntax::Json => doc::parse_json(text).map_err(|p| fail(vec![p]))?,
        Syntax::Toml => doc::parse_toml(text).map_err(fail)?,
    };
    Ok((syntax, root))
}

/// Reads the job in `text` (from `origin`, a file name) and checks it.
pub fn read(origin: &str, text: &str) -> Result<JobFile, FileError> {
    let (syntax, root) = parse(origin, text)?;
    let mut p = Problems::default();
    let read = match syntax {
        Syntax::Json => metronome::read_job(&root, &mut p),
        Syntax::Toml => native::read_job(&root, &mut p),
    };
    if let Some((job, places)) = &read {
        p.list.extend(job.check(&|field| places.at(field)));
    }
    match read {
        Some((job, _)) if p.list.is_empty() => Ok(JobFile { syntax, job }),
        _ => Err(FileError {
            origin: origin.to_string(),
            problems: p.list,
        }),
    }
}

/// Reads the lone schedule in `text` (Metronome's schedule JSON, or a
/// Strata TOML table) and checks it.
pub fn read_schedule(origin: &str, text: &str) -> Result<ScheduleSpec, FileError> {
    let (syntax, root) = parse(origin, text)?;
    let mut p = Problems::default();
    let mut places = Places::new(&root.place);
    let read = match syntax {
        Syntax::Json => metronome::read_schedule_at(&root, "schedules[0]", &mut places, &mut p),
        Syntax::Toml => native::read_schedule_at(&root, "schedules[0]", &mut places, &mut p),
    };
    if let Some(s) = &read {
        // Checked as the one schedule of a job that is otherwise fine.
        let mut job = JobSpec::new(
            super::spec::JobId::parse("schedule").expect("a valid id"),
            super::spec::RunSpec::new("busybox"),
        );
        job.schedules.push(s.clone());
        p.list.extend(job.check(&|field| places.at(field)));
    }
    match read {
        Some(s) if p.list.is_empty() => Ok(s),
        _ => Err(FileError {
            origin: origin.to_string(),
            problems: p.list,
        }),
    }
}

#[cfg(test)]
mod tests;
