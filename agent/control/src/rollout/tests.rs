//! The rollout planner driven round by round over simulated nodes: each
//! round plans, records the actions, and lets the nodes act (a cordoned
//! node's instances move away in one round; a node told to upgrade is down
//! for a round, then Ready on the new version, or back on the old one, or
//! gone, as it is told to behave). The rounds are compared with the
//! expected text.

use expect_test::{Expect, expect};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Good,
    /// Its new slot never gets healthy: it boots the old one again.
    FallsBack,
    /// It never comes back.
    Vanishes,
}

struct Sim {
    nodes: Vec<NodeFacts>,
    behaviour: BTreeMap<String, Behaviour>,
    /// Nodes rebooting into the new version, and the round they are back.
    rebooting: BTreeMap<String, u32>,
    round: u32,
    now: u64,
    log: Vec<String>,
    /// The most masters down at once, and agents out at once.
    peak: (usize, usize),
}

fn node(name: &str, role: Role, instances: u32) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        role,
        ready: true,
        version: "0.1.0+gaaaa".into(),
        cordoned: false,
        instances,
        upgrade_failed: None,
        upgrade_succeeded: false,
    }
}

impl Sim {
    fn new(masters: usize, agents: usize) -> Sim {
        let mut nodes = Vec::new();
        for i in 1..=masters {
            nodes.push(node(&format!("master-{i}"), Role::Master, 0));
        }
        for i in 1..=agents {
            nodes.push(node(&format!("agent-{i}"), Role::Private, 2));
        }
        Sim {
            nodes,
            behaviour: BTreeMap::new(),
            rebooting: BTreeMap::new(),
            round: 0,
            now: 10_000,
            log: Vec::new(),
            peak: (0, 0),
        }
    }

    /// Runs `rounds` rounds 30 seconds apart; returns the rollout.
    fn run(&mut self, mut r: Rollout, rounds: u32) -> Rollout {
        for _ in 0..rounds {
            let plan = plan(&r, &self.nodes, self.now);
            let changed: Vec<String> = plan
                .rollout
                .nodes
                .iter()
                .zip(&r.nodes)
                .filter(|(new, old)| new.step != old.step)
                .map(|(new, _)| format!("{} {}", new.name, new.step))
                .collect();
            if !plan.actions.is_empty() || !changed.is_empty() || plan.rollout.halted != r.halted {
                let mut line = format!("t+{}:", self.now - 10_000);
                if !plan.actions.is_empty() {
                    let a: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
                    line += &format!(" do [{}]", a.join(", "));
                }
                if !changed.is_empty() {
                    line += &format!(" now [{}]", changed.join(", "));
                }
                if let (Some(h), None) = (&plan.rollout.halted, &r.halted) {
                    line += &format!(" HALTED at {}: {}", h.node, h.reason);
                }
                self.log.push(line);
            }
            for a in &plan.actions {
                self.act(a, &plan.rollout.version);
            }
            r = plan.rollout;
            self.round += 1;
            self.now += 30;
            self.nodes_act(&r.version);
            let down_masters = self
                .nodes
                .iter()
                .filter(|n| n.role == Role::Master && !n.ready)
                .count();
            let out_agents = self
                .nodes
                .iter()
                .filter(|n| n.role != Role::Master && (!n.ready || n.cordoned))
                .count();
            self.peak = (self.peak.0.max(down_masters), self.peak.1.max(out_agents));
        }
        r
    }

