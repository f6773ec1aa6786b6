//! The deployment planner driven step by step over a simulated cluster
//! (in the manner of Nomad's scheduler harness): each step plans, applies
//! the plan to the world as the leader's commit would, then lets the
//! simulated nodes act (an instance started turns running, then healthy or
//! not as its version behaves; a stopped one reports stopped). The steps
//! are recorded and compared with the expected text.

use std::collections::BTreeMap;

use expect_test::{Expect, expect};

use super::*;
use crate::app::AgentRole;

/// How the instances of one version behave on their nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Running, then healthy.
    Good,
    /// Running, never healthy: its health check fails until the node
    /// kills it.
    Sick,
    /// Ends at once.
    Crash,
}

struct Sim {
    world: World,
    versions: BTreeMap<(AppId, u64), AppSpec>,
    behaviour: BTreeMap<u64, Behaviour>,
    waiting: BTreeMap<AppId, String>,
    now: u64,
    log: Vec<String>,
    /// The most instances of an app alive at once, seen after each step.
    peak: usize,
    /// The nodes never carry out a stop (agents older than `stopping`).
    deaf: bool,
}

fn node(name: &str, cpus: u64) -> NodeState {
    NodeState {
        view: NodeView {
            name: name.into(),
            role: AgentRole::Private,
            ready: true,
            cordoned: false,
            attributes: BTreeMap::new(),
            allocatable: Resources {
                cpu_milli: cpus * 1000,
                mem_mib: 16384,
                disk_mib: 100_000,
            },
        },
        unreachable_since: None,
        drain_deadline: None,
    }
}

