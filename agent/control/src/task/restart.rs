//! Pure planning: from the desired task specs and what the task directories
//! say, the actions to take now (start, restart after backoff, stop, remove).

use super::spec::{RestartPolicy, TaskSpec};

/// First restart delay; doubled at every further restart.
pub const BACKOFF_BASE_MS: u64 = 500;
/// Longest restart delay.
pub const BACKOFF_CAP_MS: u64 = 60_000;
/// A run at least this long resets the restart count.
pub const BACKOFF_RESET_MS: u64 = 30_000;

/// What a task directory holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: String,
    /// Fingerprint of the spec the task was started from.
    pub fingerprint: String,
    pub state: ObservedState,
    /// Restarts so far (0 for the first run).
    pub restarts: u32,
    /// Stopped by an operator (`strata task stop`): not restarted.
    pub stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedState {
    Running,
    Exited {
        code: i32,
        started_at_ms: u64,
        finished_at_ms: u64,
    },
    /// The shim vanished without recording an exit.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pull the image if needed and run a new task.
    Start { id: String },
    /// Run the next generation of an exited task.
    Restart { id: String, attempt: u32 },
    /// Not yet: the backoff delay runs until then.
    Wait { id: String, until_ms: u64 },
    /// Stop the task and delete its directory (not desired any more, or
    /// desired with another spec: then a `Start` follows).
    Remove { id: String },
}

/// The restart delay after `restarts` earlier restarts.
pub fn backoff_ms(restarts: u32) -> u64 {
    BACKOFF_BASE_MS
        .saturating_mul(1u64 << restarts.min(20))
        .min(BACKOFF_CAP_MS)
}