    fn get(&mut self, name: &str) -> Option<&mut NodeFacts> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }

    fn act(&mut self, a: &Action, _version: &str) {
        let back = self.round + 2;
        match a {
            Action::Cordon(n) => {
                if let Some(n) = self.get(n) {
                    n.cordoned = true;
                }
            }
            Action::Uncordon(n) => {
                if let Some(n) = self.get(n) {
                    n.cordoned = false;
                }
            }
            Action::Upgrade { node, .. } => {
                let node = node.clone();
                if let Some(n) = self.get(&node) {
                    n.ready = false;
                    n.upgrade_succeeded = false;
                }
                self.rebooting.insert(node, back);
            }
        }
    }

    fn nodes_act(&mut self, version: &str) {
        let round = self.round;
        let due: Vec<String> = self
            .rebooting
            .iter()
            .filter(|(_, r)| **r <= round)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.rebooting.remove(&name);
            let behaviour = self
                .behaviour
                .get(&name)
                .copied()
                .unwrap_or(Behaviour::Good);
            match behaviour {
                Behaviour::Good => {
                    let n = self.get(&name).expect("node");
                    n.ready = true;
                    n.version = format!("{version}+gbbbb");
                    n.upgrade_succeeded = true;
                }
                Behaviour::FallsBack => {
                    let n = self.get(&name).expect("node");
                    n.ready = true;
                    n.upgrade_failed = Some(
                        "slot b did not get healthy in 3 boots, so the node booted slot a again"
                            .into(),
                    );
                }
                Behaviour::Vanishes => {}
            }
        }
        // The scheduler moves a cordoned node's instances away.
        for n in &mut self.nodes {
            if n.cordoned {
                n.instances = 0;
            }
        }
    }

    fn check(&self, r: &Rollout, expected: Expect) {
        let nodes: Vec<String> = r
            .nodes
            .iter()
            .map(|p| format!("{} {}", p.name, p.step))
            .collect();
        let out = format!(
            "{}\nnodes: {}\ncomplete: {}, most masters down at once: {}, most agents out at once: {}\n",
            self.log.join("\n"),
            nodes.join(", "),
            is_complete(r),
            self.peak.0,
            self.peak.1
        );
        expected.assert_eq(&out);
    }
}

