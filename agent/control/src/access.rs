//! Access to the cluster: join tokens with an expiry and a use count, the
//! operators' tokens with their roles, revoked node certificates, removed
//! nodes and which key holds which node name, as the masters keep them in
//! etcd (`agent::etcd`); the bodies of the token routes; and the decisions
//! over them: whether a join is admitted ([`plan_join`]), what removing a
//! node writes ([`plan_removal`]) and whether an operator's token is valid
//! ([`check_user_token`]). Time comes in as an argument; revisions are
//! etcd's, read with the records.

use serde::{Deserialize, Serialize};

use crate::format::Format;
use crate::model::{IssuedCert, NodeInfo, NodeRecord};
use crate::rbac::Role;

/// How many hex digits of a token's sha256 name it (`token list`,
/// `token revoke ID`).
pub const ID_LEN: usize = 12;

/// The id of the token whose sha256 is `sha256`.
pub fn token_id(sha256: &str) -> String {
    sha256.chars().take(ID_LEN).collect()
}

/// Who made the records of `strata cluster init`'s secrets.
pub const BOOTSTRAP_CREATOR: &str = "strata cluster init";

/// The longest description of a join token and name of a user token.
pub const MAX_LABEL: usize = 200;

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a token can do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Expired,
    /// A join token that admitted as many nodes as it may.
    UsedUp,
    Revoked,
}

impl std::fmt::Display for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::UsedUp => "used up",
            TokenState::Revoked => "revoked",
        })
    }
}

/// What the records of both kinds of token share, for listing and
/// revoking them by id.
pub trait TokenRecord {
    fn id(&self) -> &str;
    /// When it was revoked (Unix seconds); `None` while it is not.
    fn revoked_at_mut(&mut self) -> &mut Option<u64>;
    fn revoked_at(&self) -> Option<u64>;
    /// Marks the token revoked at `now`, once (records are never deleted:
    /// a bootstrap record deleted would be made again at a master's next
    /// start).
    fn revoke(&mut self, now: u64) {
        self.revoked_at_mut().get_or_insert(now);
    }
}

/// A join token (`/strata/tokens/join/<sha256 of its secret>`). The secret
/// itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// The first [`ID_LEN`] hex digits of the secret's sha256.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Who made it: a user token (`user token <id> (<name>)`) or
    /// [`BOOTSTRAP_CREATOR`].
    pub created_by: String,
    /// Unix seconds from which it admits no new node; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// How many more nodes it admits; absent: any number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
    /// How many nodes it admitted (counted on tokens with a use limit
    /// only: an unlimited token's record is not written at each join).
    #[serde(default)]
    pub used: u32,
    /// Unix seconds of its revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// The token of `strata cluster init`, in every node's user-data.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bootstrap: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl JoinTokenRecord {
    /// The record of `strata cluster init`'s join token: unlimited.
    pub fn bootstrap(secret_sha256: &str, now: u64) -> JoinTokenRecord {
        JoinTokenRecord {
            format: Format::V1,
            id: token_id(secret_sha256),
            created_at: now,
            created_by: BOOTSTRAP_CREATOR.to_string(),
            expires_at: None,
            uses_left: None,
            used: 0,
            revoked_at: None,
            bootstrap: true,
            description: "the join token of the user-data `strata cluster init` wrote".to_string(),
        }
    }

    /// A new token's record, as `req` asks (checked with
    /// [`JoinTokenRequest::check`]).
    pub fn new(
        secret_sha256: &str,
        req: &JoinTokenRequest,
        created_by: &str,
        now: u64,
    ) -> JoinTokenRecord {
        JoinTokenRecord {
            format: Format::V1,
            id: token_id(secret_sha256),
            created_at: now,
            created_by: created_by.to_string(),
            expires_at: req.ttl_seconds.map(|t| now.saturating_add(t)),
            uses_left: req.uses,
            used: 0,
            revoked_at: None,
            bootstrap: false,
            description: req.description.clone(),
        }
    }

    /// What it can do at `now`.
    pub fn state(&self, now: u64) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at.is_some_and(|t| now >= t) {
            TokenState::Expired
        } else if self.uses_left == Some(0) {
            TokenState::UsedUp
        } else {
            TokenState::Active
        }
    }
}

impl TokenRecord for JoinTokenRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn revoked_at(&self) -> Option<u64> {
        self.revoked_at
    }
    fn revoked_at_mut(&mut self) -> &mut Option<u64> {
        &mut self.revoked_at
    }
}

