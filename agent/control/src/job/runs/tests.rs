//! The runs' plan driven round by round over simulated nodes: each round
//! plans, records the actions, and lets the nodes act (a placed task runs
//! the next round and then exits as it is told; a task asked to stop stops
//! the next round; a node can be lost). The rounds are compared with the
//! expected text.

use std::collections::BTreeMap;

use expect_test::{Expect, expect};

use super::*;
use crate::format::Format;
use crate::job::record::Trigger;

/// What a placed task does.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Runs this many rounds, then exits with this code.
    Exits(u32, i32),
    /// Runs until stopped.
    Forever,
    /// Runs on, and a stop never takes (a runtime that cannot stop it).
    Unstoppable,
}

struct Sim {
    job: JobRecord,
    runs: BTreeMap<RunId, RunRecord>,
    tasks: BTreeMap<String, TaskView>,
    /// Rounds each task has run.
    ran: BTreeMap<String, u32>,
    /// Nodes by name: Ready or not.
    nodes: BTreeMap<String, bool>,
    /// What each attempt number does (the last one for any later).
    behaviour: Vec<Behaviour>,
    /// No node fits (`place` answers why).
    full: bool,
    deleted: bool,
    now: u64,
    log: Vec<String>,
}

impl Sim {
    fn new(toml_run: &str, behaviour: &[Behaviour]) -> Sim {
        let text = format!(
            "id = \"j\"\nhistory = 2\n[run]\nimage = \"busybox\"\ncmd = \"work\"\n{toml_run}"
        );
        let file = crate::job::read("j.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        Sim {
            job: JobRecord {
                format: Format::V1,
                spec: file.job,
                version: 1,
                created_at: 0,
                updated_at: 0,
                removing: false,
            },
            runs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            ran: BTreeMap::new(),
            nodes: BTreeMap::from([("a1".to_string(), true), ("a2".to_string(), true)]),
            behaviour: behaviour.to_vec(),
            full: false,
            deleted: false,
            now: 1000,
            log: Vec::new(),
        }
    }

    /// A run created now (manual).
    fn start(&mut self, name: &str) {
        let id = RunId(name.to_string());
        let r = RunRecord::queued(
            &self.job.spec.id,
            id.clone(),
            Trigger::Manual { by: "op".into() },
            1,
            self.now,
        );
        self.runs.insert(id, r);
    }

    /// Runs `rounds` rounds 10 seconds apart.
    fn run(&mut self, rounds: u32) {
        for _ in 0..rounds {
            if self.deleted {
                break;
            }
            let runs: Vec<&RunRecord> = self.runs.values().collect();
            let nodes = self.nodes.clone();
            let full = self.full;
            // The first Ready node, another than the last attempt's when
            // there is one.
            let mut place = |_: &JobRecord, r: &RunRecord| -> Result<String, String> {
                if full {
                    return Err("too few free cpus for 1 (2 nodes)".into());
                }
                let last = r.attempts.last().map(|a| a.node.clone());
                nodes
                    .iter()
                    .filter(|(_, ready)| **ready)
                    .map(|(n, _)| n.clone())
                    .find(|n| Some(n) != last.as_ref())
                    .or_else(|| nodes.iter().find(|(_, r)| **r).map(|(n, _)| n.clone()))
                    .ok_or_else(|| "no Ready node".to_string())
            };
            let plan = plan_runs(&self.job, &runs, &self.tasks, 2, self.now, &mut place);
            if !plan.actions.is_empty() {
                let a: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
                self.log
                    .push(format!("t+{}: {}", self.now - 1000, a.join("; ")));
            }
            for a in plan.actions {
                self.apply(a);
            }
            self.now += 10;
            self.nodes_act();
        }
    }