#[test]
fn masters_one_at_a_time_then_agents_within_max_unavailable() {
    let mut s = Sim::new(3, 4);
    let r = start(&s.nodes, "0.2.0", 2, 300, s.now);
    let r = s.run(r, 20);
    s.check(&r, expect![[r#"
        t+0: do [upgrade master-1 to 0.2.0] now [master-1 upgrading]
        t+60: do [upgrade master-2 to 0.2.0] now [master-1 done, master-2 upgrading]
        t+120: do [upgrade master-3 to 0.2.0] now [master-2 done, master-3 upgrading]
        t+180: do [cordon agent-1, cordon agent-2] now [master-3 done, agent-1 draining, agent-2 draining]
        t+210: do [upgrade agent-1 to 0.2.0, upgrade agent-2 to 0.2.0] now [agent-1 upgrading, agent-2 upgrading]
        t+270: do [uncordon agent-1, uncordon agent-2] now [agent-1 uncordoning, agent-2 uncordoning]
        t+300: do [cordon agent-3, cordon agent-4] now [agent-1 done, agent-2 done, agent-3 draining, agent-4 draining]
        t+330: do [upgrade agent-3 to 0.2.0, upgrade agent-4 to 0.2.0] now [agent-3 upgrading, agent-4 upgrading]
        t+390: do [uncordon agent-3, uncordon agent-4] now [agent-3 uncordoning, agent-4 uncordoning]
        t+420: now [agent-3 done, agent-4 done]
        nodes: master-1 done, master-2 done, master-3 done, agent-1 done, agent-2 done, agent-3 done, agent-4 done
        complete: true, most masters down at once: 1, most agents out at once: 2
    "#]]);
}

#[test]
fn a_node_already_on_the_version_is_skipped() {
    let mut s = Sim::new(1, 2);
    s.nodes[1].version = "0.2.0+gcccc".into();
    let r = start(&s.nodes, "0.2.0", 1, 300, s.now);
    let r = s.run(r, 12);
    s.check(
        &r,
        expect![[r#"
        t+0: do [upgrade master-1 to 0.2.0] now [master-1 upgrading]
        t+30: now [agent-1 skipped (already on the version)]
        t+60: do [cordon agent-2] now [master-1 done, agent-2 draining]
        t+90: do [upgrade agent-2 to 0.2.0] now [agent-2 upgrading]
        t+150: do [uncordon agent-2] now [agent-2 uncordoning]
        t+180: now [agent-2 done]
        nodes: master-1 done, agent-1 skipped (already on the version), agent-2 done
        complete: true, most masters down at once: 1, most agents out at once: 1
    "#]],
    );
}

#[test]
fn a_master_waits_while_another_master_is_down() {
    let mut s = Sim::new(3, 0);
    s.nodes[2].ready = false;
    let r = start(&s.nodes, "0.2.0", 1, 300, s.now);
    let r = s.run(r, 3);
    s.nodes[2].ready = true;
    let r = s.run(r, 10);
    s.check(
        &r,
        expect![[r#"
        t+90: do [upgrade master-1 to 0.2.0] now [master-1 upgrading]
        t+150: do [upgrade master-2 to 0.2.0] now [master-1 done, master-2 upgrading]
        t+210: do [upgrade master-3 to 0.2.0] now [master-2 done, master-3 upgrading]
        t+270: now [master-3 done]
        nodes: master-1 done, master-2 done, master-3 done
        complete: true, most masters down at once: 1, most agents out at once: 0
    "#]],
    );
}

#[test]
fn a_node_whose_new_slot_falls_back_halts_the_rollout_and_resume_retries_it() {
    let mut s = Sim::new(1, 3);
    s.behaviour.insert("agent-2".into(), Behaviour::FallsBack);
    let r = start(&s.nodes, "0.2.0", 1, 300, s.now);
    let r = s.run(r, 14);
    s.log.push("-- resume, agent-2 fixed".into());
    s.behaviour.insert("agent-2".into(), Behaviour::Good);
    s.get("agent-2").expect("agent-2").upgrade_failed = None;
    let r = resume(&r, s.now);
    let r = s.run(r, 10);
    s.check(&r, expect![[r#"
        t+0: do [upgrade master-1 to 0.2.0] now [master-1 upgrading]
        t+60: do [cordon agent-1] now [master-1 done, agent-1 draining]
        t+90: do [upgrade agent-1 to 0.2.0] now [agent-1 upgrading]
        t+150: do [uncordon agent-1] now [agent-1 uncordoning]
        t+180: do [cordon agent-2] now [agent-1 done, agent-2 draining]
        t+210: do [upgrade agent-2 to 0.2.0] now [agent-2 upgrading]
        t+270: now [agent-2 failed: its upgrade failed: slot b did not get healthy in 3 boots, so the node booted slot a again] HALTED at agent-2: its upgrade failed: slot b did not get healthy in 3 boots, so the node booted slot a again
        -- resume, agent-2 fixed
        t+420: do [cordon agent-2] now [agent-2 draining]
        t+450: do [upgrade agent-2 to 0.2.0] now [agent-2 upgrading]
        t+510: do [uncordon agent-2] now [agent-2 uncordoning]
        t+540: do [cordon agent-3] now [agent-2 done, agent-3 draining]
        t+570: do [upgrade agent-3 to 0.2.0] now [agent-3 upgrading]
        t+630: do [uncordon agent-3] now [agent-3 uncordoning]
        t+660: now [agent-3 done]
        nodes: master-1 done, agent-1 done, agent-2 done, agent-3 done
        complete: true, most masters down at once: 1, most agents out at once: 1
    "#]]);
}

#[test]
fn a_cancelled_rollout_stops_starting_nodes_and_resume_goes_on() {
    let mut s = Sim::new(0, 3);
    let r = start(&s.nodes, "0.2.0", 1, 300, s.now);
    let r = s.run(r, 2);
    s.log.push("-- cancelled by alice".into());
    let r = cancel_stored(Some(&r), "alice").expect("a rollout under way cancels");
    let r = s.run(r, 6);
    s.log.push("-- resume".into());
    let r = resume_stored(Some(&r), s.now).expect("a cancelled rollout resumes");
    let r = s.run(r, 12);
    s.check(
        &r,
        expect![[r#"
        t+0: do [cordon agent-1] now [agent-1 draining]
        t+30: do [upgrade agent-1 to 0.2.0] now [agent-1 upgrading]
        -- cancelled by alice
        -- resume
        t+240: do [uncordon agent-1] now [agent-1 uncordoning]
        t+270: do [cordon agent-2] now [agent-1 done, agent-2 draining]
        t+300: do [upgrade agent-2 to 0.2.0] now [agent-2 upgrading]
        t+360: do [uncordon agent-2] now [agent-2 uncordoning]
        t+390: do [cordon agent-3] now [agent-2 done, agent-3 draining]
        t+420: do [upgrade agent-3 to 0.2.0] now [agent-3 upgrading]
        t+480: do [uncordon agent-3] now [agent-3 uncordoning]
        t+510: now [agent-3 done]
        nodes: agent-1 done, agent-2 done, agent-3 done
        complete: true, most masters down at once: 0, most agents out at once: 1
    "#]],
    );
}

#[test]
fn cancel_needs_a_rollout_under_way() {
    let check = |current: Option<&Rollout>, expected: Expect| {
        let out = match cancel_stored(current, "alice") {
            Ok(r) => format!("{:?}", r.halted),
            Err(e) => format!("refused: {e}"),
        };
        expected.assert_eq(&out);
    };
    let nodes = [node("private-1", Role::Private, 0)];
    let under_way = start(&nodes, "0.2.0", 1, 300, 1);
    check(
        None,
        expect!["refused: no cluster upgrade was started: nothing to cancel"],
    );
    check(
        Some(&under_way),
        expect![[
            r#"Some(Halt { node: "", reason: "cancelled by alice", cancelled_by: Some("alice") })"#
        ]],
    );
    let mut halted = under_way.clone();
    halt(&mut halted, "private-1", "it broke".into(), 2);
    check(
        Some(&halted),
        expect![
            "refused: the cluster upgrade to 0.2.0 is not under way (it halted or finished): nothing to cancel; `strata cluster upgrade --status` shows it"
        ],
    );
    let mut done = under_way.clone();
    done.nodes[0].step = Step::Done;
    check(
        Some(&done),
        expect![
            "refused: the cluster upgrade to 0.2.0 is not under way (it halted or finished): nothing to cancel; `strata cluster upgrade --status` shows it"
        ],
    );
}

#[test]
fn a_node_that_vanishes_mid_upgrade_halts_the_rollout_at_the_deadline() {
    let mut s = Sim::new(1, 2);
    s.behaviour.insert("agent-1".into(), Behaviour::Vanishes);
    let r = start(&s.nodes, "0.2.0", 1, 300, s.now);
    let r = s.run(r, 40);
    s.check(&r, expect![[r#"
        t+0: do [upgrade master-1 to 0.2.0] now [master-1 upgrading]
        t+60: do [cordon agent-1] now [master-1 done, agent-1 draining]
        t+90: do [upgrade agent-1 to 0.2.0] now [agent-1 upgrading]
        t+990: now [agent-1 failed: not Ready on 0.2.0 900s after its upgrade began (it runs 0.1.0+gaaaa, not Ready)] HALTED at agent-1: not Ready on 0.2.0 900s after its upgrade began (it runs 0.1.0+gaaaa, not Ready)
        nodes: master-1 done, agent-1 failed: not Ready on 0.2.0 900s after its upgrade began (it runs 0.1.0+gaaaa, not Ready), agent-2 waiting
        complete: false, most masters down at once: 1, most agents out at once: 1
    "#]]);
}

#[test]
fn a_drain_that_does_not_finish_goes_on_at_its_deadline() {
    let mut s = Sim::new(0, 1);
    let r = start(&s.nodes, "0.2.0", 1, 60, s.now);
    // The instances cannot move anywhere.
    let mut r = r;
    for _ in 0..4 {
        r = s.run(r, 1);
        s.nodes[0].instances = 2;
    }
    let r = s.run(r, 6);
    s.check(
        &r,
        expect![[r#"
        t+0: do [cordon agent-1] now [agent-1 draining]
        t+60: do [upgrade agent-1 to 0.2.0] now [agent-1 upgrading]
        t+120: do [uncordon agent-1] now [agent-1 uncordoning]
        t+150: now [agent-1 done]
        nodes: agent-1 done
        complete: true, most masters down at once: 0, most agents out at once: 1
    "#]],
    );
}

#[test]
fn a_stored_rollout_reads_what_a_newer_master_wrote() {
    let r: Rollout = serde_json::from_str(
        r#"{"format": 2, "version": "0.2.0", "max_unavailable": 1, "drain_deadline_seconds": 60,
            "started_at": 1, "paused": true,
            "nodes": [{"name": "a", "role": "private", "step": "verifying", "since": 1}]}"#,
    )
    .expect("reads");
    assert_eq!(r.nodes[0].step, Step::Unknown);
    let failed = NodeProgress {
        name: "a".into(),
        role: Role::Private,
        step: Step::Failed {
            reason: "why".into(),
        },
        since: 5,
    };
    expect![[r#"{"name":"a","role":"private","step":"failed","reason":"why","since":5}"#]]
        .assert_eq(&serde_json::to_string(&failed).expect("serializes"));
}

fn bundle(role: Role, version: &str) -> BundleRecord {
    BundleRecord {
        format: Format::default(),
        sha256: format!("{:0>64}", role.as_str()),
        version: version.into(),
        role,
        size: 1 << 28,
        pushed_at: 1,
        by: "admin".into(),
        holders: vec!["master-1".into()],
    }
}

/// Starts a rollout from `req` (roles and version in the text) over one
/// master, two private and one public agent, with `bundles`, and prints
/// its nodes or why it was refused.
fn check_begin(
    req: RolloutRequest,
    current: Option<&Rollout>,
    bundles: &[BundleRecord],
    expected: Expect,
) {
    let mut nodes = vec![
        node("master-1", Role::Master, 0),
        node("private-1", Role::Private, 1),
        node("private-2", Role::Private, 1),
        node("public-1", Role::Public, 0),
    ];
    nodes[2].version = "0.2.0+gcccc".into();
    let out = match begin(&req, current, &nodes, bundles, "admin", 5) {
        Ok(r) => {
            let n: Vec<String> = r.nodes.iter().map(|p| p.name.clone()).collect();
            format!(
                "{} by {}, {} at once, drains {}s: {}",
                r.version,
                r.by,
                r.max_unavailable,
                r.drain_deadline_seconds,
                n.join(", ")
            )
        }
        Err(e) => format!("refused: {e}"),
    };
    expected.assert_eq(&out);
}

fn request(version: &str, roles: &[Role]) -> RolloutRequest {
    RolloutRequest {
        version: version.into(),
        max_unavailable: 1,
        drain_deadline_seconds: None,
        roles: roles.to_vec(),
    }
}

#[test]
fn begin_needs_a_bundle_for_every_role_it_upgrades() {
    let all = [
        bundle(Role::Master, "0.2.0+gbbbb"),
        bundle(Role::Private, "0.2.0+gbbbb"),
        bundle(Role::Public, "0.2.0+gbbbb"),
    ];
    check_begin(
        request("0.2.0", &[]),
        None,
        &all,
        expect!["0.2.0 by admin, 1 at once, drains 300s: master-1, private-1, private-2, public-1"],
    );
    check_begin(
        request("0.2.0", &[]),
        None,
        &all[..2],
        expect![
            "refused: node `public-1` cannot upgrade: no bundle of version 0.2.0 for public nodes is on the masters: push it with `strata bundle push FILE`"
        ],
    );
    check_begin(
        request("0.2.0", &[]),
        None,
        &[],
        expect![
            "refused: node `master-1` cannot upgrade: no bundle of version 0.2.0 for master nodes is on the masters: push it with `strata bundle push FILE`"
        ],
    );
    // private-2 already runs 0.2.0: only private-1 needs the bundle.
    check_begin(
        request("0.2.0", &[Role::Private]),
        None,
        &all[1..2],
        expect!["0.2.0 by admin, 1 at once, drains 300s: private-1, private-2"],
    );
    check_begin(
        request("0.3.0", &[Role::Private]),
        None,
        &all,
        expect![
            "refused: nodes `private-1`, `private-2` cannot upgrade: no bundle of version 0.3.0 for private nodes is on the masters: push it with `strata bundle push FILE`"
        ],
    );
}

#[test]
fn begin_refuses_bad_requests_and_a_rollout_under_way() {
    let all = [bundle(Role::Private, "0.2.0")];
    let mut req = request("0.2.0", &[Role::Private]);
    req.max_unavailable = 0;
    check_begin(
        req,
        None,
        &all,
        expect!["refused: --max-unavailable must be at least 1"],
    );
    let mut req = request(" ", &[]);
    req.max_unavailable = 1;
    check_begin(
        req,
        None,
        &all,
        expect!["refused: name the version to upgrade to"],
    );
    let mut req = request("0.2.0", &[Role::Private]);
    req.drain_deadline_seconds = Some(30 * 86400);
    check_begin(
        req,
        None,
        &all,
        expect![
            "refused: a drain deadline of 2592000s is longer than the 604800s a drain may wait"
        ],
    );
    let nodes = [node("private-1", Role::Private, 0)];
    let under_way = start(&nodes, "0.2.0", 1, 300, 1);
    check_begin(
        request("0.2.0", &[Role::Private]),
        Some(&under_way),
        &all,
        expect![
            "refused: a cluster upgrade to 0.2.0 is under way (0 of 1 nodes done): wait for it to end; `strata cluster upgrade --status` shows it"
        ],
    );
    // A halted one is replaced.
    let mut halted = under_way.clone();
    halt(&mut halted, "private-1", "it broke".into(), 2);
    check_begin(
        request("0.2.0", &[Role::Private]),
        Some(&halted),
        &all,
        expect!["0.2.0 by admin, 1 at once, drains 300s: private-1, private-2"],
    );
    let req = RolloutRequest {
        version: "0.2.0".into(),
        max_unavailable: 2,
        drain_deadline_seconds: Some(60),
        roles: vec![Role::Private],
    };
    check_begin(
        req,
        None,
        &all,
        expect!["0.2.0 by admin, 2 at once, drains 60s: private-1, private-2"],
    );
    let out = resume_stored(None, 3).expect_err("nothing to resume");
    expect!["no cluster upgrade was started: `strata cluster upgrade --version V` starts one"]
        .assert_eq(&out.to_string());
    let out = resume_stored(Some(&under_way), 3).expect_err("not halted");
    expect!["the cluster upgrade to 0.2.0 has not halted: nothing to resume; `strata cluster upgrade --status` shows it"]
        .assert_eq(&out.to_string());
    let resumed = resume_stored(Some(&halted), 3).expect("a halted rollout resumes");
    assert_eq!(resumed.halted, None);
    assert_eq!(resumed.nodes[0].step, Step::Waiting);
}

#[test]
fn facts_come_from_the_records_and_only_the_rollouts_own_order_fails_a_node() {
    let status = |name: &str, role: &str, state: &str, version: Option<&str>, by: Option<&str>| {
        let mut v = serde_json::json!({
            "name": name, "role": role, "addresses": ["10.0.0.1"], "cpus": 2,
            "memory_bytes": 1, "disk_bytes": 1, "key_sha256": "00", "joined_at": 1,
            "registered_at": 1, "state": state,
        });
        if let Some(version) = version {
            v["image"] = serde_json::json!({
                "version": version, "booted": "a",
                "other": {"slot": "b", "state": "empty"},
            });
        }
        if let Some(by) = by {
            v["cordon"] = serde_json::json!({"since": 1, "deadline": 2, "by": by});
        }
        serde_json::from_value::<NodeStatus>(v).expect("a node status")
    };
    let nodes = [
        status(
            "private-1",
            "private",
            "ready",
            Some("0.1.0"),
            Some(DRAINED_BY),
        ),
        // An operator's drain is not the rollout's.
        status("private-2", "private", "unreachable", None, Some("admin")),
    ];
    let task = |node: &str, app: bool| {
        let mut v = serde_json::json!({
            "node": node, "created_at": 1,
            "spec": {"id": "t", "image": "busybox", "command": ["true"]},
        });
        if app {
            v["instance_of"] = serde_json::json!({"app": "/web", "version": 1});
        }
        serde_json::from_value::<TaskRecord>(v).expect("a task record")
    };
    let tasks: BTreeMap<String, TaskRecord> = [
        ("a".to_string(), task("private-1", true)),
        ("b".to_string(), task("private-1", false)),
        ("c".to_string(), task("private-2", true)),
    ]
    .into();
    let order = |node: &str, at: u64, reason: &str| UpgradeOrder {
        format: Format::default(),
        id: format!("{at}-x"),
        node: node.into(),
        action: crate::upgrade::Action::Install {
            sha256: "00".into(),
            version: "0.2.0".into(),
            size: 1,
            allow_downgrade: false,
        },
        at,
        by: "cluster upgrade".into(),
        progress: Progress::Failed {
            reason: reason.into(),
        },
        updated_at: at,
    };
    let mut r = start(
        &[
            node("private-1", Role::Private, 0),
            node("private-2", Role::Private, 0),
        ],
        "0.2.0",
        1,
        300,
        100,
    );
    for p in &mut r.nodes {
        p.step = Step::Upgrading;
        p.since = 100;
    }
    let orders: BTreeMap<String, UpgradeOrder> = [
        (
            "private-1".to_string(),
            order("private-1", 100, "the bundle is corrupted"),
        ),
        (
            "private-2".to_string(),
            order("private-2", 99, "an older failure"),
        ),
    ]
    .into();
    let out: Vec<String> = facts(Some(&r), &nodes, &tasks, &orders)
        .iter()
        .map(|f| format!("{f:?}"))
        .collect();
    expect![[r#"
        NodeFacts { name: "private-1", role: Private, ready: true, version: "0.1.0", cordoned: true, instances: 1, upgrade_failed: Some("the bundle is corrupted"), upgrade_succeeded: false }
        NodeFacts { name: "private-2", role: Private, ready: false, version: "", cordoned: false, instances: 1, upgrade_failed: None, upgrade_succeeded: false }"#]]
    .assert_eq(&out.join("\n"));
}

#[test]
fn a_node_on_the_version_still_drained_by_a_rollout_is_put_back() {
    let mut s = Sim::new(0, 2);
    // Halted earlier while drained; it came up on the version since.
    s.nodes[0].version = "0.2.0+gbbbb".into();
    s.nodes[0].cordoned = true;
    let r = start(&s.nodes, "0.2.0", 1, 300, s.now);
    let r = s.run(r, 8);
    s.check(
        &r,
        expect![[r#"
        t+0: do [uncordon agent-1] now [agent-1 uncordoning]
        t+30: do [cordon agent-2] now [agent-1 done, agent-2 draining]
        t+60: do [upgrade agent-2 to 0.2.0] now [agent-2 upgrading]
        t+120: do [uncordon agent-2] now [agent-2 uncordoning]
        t+150: now [agent-2 done]
        nodes: agent-1 done, agent-2 done
        complete: true, most masters down at once: 0, most agents out at once: 1
    "#]],
    );
}

#[test]
fn a_rollout_that_replaces_a_cancelled_one_finishes_its_drained_agent_first() {
    let mut s = Sim::new(0, 3);
    // A cancelled rollout left agent-3 drained, still on the old version.
    s.nodes[2].cordoned = true;
    s.nodes[2].instances = 0;
    let r = start(&s.nodes, "0.3.0", 1, 300, s.now);
    let r = s.run(r, 16);
    s.check(
        &r,
        expect![[r#"
            t+0: do [cordon agent-3] now [agent-3 draining]
            t+30: do [upgrade agent-3 to 0.3.0] now [agent-3 upgrading]
            t+90: do [uncordon agent-3] now [agent-3 uncordoning]
            t+120: do [cordon agent-1] now [agent-1 draining, agent-3 done]
            t+150: do [upgrade agent-1 to 0.3.0] now [agent-1 upgrading]
            t+210: do [uncordon agent-1] now [agent-1 uncordoning]
            t+240: do [cordon agent-2] now [agent-1 done, agent-2 draining]
            t+270: do [upgrade agent-2 to 0.3.0] now [agent-2 upgrading]
            t+330: do [uncordon agent-2] now [agent-2 uncordoning]
            t+360: now [agent-2 done]
            nodes: agent-1 done, agent-2 done, agent-3 done
            complete: true, most masters down at once: 0, most agents out at once: 1
        "#]],
    );
}
