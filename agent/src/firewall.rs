//! The node's input firewall as the agent holds it: what it knows of the
//! node ([`control::firewall::FirewallInput`]), planned by
//! [`control::firewall::plan`], rendered and applied by
//! [`crate::overlay::nft`] (the one module that runs `nft`) as the `inet
//! strata-fw` table.
//!
//! The daemon applies it at boot, before the cluster starts and anything
//! listens ([`at_boot`]: the role file's ports, and on a master the API's
//! port and etcd's from its user-data); [`crate::cluster::network`] adds
//! the overlay once the node holds a lease and has read the node list
//! (VXLAN from every node, DNS from the overlay to the node's resolver),
//! and follows the list. A node without an overlay keeps the boot firewall.
//! `strata cluster run-node` applies none: it runs on hosts (the cluster
//! benchmark runs a whole cluster in the host's own namespace), whose
//! firewall is their own.
//!
//! [`NodeFirewall::report`] reads what each rule matched; the node's
//! network reports it to the masters (`strata node firewall NAME`).
//!
//! A node never locks itself out of its cluster by changing its rules:
//! a report that reaches a master after a ruleset was applied confirms it
//! ([`NodeFirewall::confirm`]); a ruleset that no call confirmed within
//! [`CONFIRM`] is replaced by the last confirmed one
//! ([`NodeFirewall::roll_back_unconfirmed`]), and the report says so.
//!
//! The overlay part is kept under the run directory (`firewall.json`, gone
//! at the next boot), so that an agent restarted during a boot applies the
//! same table again at once, which changes nothing for traffic, instead of
//! dropping VXLAN until it has read the node list.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use configs::role::RoleConfig;
use configs::user_data::UserData;
use control::firewall::{self, FirewallInput, FirewallReport, OverlayInput};

/// How long a new ruleset has to let the node reach the API before the
/// last confirmed one comes back.
pub const CONFIRM: Duration = Duration::from_secs(15);

/// How recently before a change the node must have reached the API for
/// the lock-out guard to blame the change: the node reports its counters
/// every 30 s while they move, which the established connections make
/// them do.
pub const REACHED_BEFORE: Duration = Duration::from_secs(75);

/// The file under the run directory that keeps the overlay part.
pub const KEPT_FILE: &str = "firewall.json";

/// The firewall of this node: its input and the ruleset last applied.
#[derive(Debug)]
pub struct NodeFirewall {
    /// Network namespace the table lives in: `None` for the agent (its own
    /// namespace), a path in tests.
    netns: Option<PathBuf>,
    /// Where the overlay part is kept for the next agent of this boot.
    kept: Option<PathBuf>,
    state: Mutex<State>,
    /// See [`NodeFirewall::generation`].
    generation: AtomicU64,
}

#[derive(Debug)]
struct State {
    input: FirewallInput,
    /// The ruleset `nft` last accepted.
    applied: Option<String>,
    /// When (unix seconds).
    applied_at: u64,
    /// When, on the monotonic clock.
    applied_since: Instant,
    /// The last ruleset under which the node reached the API, and its
    /// input: what [`NodeFirewall::roll_back_unconfirmed`] goes back to.
    confirmed: Option<(FirewallInput, String)>,
    /// Why the last rollback happened, if one did.
    rolled_back: Option<String>,
    /// When a call last reached the API, under any ruleset.
    reached_at: Option<Instant>,
}

impl NodeFirewall {
    /// A firewall for `input`, not applied yet; the overlay part is kept
    /// in `kept` when given.
    pub fn new(netns: Option<PathBuf>, input: FirewallInput, kept: Option<PathBuf>) -> Self {
        NodeFirewall {
            netns,
            kept,
            state: Mutex::new(State {
                input,
                applied: None,
                applied_at: 0,
                applied_since: Instant::now(),
                confirmed: None,
                rolled_back: None,
                reached_at: None,
            }),
            generation: AtomicU64::new(0),
        }
    }

    /// How many rulesets `nft` accepted so far: a change says the rules in
    /// force changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The firewall in force, each rule with what it matched (read from
    /// the table in the node's namespace); `None` before the first apply.
    /// Blocks, as [`NodeFirewall::apply`] does.
    pub fn report(&self) -> anyhow::Result<Option<FirewallReport>> {
        let state = self.lock()?;
        if state.applied.is_none() {
            return Ok(None);
        }
        let counters = crate::overlay::netns::run_in(self.netns.as_deref(), || {
            crate::overlay::nft::firewall_counters()
        })
        .context("cannot read the firewall's counters (table inet strata-fw)")?;
        let mut report = firewall::plan(&state.input).report(
            &counters,
            state.applied_at,
            crate::clock::unix_secs(),
        );
        report.rolled_back = state.rolled_back.clone();
        Ok(Some(report))
    }

