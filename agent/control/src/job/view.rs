//! What the job API answers (`GET /v1/jobs`, `GET /v1/jobs/{job}`) and
//! the small requests it reads besides a job's spec. Wire types: they
//! read what a newer master wrote (a `format` field, no unknown key
//! refused).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::{JobRecord, RunRecord, ScheduleState};
use super::spec::{ConcurrencyPolicy, JobSpec};
use crate::format::Format;

/// A job with where its schedules stand and its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub record: JobRecord,
    #[serde(default)]
    pub schedules: Vec<ScheduleView>,
    /// Its runs, oldest first (the list shows only those going and the
    /// last one ended).
    #[serde(default)]
    pub runs: Vec<RunRecord>,
}

/// One schedule of a job, with its next time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleView {
    pub id: String,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub concurrency_policy: ConcurrencyPolicy,
    /// Unix seconds of the next time it fires (absent: disabled, or no
    /// time is left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
    /// Times skipped and not kept as runs.
    #[serde(default)]
    pub skipped_unrecorded: u64,
}

/// The schedules of `spec` with their next times: as the scheduling
/// master stored them, or from `now` for a schedule it has not seen yet.
pub fn schedule_views(
    spec: &JobSpec,
    states: &BTreeMap<String, ScheduleState>,
    now: u64,
) -> Vec<ScheduleView> {
    spec.schedules
        .iter()
        .map(|s| {
            let state = states.get(&s.id);
            let next = if !s.enabled {
                None
            } else {
                match state.filter(|st| {
                    st.enabled_since.is_some() && st.fingerprint == super::plan::fingerprint(s)
                }) {
                    Some(st) => st.next,
                    None => match (s.parse_cron(), s.zone()) {
                        (Ok(cron), Ok(zone)) => cron.next_after(&zone, now),
                        _ => None,
                    },
                }
            };
            ScheduleView {
                id: s.id.clone(),
                cron: s.cron.clone(),
                timezone: s.timezone.clone(),
                enabled: s.enabled,
                concurrency_policy: s.concurrency_policy,
                next,
                skipped_unrecorded: state.map_or(0, |st| st.skipped_unrecorded),
            }
        })
        .collect()
}

/// `PUT /v1/jobs/{job}/schedules/{schedule}/enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnableRequest {
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub enabled: bool,
}