    fn apply(&mut self, a: RunAction) {
        match a {
            RunAction::Place { run, attempt, .. } => {
                self.tasks.insert(
                    attempt.task.clone(),
                    TaskView {
                        state: TaskState::Pending,
                        exit_code: None,
                        started_at: None,
                        finished_at: None,
                        node_ready: self.nodes[&attempt.node],
                        stopping_since: None,
                    },
                );
                let r = self.runs.get_mut(&run).expect("the run");
                r.attempts.push(attempt);
                r.state = RunState::Active;
                r.waiting = None;
                r.next_attempt_at = None;
            }
            RunAction::Wait { run, why, .. } => {
                self.runs.get_mut(&run).expect("the run").waiting = Some(why);
            }
            RunAction::AskStop { run, stop, .. } => {
                self.runs.get_mut(&run).expect("the run").stop = Some(stop);
            }
            RunAction::StopTask { task, .. } => {
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.stopping_since = Some(self.now);
                }
            }
            RunAction::Retry { run, ended, at, .. } => {
                let r = self.runs.get_mut(&run).expect("the run");
                *r.attempts.last_mut().expect("an attempt") = ended;
                r.state = RunState::Queued;
                r.next_attempt_at = Some(at);
            }
            RunAction::Finish {
                run,
                state,
                exit_code,
                reason,
                ended,
                ..
            } => {
                let r = self.runs.get_mut(&run).expect("the run");
                if let (Some(e), Some(last)) = (ended, r.attempts.last_mut()) {
                    *last = e;
                }
                r.state = state;
                r.exit_code = exit_code;
                r.reason = Some(reason);
                r.finished_at = Some(self.now);
            }
            RunAction::Trim { run, .. } => {
                if let Some(r) = self.runs.remove(&run) {
                    for a in r.attempts {
                        self.tasks.remove(&a.task);
                    }
                }
            }
            RunAction::DeleteJob { .. } => self.deleted = true,
        }
    }

    fn nodes_act(&mut self) {
        let now = self.now;
        for (id, t) in self.tasks.iter_mut() {
            let node = self
                .runs
                .values()
                .flat_map(|r| &r.attempts)
                .find(|a| &a.task == id)
                .map(|a| a.node.clone())
                .unwrap_or_default();
            t.node_ready = self.nodes.get(&node).copied().unwrap_or(false);
            if !t.node_ready {
                continue;
            }
            match t.state {
                TaskState::Pending => {
                    t.state = TaskState::Running;
                    t.started_at = Some(now);
                }
                TaskState::Running
                    if t.stopping_since.is_some()
                        && !matches!(self.behaviour[0], Behaviour::Unstoppable) =>
                {
                    t.state = TaskState::Stopped;
                    t.exit_code = Some(143);
                    t.finished_at = Some(now);
                }
                TaskState::Running => {
                    let n: usize = id
                        .rsplit('.')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .expect("a task id ends with its attempt");
                    let b = self.behaviour[(n - 1).min(self.behaviour.len() - 1)];
                    let ran = self.ran.entry(id.clone()).or_default();
                    *ran += 1;
                    if let Behaviour::Exits(rounds, code) = b
                        && *ran >= rounds
                    {
                        t.state = TaskState::Exited;
                        t.exit_code = Some(code);
                        t.finished_at = Some(now);
                    }
                }
                _ => {}
            }
        }
    }

    fn check(&self, expected: Expect) {
        let runs: Vec<String> = self
            .runs
            .values()
            .map(|r| {
                format!(
                    "{} {}{}{} ({} attempt(s))",
                    r.id,
                    r.state,
                    r.reason
                        .as_ref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default(),
                    r.exit_code
                        .map(|c| format!(", exit code {c}"))
                        .unwrap_or_default(),
                    r.attempts.len()
                )
            })
            .collect();
        expected.assert_eq(&format!(
            "{}\nruns: {}{}\n",
            self.log.join("\n"),
            runs.join("; "),
            if self.deleted { "\njob deleted" } else { "" }
        ));
    }
}

#[test]
fn a_run_that_exits_zero_succeeds_and_one_that_does_not_fails_with_its_code() {
    let mut s = Sim::new("", &[Behaviour::Exits(2, 0)]);
    s.start("r1");
    s.run(6);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        t+30: finish j r1 succeeded: exited (exit code 0)
        runs: r1 succeeded: exited, exit code 0 (1 attempt(s))
    "#]]);
    let mut s = Sim::new("", &[Behaviour::Exits(1, 3)]);
    s.start("r1");
    s.run(6);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        t+20: finish j r1 failed: exited (exit code 3)
        runs: r1 failed: exited, exit code 3 (1 attempt(s))
    "#]]);
}

#[test]
fn on_failure_retries_after_a_backoff_until_the_deadline() {
    let mut s = Sim::new(
        "restart = { policy = \"on-failure\", active_deadline_seconds = 75 }",
        &[Behaviour::Exits(1, 1)],
    );
    s.start("r1");
    s.run(12);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        t+20: retry j r1 at +1s (attempt 1 exited 1)
        t+30: place j r1 attempt 2 on a2 as j.r1.2
        t+50: retry j r1 at +2s (attempt 2 exited 1)
        t+60: place j r1 attempt 3 on a1 as j.r1.3
        t+80: finish j r1 failed: exited (exit code 1)
        runs: r1 failed: exited, exit code 1 (3 attempt(s))
    "#]]);
}

