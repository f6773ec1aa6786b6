//! Rounds over stored records: what the scheduling master writes for
//! them, printed as text and compared with the expected one.

use std::collections::{BTreeMap, BTreeSet};

use expect_test::{Expect, expect};

use super::*;
use crate::app::AgentRole;
use crate::job::record::Trigger;
use crate::schedule::{NodeView, Snapshot};

/// 2025-12-01T00:20:00Z.
const NOW: u64 = 1_764_548_400;

fn job(toml: &str) -> JobRecord {
    let text = format!("id = \"nightly\"\n{toml}");
    let file = crate::job::read("nightly.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    JobRecord {
        format: Format::V1,
        spec: file.job,
        version: 1,
        created_at: 0,
        updated_at: 0,
        removing: false,
    }
}

fn placer(cpus: &[(&str, u64)]) -> Placer {
    Placer::new(&Snapshot {
        nodes: cpus
            .iter()
            .map(|(name, milli)| NodeView {
                name: name.to_string(),
                role: AgentRole::Private,
                ready: true,
                attributes: BTreeMap::new(),
                allocatable: Resources {
                    cpu_milli: *milli,
                    mem_mib: 4096,
                    disk_mib: 10_000,
                },
                cordoned: false,
            })
            .collect(),
        allocs: Vec::new(),
    })
}

fn manual(job: &JobRecord, name: &str) -> RunRecord {
    RunRecord::queued(
        &job.spec.id,
        RunId(name.to_string()),
        Trigger::Manual { by: "op".into() },
        job.version,
        NOW,
    )
}

fn report(state: TaskState, exit_code: Option<i32>, at: u64) -> TaskReport {
    TaskReport {
        format: Format::V1,
        state,
        pid: None,
        restarts: 0,
        exit_code,
        address: None,
        health: None,
        at,
    }
}

/// The round's log lines, then its writes.
fn show(r: &Round) -> String {
    let mut out: Vec<String> = r.lines.clone();
    let c = &r.changes;
    let run = |r: &RunRecord| {
        let attempts: Vec<String> = r
            .attempts
            .iter()
            .map(|a| {
                format!(
                    "#{} {} on {} started {:?} exit {:?}",
                    a.n, a.task, a.node, a.started_at, a.exit_code
                )
            })
            .collect();
        format!(
            "{} {} [{}] waiting {:?}",
            r.id,
            r.state,
            attempts.join(", "),
            r.waiting
        )
    };
    out.extend(c.create_runs.iter().map(|r| format!("create {}", run(r))));
    out.extend(c.put_runs.iter().map(|r| format!("put {}", run(r))));
    out.extend(
        c.delete_runs
            .iter()
            .map(|(j, r)| format!("delete run {j} {r}")),
    );
    out.extend(
        c.put_states
            .iter()
            .map(|(j, s, st)| format!("state {j}/{s} cursor {} next {:?}", st.cursor, st.next)),
    );
    out.extend(c.put_tasks.iter().map(|(id, t)| {
        format!(
            "task {id} on {} {:?} stopping {} env {:?}",
            t.node,
            t.spec.command,
            t.stopping,
            t.spec
                .env
                .iter()
                .filter(|(k, _)| k.starts_with("STRATA_JOB"))
                .collect::<Vec<_>>()
        )
    }));
    out.extend(c.delete_tasks.iter().map(|t| format!("delete task {t}")));
    out.extend(c.delete_jobs.iter().map(|j| format!("delete job {j}")));
    if let Some(w) = r.wake_at {
        out.push(format!("wake at +{}", w as i64 - NOW as i64));
    }
    out.join("\n") + "\n"
}

struct World {
    jobs: Vec<JobRecord>,
    states: BTreeMap<JobId, BTreeMap<String, ScheduleState>>,
    runs: Vec<RunRecord>,
    tasks: BTreeMap<String, TaskRecord>,
    reports: BTreeMap<String, TaskReport>,
    ready: BTreeSet<String>,
}

impl World {
    fn new(jobs: Vec<JobRecord>, runs: Vec<RunRecord>) -> World {
        World {
            jobs,
            states: BTreeMap::new(),
            runs,
            tasks: BTreeMap::new(),
            reports: BTreeMap::new(),
            ready: ["a1", "a2"].iter().map(|s| s.to_string()).collect(),
        }
    }

    fn round(&self, now: u64, placer: &mut Placer) -> Round {
        round(
            &Input {
                jobs: &self.jobs,
                states: &self.states,
                runs: &self.runs,
                tasks: &self.tasks,
                reports: &self.reports,
                ready: &self.ready,
                history: DEFAULT_HISTORY,
            },
            now,
            placer,
        )
    }

    /// Stores a round's writes, as the store would.
    fn commit(&mut self, r: &Round) {
        let c = &r.changes;
        for run in c.create_runs.iter().chain(&c.put_runs) {
            self.runs.retain(|x| x.id != run.id);
            self.runs.push(run.clone());
        }
        for (_, id) in &c.delete_runs {
            self.runs.retain(|x| &x.id != id);
        }
        for (j, s, st) in &c.put_states {
            self.states
                .entry(j.clone())
                .or_default()
                .insert(s.clone(), st.clone());
        }
        for (id, t) in &c.put_tasks {
            self.tasks.insert(id.clone(), t.clone());
        }
        for id in &c.delete_tasks {
            self.tasks.remove(id);
            self.reports.remove(id);
        }
    }
}

fn check(rounds: &[Round], expected: Expect) {
    let text: Vec<String> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| format!("round {}:\n{}", i + 1, show(r)))
        .collect();
    expected.assert_eq(&text.join(""));
}

