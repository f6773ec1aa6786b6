//! Jobs and their runs: adding or changing a job (checked again as
//! `strata job validate` checks it; nothing is stored on a problem),
//! listing and showing jobs with their schedules' next times, a manual
//! run, the history, a kill, enabling or disabling a schedule, and
//! removing a job. Every change is stored only over the record it was
//! read from; the scheduling master does the rest.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};

use control::app::Place;
use control::job::record::{EndReason, JobRecord, RunId, RunRecord, StopRequest, Trigger};
use control::job::view::{EnableRequest, JobView, schedule_views};
use control::job::{JobId, JobSpec};

use crate::api::server::ApiState;
use crate::api::server::audit::AuditNote;
use crate::api::server::auth::{DeployJobs, Operator, ReadState};
use crate::api::server::error::ApiError;

/// How often a change is read and written again when another came between.
const ATTEMPTS: u32 = 5;

fn job_id(text: &str) -> Result<JobId, ApiError> {
    JobId::parse(text).map_err(|why| ApiError::BadPath(format!("job `{text}`: {why}")))
}

fn run_id(job: &JobId, text: &str) -> Result<RunId, ApiError> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(RunId(text.to_string()))
    } else {
        Err(ApiError::BadPath(format!(
            "run `{text}` of job `{job}`: a run id is lowercase letters, digits and dashes"
        )))
    }
}

async fn get_job(state: &ApiState, id: &JobId) -> Result<(JobRecord, i64), ApiError> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NoSuchJob(id.to_string()))
}

/// A job as the API shows it: `all` runs, or those going and the last one
/// ended.
async fn view(state: &ApiState, record: JobRecord, all: bool) -> Result<JobView, ApiError> {
    let states = state.store.schedule_states(&record.spec.id).await?;
    let mut runs = state.store.job_runs(&record.spec.id).await?;
    if !all {
        let last_ended = runs
            .iter()
            .rev()
            .find(|r| r.state.ended())
            .map(|r| r.id.clone());
        runs.retain(|r| r.going() || Some(&r.id) == last_ended.as_ref());
    }
    Ok(JobView {
        format: Default::default(),
        schedules: schedule_views(&record.spec, &states, crate::clock::unix_secs()),
        record,
        runs,
    })
}

pub async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let mut out = Vec::new();
    for record in state.store.list_jobs().await? {
        out.push(view(&state, record, false).await?);
    }
    Ok(Json(out))
}

pub async fn show_job(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
    Path(job): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(&job)?;
    let (record, _) = get_job(&state, &id).await?;
    Ok(Json(view(&state, record, true).await?))
}

/// Every problem with `spec`, one per line, as `strata job validate`
/// finds them (by JSON path: the file's lines stayed with the client).
fn check(spec: &JobSpec, now: u64) -> Result<(), ApiError> {
    let at = |field: &str| Place {
        path: if field.is_empty() {
            "$".to_string()
        } else {
            format!("$.{field}")
        },
        line: 0,
        column: 0,
    };
    let mut problems: Vec<String> = spec
        .check(&at)
        .into_iter()
        .map(|p| format!("{}: {}", p.place.path, p.message))
        .collect();
    problems.extend(
        spec.check_times(now)
            .into_iter()
            .map(|(field, why)| format!("{}: {why}", at(&field).path)),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::BadJob(format!(
            "job `{}`: {} problem{}:\n  {}",
            spec.id,
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        )))
    }
}

pub async fn put_job(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployJobs>,
    Json(spec): Json<JobSpec>,
) -> Result<(Extension<AuditNote>, Json<JobRecord>), ApiError> {
    let now = crate::clock::unix_secs();
    check(&spec, now)?;
    for _ in 0..ATTEMPTS {
        let current = state.store.get_job(&spec.id).await?;
        let (record, revision, verb) = match current {
            Some((r, _)) if r.removing => return Err(ApiError::JobRemoving(spec.id.to_string())),
            Some((r, _)) if r.spec == spec => {
                let note = AuditNote {
                    who: None,
                    detail: format!("job {} unchanged", spec.id),
                };
                return Ok((Extension(note), Json(r)));
            }
            Some((r, rev)) => (
                JobRecord {
                    spec: spec.clone(),
                    version: r.version + 1,
                    updated_at: now,
                    ..r
                },
                rev,
                "change",
            ),
            None => (
                JobRecord {
                    format: Default::default(),
                    spec: spec.clone(),
                    version: 1,
                    created_at: now,
                    updated_at: now,
                    removing: false,
                },
                0,
                "add",
            ),
        };
        if state.store.put_job_if(&record, revision).await? {
            let note = AuditNote {
                who: None,
                detail: format!("{verb} job {} version {}", spec.id, record.version),
            };
            tracing::info!("api: {}", note.detail);
            return Ok((Extension(note), Json(record)));
        }
    }
    Err(ApiError::JobChanged(spec.id.to_string()))
}

