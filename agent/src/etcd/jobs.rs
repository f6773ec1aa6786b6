//! Jobs in etcd: their records (`/strata/jobs/<job>`), where each
//! schedule stands (`/strata/job-schedules/<job>/<schedule>`, written by
//! the scheduling master only) and their runs
//! (`/strata/job-runs/<job>/<run>`: the scheduling master creates and
//! moves them; the API creates manual runs and asks for kills). Every
//! write bumps the scheduler's epoch, so that a plan made before it is
//! refused. The scheduling master's commit of a round creates each new
//! run only where no record has its key, in the transaction that moves
//! its schedule's cursor past its time.

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};

use control::job::JobId;
use control::job::apply::Changes;
use control::job::record::{JobRecord, RunId, RunRecord, ScheduleState};

use super::apps::{EPOCH, LEADER, Leadership, bump_epoch};
use super::{Error, Store, TASK_STATUS, TASKS, decode, record_json};

pub const JOBS: &str = "/strata/jobs/";
pub const JOB_SCHEDULES: &str = "/strata/job-schedules/";
pub const JOB_RUNS: &str = "/strata/job-runs/";

/// The most operations one transaction of a round holds (etcd refuses
/// more than 128).
const OPS_PER_TXN: usize = 100;

fn job_key(id: &JobId) -> String {
    format!("{JOBS}{id}")
}

fn run_key(job: &JobId, run: &RunId) -> String {
    format!("{JOB_RUNS}{job}/{run}")
}

fn state_key(job: &JobId, schedule: &str) -> String {
    format!("{JOB_SCHEDULES}{job}/{schedule}")
}

/// What the scheduling master reads of jobs at one revision.
#[derive(Debug, Clone, Default)]
pub struct JobsSnapshot {
    pub jobs: Vec<JobRecord>,
    pub states: BTreeMap<JobId, BTreeMap<String, ScheduleState>>,
    pub runs: Vec<RunRecord>,
}

/// One group of writes that go in one transaction or not at all.
struct Group {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
}

impl Store {
    /// A job's record, with the revision it was last written at.
    pub async fn get_job(&self, id: &JobId) -> Result<Option<(JobRecord, i64)>, Error> {
        self.get_record_at(&job_key(id)).await
    }

    /// Every job, by id.
    pub async fn list_jobs(&self) -> Result<Vec<JobRecord>, Error> {
        Ok(self.decode_prefix(JOBS).await?.into_values().collect())
    }

    /// Writes a job's record while it was last written at `revision` (0:
    /// it did not exist). Returns whether it was stored.
    pub async fn put_job_if(&self, record: &JobRecord, revision: i64) -> Result<bool, Error> {
        self.put_record_if(job_key(&record.spec.id), record, revision)
            .await
    }

    /// A job's runs, oldest first (run ids sort by time).
    pub async fn job_runs(&self, id: &JobId) -> Result<Vec<RunRecord>, Error> {
        let prefix = format!("{JOB_RUNS}{id}/");
        Ok(self.decode_prefix(&prefix).await?.into_values().collect())
    }

    /// One run, with the revision it was last written at.
    pub async fn get_run(
        &self,
        job: &JobId,
        run: &RunId,
    ) -> Result<Option<(RunRecord, i64)>, Error> {
        self.get_record_at(&run_key(job, run)).await
    }

    /// Where a job's schedules stand, by schedule.
    pub async fn schedule_states(
        &self,
        id: &JobId,
    ) -> Result<BTreeMap<String, ScheduleState>, Error> {
        let prefix = format!("{JOB_SCHEDULES}{id}/");
        self.decode_prefix(&prefix).await
    }