#[test]
fn a_manual_run_is_placed_then_ends_with_its_exit_code() {
    let j = job("[run]\nimage = \"busybox\"\ncmd = \"exit 3\"\ncpus = 0.5\n");
    let run = manual(&j, "20261201002000-manual-0001");
    let mut w = World::new(vec![j], vec![run]);
    let mut rounds = Vec::new();
    let r = w.round(NOW, &mut placer(&[("a1", 1000)]));
    w.commit(&r);
    rounds.push(r);
    let task = "nightly.20261201002000-manual-0001.1";
    w.reports
        .insert(task.to_string(), report(TaskState::Running, None, NOW + 2));
    let r = w.round(NOW + 3, &mut placer(&[("a1", 1000)]));
    w.commit(&r);
    rounds.push(r);
    w.reports.insert(
        task.to_string(),
        report(TaskState::Exited, Some(3), NOW + 5),
    );
    let r = w.round(NOW + 6, &mut placer(&[("a1", 1000)]));
    w.commit(&r);
    rounds.push(r);
    // Settled: nothing more to write.
    rounds.push(w.round(NOW + 7, &mut placer(&[("a1", 1000)])));
    check(
        &rounds,
        expect![[r#"
            round 1:
            place nightly 20261201002000-manual-0001 attempt 1 on a1 as nightly.20261201002000-manual-0001.1
            put 20261201002000-manual-0001 active [#1 nightly.20261201002000-manual-0001.1 on a1 started None exit None] waiting None
            task nightly.20261201002000-manual-0001.1 on a1 ["/bin/sh", "-c", "exit 3"] stopping false env [("STRATA_JOB_ATTEMPT", "1"), ("STRATA_JOB_ID", "nightly"), ("STRATA_JOB_RUN_ID", "20261201002000-manual-0001")]
            wake at +3600
            round 2:
            put 20261201002000-manual-0001 active [#1 nightly.20261201002000-manual-0001.1 on a1 started Some(1764548402) exit None] waiting None
            round 3:
            finish nightly 20261201002000-manual-0001 failed: exited (exit code 3)
            put 20261201002000-manual-0001 failed [#1 nightly.20261201002000-manual-0001.1 on a1 started Some(1764548402) exit Some(3)] waiting None
            round 4:

        "#]],
    );
}

#[test]
fn a_due_schedule_creates_its_run_and_places_it_in_one_round() {
    let j = job("[run]\nimage = \"busybox\"\ncmd = \"true\"\n\
         [[schedules]]\nid = \"every-minute\"\ncron = \"* * * * *\"\n");
    let mut w = World::new(vec![j], Vec::new());
    let mut rounds = Vec::new();
    // The schedule starts from now, without backfill.
    let r = w.round(NOW - 30, &mut placer(&[("a1", 1000)]));
    w.commit(&r);
    rounds.push(r);
    let r = w.round(NOW + 1, &mut placer(&[("a1", 1000)]));
    w.commit(&r);
    rounds.push(r);
    check(
        &rounds,
        expect![[r#"
            round 1:
            advance nightly/every-minute to 2025-12-01T00:19:30Z, next 2025-12-01T00:20:00Z
            state nightly/every-minute cursor 1764548370 next Some(1764548400)
            wake at +0
            round 2:
            fire nightly 20251201002000-every-minute
            advance nightly/every-minute to 2025-12-01T00:20:00Z, next 2025-12-01T00:21:00Z
            place nightly 20251201002000-every-minute attempt 1 on a1 as nightly.20251201002000-every-minute.1
            create 20251201002000-every-minute active [#1 nightly.20251201002000-every-minute.1 on a1 started None exit None] waiting None
            state nightly/every-minute cursor 1764548400 next Some(1764548460)
            task nightly.20251201002000-every-minute.1 on a1 ["/bin/sh", "-c", "true"] stopping false env [("STRATA_JOB_ATTEMPT", "1"), ("STRATA_JOB_ID", "nightly"), ("STRATA_JOB_RUN_ID", "20251201002000-every-minute"), ("STRATA_JOB_SCHEDULED_AT", "2025-12-01T00:20:00Z")]
            wake at +60
        "#]],
    );
}

#[test]
fn runs_share_the_placer_with_what_it_counted_before() {
    let j = job("[run]\nimage = \"busybox\"\ncmd = \"sleep 60\"\ncpus = 1\n");
    let runs = vec![
        manual(&j, "20261201002000-manual-0001"),
        manual(&j, "20261201002000-manual-0002"),
    ];
    let w = World::new(vec![j], runs);
    // One core free on a1, and a2 full with what the apps' plan placed.
    let mut p = placer(&[("a1", 1000), ("a2", 1000)]);
    p.add(&crate::schedule::Alloc {
        node: "a2".into(),
        app: None,
        resources: Resources {
            cpu_milli: 1000,
            mem_mib: 0,
            disk_mib: 0,
        },
        host_ports: Vec::new(),
    });
    check(
        &[w.round(NOW, &mut p)],
        expect![[r#"
        round 1:
        place nightly 20261201002000-manual-0001 attempt 1 on a1 as nightly.20261201002000-manual-0001.1
        wait nightly 20261201002000-manual-0002: no node can take the run: too few free cpus for 1 (2 nodes)
        put 20261201002000-manual-0001 active [#1 nightly.20261201002000-manual-0001.1 on a1 started None exit None] waiting None
        put 20261201002000-manual-0002 queued [] waiting Some("no node can take the run: too few free cpus for 1 (2 nodes)")
        task nightly.20261201002000-manual-0001.1 on a1 ["/bin/sh", "-c", "sleep 60"] stopping false env [("STRATA_JOB_ATTEMPT", "1"), ("STRATA_JOB_ID", "nightly"), ("STRATA_JOB_RUN_ID", "20261201002000-manual-0001")]
        wake at +3600
    "#]],
    );
}
