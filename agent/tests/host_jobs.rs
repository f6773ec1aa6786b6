//! Jobs end to end on the host: a real etcd, three masters and a private
//! agent as real `strata` processes, each in a network namespace of its
//! own, the busybox-static image imported into the agent's store. One
//! test, one cluster, many checks:
//!
//! - bad job files (an invalid cron, an unknown time zone, an unknown
//!   field, a schedule that never fires) are refused by name and nothing
//!   is stored;
//! - a manual run that exits 0 and one that exits 3: `job run --wait`
//!   exits with the run's exit code, and the history shows the code, the
//!   node and the times;
//! - a `* * * * *` schedule fires at the minute boundary (the run's id is
//!   the minute);
//! - a FORBID schedule whose run outlasts a minute records the next
//!   minutes skipped, naming the run still going;
//! - the scheduling master killed four seconds before a minute: the other
//!   master takes over and that minute still gives exactly one run, with
//!   one attempt, as every minute before it, none skipped;
//! - `job logs` prints a run's output from the agent through the
//!   masters, and with `-f` follows a run until it ends;
//! - `job kill` ends a run killed, and `job remove` takes a job away.
//!
//! No wall-clock assertion: the checks wait for what must happen. Root
//! only.

use std::time::Duration;

use control::job::record::{EndReason, RunRecord, RunState};
use control::job::view::JobView;
use control::model::{ClusterStatus, NodeState};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{Binary, ClusterSpec, Launch, TestCluster};

const NODES: &[(&str, &str)] = &[
    ("master-1", "master"),
    ("master-2", "master"),
    ("master-3", "master"),
    ("agent-1", "private"),
];

/// A job file in Strata's TOML: busybox running `cmd`, and `schedule`
/// lines after it.
fn job_toml(id: &str, cmd: &str, schedule: &str) -> String {
    format!(
        "id = \"{id}\"\n[run]\nimage = \"example.org/bb:1\"\ncmd = \"{cmd}\"\ncpus = 0.1\nmem = 32\n{schedule}"
    )
}