    /// Creates a run of a job that was last written at `job_revision`,
    /// only where no run has its key. Returns whether it was stored.
    pub async fn create_run(&self, run: &RunRecord, job_revision: i64) -> Result<bool, Error> {
        let key = run_key(&run.job, &run.id);
        let txn = Txn::new()
            .when([
                Compare::version(key.clone(), CompareOp::Equal, 0),
                Compare::mod_revision(job_key(&run.job), CompareOp::Equal, job_revision),
            ])
            .and_then([TxnOp::put(key, record_json(run), None), bump_epoch()]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Writes a run while it was last written at `revision`.
    pub async fn put_run_if(&self, run: &RunRecord, revision: i64) -> Result<bool, Error> {
        self.put_record_if(run_key(&run.job, &run.id), run, revision)
            .await
    }

    /// Jobs, schedule states and runs at `revision`.
    pub(super) async fn jobs_at(&self, revision: i64) -> Result<JobsSnapshot, Error> {
        let at = Some(revision);
        let mut out = JobsSnapshot::default();
        for (k, v) in self.range_at(JOBS, at).await?.1 {
            out.jobs.push(decode(&format!("{JOBS}{k}"), &v)?);
        }
        for (k, v) in self.range_at(JOB_SCHEDULES, at).await?.1 {
            let key = format!("{JOB_SCHEDULES}{k}");
            let Some((job, schedule)) = k.split_once('/') else {
                continue;
            };
            let Ok(job) = JobId::parse(job) else {
                continue;
            };
            out.states
                .entry(job)
                .or_default()
                .insert(schedule.to_string(), decode(&key, &v)?);
        }
        for (k, v) in self.range_at(JOB_RUNS, at).await?.1 {
            out.runs.push(decode(&format!("{JOB_RUNS}{k}"), &v)?);
        }
        Ok(out)
    }

    /// Commits a round of jobs, fenced like [`Store::commit_plan`] on the
    /// leadership and on nothing the scheduler reads having changed after
    /// `revision`; each new run only where no record has its key, in the
    /// same transaction as the rest of its group. Returns whether every
    /// part was written.
    pub async fn commit_jobs(
        &self,
        lead: &Leadership,
        revision: i64,
        changes: &Changes,
    ) -> Result<bool, Error> {
        let mut groups: Vec<Group> = Vec::new();
        let one = |op: TxnOp| Group {
            compares: Vec::new(),
            ops: vec![op],
        };
        for r in &changes.create_runs {
            let key = run_key(&r.job, &r.id);
            groups.push(Group {
                compares: vec![Compare::version(key.clone(), CompareOp::Equal, 0)],
                ops: vec![TxnOp::put(key, record_json(r), None)],
            });
        }
        for r in &changes.put_runs {
            groups.push(one(TxnOp::put(
                run_key(&r.job, &r.id),
                record_json(r),
                None,
            )));
        }
        for (job, schedule, state) in &changes.put_states {
            groups.push(one(TxnOp::put(
                state_key(job, schedule),
                record_json(state),
                None,
            )));
        }
        for (job, schedule) in &changes.delete_states {
            groups.push(one(TxnOp::delete(state_key(job, schedule), None)));
        }
        for (id, t) in &changes.put_tasks {
            groups.push(one(TxnOp::put(
                format!("{TASKS}{id}"),
                record_json(t),
                None,
            )));
        }
        for id in &changes.delete_tasks {
            groups.push(Group {
                compares: Vec::new(),
                ops: vec![
                    TxnOp::delete(format!("{TASKS}{id}"), None),
                    TxnOp::delete(format!("{TASK_STATUS}{id}"), None),
                ],
            });
        }
        for (job, run) in &changes.delete_runs {
            groups.push(one(TxnOp::delete(run_key(job, run), None)));
        }
        for job in &changes.delete_jobs {
            let prefix = Some(DeleteOptions::new().with_prefix());
            groups.push(Group {
                compares: Vec::new(),
                ops: vec![
                    TxnOp::delete(job_key(job), None),
                    TxnOp::delete(format!("{JOB_SCHEDULES}{job}/"), prefix.clone()),
                    TxnOp::delete(format!("{JOB_RUNS}{job}/"), prefix),
                ],
            });
        }
        // Whole groups packed into transactions.
        let mut parts: Vec<Group> = Vec::new();
        for g in groups {
            match parts.last_mut() {
                Some(p) if p.ops.len() + g.ops.len() < OPS_PER_TXN => {
                    p.compares.extend(g.compares);
                    p.ops.extend(g.ops);
                }
                _ => parts.push(g),
            }
        }
        let mut at = revision;
        for part in parts {
            let mut compares = vec![
                Compare::create_revision(LEADER, CompareOp::Equal, lead.created),
                Compare::lease(LEADER, CompareOp::Equal, lead.lease),
                Compare::mod_revision(EPOCH, CompareOp::Less, at + 1),
            ];
            compares.extend(part.compares);
            let mut ops = part.ops;
            ops.push(bump_epoch());
            let resp = self.txn(Txn::new().when(compares).and_then(ops)).await?;
            if !resp.succeeded() {
                return Ok(false);
            }
            at = resp.header().map_or(at, |h| h.revision());
        }
        Ok(true)
    }
}