    /// Records that the node reached the API under the ruleset of
    /// `generation` (a call made after it was applied got an answer): the
    /// ruleset to go back to from now on, unless another ruleset was
    /// applied since.
    pub fn confirm(&self, generation: u64) -> anyhow::Result<()> {
        let mut state = self.lock()?;
        state.reached_at = Some(Instant::now());
        if self.generation() == generation
            && let Some(ruleset) = state.applied.clone()
        {
            state.confirmed = Some((state.input.clone(), ruleset));
        }
        Ok(())
    }

    /// The lock-out guard: when the ruleset in force was applied more than
    /// `after` ago, the node reached the API within [`REACHED_BEFORE`]
    /// before it and has not under it ([`NodeFirewall::confirm`]), applies
    /// the last confirmed ruleset again and says why. Nothing to go back
    /// to (no ruleset confirmed yet, as at boot) leaves the rules as they
    /// are, and so does a change made while the masters were out of reach
    /// already (the change did not cut the node off; rolling it back would
    /// only undo it).
    pub fn roll_back_unconfirmed(&self, after: Duration) -> anyhow::Result<Option<String>> {
        let mut state = self.lock()?;
        let Some((input, ruleset)) = state.confirmed.clone() else {
            return Ok(None);
        };
        let reached_just_before = state
            .reached_at
            .is_some_and(|r| state.applied_since.saturating_duration_since(r) <= REACHED_BEFORE);
        if state.applied.as_deref() == Some(ruleset.as_str())
            || state.applied_since.elapsed() < after
            || !reached_just_before
        {
            return Ok(None);
        }
        crate::overlay::netns::run_in(self.netns.as_deref(), || {
            crate::overlay::nft::apply(&ruleset)
        })
        .context("cannot apply the last confirmed firewall again (table inet strata-fw)")?;
        let why = format!(
            "the ruleset applied at {} (unix time) reached no master's API within {}s: the last ruleset that did was applied again",
            state.applied_at,
            after.as_secs()
        );
        state.input = input;
        state.applied = Some(ruleset);
        state.applied_at = crate::clock::unix_secs();
        state.applied_since = Instant::now();
        state.rolled_back = Some(why.clone());
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(Some(why))
    }

    /// What the firewall is planned from now.
    pub fn input(&self) -> anyhow::Result<FirewallInput> {
        Ok(self.lock()?.input.clone())
    }

    /// Plans and applies the current input, unless the same ruleset is
    /// applied already. Returns whether `nft` ran. Blocks (`nft` is a
    /// child process): from async code, through `spawn_blocking`.
    pub fn apply(&self) -> anyhow::Result<bool> {
        let mut state = self.lock()?;
        self.apply_locked(&mut state)
    }

    /// Replaces the overlay part of the input (`None`: the node has no
    /// overlay), applies the result as [`NodeFirewall::apply`] does and
    /// keeps the part for the next agent of this boot.
    pub fn set_overlay(&self, overlay: Option<OverlayInput>) -> anyhow::Result<bool> {
        let mut state = self.lock()?;
        state.input.overlay = overlay;
        let ran = self.apply_locked(&mut state)?;
        if let Some(path) = &self.kept {
            let kept = match &state.input.overlay {
                Some(o) => crate::state::write_json(path, o, None),
                None => match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            if let Err(e) = kept {
                // Only a restarted agent misses it, and it reads the node
                // list again.
                tracing::warn!("firewall: cannot keep {}: {e}", path.display());
            }
        }
        Ok(ran)
    }

    /// Replaces the edge proxy's ports (public agents: what it listens on
    /// now) and applies the result as [`NodeFirewall::apply`] does.
    pub fn set_edge(&self, ports: Vec<u16>) -> anyhow::Result<bool> {
        let mut state = self.lock()?;
        state.input.edge = ports;
        self.apply_locked(&mut state)
    }

    fn apply_locked(&self, state: &mut State) -> anyhow::Result<bool> {
        let ruleset = crate::overlay::nft::render_firewall(&firewall::plan(&state.input));
        if state.applied.as_deref() == Some(ruleset.as_str()) {
            return Ok(false);
        }
        crate::overlay::netns::run_in(self.netns.as_deref(), || {
            crate::overlay::nft::apply(&ruleset)
        })
        .context("cannot apply the firewall (table inet strata-fw)")?;
        state.applied = Some(ruleset);
        state.applied_at = crate::clock::unix_secs();
        state.applied_since = Instant::now();
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("the firewall's lock is poisoned"))
    }
}

