//! Job files read, or refused with every problem at its place.

use expect_test::{Expect, expect};

use super::*;

/// Reads `text` as the file `origin`: the job as JSON, or the problems.
fn check(origin: &str, text: &str, expected: Expect) {
    let got = match read(origin, text) {
        Ok(f) => serde_json::to_string_pretty(&f.job).expect("a job serializes"),
        Err(e) => e.to_string(),
    };
    expected.assert_eq(&got);
}

#[test]
fn a_strata_job_reads_with_its_defaults() {
    check(
        "backup.toml",
        r#"
id = "backup.nightly"
description = "dump the database"

[run]
image = "busybox:1.36"
cmd = "echo dump"
mem = 64
constraints = [["rack", "IS", "r1"]]
restart = { policy = "on-failure", active_deadline_seconds = 600 }

[[schedules]]
id = "nightly"
cron = "30 2 * * *"
timezone = "Europe/Paris"
concurrency_policy = "replace"
"#,
        expect![[r#"
            {
              "id": "backup.nightly",
              "description": "dump the database",
              "run": {
                "image": "busybox:1.36",
                "cmd": "echo dump",
                "cpus": 1.0,
                "mem": 64.0,
                "disk": 0.0,
                "constraints": [
                  {
                    "field": "rack",
                    "operator": "IS",
                    "value": "r1"
                  }
                ],
                "restart": {
                  "policy": "ON_FAILURE",
                  "active_deadline_seconds": 600
                },
                "max_launch_delay_seconds": 3600,
                "kill_grace_seconds": 10
              },
              "schedules": [
                {
                  "id": "nightly",
                  "cron": "30 2 * * *",
                  "dialect": "strata",
                  "timezone": "Europe/Paris",
                  "starting_deadline_seconds": 900,
                  "concurrency_policy": "REPLACE",
                  "enabled": true
                }
              ]
            }"#]],
    );
}

#[test]
fn a_metronome_job_reads_as_written() {
    check(
        "sleep.json",
        r#"{
  "id": "prod.example.sleep",
  "labels": {"owner": "zeus"},
  "schedules": [{"id": "every-five", "cron": "*/5 * * * *", "timezone": "America/Chicago",
                 "concurrencyPolicy": "ALLOW", "startingDeadlineSeconds": 60}],
  "run": {"cmd": "sleep 10", "cpus": 0.5, "mem": 32, "disk": 0,
          "docker": {"image": "busybox"}, "env": {"A": "1"},
          "placement": {"constraints": [{"attribute": "hostname", "operator": "EQ", "value": "private-1"}]},
          "restart": {"policy": "NEVER"}, "maxLaunchDelay": 600,
          "networks": [{"mode": "container", "name": "dcos"}]},
  "activeRuns": [], "historySummary": {"successCount": 3}
}"#,
        expect![[r#"
            {
              "id": "prod.example.sleep",
              "labels": {
                "owner": "zeus"
              },
              "run": {
                "image": "busybox",
                "cmd": "sleep 10",
                "cpus": 0.5,
                "mem": 32.0,
                "disk": 0.0,
                "env": {
                  "A": "1"
                },
                "constraints": [
                  {
                    "field": "hostname",
                    "operator": "IS",
                    "value": "private-1"
                  }
                ],
                "restart": {
                  "policy": "NEVER"
                },
                "max_launch_delay_seconds": 600,
                "kill_grace_seconds": 10
              },
              "schedules": [
                {
                  "id": "every-five",
                  "cron": "*/5 * * * *",
                  "dialect": "metronome",
                  "timezone": "America/Chicago",
                  "starting_deadline_seconds": 60,
                  "concurrency_policy": "ALLOW",
                  "enabled": true
                }
              ]
            }"#]],
    );
}

#[test]
fn every_problem_is_named_at_its_place() {
    check(
        "bad.toml",
        r#"
id = "Bad_Id"
histroy = 5

[run]
cmd = "true"
args = ["true"]
cpus = 0
restart = { policy = "sometimes" }

[[schedules]]
id = "a"
cron = "61 * * * *"
timezone = "America/Chicgo"

[[schedules]]
id = "a"
cron = "@reboot"
concurrency_policy = "queue"
"#,
        expect![[r#"
            bad.toml: 11 problems
              bad.toml:2:6: field `id`: job id "Bad_Id": "Bad_Id" may hold only lowercase letters, digits and dashes
              bad.toml:5:1: field `run`: missing field `image`: Strata runs every job in a container image
              bad.toml:9:22: field `run.restart.policy`: unknown restart policy "sometimes": expected "never" or "on-failure"
              bad.toml:19:22: field `schedules[1].concurrency_policy`: unknown concurrency policy "queue": expected "allow", "forbid" or "replace"
              bad.toml:3:1: field `histroy`: unknown field `histroy`; did you mean `history`?
              bad.toml:7:8: field `run.args`: a job has `cmd` or `args`, not both: `cmd` runs in a shell, `args` replaces the image's command
              bad.toml:8:8: field `run.cpus`: cpus 0 is out of range: expected more than 0 and at most 1024 (no node has more)
              bad.toml:13:8: field `schedules[0].cron`: `61 * * * *` is not a valid cron expression: number out of bounds
              bad.toml:14:12: field `schedules[0].timezone`: `America/Chicgo` is not a known time zone; did you mean `America/Chicago`?
              bad.toml:17:6: field `schedules[1].id`: schedule "a" is defined twice
              bad.toml:18:8: field `schedules[1].cron`: `@reboot` has no meaning for a cluster's schedule: use a time, as `0 3 * * *`"#]],
    );
    check(
        "bad.json",
        r#"{"id": "x", "dependencies": [{"id": "y"}],
            "schedules": [{"id": "s", "cron": "0 0 * * *", "timeZone": "UTC"}],
            "run": {"cpus": 1, "mem": 8, "disk": 0, "cmd": "true",
                    "docker": {"image": "busybox", "privileged": true, "parameters": [{"key": "cap-add", "value": "ALL"}]},
                    "env": {"S": {"secret": "s1"}}, "gpus": 1, "artifacts": [{"uri": "http://x/y"}],
                    "placement": {"constraints": [{"attribute": "rack", "operator": "GROUP_BY"}]}}}"#,
        expect![[r#"
            bad.json: 7 problems
              bad.json: $.run.docker.privileged: `privileged` is not supported: Strata runs no privileged containers: a job gets the default, confined one; remove it or leave it empty
              bad.json: $.run.docker.parameters: `parameters` is not supported: Strata passes no docker run parameters: the runtime's defaults are fixed; remove it or leave it empty
              bad.json: $.run.env.S: a secret reference: Strata has no secret store yet; give the value, or remove the variable
              bad.json: $.run.placement.constraints[0].operator: unknown operator "GROUP_BY": expected "IS" (or "EQ"), "LIKE" or "UNLIKE"
              bad.json: $.run.artifacts: `artifacts` is not supported: Strata fetches no URIs into a run: build them into the image; remove it or leave it empty
              bad.json: $.run.gpus: `gpus` is not supported: Strata does not place GPUs; remove it or leave it empty
              bad.json: $.dependencies: `dependencies` is not supported: Strata's jobs do not wait for other jobs; schedule them apart; remove it or leave it empty"#]],
    );
}

#[test]
fn a_job_without_an_image_or_a_run_is_refused() {
    check(
        "ucr-less.json",
        r#"{"id": "x", "run": {"cpus": 1, "mem": 32, "disk": 0, "cmd": "true"}}"#,
        expect![[r#"
            ucr-less.json: 1 problem
              ucr-less.json: $.run: no image: Strata runs every job in a container image; set `run.docker.image` (a plain `cmd` runs in an image such as `busybox`)"#]],
    );
    check(
        "run-less.toml",
        "id = \"x\"\n",
        expect![[r#"
        run-less.toml: 1 problem
          run-less.toml:1:1: missing table `run`: what a run of the job runs (its `image` at least)"#]],
    );
}

#[test]
fn a_schedule_file_reads_alone() {
    let got = |origin: &str, text: &str| match read_schedule(origin, text) {
        Ok(s) => serde_json::to_string(&s).expect("serializes"),
        Err(e) => e.to_string(),
    };
    expect![[r#"{"id":"everyminute","cron":"* * * * *","dialect":"metronome","timezone":"America/Chicago","starting_deadline_seconds":60,"concurrency_policy":"FORBID","enabled":true}"#]].assert_eq(&got(
        "s.json",
        r#"{"id": "everyminute", "cron": "* * * * *", "timezone": "America/Chicago", "startingDeadlineSeconds": 60}"#,
    ));
    expect![[r#"
        s.toml: 1 problem
          s.toml:2:8: field `cron`: `0 0 31 2 *` never fires (no date from 2000 on matches it)"#]]
    .assert_eq(&got("s.toml", "id = \"s\"\ncron = \"0 0 31 2 *\"\n"));
}

#[test]
fn a_stored_job_reads_what_a_newer_writer_wrote() {
    let newer = r#"{"format": 2, "id": "j", "shiny": true,
        "run": {"image": "busybox", "cpus": 1, "mem": 32, "gpu_kind": "x",
                "restart": {"policy": "ON_SUCCESS"}},
        "schedules": [{"id": "s", "cron": "* * * * *", "dialect": "quartz",
                       "concurrency_policy": "QUEUE"}]}"#;
    let job: JobSpec = serde_json::from_str(newer).expect("reads");
    let problems: Vec<String> = job
        .check(&|_| crate::app::doc::Place {
            path: String::new(),
            line: 0,
            column: 0,
        })
        .iter()
        .map(|p| p.message.clone())
        .collect();
    expect![[r#"
        an unknown restart policy: expected NEVER or ON_FAILURE
        an unknown cron dialect: expected strata or metronome
        an unknown concurrency policy: expected ALLOW, FORBID or REPLACE"#]]
    .assert_eq(&problems.join("\n"));
}