/// An operator's token (`/strata/tokens/user/<sha256 of the token>`): the
/// bearer token of a CLI context. The token itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTokenRecord {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// The first [`ID_LEN`] hex digits of the token's sha256.
    pub id: String,
    pub role: Role,
    /// Whose it is, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    pub created_by: String,
    /// Unix seconds from which it is refused; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// The CLI token of `strata cluster init` (a master's
    /// `cli_token_sha256`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub bootstrap: bool,
}

impl UserTokenRecord {
    /// The record of a CLI token of a master's user-data: an admin's.
    pub fn bootstrap(token_sha256: &str, now: u64) -> UserTokenRecord {
        UserTokenRecord {
            format: Format::V1,
            id: token_id(token_sha256),
            role: Role::Admin,
            name: "the CLI token of `strata cluster init`".to_string(),
            created_at: now,
            created_by: BOOTSTRAP_CREATOR.to_string(),
            expires_at: None,
            revoked_at: None,
            bootstrap: true,
        }
    }

    /// A new token's record, as `req` asks (checked with
    /// [`UserTokenRequest::check`]).
    pub fn new(
        token_sha256: &str,
        req: &UserTokenRequest,
        created_by: &str,
        now: u64,
    ) -> UserTokenRecord {
        UserTokenRecord {
            format: Format::V1,
            id: token_id(token_sha256),
            role: req.role,
            name: req.name.clone(),
            created_at: now,
            created_by: created_by.to_string(),
            expires_at: req.ttl_seconds.map(|t| now.saturating_add(t)),
            revoked_at: None,
            bootstrap: false,
        }
    }

    /// What it can do at `now`.
    pub fn state(&self, now: u64) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at.is_some_and(|t| now >= t) {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

impl TokenRecord for UserTokenRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn revoked_at(&self) -> Option<u64> {
        self.revoked_at
    }
    fn revoked_at_mut(&mut self) -> &mut Option<u64> {
        &mut self.revoked_at
    }
}

/// Why a user token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the bearer token {id} was revoked at unix time {at}")]
    Revoked { id: String, at: u64 },
    #[error(
        "the bearer token {id} expired at unix time {at}: ask an admin for a new one (`strata user token create`)"
    )]
    Expired { id: String, at: u64 },
}

impl TokenRefusal {
    /// The error body's code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenRefusal::Revoked { .. } => "token-revoked",
            TokenRefusal::Expired { .. } => "token-expired",
        }
    }
}

/// The role of a user token that is valid at `now`. A role this release
/// does not know comes back as [`Role::Unknown`], which grants nothing.
pub fn check_user_token(rec: &UserTokenRecord, now: u64) -> Result<Role, TokenRefusal> {
    if let Some(at) = rec.revoked_at {
        return Err(TokenRefusal::Revoked {
            id: rec.id.clone(),
            at,
        });
    }
    match rec.expires_at {
        Some(at) if now >= at => Err(TokenRefusal::Expired {
            id: rec.id.clone(),
            at,
        }),
        _ => Ok(rec.role),
    }
}

/// A revoked node certificate (`/strata/revoked/<serial>`): every master
/// refuses it on every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Lowercase hex, as [`IssuedCert::serial`].
    pub serial: String,
    /// The node it was issued to.
    pub node: String,
    /// Unix seconds at which it expires (after that the TLS handshake
    /// refuses it anyway).
    pub not_after: u64,
    pub revoked_at: u64,
}

/// A node that was removed (`/strata/removed/<name>`): it joins again only
/// with a join token created after the removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedNode {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub name: String,
    /// The key it had joined with.
    pub key_sha256: String,
    /// Unix seconds.
    pub removed_at: u64,
}

/// Which node name a key holds (`/strata/node-keys/<key sha256>`): a key
/// joins under one name only. Kept, marked, when the node is removed, so
/// that the removed node's key cannot join under another name either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyClaim {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub name: String,
    /// Unix seconds.
    pub claimed_at: u64,
    /// Unix seconds of the node's removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<u64>,
}

/// A record with the etcd revision that orders it against others: where a
/// join token was created, where a removal or a key claim was last
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub revision: i64,
}

/// What a master reads, in one etcd transaction, to decide a join.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinSnapshot {
    /// The token whose secret the request carries, at its creation
    /// revision.
    pub token: Option<At<JoinTokenRecord>>,
    /// The record of the name asked for.
    pub node: Option<NodeRecord>,
    /// The name's removal, at the revision it was written.
    pub removed: Option<At<RemovedNode>>,
    /// The claim of the request's key, at the revision it was last written.
    pub claim: Option<At<KeyClaim>>,
}