/// What the daemon knows at boot: the role file's ports; on a master with
/// its user-data, the API's port and etcd's ports open to the masters of
/// `cluster.toml`; and the overlay part `kept` by an earlier agent of this
/// boot. A master whose `cluster.toml` does not
/// parse gets the role's ports only (the cluster then says what is wrong).
pub fn boot_input(
    role: &RoleConfig,
    user_data: Option<&UserData>,
    kept: Option<OverlayInput>,
) -> FirewallInput {
    let mut input = FirewallInput {
        role: role.firewall.clone(),
        overlay: kept,
        ..FirewallInput::default()
    };
    let Some(secrets) = user_data
        .filter(|u| u.role == configs::Role::Master)
        .and_then(|u| u.master.as_ref())
    else {
        return input;
    };
    let Ok(cluster) = configs::cluster::ClusterConfig::parse(
        "user-data field `master.cluster_toml`",
        &secrets.cluster_toml,
    ) else {
        return input;
    };
    input.api_port = Some(cluster.api_port);
    // Open to the masters alone whether the masters run etcd themselves or
    // the operator runs an external one beside them.
    input.etcd_ports = vec![
        crate::etcd::render::CLIENT_PORT,
        crate::etcd::render::PEER_PORT,
    ];
    input.masters = cluster.masters;
    input
}

/// The overlay part an earlier agent of this boot kept in `run_dir`, if
/// any (an unreadable file counts as none).
pub fn kept(run_dir: &Path) -> Option<OverlayInput> {
    crate::state::read_json(&run_dir.join(KEPT_FILE))
}

/// The daemon's firewall: [`boot_input`] with the part kept in `run_dir`,
/// kept there again as it changes. Not applied yet.
pub fn at_boot(role: &RoleConfig, user_data: Option<&UserData>, run_dir: &Path) -> NodeFirewall {
    NodeFirewall::new(
        None,
        boot_input(role, user_data, kept(run_dir)),
        Some(run_dir.join(KEPT_FILE)),
    )
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    const MASTER_ROLE: &str = include_str!("../../configs/roles/master.toml");
    const PRIVATE_ROLE: &str = include_str!("../../configs/roles/private.toml");

    fn user_data(role: &str, cluster_toml: Option<&str>) -> UserData {
        UserData {
            cluster: "demo".into(),
            name: "node-1".into(),
            role: role.parse().expect("role"),
            masters: vec!["10.9.0.10:6443".into()],
            join_token: "t".into(),
            network: Default::default(),
            master: cluster_toml.map(|t| configs::user_data::MasterSecrets {
                ca_cert: String::new(),
                ca_key: String::new(),
                cluster_toml: t.into(),
                cli_token_sha256: vec![],
            }),
        }
    }

    /// What the daemon applies at boot, from the shipped role files: a
    /// master opens the API of its `cluster.toml` and etcd's ports to its
    /// masters; an agent only its role's ports.
    #[test]
    fn boot_firewalls_of_the_shipped_roles() {
        let master = RoleConfig::parse("master.toml", MASTER_ROLE).expect("master role");
        let private = RoleConfig::parse("private.toml", PRIVATE_ROLE).expect("private role");
        let cluster = "name = \"demo\"\nmasters = [\"10.9.0.10\", \"10.9.0.11\", \"10.9.0.12\"]\napi_port = 7443\n";
        let text = |role: &RoleConfig, ud: Option<&UserData>| {
            firewall::plan(&boot_input(role, ud, None)).to_string()
        };
        expect![[r#"
            set masters: 10.9.0.10, 10.9.0.11, 10.9.0.12
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept dhcp and dhcpv6 replies
            accept tcp 7443 from anywhere (the API)
            accept tcp 2379, 2380 from the masters (etcd)
            drop and count everything else"#]]
        .assert_eq(&text(&master, Some(&user_data("master", Some(cluster)))));
        // An external etcd may run beside the masters: its ports are
        // open to the masters all the same.
        let external = format!("{cluster}[etcd]\nexternal = [\"https://10.9.0.10:2379\"]\n");
        assert_eq!(
            text(&master, Some(&user_data("master", Some(&external)))),
            text(&master, Some(&user_data("master", Some(cluster)))),
        );
        // Without user-data, or with a broken cluster.toml: the role's ports.
        let role_only = text(&master, None);
        assert_eq!(
            role_only,
            text(&master, Some(&user_data("master", Some("name = ")))),
        );
        assert!(!role_only.contains("6443") && !role_only.contains("2379"));
        expect![[r#"
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept dhcp and dhcpv6 replies
            drop and count everything else"#]]
        .assert_eq(&text(&private, Some(&user_data("private", None))));
    }

    /// The overlay part kept by an earlier agent of the boot is the new
    /// agent's at once; a file it cannot read counts as none.
    #[test]
    fn the_overlay_part_is_kept_for_the_next_agent() {
        let dir = std::env::temp_dir().join(format!("strata-fw-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(kept(&dir), None);
        let part = OverlayInput {
            vxlan_port: 4789,
            nodes: vec!["10.9.0.10".parse().expect("ip")],
            bridge: "strata-br".into(),
            vxlan: "strata-vx".into(),
            gateway: "10.200.1.1".parse().expect("ip"),
        };
        crate::state::write_json(&dir.join(KEPT_FILE), &part, None).expect("write");
        assert_eq!(kept(&dir), Some(part));
        std::fs::write(dir.join(KEPT_FILE), "{").expect("write");
        assert_eq!(kept(&dir), None);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