#[test]
fn on_failure_succeeds_on_a_later_attempt() {
    let mut s = Sim::new(
        "restart = { policy = \"on-failure\" }",
        &[Behaviour::Exits(1, 1), Behaviour::Exits(1, 0)],
    );
    s.start("r1");
    s.run(8);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        t+20: retry j r1 at +1s (attempt 1 exited 1)
        t+30: place j r1 attempt 2 on a2 as j.r1.2
        t+50: finish j r1 succeeded: exited (exit code 0)
        runs: r1 succeeded: exited, exit code 0 (2 attempt(s))
    "#]]);
}

#[test]
fn the_active_deadline_stops_the_attempt() {
    let mut s = Sim::new(
        "restart = { active_deadline_seconds = 30 }",
        &[Behaviour::Forever],
    );
    s.start("r1");
    s.run(7);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        t+30: ask stop j r1: killed at its active deadline; stop task j.r1.1 of j r1
        t+40: finish j r1 failed: killed at its active deadline (exit code 143)
        runs: r1 failed: killed at its active deadline, exit code 143 (1 attempt(s))
    "#]]);
}

#[test]
fn max_launch_delay_fails_a_run_no_node_takes() {
    let mut s = Sim::new("max_launch_delay_seconds = 25", &[Behaviour::Forever]);
    s.full = true;
    s.start("r1");
    s.run(5);
    s.check(expect![[r#"
        t+0: wait j r1: too few free cpus for 1 (2 nodes)
        t+30: ask stop j r1: not started within its max launch delay; finish j r1 failed: not started within its max launch delay
        runs: r1 failed: not started within its max launch delay (0 attempt(s))
    "#]]);
}

#[test]
fn a_lost_node_ends_the_attempt_and_on_failure_retries_elsewhere() {
    let mut s = Sim::new(
        "restart = { policy = \"on-failure\" }",
        &[Behaviour::Forever],
    );
    s.start("r1");
    s.run(2);
    s.nodes.insert("a1".into(), false);
    s.log.push("-- a1 lost".into());
    s.run(3);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        -- a1 lost
        t+30: stop task j.r1.1 of j r1; retry j r1 at +1s (attempt 1 its node was lost)
        t+40: place j r1 attempt 2 on a2 as j.r1.2
        runs: r1 active (2 attempt(s))
    "#]]);
}

#[test]
fn a_kill_stops_the_attempt_and_fails_the_run() {
    let mut s = Sim::new("", &[Behaviour::Forever]);
    s.start("r1");
    s.run(2);
    s.runs.get_mut(&RunId("r1".into())).expect("r1").stop = Some(StopRequest {
        reason: EndReason::Killed { by: "alice".into() },
        at: s.now,
    });
    s.log.push("-- killed by alice".into());
    s.run(3);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        -- killed by alice
        t+20: stop task j.r1.1 of j r1
        t+30: finish j r1 failed: killed by alice (exit code 143)
        runs: r1 failed: killed by alice, exit code 143 (1 attempt(s))
    "#]]);
}

#[test]
fn a_stop_its_node_never_carries_out_ends_the_run_after_the_timeout() {
    let mut s = Sim::new("kill_grace_seconds = 5", &[Behaviour::Unstoppable]);
    s.start("r1");
    s.run(2);
    s.runs.get_mut(&RunId("r1".into())).expect("r1").stop = Some(StopRequest {
        reason: EndReason::Killed { by: "alice".into() },
        at: s.now,
    });
    s.log.push("-- killed by alice".into());
    s.run(14);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        -- killed by alice
        t+20: stop task j.r1.1 of j r1
        t+150: finish j r1 failed: killed by alice
        runs: r1 failed: killed by alice (1 attempt(s))
    "#]]);
}

#[test]
fn the_history_keeps_the_newest_ended_runs() {
    let mut s = Sim::new("", &[Behaviour::Exits(1, 0)]);
    for r in ["r1", "r2", "r3", "r4"] {
        s.start(r);
    }
    s.run(6);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1; place j r2 attempt 1 on a1 as j.r2.1; place j r3 attempt 1 on a1 as j.r3.1; place j r4 attempt 1 on a1 as j.r4.1
        t+20: finish j r1 succeeded: exited (exit code 0); finish j r2 succeeded: exited (exit code 0); finish j r3 succeeded: exited (exit code 0); finish j r4 succeeded: exited (exit code 0)
        t+30: trim j r1; trim j r2
        runs: r3 succeeded: exited, exit code 0 (1 attempt(s)); r4 succeeded: exited, exit code 0 (1 attempt(s))
    "#]]);
}

#[test]
fn removing_a_job_stops_its_runs_then_deletes_it() {
    let mut s = Sim::new("", &[Behaviour::Forever]);
    s.start("r1");
    s.run(2);
    s.job.removing = true;
    s.log.push("-- removed".into());
    s.run(4);
    s.check(expect![[r#"
        t+0: place j r1 attempt 1 on a1 as j.r1.1
        -- removed
        t+20: ask stop j r1: its job was removed; stop task j.r1.1 of j r1
        t+30: finish j r1 failed: its job was removed (exit code 143)
        t+40: delete job j
        runs: r1 failed: its job was removed, exit code 143 (1 attempt(s))
        job deleted
    "#]]);
}

#[test]
fn retry_delays_grow_to_five_minutes() {
    let d: Vec<u64> = [1, 2, 5, 10, 20, 40, 60]
        .iter()
        .map(|n| retry_delay(*n))
        .collect();
    expect!["[1, 2, 2, 4, 15, 233, 300]"].assert_eq(&format!("{d:?}"));
}

/// One plan of run `r1` (created at 1000, one attempt placed at 1000 on
/// a1) with `task` as the node's report, at `now`.
fn once(run_toml: &str, task: Option<TaskView>, now: u64, expected: Expect) {
    let s = Sim::new(run_toml, &[Behaviour::Forever]);
    let mut r = RunRecord::queued(
        &s.job.spec.id,
        RunId("r1".into()),
        Trigger::Manual { by: "op".into() },
        1,
        1000,
    );
    r.state = RunState::Active;
    r.attempts.push(Attempt {
        n: 1,
        task: "j.r1.1".into(),
        node: "a1".into(),
        placed_at: 1000,
        started_at: None,
        finished_at: None,
        exit_code: None,
        reason: None,
    });
    let tasks: BTreeMap<String, TaskView> =
        task.into_iter().map(|t| ("j.r1.1".into(), t)).collect();
    let mut place = |_: &JobRecord, _: &RunRecord| -> Result<String, String> { Ok("a2".into()) };
    let plan = plan_runs(&s.job, &[&r], &tasks, 2, now, &mut place);
    expected.assert_eq(&plan.to_string());
}

fn view(state: TaskState, exit_code: Option<i32>, finished_at: Option<u64>) -> TaskView {
    TaskView {
        state,
        exit_code,
        started_at: Some(1001),
        finished_at,
        node_ready: true,
        stopping_since: None,
    }
}

#[test]
fn a_placed_task_not_reported_yet_is_waited_for() {
    once(
        "",
        None,
        1005,
        expect![[r#"
        wake at 4600
    "#]],
    );
}

#[test]
fn a_task_state_from_a_newer_node_counts_as_running() {
    once(
        "",
        Some(view(TaskState::Unknown, None, None)),
        1005,
        expect![[r#""#]],
    );
}

#[test]
fn an_exit_before_the_deadline_counts_even_when_seen_after_it() {
    once(
        "restart = { policy = \"on-failure\", active_deadline_seconds = 60 }",
        Some(view(TaskState::Exited, Some(0), Some(1050))),
        1070,
        expect![[r#"
            finish j r1 succeeded: exited (exit code 0)
        "#]],
    );
    // A failure seen after the deadline is not tried again.
    once(
        "restart = { policy = \"on-failure\", active_deadline_seconds = 60 }",
        Some(view(TaskState::Exited, Some(2), Some(1050))),
        1070,
        expect![[r#"
            finish j r1 failed: exited (exit code 2)
        "#]],
    );
}

#[test]
fn task_ids_fit_the_63_characters_of_a_task_id() {
    let short = task_id(
        &JobId::parse("backup").expect("valid"),
        &RunId::scheduled(1_764_548_400, "nightly"),
        1,
    );
    let long = task_id(
        &JobId::parse("prod.example.department.reporting-batch.nightly-export").expect("valid"),
        &RunId::scheduled(1_764_548_400, "every-weekday-morning-at-six"),
        12,
    );
    expect!["backup.20251201002000-nightly.1 prod.example.department.reporting-batch.fee3ae3d1621868b.12 59"].assert_eq(&format!("{short} {long} {}", long.len()));
}