/// A node asking to join, its certificate already signed (it is handed
/// out only when the join commits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAttempt {
    pub name: String,
    pub role: configs::Role,
    /// Hex sha256 of the public key of its CSR.
    pub key_sha256: String,
    /// The address the request came from.
    pub address: String,
    pub cert: IssuedCert,
}

/// What an admitted join writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPlan {
    /// The token with one use consumed, or `None` when it is not written
    /// (no use limit, or a member joining again).
    pub token: Option<JoinTokenRecord>,
    /// The token's id, for the log.
    pub token_id: String,
    pub node: NodeRecord,
    pub claim: KeyClaim,
    /// Whether the name's removal record is cleared.
    pub clear_removal: bool,
    /// Whether a new node is admitted (not a member with its own key
    /// getting a new certificate).
    pub admitted: bool,
}

/// Why a join is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("the join token is wrong: its secret is not this cluster's")]
    UnknownToken,
    #[error(
        "join token {id} was revoked at unix time {at}: ask an operator for a new one (`strata cluster token create`)"
    )]
    Revoked { id: String, at: u64 },
    #[error(
        "join token {id} expired at unix time {at}: ask an operator for a new one (`strata cluster token create`)"
    )]
    Expired { id: String, at: u64 },
    #[error(
        "join token {id} is used up: it admitted {used} node(s), as many as it may; ask an operator for a new one (`strata cluster token create`)"
    )]
    UsedUp { id: String, used: u32 },
    #[error(
        "node `{name}` was removed from the cluster at unix time {at}: it joins again only with a join token created after that (`strata cluster token create`)"
    )]
    Removed { name: String, at: u64 },
    #[error(
        "node name `{name}` is taken by another node (another key, joined at unix time {joined_at}); pick another name"
    )]
    NameTaken { name: String, joined_at: u64 },
    #[error(
        "this node's key joined as node `{name}` already: a key holds one name; remove node `{name}` first (`strata node remove {name}`)"
    )]
    KeyHoldsName { name: String },
}

impl JoinRefusal {
    /// The error body's code.
    pub fn code(&self) -> &'static str {
        match self {
            JoinRefusal::UnknownToken => "join-token-unknown",
            JoinRefusal::Revoked { .. } => "join-token-revoked",
            JoinRefusal::Expired { .. } => "join-token-expired",
            JoinRefusal::UsedUp { .. } => "join-token-used-up",
            JoinRefusal::Removed { .. } => crate::api::code::NODE_REMOVED,
            JoinRefusal::NameTaken { .. } => "name-taken",
            JoinRefusal::KeyHoldsName { .. } => "key-holds-name",
        }
    }
}

/// Decides a join from what the master read.
///
/// Refused: an unknown or revoked token; a name removed, or a key whose
/// node was removed, after the token was created; a key that holds another
/// name; a name another key holds. A new node is also refused with an
/// expired or used-up token; a member joining again with its own key (its
/// certificate expired, or it lost it) is not a new node: it consumes no
/// use, and an expired or used-up token still gets it a new certificate.
pub fn plan_join(s: &JoinSnapshot, a: &JoinAttempt, now: u64) -> Result<JoinPlan, JoinRefusal> {
    let token = s.token.as_ref().ok_or(JoinRefusal::UnknownToken)?;
    let t = &token.value;
    if let Some(at) = t.revoked_at {
        return Err(JoinRefusal::Revoked {
            id: t.id.clone(),
            at,
        });
    }
    // Revisions order the token and the removal exactly, whatever the
    // clocks of the masters that wrote them.
    let after_token = |revision: i64| revision > token.revision;
    if let Some(r) = &s.removed
        && after_token(r.revision)
    {
        return Err(JoinRefusal::Removed {
            name: r.value.name.clone(),
            at: r.value.removed_at,
        });
    }
    if let Some(c) = &s.claim {
        match c.value.removed_at {
            Some(at) if after_token(c.revision) => {
                return Err(JoinRefusal::Removed {
                    name: c.value.name.clone(),
                    at,
                });
            }
            // Removed before the token was made: the key is free again.
            Some(_) => {}
            None if c.value.name != a.name => {
                return Err(JoinRefusal::KeyHoldsName {
                    name: c.value.name.clone(),
                });
            }
            None => {}
        }
    }
    let member = match &s.node {
        Some(r) if r.key_sha256 != a.key_sha256 => {
            return Err(JoinRefusal::NameTaken {
                name: a.name.clone(),
                joined_at: r.joined_at,
            });
        }
        other => other.as_ref(),
    };
    let mut token_update = None;
    if member.is_none() {
        if let Some(at) = t.expires_at
            && now >= at
        {
            return Err(JoinRefusal::Expired {
                id: t.id.clone(),
                at,
            });
        }
        match t.uses_left {
            Some(0) => {
                return Err(JoinRefusal::UsedUp {
                    id: t.id.clone(),
                    used: t.used,
                });
            }
            Some(left) => {
                token_update = Some(JoinTokenRecord {
                    uses_left: Some(left - 1),
                    used: t.used.saturating_add(1),
                    ..t.clone()
                });
            }
            None => {}
        }
    }
    let node = match member {
        Some(r) => {
            let mut r = r.clone();
            r.certs
                .retain(|c| c.not_after > now && c.serial != a.cert.serial);
            r.certs.push(a.cert.clone());
            r
        }
        None => NodeRecord {
            info: NodeInfo {
                format: Format::V1,
                name: a.name.clone(),
                role: a.role,
                addresses: vec![a.address.clone()],
                cpus: 0,
                memory_bytes: 0,
                disk_bytes: 0,
                attributes: Default::default(),
                image: None,
            },
            key_sha256: a.key_sha256.clone(),
            joined_at: now,
            registered_at: now,
            certs: vec![a.cert.clone()],
        },
    };
    let claimed_at = match &s.claim {
        Some(c) if c.value.name == a.name && c.value.removed_at.is_none() => c.value.claimed_at,
        _ => now,
    };
    Ok(JoinPlan {
        token: token_update,
        token_id: t.id.clone(),
        node,
        claim: KeyClaim {
            format: Format::V1,
            name: a.name.clone(),
            claimed_at,
            removed_at: None,
        },
        clear_removal: s.removed.is_some(),
        admitted: member.is_none(),
    })
}

