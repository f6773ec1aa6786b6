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
    pub fn new(prefix: &str) -> Result<HostNames, String> {
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
            Err(format!(
                "{ENV}={prefix:?} is not a valid prefix: use `strata` or `strata-` and 1-12 lowercase letters or digits"
            ))
        }
    }

    /// The names this process's environment asks for (`strata` when
    /// [`ENV`] is unset).
    pub fn from_env() -> Result<HostNames, String> {
        match std::env::var(ENV) {
            Ok(p) => HostNames::new(&p),
            Err(_) => Ok(HostNames::default()),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The network namespace of task `task`.
    pub fn netns(&self, task: &str) -> String {
        format!("{}-{task}", self.prefix)
    }
}

/// The cgroup of a container under the parent cgroup `parent` (a prefix),
/// relative to each hierarchy's root.
pub fn cgroup_path(parent: &str, container_id: &str) -> String {
    format!("/{parent}/{container_id}")
}

/// Serde default for files written before the prefix was recorded.
pub fn default_prefix() -> String {
    DEFAULT.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(HostNames::default().netns("web"), "strata-web");
        assert_eq!(
            HostNames::new("strata-t3").map(|n| n.netns("web")),
            Ok("strata-t3-web".to_string())
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
            .assert_eq(&HostNames::new("../x").unwrap_err());
    }
}
