//! The names a node's agent gives host-wide objects: the cgroup that holds
//! its tasks' cgroups and the prefix of its tasks' network namespaces.
//!
//! On a node there is one agent and the prefix is `strata`. Several agents
//! on one host (the host-tier tests, the benchmarks, two test runs at the
//! same time) each take their own prefix from `STRATA_HOST_PREFIX`, so that
//! none of them adopts, removes or counts another's cgroups and namespaces.
//! The prefix is kept in every task's `run.json` and the shim's
//! `state.json`, so a task stays in the cgroup it started in whatever the
//! next agent's prefix is.

/// The environment variable that names the prefix.
pub const ENV: &str = "STRATA_HOST_PREFIX";
/// The prefix of a node's one agent.
pub const DEFAULT: &str = "strata";

/// A prefix that is not one (see [`HostNames::new`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ENV}={0:?} is not a valid prefix: use `strata` or `strata-` and 1-12 lowercase letters or digits"
)]
pub struct BadPrefix(pub String);

/// The host-wide names of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNames {
    prefix: String,
}

impl Default for HostNames {
    fn default() -> Self {
        HostNames {
            prefix: DEFAULT.to_string(),
        }
    }
}

impl HostNames {
    /// Names under `prefix`: `strata` or `strata-` followed by 1 to 12
    /// lowercase letters or digits (short enough for interface and cgroup
    /// names, and recognisably Strata's in `ps` and `/sys/fs/cgroup`).
    pub fn new(prefix: &str) -> Result<HostNames, BadPrefix> {
        let ok = prefix == DEFAULT
            || prefix.strip_prefix("strata-").is_some_and(|rest| {
                (1..=12).contains(&rest.len())
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if ok {
            Ok(HostNames {
                prefix: prefix.to_string(),
            })
        } else {
            Err(BadPrefix(prefix.to_string()))
        }
    }

    /// The names this process's environment asks for (`strata` when
    /// [`ENV`] is unset).
    pub fn from_env() -> Result<HostNames, BadPrefix> {
        match std::env::var_os(ENV) {
            None => Ok(HostNames::default()),
            Some(p) => HostNames::new(&p.to_string_lossy()),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The network namespace of task `task`: `strata-<task>` for a node's
    /// agent, `<prefix>+<task>` for another prefix (task ids have no `+`,
    /// so `strata-t3` and task `web` never meet `strata` and task `t3-web`).
    pub fn netns(&self, task: &str) -> String {
        if self.prefix == DEFAULT {
            format!("{DEFAULT}-{task}")
        } else {
            format!("{}+{task}", self.prefix)
        }
    }
}

/// The cgroup of a container under the parent cgroup `parent` (a prefix),
/// relative to each hierarchy's root.
pub fn cgroup_path(parent: &str, container_id: &str) -> String {
    format!("/{parent}/{container_id}")
}

/// Serde default for files written before the prefix was recorded.
pub fn default_prefix() -> String {
    HostNames::default().prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(HostNames::default().netns("web"), "strata-web");
        assert_eq!(
            HostNames::new("strata-t3").map(|n| n.netns("web")),
            Ok("strata-t3+web".to_string())
        );
        assert_ne!(
            HostNames::new("strata-t3").map(|n| n.netns("web")),
            Ok(HostNames::default().netns("t3-web"))
        );
        assert_eq!(cgroup_path("strata-t3", "web-2"), "/strata-t3/web-2");
        for bad in [
            "",
            "other",
            "strata-",
            "strata-UP",
            "strata-a/b",
            "strata-0123456789abc",
        ] {
            assert!(HostNames::new(bad).is_err(), "{bad}");
        }
        expect_test::expect![[r#"STRATA_HOST_PREFIX="../x" is not a valid prefix: use `strata` or `strata-` and 1-12 lowercase letters or digits"#]]
            .assert_eq(&HostNames::new("../x").map(drop).unwrap_err().to_string());
    }
}