/// What removing a node writes besides deleting its record, liveness and
/// overlay lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub removed: RemovedNode,
    /// Its certificates that have not expired.
    pub revoked: Vec<RevokedCert>,
    /// Its key's claim, marked removed.
    pub claim: KeyClaim,
}

/// What removing the node of `record` at `now` writes.
pub fn plan_removal(record: &NodeRecord, now: u64) -> Removal {
    let name = &record.info.name;
    Removal {
        removed: RemovedNode {
            format: Format::V1,
            name: name.clone(),
            key_sha256: record.key_sha256.clone(),
            removed_at: now,
        },
        revoked: record
            .certs
            .iter()
            .filter(|c| c.not_after > now)
            .map(|c| RevokedCert {
                format: Format::V1,
                serial: c.serial.clone(),
                node: name.clone(),
                not_after: c.not_after,
                revoked_at: now,
            })
            .collect(),
        claim: KeyClaim {
            format: Format::V1,
            name: name.clone(),
            claimed_at: record.joined_at,
            removed_at: Some(now),
        },
    }
}

/// `POST /v1/join-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRequest {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Seconds it admits nodes for; absent: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// How many nodes it admits; absent: any number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl JoinTokenRequest {
    /// Why the request cannot be granted, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.ttl_seconds == Some(0) {
            return Err("ttl_seconds must be at least 1".to_string());
        }
        if self.uses == Some(0) {
            return Err("uses must be at least 1".to_string());
        }
        check_label("description", &self.description)
    }
}

/// The answer to `POST /v1/join-tokens`: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenCreated {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// `strata-join.v1.<CA sha256>.<secret>`, for a node's user-data.
    pub token: String,
    pub record: JoinTokenRecord,
}

/// `POST /v1/user-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTokenRequest {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub role: Role,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Seconds it is valid for; absent: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

impl UserTokenRequest {
    /// Why the request cannot be granted, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.role == Role::Unknown {
            let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
            return Err(format!("role: expected one of {}", names.join(", ")));
        }
        if self.ttl_seconds == Some(0) {
            return Err("ttl_seconds must be at least 1".to_string());
        }
        check_label("name", &self.name)
    }
}

/// The answer to `POST /v1/user-tokens`: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTokenCreated {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// `strata-cli.v1.<secret>`, the bearer token of a CLI context.
    pub token: String,
    pub record: UserTokenRecord,
}

fn check_label(field: &str, text: &str) -> Result<(), String> {
    if text.chars().count() > MAX_LABEL {
        return Err(format!("{field}: at most {MAX_LABEL} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{field}: no control characters"));
    }
    Ok(())
}

/// Seconds of a duration as an operator writes it: a number and a unit,
/// `90s`, `30m`, `1h`, `7d`, `2w`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: expected a number and a unit (s, m, h, d or w), as in 90s, 30m, 1h, 7d"
        )
    };
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("`{text}`: a duration must be longer than 0"));
    }
    n.checked_mul(unit)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod tests;