pub async fn remove_job(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployJobs>,
    Path(job): Path<String>,
) -> Result<(Extension<AuditNote>, Json<JobRecord>), ApiError> {
    let id = job_id(&job)?;
    for _ in 0..ATTEMPTS {
        let (mut record, revision) = get_job(&state, &id).await?;
        if record.removing {
            return Ok((
                Extension(AuditNote {
                    who: None,
                    detail: format!("remove job {id} (already being removed)"),
                }),
                Json(record),
            ));
        }
        record.removing = true;
        record.updated_at = crate::clock::unix_secs();
        if state.store.put_job_if(&record, revision).await? {
            let note = AuditNote {
                who: None,
                detail: format!("remove job {id}"),
            };
            return Ok((Extension(note), Json(record)));
        }
    }
    Err(ApiError::JobChanged(id.to_string()))
}

pub async fn start_run(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<DeployJobs>,
    Path(job): Path<String>,
) -> Result<(Extension<AuditNote>, Json<RunRecord>), ApiError> {
    let id = job_id(&job)?;
    for _ in 0..ATTEMPTS {
        let (record, revision) = get_job(&state, &id).await?;
        if record.removing {
            return Err(ApiError::JobRemoving(id.to_string()));
        }
        let now = crate::clock::unix_secs();
        // Two runs asked in the same second tell apart by this; a clash
        // is refused by the store and tried again.
        let nonce = crate::pki::random_hex(2)
            .ok()
            .and_then(|h| u16::from_str_radix(&h, 16).ok())
            .unwrap_or_else(|| (std::process::id() & 0xffff) as u16);
        let run = RunRecord::queued(
            &id,
            RunId::manual(now, nonce),
            Trigger::Manual {
                by: user.name.clone(),
            },
            record.version,
            now,
        );
        if state.store.create_run(&run, revision).await? {
            let note = AuditNote {
                who: None,
                detail: format!("run job {id} as {}", run.id),
            };
            return Ok((Extension(note), Json(run)));
        }
    }
    Err(ApiError::JobChanged(id.to_string()))
}

pub async fn list_runs(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
    Path(job): Path<String>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let id = job_id(&job)?;
    get_job(&state, &id).await?;
    Ok(Json(state.store.job_runs(&id).await?))
}

pub async fn show_run(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
    Path((job, run)): Path<(String, String)>,
) -> Result<Json<RunRecord>, ApiError> {
    let id = job_id(&job)?;
    let run = run_id(&id, &run)?;
    let (r, _) = state
        .store
        .get_run(&id, &run)
        .await?
        .ok_or_else(|| no_run(&id, &run))?;
    Ok(Json(r))
}

fn no_run(job: &JobId, run: &RunId) -> ApiError {
    ApiError::NoSuchRun {
        job: job.to_string(),
        run: run.to_string(),
    }
}

pub async fn kill_run(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<DeployJobs>,
    Path((job, run)): Path<(String, String)>,
) -> Result<(Extension<AuditNote>, Json<RunRecord>), ApiError> {
    let id = job_id(&job)?;
    let run = run_id(&id, &run)?;
    for _ in 0..ATTEMPTS {
        let (mut r, revision) = state
            .store
            .get_run(&id, &run)
            .await?
            .ok_or_else(|| no_run(&id, &run))?;
        if r.state.ended() {
            return Err(ApiError::RunEnded {
                job: id.to_string(),
                run: run.to_string(),
                state: r.state.to_string(),
            });
        }
        if r.stop.is_none() {
            r.stop = Some(StopRequest {
                reason: EndReason::Killed {
                    by: user.name.clone(),
                },
                at: crate::clock::unix_secs(),
            });
        }
        if state.store.put_run_if(&r, revision).await? {
            let note = AuditNote {
                who: None,
                detail: format!("kill run {run} of job {id}"),
            };
            return Ok((Extension(note), Json(r)));
        }
    }
    Err(ApiError::JobChanged(id.to_string()))
}

pub async fn enable_schedule(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployJobs>,
    Path((job, schedule)): Path<(String, String)>,
    Json(req): Json<EnableRequest>,
) -> Result<(Extension<AuditNote>, Json<JobView>), ApiError> {
    let id = job_id(&job)?;
    for _ in 0..ATTEMPTS {
        let (mut record, revision) = get_job(&state, &id).await?;
        if record.removing {
            return Err(ApiError::JobRemoving(id.to_string()));
        }
        let Some(s) = record.spec.schedules.iter_mut().find(|s| s.id == schedule) else {
            return Err(ApiError::NoSuchSchedule {
                job: id.to_string(),
                schedule,
            });
        };
        let verb = if req.enabled { "enable" } else { "disable" };
        let note = AuditNote {
            who: None,
            detail: format!("{verb} schedule {schedule} of job {id}"),
        };
        if s.enabled == req.enabled {
            return Ok((Extension(note), Json(view(&state, record, false).await?)));
        }
        s.enabled = req.enabled;
        if req.enabled {
            check(&record.spec, crate::clock::unix_secs())?;
        }
        record.version += 1;
        record.updated_at = crate::clock::unix_secs();
        if state.store.put_job_if(&record, revision).await? {
            return Ok((Extension(note), Json(view(&state, record, false).await?)));
        }
    }
    Err(ApiError::JobChanged(id.to_string()))
}