fn app(text: &str) -> AppSpec {
    let cpus = if text.contains("cpus =") {
        ""
    } else {
        "cpus = 0.5\n"
    };
    let text = format!("id = \"/web\"\nimage = \"nginx:1\"\n{cpus}mem = 64\n{text}");
    crate::app::read("app.toml", &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .apps
        .remove(0)
}

impl Sim {
    fn new(nodes: &[(&str, u64)]) -> Sim {
        Sim {
            world: World {
                nodes: nodes.iter().map(|(n, c)| node(n, *c)).collect(),
                ..World::default()
            },
            versions: BTreeMap::new(),
            behaviour: BTreeMap::new(),
            waiting: BTreeMap::new(),
            now: 1000,
            log: Vec::new(),
            peak: 0,
            deaf: false,
        }
    }

    /// Deploys `spec` as a new version, by a new deployment (what the
    /// API's handler writes).
    fn deploy(&mut self, spec: AppSpec, behaviour: Behaviour, kind: DeploymentKind, canary: u32) {
        let id = spec.id.clone();
        let existing = self.world.apps.iter().position(|a| a.spec.id == id);
        let version = existing.map_or(1, |i| self.world.apps[i].version + 1);
        let previous = existing.map(|i| self.world.apps[i].config_version);
        let config = match (kind, previous) {
            (DeploymentKind::Scale, Some(p)) => p,
            _ => version,
        };
        self.versions.insert((id.clone(), version), spec.clone());
        self.behaviour.insert(version, behaviour);
        let mut d = Deployment::new(
            format!("d{version}"),
            kind,
            (version, config),
            previous,
            self.now,
            DEFAULT_DEADLINE_SECONDS,
        );
        d.canary = canary;
        self.log.push(format!(
            "deploy version {version} ({kind:?}, {} instances{})",
            spec.instances,
            if canary > 0 {
                format!(", {canary} canaries")
            } else {
                String::new()
            }
        ));
        match existing {
            Some(i) => {
                let a = &mut self.world.apps[i];
                a.spec = spec;
                a.version = version;
                if kind != DeploymentKind::Scale {
                    a.config_version = version;
                }
                a.deployment = Some(d);
            }
            None => self.world.apps.push(AppState {
                spec,
                version,
                config_version: version,
                deployment: Some(d),
                launches: Launches::default(),
                next_instance: 0,
                removing: false,
            }),
        }
    }

    fn app(&mut self) -> &mut AppState {
        &mut self.world.apps[0]
    }

    /// One round: plan, commit, let the nodes act; `steps` rounds, 10
    /// seconds apart, logging each plan.
    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            let plan = plan(&self.world, self.now, &self.waiting);
            let mut line = Vec::new();
            for a in &plan.actions {
                if !matches!(
                    a,
                    Action::UpdateApp {
                        deployment: None,
                        ..
                    }
                ) {
                    line.push(a.to_string());
                }
                self.apply(a);
            }
            if !line.is_empty() {
                self.log
                    .push(format!("t+{}: {}", self.now - 1000, line.join("; ")));
            }
            self.nodes_act();
            let alive = self
                .world
                .instances
                .iter()
                .filter(|i| !i.ended() && !self.unreachable(&i.node))
                .count();
            self.peak = self.peak.max(alive);
            self.now += 10;
        }
    }

    fn unreachable(&self, node: &str) -> bool {
        self.world
            .nodes
            .iter()
            .any(|n| n.view.name == node && n.unreachable_since.is_some())
    }

    fn apply(&mut self, a: &Action) {
        let w = &mut self.world;
        match a {
            Action::Start {
                app,
                version,
                instance,
                node,
                host_ports,
            } => {
                let spec = &self.versions[&(app.clone(), *version)];
                w.instances.push(Instance {
                    id: instance.clone(),
                    app: app.clone(),
                    version: *version,
                    node: node.clone(),
                    state: TaskState::Pending,
                    health: Health::Unknown,
                    checked: !spec.health_checks.is_empty(),
                    created_at: self.now,
                    resources: Resources::of(spec),
                    host_ports: host_ports.iter().flatten().copied().collect(),
                    stopping: false,
                    stopping_since: None,
                });
            }
            Action::Stop { instance, .. } => {
                if let Some(i) = w.instances.iter_mut().find(|i| &i.id == instance) {
                    i.stopping = true;
                    i.stopping_since = Some(self.now);
                }
            }
            Action::Forget { instance } => w.instances.retain(|i| &i.id != instance),
            Action::UpdateApp {
                app,
                launches,
                next_instance,
                deployment,
            } => {
                let a = w.apps.iter_mut().find(|a| &a.spec.id == app).expect("app");
                a.launches = *launches;
                a.next_instance = *next_instance;
                a.deployment = deployment.clone();
            }
            Action::Rollback {
                app,
                version,
                config,
                ..
            } => {
                let spec = self.versions[&(app.clone(), *config)].clone();
                let a = w.apps.iter_mut().find(|a| &a.spec.id == app).expect("app");
                a.spec = spec;
                a.version = *version;
                a.config_version = *config;
            }
            Action::DeleteApp { app } => w.apps.retain(|a| &a.spec.id != app),
            Action::Waiting { app, reason } => match reason {
                Some(r) => {
                    self.waiting.insert(app.clone(), r.clone());
                }
                None => {
                    self.waiting.remove(app);
                }
            },
        }
    }

    /// What the nodes do in 10 seconds.
    fn nodes_act(&mut self) {
        let unreachable: Vec<String> = self
            .world
            .nodes
            .iter()
            .filter(|n| n.unreachable_since.is_some())
            .map(|n| n.view.name.clone())
            .collect();
        let deaf = self.deaf;
        for i in &mut self.world.instances {
            if unreachable.contains(&i.node) || i.ended() {
                continue;
            }
            if i.stopping {
                if !deaf {
                    i.state = TaskState::Stopped;
                }
                continue;
            }
            let behaviour = self
                .behaviour
                .get(&i.version)
                .copied()
                .unwrap_or(Behaviour::Good);
            match (i.state, behaviour) {
                (TaskState::Pending, Behaviour::Crash) => i.state = TaskState::Exited,
                (TaskState::Pending, _) => i.state = TaskState::Running,
                (TaskState::Running, Behaviour::Good) if i.checked => i.health = Health::Healthy,
                (TaskState::Running, Behaviour::Sick) if i.health == Health::Unhealthy => {
                    // The node kills it after its failures in a row.
                    i.state = TaskState::Exited;
                }
                (TaskState::Running, Behaviour::Sick) => i.health = Health::Unhealthy,
                _ => {}
            }
        }
    }

    fn instances(&self) -> String {
        let mut v: Vec<String> = self
            .world
            .instances
            .iter()
            .map(|i| {
                format!(
                    "{}@{} {}{}",
                    i.id,
                    i.node,
                    i.state,
                    match (i.health, i.stopping) {
                        (_, true) => " stopping",
                        (Health::Healthy, _) => " healthy",
                        (Health::Unhealthy, _) => " unhealthy",
                        _ => "",
                    }
                )
            })
            .collect();
        v.sort();
        v.join(", ")
    }

    fn check(&self, expected: Expect) {
        let d = self.world.apps.first().and_then(|a| a.deployment.as_ref());
        let mut out = self.log.join("\n");
        out += &format!(
            "\nnow: {}\ndeployment: {}\npeak alive: {}\n",
            self.instances(),
            d.map_or("none".to_string(), |d| format!(
                "{} version {} {}{}",
                d.id,
                d.version,
                d.state,
                d.reason
                    .as_ref()
                    .map_or(String::new(), |r| format!(" ({r})"))
            )),
            self.peak
        );
        expected.assert_eq(&out);
    }
}

