//! Who may do what: the roles an operator's token carries and the
//! permissions each grants. Every route of [`crate::api::ROUTES`] that an
//! operator may call names the one permission it needs
//! ([`crate::api::Route::permission`]); the API server's extractors check
//! the caller's role against it before the handler runs.

use serde::{Deserialize, Serialize};

/// The role of an operator's token (`strata user token create --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: nodes, tokens, deployments, reads, the audit log.
    Admin,
    /// Deploys and scales (runs and stops tasks), and reads.
    Operator,
    /// Reads the cluster's state; changes nothing.
    Viewer,
    /// Reads metrics only: a scraper's token.
    Metrics,
    /// A role a newer master wrote that this release does not know: it
    /// grants nothing.
    #[serde(other)]
    Unknown,
}

/// What a route lets its caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Read the cluster's state: nodes, tasks, the cluster's status.
    Read,
    /// Run and stop tasks.
    Deploy,
    /// Remove nodes.
    ManageNodes,
    /// Create, list and revoke join tokens and user tokens.
    ManageAccess,
    /// Read metrics.
    ReadMetrics,
    /// Read the audit log.
    ReadAudit,
    /// Run break-glass commands on nodes (`strata node exec`).
    Exec,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 7] = [
        Permission::Read,
        Permission::Deploy,
        Permission::ManageNodes,
        Permission::ManageAccess,
        Permission::ReadMetrics,
        Permission::ReadAudit,
        Permission::Exec,
    ];

    /// The name `docs/api.yaml` gives it (`x-strata-permission`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Deploy => "deploy",
            Permission::ManageNodes => "manage-nodes",
            Permission::ManageAccess => "manage-access",
            Permission::ReadMetrics => "read-metrics",
            Permission::ReadAudit => "read-audit",
            Permission::Exec => "exec",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Role {
    /// The roles a token can be made with (every one but `Unknown`).
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Viewer, Role::Metrics];

    /// The name the CLI and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Metrics => "metrics",
            Role::Unknown => "unknown",
        }
    }

    /// Whether a token of this role may do what `permission` covers.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(permission, Read | Deploy | ReadMetrics),
            Role::Viewer => matches!(permission, Read | ReadMetrics),
            Role::Metrics => matches!(permission, ReadMetrics),
            Role::Unknown => false,
        }
    }
}

/// The roles that grant `permission`, for a refusal's text.
pub fn roles_granting(permission: Permission) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| r.grants(permission))
        .collect()
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role `{s}`, expected one of {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each role may do.
    #[test]
    fn roles_and_permissions() {
        let table: Vec<String> = Role::ALL
            .into_iter()
            .chain([Role::Unknown])
            .map(|role| {
                let granted: Vec<&str> = Permission::ALL
                    .into_iter()
                    .filter(|p| role.grants(*p))
                    .map(Permission::as_str)
                    .collect();
                format!("{role:<8} {}", granted.join(" "))
                    .trim_end()
                    .to_string()
            })
            .collect();
        expect_test::expect![[r#"
            admin    read deploy manage-nodes manage-access read-metrics read-audit exec
            operator read deploy read-metrics
            viewer   read read-metrics
            metrics  read-metrics
            unknown"#]]
        .assert_eq(&table.join("\n"));
        assert_eq!(
            roles_granting(Permission::Deploy),
            [Role::Admin, Role::Operator]
        );
    }

    #[test]
    fn roles_parse_and_read_tolerantly() {
        assert_eq!("viewer".parse::<Role>(), Ok(Role::Viewer));
        assert_eq!(
            "root".parse::<Role>(),
            Err(
                "unknown role `root`, expected one of admin, operator, viewer, metrics".to_string()
            )
        );
        assert!("unknown".parse::<Role>().is_err());
        // A role a newer master wrote reads as Unknown and grants nothing.
        let role: Role = serde_json::from_str(r#""auditor""#).expect("reads");
        assert_eq!(role, Role::Unknown);
        assert!(Permission::ALL.iter().all(|p| !role.grants(*p)));
        assert_eq!(
            serde_json::to_string(&Role::Operator).expect("json"),
            r#""operator""#
        );
    }
}