fn runs(c: &TestCluster, job: &str) -> Vec<RunRecord> {
    let out = c.cli_ok(&["job", "history", job, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("job history: {e}: {out}"))
}

fn jobs(c: &TestCluster) -> Vec<JobView> {
    let out = c.cli_ok(&["job", "list", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("job list: {e}: {out}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs()
}

/// The run of `schedule` at minute `at`, as its id names it.
fn run_at(runs: &[RunRecord], at: u64, schedule: &str) -> Option<RunRecord> {
    let id = control::job::record::RunId::scheduled(at, schedule);
    runs.iter().find(|r| r.id == id).cloned()
}

#[test]
fn jobs_run_once_and_keep_their_history() {
    if !require(
        "host_jobs",
        &[
            Need::Root,
            Need::Program("etcd"),
            Need::Program("ip"),
            Need::Program("nft"),
            Need::Program("umoci"),
            Need::Program("nsenter"),
            Need::File("/bin/busybox"),
        ],
    ) {
        return;
    }
    let c = TestCluster::new(ClusterSpec {
        nodes: NODES,
        extra_toml: "[overlay]\ncidr = \"10.204.0.0/16\"\nvni = 4345\nport = 4793\n".to_string(),
        etcd_port_base: 43_000,
        binary: Binary::Copy,
        launch: Launch::NetOnly,
        poll: Duration::from_millis(100),
        ..ClusterSpec::new("sj", "jobs", "10.82.0")
    });
    let _cleanup = c.import_busybox(&["agent-1"]);
    let mut masters = std::collections::BTreeMap::new();
    for m in ["master-1", "master-2", "master-3"] {
        masters.insert(m, c.spawn_node(m, &format!("{m}.log")));
    }
    let _agent = c.spawn_node("agent-1", "agent-1.log");
    c.wait("agent-1 Ready", Duration::from_secs(90), || {
        c.try_nodes()
            .ok()?
            .iter()
            .any(|n| n.record.info.name == "agent-1" && n.state == NodeState::Ready)
            .then_some(())
    });

    let dir = c.dir().join("jobs");
    std::fs::create_dir_all(&dir).expect("a directory for job files");
    // Two schedules every minute, stored first (the checks below run while
    // their first minute comes): one that allows runs side by side, and
    // one FORBID whose run outlasts two minutes.
    let tick = dir.join("tick.toml");
    std::fs::write(
        &tick,
        job_toml(
            "every.tick",
            "true",
            "[[schedules]]\nid = \"minutely\"\ncron = \"* * * * *\"\nconcurrency_policy = \"allow\"\n",
        ),
    )
    .expect("write");
    let slow = dir.join("slow.toml");
    std::fs::write(
        &slow,
        job_toml(
            "every.slow",
            "echo started; sleep 170",
            "[[schedules]]\nid = \"minutely\"\ncron = \"* * * * *\"\nconcurrency_policy = \"forbid\"\n",
        ),
    )
    .expect("write");
    c.cli_ok(&["job", "add", &tick.display().to_string()]);
    c.cli_ok(&["job", "add", &slow.display().to_string()]);
    let list = c.cli_ok(&["job", "list"]);
    println!("{list}");
    assert!(list.contains("every.tick"), "{list}");

    // Bad files: refused by name, nothing stored.
    let bad = [
        (
            "cron.toml",
            job_toml(
                "bad.cron",
                "true",
                "[[schedules]]\nid = \"s\"\ncron = \"61 * * * *\"\n",
            ),
            "61",
        ),
        (
            "zone.toml",
            job_toml(
                "bad.zone",
                "true",
                "[[schedules]]\nid = \"s\"\ncron = \"0 * * * *\"\ntimezone = \"America/Chicgo\"\n",
            ),
            "America/Chicago",
        ),
        (
            "field.toml",
            job_toml("bad.field", "true", "").replace("cpus = 0.1", "cpu = 0.1"),
            "unknown field `cpu`",
        ),
        (
            "never.toml",
            job_toml(
                "bad.never",
                "true",
                "[[schedules]]\nid = \"s\"\ncron = \"0 0 30 2 *\"\n",
            ),
            "never",
        ),
    ];
    for (name, text, expected) in bad {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write a bad job file");
        let e = c
            .cli(&["job", "add", &file.display().to_string()])
            .expect_err("a bad job file is refused");
        assert!(
            e.contains(expected),
            "{name}: expected `{expected}` in: {e}"
        );
        eprintln!("{name} refused: {}", e.trim());
    }
    let ids: Vec<String> = jobs(&c)
        .iter()
        .map(|j| j.record.spec.id.to_string())
        .collect();
    assert_eq!(
        ids,
        ["every.slow", "every.tick"],
        "a refused file stored a job"
    );
    let e = c
        .cli(&["job", "run", "no.such.job"])
        .expect_err("a run of a missing job is refused");
    assert!(e.contains("no job `no.such.job`"), "{e}");

    // Manual runs: `job run --wait` exits with the run's exit code.
    for (id, cmd) in [
        ("once.ok", "echo done"),
        ("once.fails", "echo failing >&2; exit 3"),
    ] {
        let file = dir.join(format!("{id}.toml"));
        std::fs::write(&file, job_toml(id, cmd, "")).expect("write a job file");
        c.cli_ok(&["job", "add", &file.display().to_string()]);
    }
    let (code, out) = c.cli_status(&["job", "run", "once.ok", "--wait", "--timeout", "120"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("succeeded"), "{out}");
    let (code, out) = c.cli_status(&["job", "run", "once.fails", "--wait", "--timeout", "120"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("exit code 3"), "{out}");
    let history = runs(&c, "once.fails");
    assert_eq!(history.len(), 1, "{history:?}");
    let r = &history[0];
    assert_eq!(r.state, RunState::Failed, "{r:?}");
    assert_eq!(r.exit_code, Some(3), "{r:?}");
    assert_eq!(r.reason, Some(EndReason::Exited), "{r:?}");
    let a = r.attempts.last().expect("an attempt");
    assert_eq!(a.node, "agent-1", "{r:?}");
    assert!(r.finished_at.is_some() && a.finished_at.is_some(), "{r:?}");
    println!("{}", c.cli_ok(&["job", "history", "once.fails"]));
    // Their output, from the agent, through the masters.
    let logs = c.cli_ok(&["job", "logs", "once.ok"]);
    assert_eq!(logs, "done\n");
    let (code, logs) = c.cli_status(&["job", "logs", "once.fails", r.id.as_str()]);
    assert_eq!((code, logs.as_str()), (0, "failing\n"));
    let e = c
        .cli(&["job", "logs", "once.fails", "20990101000000-manual-0000"])
        .expect_err("the logs of a run that does not exist");
    assert!(e.contains("has no run"), "{e}");

    // The first minute the scheduling master handled fires both: it is
    // every.slow's first run's.
    let first_slow = c.wait(
        "every.slow's first run, running",
        Duration::from_secs(150),
        || {
            runs(&c, "every.slow")
                .into_iter()
                .find(|r| r.attempts.iter().any(|a| a.started_at.is_some()))
        },
    );
    let control::job::record::Trigger::Schedule { at: m1, .. } = first_slow.trigger else {
        panic!("every.slow's first run was not scheduled: {first_slow:?}");
    };
    let fired = c.wait(
        "every.tick's run of the first minute",
        Duration::from_secs(60),
        || run_at(&runs(&c, "every.tick"), m1, "minutely"),
    );
    eprintln!("every.tick fired {} ({:?})", fired.id, fired.state);

    // The scheduling master killed four seconds before a minute at least
    // six seconds away (every.slow's first run still going then).
    let m2 = ((unix_now() + 6) / 60 + 1) * 60;
    assert!(m2 > m1 && m2 < m1 + 170, "m1 {m1}, m2 {m2}");
    let status = |c: &TestCluster| -> Option<ClusterStatus> {
        serde_json::from_str(&c.cli(&["cluster", "status", "--json"]).ok()?).ok()
    };
    let leader = c.wait("a scheduler leader", Duration::from_secs(30), || {
        status(&c)?.scheduler_leader.map(|l| l.name)
    });
    std::thread::sleep(Duration::from_secs(
        m2.saturating_sub(4).saturating_sub(unix_now()),
    ));
    masters
        .get_mut(leader.as_str())
        .expect("the leader's process")
        .kill();
    eprintln!("{leader} killed {}s before the minute", m2 - unix_now());
    let next = c.wait("another scheduler leader", Duration::from_secs(60), || {
        status(&c)?
            .scheduler_leader
            .map(|l| l.name)
            .filter(|n| *n != leader)
    });
    eprintln!("{next} leads");

    // That minute: exactly one run of every.tick, placed once and ended.
    let second = c.wait(
        "every.tick's run of the minute of the failover, ended",
        Duration::from_secs(120),
        || run_at(&runs(&c, "every.tick"), m2, "minutely").filter(|r| r.state.ended()),
    );
    assert_eq!(second.state, RunState::Succeeded, "{second:?}");
    assert_eq!(
        second.attempts.len(),
        1,
        "placed more than once: {second:?}"
    );
    // One run of every minute from the first to the failover's, each
    // placed once.
    let tick_runs = runs(&c, "every.tick");
    let minutes: Vec<&RunRecord> = tick_runs
        .iter()
        .filter(|r| {
            matches!(&r.trigger, control::job::record::Trigger::Schedule { at, .. } if (m1..=m2).contains(at))
        })
        .collect();
    assert_eq!(
        minutes.len() as u64,
        (m2 - m1) / 60 + 1,
        "one run per minute: {tick_runs:?}"
    );
    assert!(
        minutes.iter().all(|r| r.attempts.len() == 1),
        "{tick_runs:?}"
    );
    assert!(
        tick_runs.iter().all(|r| r.state != RunState::Skipped),
        "no time of every.tick is skipped: {tick_runs:?}"
    );
    // every.slow's run of the first minute still runs: the failover's
    // minute is skipped, naming it.
    let skipped = c.wait(
        "every.slow's minute of the failover, skipped",
        Duration::from_secs(60),
        || run_at(&runs(&c, "every.slow"), m2, "minutely"),
    );
    assert_eq!(skipped.state, RunState::Skipped, "{skipped:?}");
    assert_eq!(
        skipped.reason,
        Some(EndReason::Forbidden {
            active: first_slow.id.clone()
        }),
        "{skipped:?}"
    );
    println!("{}", c.cli_ok(&["job", "history", "every.slow"]));

    // Its output followed (`-f`) while it runs: the command ends once the
    // run's task ended, killed below.
    let follow = c.cli_spawn(&["job", "logs", "every.slow", first_slow.id.as_str(), "-f"]);
    // Killed: the run ends killed once its task stopped.
    let out = c.cli_ok(&["job", "kill", "every.slow", first_slow.id.as_str()]);
    assert!(out.contains("stopping"), "{out}");
    let killed = c.wait(
        "every.slow's first run killed",
        Duration::from_secs(60),
        || run_at(&runs(&c, "every.slow"), m1, "minutely").filter(|r| r.state.ended()),
    );
    assert_eq!(killed.state, RunState::Failed, "{killed:?}");
    assert!(
        matches!(killed.reason, Some(EndReason::Killed { .. })),
        "{killed:?}"
    );
    let mut follow = follow;
    let status = c.wait(
        "job logs -f to end with the run",
        Duration::from_secs(60),
        || follow.try_wait().expect("job logs -f can be waited for"),
    );
    let followed = follow.wait_with_output().expect("job logs -f's output");
    assert!(status.success(), "{status:?}: {followed:?}");
    assert_eq!(String::from_utf8_lossy(&followed.stdout), "started\n");

    // Disabled, a schedule fires no more; removed, a job goes.
    c.cli_ok(&["job", "schedule", "disable", "every.tick", "minutely"]);
    c.cli_ok(&["job", "remove", "every.slow"]);
    c.wait("every.slow removed", Duration::from_secs(60), || {
        (!jobs(&c)
            .iter()
            .any(|j| j.record.spec.id.as_str() == "every.slow"))
        .then_some(())
    });
    let shown = c.cli_ok(&["job", "show", "every.tick"]);
    println!("{shown}");
    let view: JobView =
        serde_json::from_str(&c.cli_ok(&["job", "show", "every.tick", "--json"])).expect("json");
    assert!(
        view.schedules
            .iter()
            .all(|s| !s.enabled && s.next.is_none()),
        "{view:?}"
    );
}