const CHECKED: &str =
    "[[ports]]\ncontainer_port = 80\n[[health_checks]]\nprotocol = \"http\"\nport_index = 0\n";

#[test]
fn a_new_app_starts_its_instances_and_its_deployment_succeeds() {
    let mut s = Sim::new(&[("a1", 4), ("a2", 4)]);
    s.deploy(
        app(&format!("instances = 3\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(4);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 3 instances)
        t+0: start web.1.0 on a1; start web.1.1 on a1; start web.1.2 on a1; update /web deployment d1 running
        t+20: update /web deployment d1 succeeded
        now: web.1.0@a1 running healthy, web.1.1@a1 running healthy, web.1.2@a1 running healthy
        deployment: d1 version 1 succeeded
        peak alive: 3
    "#]]);
}

#[test]
fn a_rolling_update_replaces_old_instances_as_new_ones_turn_healthy() {
    let mut s = Sim::new(&[("a1", 8), ("a2", 8)]);
    s.deploy(
        app(&format!("instances = 4\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(4);
    s.log.clear();
    s.peak = 0;
    s.deploy(
        app(&format!("instances = 4\ncmd = \"v2\"\n{CHECKED}[upgrade_strategy]\nminimum_health_capacity = 1.0\nmaximum_over_capacity = 0.5\n")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(8);
    s.check(expect![[r#"
        deploy version 2 (Deploy, 4 instances)
        t+40: start web.2.4 on a1; start web.2.5 on a1; update /web deployment d2 running
        t+60: stop web.1.0 (Replaced); stop web.1.1 (Replaced)
        t+70: forget web.1.0; forget web.1.1; start web.2.6 on a1; start web.2.7 on a1; update /web deployment d2 running
        t+90: stop web.1.2 (Replaced); stop web.1.3 (Replaced)
        t+100: forget web.1.2; forget web.1.3; update /web deployment d2 succeeded
        now: web.2.4@a1 running healthy, web.2.5@a1 running healthy, web.2.6@a1 running healthy, web.2.7@a1 running healthy
        deployment: d2 version 2 succeeded
        peak alive: 6
    "#]]);
}

#[test]
fn a_roll_without_room_over_capacity_stops_first_within_the_health_floor() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.deploy(
        app(&format!("instances = 4\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(4);
    s.log.clear();
    s.peak = 0;
    s.deploy(
        app(&format!("instances = 4\ncmd = \"v2\"\n{CHECKED}[upgrade_strategy]\nminimum_health_capacity = 0.5\nmaximum_over_capacity = 0.0\n")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(8);
    s.check(expect![[r#"
        deploy version 2 (Deploy, 4 instances)
        t+40: stop web.1.0 (Replaced); stop web.1.1 (Replaced)
        t+50: forget web.1.0; forget web.1.1; start web.2.4 on a1; start web.2.5 on a1; update /web deployment d2 running
        t+70: stop web.1.2 (Replaced); stop web.1.3 (Replaced)
        t+80: forget web.1.2; forget web.1.3; start web.2.6 on a1; start web.2.7 on a1; update /web deployment d2 running
        t+100: update /web deployment d2 succeeded
        now: web.2.4@a1 running healthy, web.2.5@a1 running healthy, web.2.6@a1 running healthy, web.2.7@a1 running healthy
        deployment: d2 version 2 succeeded
        peak alive: 4
    "#]]);
}

#[test]
fn a_stop_that_no_node_carries_out_is_given_up_after_the_grace_and_the_timeout() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.deaf = true;
    s.deploy(
        app(&format!("instances = 2\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(4);
    s.log.clear();
    s.peak = 0;
    s.deploy(
        app(&format!("instances = 2\ncmd = \"v2\"\nkill_grace_seconds = 30\n{CHECKED}[upgrade_strategy]\nminimum_health_capacity = 0.5\nmaximum_over_capacity = 0.0\n")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(42);
    s.check(expect![[r#"
        deploy version 2 (Deploy, 2 instances)
        t+40: stop web.1.0 (Replaced)
        t+190: forget web.1.0
        t+200: start web.2.2 on a1; update /web deployment d2 running
        t+220: stop web.1.1 (Replaced)
        t+370: forget web.1.1
        t+380: start web.2.3 on a1; update /web deployment d2 running
        t+400: update /web deployment d2 succeeded
        now: web.2.2@a1 running healthy, web.2.3@a1 running healthy
        deployment: d2 version 2 succeeded
        peak alive: 2
    "#]]);
}

#[test]
fn a_version_that_never_gets_healthy_fails_and_rolls_back() {
    let mut s = Sim::new(&[("a1", 8), ("a2", 8)]);
    s.deploy(
        app(&format!("instances = 2\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(4);
    s.log.clear();
    s.peak = 0;
    s.deploy(
        app(&format!("instances = 2\ncmd = \"v2\"\nbackoff = {{ seconds = 1.0, factor = 1.0, max_launch_delay_seconds = 1.0 }}\n{CHECKED}")),
        Behaviour::Sick,
        DeploymentKind::Deploy,
        0,
    );
    s.run(14);
    s.check(expect![[r#"
        deploy version 2 (Deploy, 2 instances)
        t+40: start web.2.2 on a1; start web.2.3 on a1; update /web deployment d2 running
        t+70: forget web.2.2; forget web.2.3; update /web backoff 2 since 1070 deployment d2 running; /web waits: launch backoff after 2 failures: next start at 1071
        t+80: start web.2.4 on a1; start web.2.5 on a1; update /web backoff 2 since 1070 deployment d2 running; /web waits no more
        t+110: forget web.2.4; forget web.2.5; roll /web back to the definition of version 1 as version 3: d2 failed (4 new instances ended before they were healthy); update /web deployment web-3 running
        t+120: update /web deployment web-3 succeeded
        now: web.1.0@a1 running healthy, web.1.1@a1 running healthy
        deployment: web-3 version 3 succeeded
        peak alive: 4
    "#]]);
}

#[test]
fn a_deployment_past_its_deadline_fails_and_rolls_back() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.deploy(
        app("instances = 1"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(2);
    s.log.clear();
    // The new version asks for more than the node has: it never places.
    s.deploy(
        app("instances = 1\ncpus = 64"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.app().deployment.as_mut().expect("deployment").deadline_at = s.now + 25;
    s.run(6);
    s.check(expect![[r#"
        deploy version 2 (Deploy, 1 instances)
        t+20: /web waits: 0 of 1 instances placed: no node can take an instance of /web: too few free cpus for 64 (1 node)
        t+50: roll /web back to the definition of version 1 as version 3: d2 failed (not healthy by its deadline: 0 of 1 new instances healthy); update /web deployment web-3 running; /web waits no more
        t+60: update /web deployment web-3 succeeded
        now: web.1.0@a1 running
        deployment: web-3 version 3 succeeded
        peak alive: 1
    "#]]);
}

#[test]
fn canaries_start_beside_the_old_instances_and_wait_for_a_promotion() {
    let mut s = Sim::new(&[("a1", 8), ("a2", 8)]);
    s.deploy(
        app(&format!("instances = 3\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(4);
    s.log.clear();
    s.peak = 0;
    s.deploy(
        app(&format!("instances = 3\ncmd = \"v2\"\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        1,
    );
    s.run(4);
    s.log.push("promote".into());
    s.app().deployment.as_mut().expect("deployment").promoted = true;
    s.app().deployment.as_mut().expect("deployment").state = DeploymentState::Running;
    s.run(6);
    s.check(expect![[r#"
        deploy version 2 (Deploy, 3 instances, 1 canaries)
        t+40: start web.2.3 on a1; update /web deployment d2 running
        t+60: update /web deployment d2 waiting-promotion
        promote
        t+80: stop web.1.0 (Replaced); start web.2.4 on a1; start web.2.5 on a1; update /web deployment d2 running
        t+90: forget web.1.0
        t+100: stop web.1.1 (Replaced); stop web.1.2 (Replaced)
        t+110: forget web.1.1; forget web.1.2; update /web deployment d2 succeeded
        now: web.2.3@a1 running healthy, web.2.4@a1 running healthy, web.2.5@a1 running healthy
        deployment: d2 version 2 succeeded
        peak alive: 5
    "#]]);
}

#[test]
fn scaling_down_stops_the_youngest_first_and_scaling_up_starts_more() {
    let mut s = Sim::new(&[("a1", 8), ("a2", 8)]);
    s.deploy(
        app("instances = 2"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(2);
    s.deploy(
        app("instances = 4"),
        Behaviour::Good,
        DeploymentKind::Scale,
        0,
    );
    s.run(3);
    s.deploy(
        app("instances = 1"),
        Behaviour::Good,
        DeploymentKind::Scale,
        0,
    );
    s.run(3);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 2 instances)
        t+0: start web.1.0 on a1; start web.1.1 on a1; update /web deployment d1 running
        t+10: update /web deployment d1 succeeded
        deploy version 2 (Scale, 4 instances)
        t+20: start web.1.2 on a1; start web.1.3 on a1; update /web deployment d2 running
        t+30: update /web deployment d2 succeeded
        deploy version 3 (Scale, 1 instances)
        t+50: stop web.1.2 (ScaledDown); stop web.1.3 (ScaledDown); stop web.1.0 (ScaledDown)
        t+60: forget web.1.0; forget web.1.2; forget web.1.3; update /web deployment d3 succeeded
        now: web.1.1@a1 running
        deployment: d3 version 3 succeeded
        peak alive: 4
    "#]]);
}

#[test]
fn scaling_down_oldest_first_when_asked() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.deploy(
        app("instances = 1"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(2);
    s.deploy(
        app("instances = 3"),
        Behaviour::Good,
        DeploymentKind::Scale,
        0,
    );
    s.run(2);
    s.deploy(
        app("instances = 1\nkill_selection = \"oldest-first\""),
        Behaviour::Good,
        DeploymentKind::Scale,
        0,
    );
    s.run(3);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 1 instances)
        t+0: start web.1.0 on a1; update /web deployment d1 running
        t+10: update /web deployment d1 succeeded
        deploy version 2 (Scale, 3 instances)
        t+20: start web.1.1 on a1; start web.1.2 on a1; update /web deployment d2 running
        t+30: update /web deployment d2 succeeded
        deploy version 3 (Scale, 1 instances)
        t+40: stop web.1.0 (ScaledDown); stop web.1.1 (ScaledDown)
        t+50: forget web.1.0; forget web.1.1; update /web deployment d3 succeeded
        now: web.1.2@a1 running
        deployment: d3 version 3 succeeded
        peak alive: 3
    "#]]);
}

#[test]
fn an_instance_that_ends_is_replaced_after_the_launch_backoff() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.deploy(
        app("instances = 1\nbackoff = { seconds = 15.0, factor = 2.0, max_launch_delay_seconds = 40.0 }"),
        Behaviour::Crash,
        DeploymentKind::Deploy,
        0,
    );
    // No previous version: the deployment keeps trying and fails at its
    // deadline.
    s.run(12);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 1 instances)
        t+0: start web.1.0 on a1; update /web deployment d1 running
        t+10: forget web.1.0; update /web backoff 1 since 1010 deployment d1 running; /web waits: launch backoff after 1 failure: next start at 1025
        t+30: start web.1.1 on a1; update /web backoff 1 since 1010 deployment d1 running; /web waits no more
        t+40: forget web.1.1; update /web backoff 2 since 1040 deployment d1 running; /web waits: launch backoff after 2 failures: next start at 1070
        t+70: start web.1.2 on a1; update /web backoff 2 since 1040 deployment d1 running; /web waits no more
        t+80: forget web.1.2; update /web backoff 3 since 1080 deployment d1 failed (3 new instances ended before they were healthy)
        t+90: /web waits: launch backoff after 3 failures: next start at 1120
        now: 
        deployment: d1 version 1 failed (3 new instances ended before they were healthy)
        peak alive: 0
    "#]]);
}

impl Sim {
    /// `strata node drain NAME --deadline D`.
    fn drain(&mut self, name: &str, deadline: u64) {
        self.log
            .push(format!("drain {name} (deadline {deadline}s)"));
        let until = self.now + deadline;
        let n = self
            .world
            .nodes
            .iter_mut()
            .find(|n| n.view.name == name)
            .expect("the node");
        n.view.cordoned = true;
        n.drain_deadline = Some(until);
    }
}

#[test]
fn a_drained_node_s_instances_move_and_each_goes_once_its_replacement_is_healthy() {
    let mut s = Sim::new(&[("a1", 8), ("a2", 8)]);
    s.deploy(
        app(&format!("instances = 3\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(4);
    s.log.clear();
    s.peak = 0;
    s.drain("a1", 300);
    s.run(6);
    s.check(expect![[r#"
        drain a1 (deadline 300s)
        t+40: start web.1.3 on a2; start web.1.4 on a2; start web.1.5 on a2; update /web deployment d1 succeeded
        t+60: stop web.1.0 (Drained); stop web.1.1 (Drained); stop web.1.2 (Drained)
        t+70: forget web.1.0; forget web.1.1; forget web.1.2
        now: web.1.3@a2 running healthy, web.1.4@a2 running healthy, web.1.5@a2 running healthy
        deployment: d1 version 1 succeeded
        peak alive: 6
    "#]]);
}

#[test]
fn a_drain_without_room_elsewhere_waits_for_its_deadline() {
    let mut s = Sim::new(&[("a1", 1), ("a2", 1)]);
    s.deploy(
        app(&format!("instances = 2\ncpus = 1\n{CHECKED}[upgrade_strategy]\nminimum_health_capacity = 1.0\nmaximum_over_capacity = 1.0\n")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(4);
    s.log.clear();
    s.peak = 0;
    s.drain("a1", 60);
    s.run(12);
    s.check(expect![[r#"
        drain a1 (deadline 60s)
        t+40: /web waits: 0 of 1 instances placed: no node can take an instance of /web: drained (`strata node uncordon` puts it back) (1 node); too few free cpus for 1 (1 node)
        t+100: stop web.1.0 (Drained)
        t+110: forget web.1.0
        now: web.1.1@a2 running healthy
        deployment: d1 version 1 succeeded
        peak alive: 2
    "#]]);
}

#[test]
fn nothing_new_is_placed_on_a_drained_node() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.drain("a1", 300);
    s.deploy(
        app("instances = 1"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(2);
    s.check(expect![[r#"
        drain a1 (deadline 300s)
        deploy version 1 (Deploy, 1 instances)
        t+0: /web waits: 0 of 1 instances placed: no node can take an instance of /web: drained (`strata node uncordon` puts it back) (1 node)
        now: 
        deployment: d1 version 1 running
        peak alive: 0
    "#]]);
}

#[test]
fn a_lost_node_s_instances_are_replaced_and_stopped_when_it_returns() {
    let mut s = Sim::new(&[("a1", 8), ("a2", 8)]);
    s.deploy(
        app("instances = 2\nconstraints = [[\"hostname\", \"UNIQUE\"]]\nunreachable_strategy = { inactive_after_seconds = 20, expunge_after_seconds = 600 }"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.world.nodes.push(node("a3", 8));
    s.run(2);
    s.log.push("a1 stops answering".into());
    let now = s.now;
    let a1 = s
        .world
        .nodes
        .iter_mut()
        .find(|n| n.view.name == "a1")
        .expect("a1");
    a1.unreachable_since = Some(now);
    a1.view.ready = false;
    s.run(4);
    s.log.push("a1 answers again".into());
    let a1 = s
        .world
        .nodes
        .iter_mut()
        .find(|n| n.view.name == "a1")
        .expect("a1");
    a1.unreachable_since = None;
    a1.view.ready = true;
    s.run(3);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 2 instances)
        t+0: start web.1.0 on a1; start web.1.1 on a2; update /web deployment d1 running
        t+10: update /web deployment d1 succeeded
        a1 stops answering
        t+40: stop web.1.0 (NodeLost); start web.1.2 on a3; update /web deployment d1 succeeded
        a1 answers again
        t+70: forget web.1.0
        now: web.1.1@a2 running, web.1.2@a3 running
        deployment: d1 version 1 succeeded
        peak alive: 2
    "#]]);
}

#[test]
fn an_app_that_cannot_be_placed_says_why() {
    let mut s = Sim::new(&[("a1", 1)]);
    s.deploy(
        app("instances = 3\nconstraints = [[\"hostname\", \"UNIQUE\"]]"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(2);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 3 instances)
        t+0: start web.1.0 on a1; update /web deployment d1 running; /web waits: 1 of 3 instances placed: no node can take an instance of /web: refused by constraint hostname UNIQUE (1 node)
        t+10: /web waits: 0 of 2 instances placed: no node can take an instance of /web: refused by constraint hostname UNIQUE (1 node)
        now: web.1.0@a1 running
        deployment: d1 version 1 running
        peak alive: 1
    "#]]);
}

#[test]
fn a_removed_app_stops_everything_then_goes() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.deploy(
        app("instances = 2"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(2);
    s.log.push("remove".into());
    s.app().removing = true;
    s.run(3);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 2 instances)
        t+0: start web.1.0 on a1; start web.1.1 on a1; update /web deployment d1 running
        t+10: update /web deployment d1 succeeded
        remove
        t+20: stop web.1.0 (AppRemoved); stop web.1.1 (AppRemoved)
        t+30: forget web.1.0; forget web.1.1; delete /web
        now: 
        deployment: none
        peak alive: 2
    "#]]);
}

#[test]
fn an_app_waits_for_its_dependencies_to_be_healthy() {
    let mut s = Sim::new(&[("a1", 8)]);
    let mut web = app("instances = 1");
    web.dependencies = vec![AppId::resolve(&AppId::root(), "/db").expect("id")];
    s.deploy(web, Behaviour::Good, DeploymentKind::Deploy, 0);
    let mut db = app(&format!("instances = 1\n{CHECKED}"));
    db.id = AppId::resolve(&AppId::root(), "/db").expect("id");
    s.deploy(db, Behaviour::Good, DeploymentKind::Deploy, 0);
    s.run(5);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 1 instances)
        deploy version 1 (Deploy, 1 instances)
        t+0: /web waits: its dependencies are not healthy yet; start db.1.0 on a1; update /db deployment d1 running
        t+20: update /db deployment d1 succeeded
        t+30: start web.1.0 on a1; update /web deployment d1 running; /web waits no more
        t+40: update /web deployment d1 succeeded
        now: db.1.0@a1 running healthy, web.1.0@a1 running
        deployment: d1 version 1 succeeded
        peak alive: 2
    "#]]);
}

#[test]
fn an_instance_of_an_app_that_is_gone_is_stopped() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.deploy(
        app("instances = 1"),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(2);
    s.world.apps.clear();
    s.log.push("the app's record is gone".into());
    s.run(2);
    s.check(expect![[r#"
        deploy version 1 (Deploy, 1 instances)
        t+0: start web.1.0 on a1; update /web deployment d1 running
        t+10: update /web deployment d1 succeeded
        the app's record is gone
        t+20: stop web.1.0 (Orphaned)
        t+30: forget web.1.0
        now: 
        deployment: none
        peak alive: 1
    "#]]);
}

#[test]
fn a_plan_for_a_settled_cluster_is_empty() {
    let mut s = Sim::new(&[("a1", 8)]);
    s.deploy(
        app(&format!("instances = 2\n{CHECKED}")),
        Behaviour::Good,
        DeploymentKind::Deploy,
        0,
    );
    s.run(5);
    assert_eq!(plan(&s.world, s.now, &s.waiting), Plan::default());
}