/// Plans the actions that bring `observed` towards `desired` at `now_ms`.
pub fn plan(desired: &[TaskSpec], observed: &[Observed], now_ms: u64) -> Vec<Action> {
    let mut actions = Vec::new();
    for obs in observed {
        match desired.iter().find(|d| d.id == obs.id) {
            None => actions.push(Action::Remove { id: obs.id.clone() }),
            Some(spec) if spec.fingerprint() != obs.fingerprint => {
                actions.push(Action::Remove { id: obs.id.clone() });
                actions.push(Action::Start { id: obs.id.clone() });
            }
            Some(spec) => {
                if obs.stopped {
                    continue;
                }
                let (failed, ran_ms, finished) = match obs.state {
                    ObservedState::Running => continue,
                    ObservedState::Exited {
                        code,
                        started_at_ms,
                        finished_at_ms,
                    } => (
                        code != 0,
                        finished_at_ms.saturating_sub(started_at_ms),
                        finished_at_ms,
                    ),
                    ObservedState::Lost => (true, 0, 0),
                };
                let restart = match spec.restart {
                    RestartPolicy::Never => false,
                    RestartPolicy::OnFailure => failed,
                    RestartPolicy::Always => true,
                };
                if !restart {
                    continue;
                }
                let count = if ran_ms >= BACKOFF_RESET_MS {
                    0
                } else {
                    obs.restarts
                };
                let until_ms = finished.saturating_add(backoff_ms(count));
                if now_ms >= until_ms {
                    actions.push(Action::Restart {
                        id: obs.id.clone(),
                        attempt: count + 1,
                    });
                } else {
                    actions.push(Action::Wait {
                        id: obs.id.clone(),
                        until_ms,
                    });
                }
            }
        }
    }
    for spec in desired {
        if !observed.iter().any(|o| o.id == spec.id) {
            actions.push(Action::Start {
                id: spec.id.clone(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn spec(id: &str, restart: RestartPolicy) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            image: "127.0.0.1:5000/bb:1".into(),
            command: vec!["true".into()],
            env: Default::default(),
            cwd: None,
            user: None,
            cpus: None,
            mem: None,
            pids: None,
            read_only: false,
            restart,
            stop_grace_secs: 1,
            netns: None,
            app: None,
            ports: vec![],
            cap_add: vec![],
            user_ns: false,
            args: vec![],
            force_pull: false,
            health_checks: vec![],
            port_names: Default::default(),
        }
    }

    fn obs(spec: &TaskSpec, state: ObservedState, restarts: u32) -> Observed {
        Observed {
            id: spec.id.clone(),
            fingerprint: spec.fingerprint(),
            state,
            restarts,
            stopped: false,
        }
    }

    fn exited(code: i32, started: u64, finished: u64) -> ObservedState {
        ObservedState::Exited {
            code,
            started_at_ms: started,
            finished_at_ms: finished,
        }
    }

    fn check(desired: &[TaskSpec], observed: &[Observed], now_ms: u64, expected: Expect) {
        let lines: Vec<String> = plan(desired, observed, now_ms)
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        expected.assert_eq(&lines.join("\n"));
    }

    #[test]
    fn new_and_unwanted_tasks() {
        let a = spec("a", RestartPolicy::Never);
        let b = spec("b", RestartPolicy::Never);
        check(
            std::slice::from_ref(&a),
            &[obs(&b, ObservedState::Running, 0)],
            0,
            expect![[r#"
            Remove { id: "b" }
            Start { id: "a" }"#]],
        );
        check(
            std::slice::from_ref(&a),
            &[obs(&a, ObservedState::Running, 0)],
            0,
            expect![""],
        );
        let mut changed = a.clone();
        changed.command = vec!["false".into()];
        check(
            &[changed],
            &[obs(&a, ObservedState::Running, 0)],
            0,
            expect![[r#"
            Remove { id: "a" }
            Start { id: "a" }"#]],
        );
    }

    #[test]
    fn restart_policies() {
        let never = spec("never", RestartPolicy::Never);
        let on_failure = spec("onf", RestartPolicy::OnFailure);
        let always = spec("always", RestartPolicy::Always);
        let desired = [never.clone(), on_failure.clone(), always.clone()];
        check(
            &desired,
            &[
                obs(&never, exited(1, 0, 100), 0),
                obs(&on_failure, exited(0, 0, 100), 0),
                obs(&always, exited(0, 0, 100), 0),
            ],
            10_000,
            expect![[r#"Restart { id: "always", attempt: 1 }"#]],
        );
        check(
            &desired,
            &[
                obs(&never, exited(1, 0, 100), 0),
                obs(&on_failure, exited(3, 0, 100), 0),
                obs(&always, ObservedState::Lost, 0),
            ],
            10_000,
            expect![[r#"
                Restart { id: "onf", attempt: 1 }
                Restart { id: "always", attempt: 1 }"#]],
        );
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let t = spec("t", RestartPolicy::Always);
        let lines: Vec<String> = [0u32, 1, 2, 3, 6, 7, 30]
            .iter()
            .map(|&r| {
                let planned = plan(
                    std::slice::from_ref(&t),
                    &[obs(&t, exited(1, 900, 1_000), r)],
                    1_000,
                );
                format!("restarts={r} -> {planned:?}")
            })
            .collect();
        expect![[r#"
            restarts=0 -> [Wait { id: "t", until_ms: 1500 }]
            restarts=1 -> [Wait { id: "t", until_ms: 2000 }]
            restarts=2 -> [Wait { id: "t", until_ms: 3000 }]
            restarts=3 -> [Wait { id: "t", until_ms: 5000 }]
            restarts=6 -> [Wait { id: "t", until_ms: 33000 }]
            restarts=7 -> [Wait { id: "t", until_ms: 61000 }]
            restarts=30 -> [Wait { id: "t", until_ms: 61000 }]"#]]
        .assert_eq(&lines.join("\n"));
        // Due: restart with the next attempt number.
        check(
            std::slice::from_ref(&t),
            &[obs(&t, exited(1, 900, 1_000), 3)],
            5_000,
            expect![[r#"Restart { id: "t", attempt: 4 }"#]],
        );
        // A long run resets the count.
        check(
            std::slice::from_ref(&t),
            &[obs(&t, exited(1, 0, 40_000), 9)],
            40_000,
            expect![[r#"Wait { id: "t", until_ms: 40500 }"#]],
        );
        // Stopped by the operator: left alone.
        let mut stopped = obs(&t, exited(137, 0, 100), 0);
        stopped.stopped = true;
        check(&[t], &[stopped], 100_000, expect![""]);
    }
}
