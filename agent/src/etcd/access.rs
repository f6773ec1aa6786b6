//! Who may join and call, in etcd: join tokens under [`JOIN_TOKENS`], user
//! tokens under [`USER_TOKENS`] (each keyed by the sha256 of its secret),
//! revoked certificates under [`REVOKED`], removed nodes under [`REMOVED`]
//! and key claims under [`NODE_KEYS`] (the records of `control::access`).
//! A join reads what it depends on in one transaction and commits fenced
//! on all of it ([`Store::join`]). Every master keeps the revoked serials
//! and the user tokens in an [`AccessCache`] that its one shared watch
//! loads on each (re)start and keeps current, so that authenticating a
//! request costs no etcd read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use control::access::{
    At, JoinAttempt, JoinPlan, JoinSnapshot, JoinTokenRecord, KeyClaim, TokenRecord,
    UserTokenRecord, plan_join,
};
use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};

use super::{CALL_TIMEOUT, Error, NODES, Store, decode, record_json as json};

/// Join tokens: `<prefix><sha256 of the secret>`, a `JoinTokenRecord`.
pub const JOIN_TOKENS: &str = "/strata/tokens/join/";
/// User tokens: `<prefix><sha256 of the token>`, a `UserTokenRecord`.
pub const USER_TOKENS: &str = "/strata/tokens/user/";
/// Revoked certificates: `<prefix><serial>`, a `RevokedCert`.
pub const REVOKED: &str = "/strata/revoked/";
/// Removed nodes: `<prefix><name>`, a `RemovedNode`.
pub const REMOVED: &str = "/strata/removed/";
/// Key claims: `<prefix><key sha256>`, a `KeyClaim`.
pub const NODE_KEYS: &str = "/strata/node-keys/";

/// How often a join or a revocation reads and commits again when another
/// write came between.
const ATTEMPTS: u32 = 32;

/// The revoked certificates and the user tokens, as this master's shared
/// watch last loaded them. Until it has (and while the watch is down) it
/// is not loaded, and requests that need it are refused: a master never
/// admits a certificate or a token it could not check.
pub struct AccessCache {
    lists: std::sync::RwLock<Lists>,
    loaded: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct Lists {
    /// Serials.
    revoked: HashSet<String>,
    /// By the token's sha256.
    users: HashMap<String, UserTokenRecord>,
}

impl Default for AccessCache {
    fn default() -> Self {
        AccessCache {
            lists: std::sync::RwLock::default(),
            loaded: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl AccessCache {
    /// Whether the lists are loaded, waiting up to `wait` for it.
    pub async fn wait_loaded(&self, wait: Duration) -> bool {
        let mut rx = self.loaded.subscribe();
        matches!(
            tokio::time::timeout(wait, rx.wait_for(|loaded| *loaded)).await,
            Ok(Ok(_))
        )
    }

    /// Whether the certificate with `serial` is revoked (as last loaded).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.read().revoked.contains(serial)
    }

    /// The user token whose sha256 is `sha256`, if the cache holds it.
    pub fn user_token(&self, sha256: &str) -> Option<UserTokenRecord> {
        self.read().users.get(sha256).cloned()
    }

    /// Replaces the lists and marks them loaded: revoked serials, and user
    /// tokens by their sha256.
    pub fn load(
        &self,
        revoked: impl IntoIterator<Item = String>,
        users: impl IntoIterator<Item = (String, UserTokenRecord)>,
    ) {
        *self.lists.write().expect("access cache lock poisoned") = Lists {
            revoked: revoked.into_iter().collect(),
            users: users.into_iter().collect(),
        };
        self.loaded.send_replace(true);
    }

    /// Marks the lists out of date (the watch that keeps them failed).
    pub fn mark_stale(&self) {
        self.loaded.send_replace(false);
    }

    /// Applies one change the watch saw: a put (`Some(value)`) or a delete
    /// of `key`. Other keys are ignored; a value that does not decode is
    /// logged and skipped.
    pub(super) fn apply(&self, key: &str, value: Option<&[u8]>) {
        if let Some(serial) = key.strip_prefix(REVOKED) {
            let mut lists = self.write();
            match value {
                Some(_) => lists.revoked.insert(serial.to_string()),
                None => lists.revoked.remove(serial),
            };
        } else if let Some(sha256) = key.strip_prefix(USER_TOKENS) {
            let record = value.and_then(|v| decode_or_warn::<UserTokenRecord>(key, v));
            let mut lists = self.write();
            match record {
                Some(r) => lists.users.insert(sha256.to_string(), r),
                None => lists.users.remove(sha256),
            };
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Lists> {
        self.lists.read().expect("access cache lock poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Lists> {
        self.lists.write().expect("access cache lock poisoned")
    }
}

fn decode_or_warn<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match decode(key, value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("etcd: skipping {key}: {e}");
            None
        }
    }
}

/// Loads `cache` from etcd: the revoked serials and the user tokens, read
/// in one transaction. Returns the revision they were read at (the shared
/// watch goes on from the next one).
pub(super) async fn load_cache(
    clients: &super::Clients,
    cache: &AccessCache,
) -> Result<i64, String> {
    let txn = Txn::new().and_then([
        TxnOp::get(REVOKED, Some(GetOptions::new().with_prefix())),
        TxnOp::get(USER_TOKENS, Some(GetOptions::new().with_prefix())),
    ]);
    // Sent to the next member while it never reached etcd
    // (`super::unsent`): a dead member would otherwise stop the shared
    // watch's (re)start.
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    let mut attempt = 1;
    let resp = loop {
        let (i, client) = clients.get();
        let mut kv = client.kv_client();
        match tokio::time::timeout_at(deadline, kv.txn(txn.clone())).await {
            Err(_) => return Err(format!("no answer within {}s", CALL_TIMEOUT.as_secs())),
            Ok(Err(e)) if attempt < clients.attempts() && super::unsent(&e) => {
                clients.failed(i);
                attempt += 1;
            }
            Ok(r) => break r.map_err(|e| e.to_string())?,
        }
    };
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut lists = gets(&resp.op_responses()).into_iter();
    let (revoked, users) = (
        lists.next().unwrap_or_default(),
        lists.next().unwrap_or_default(),
    );
    let revoked = revoked.iter().filter_map(|kv| {
        let key = String::from_utf8_lossy(kv.key());
        key.strip_prefix(REVOKED).map(str::to_string)
    });
    let users = users.iter().filter_map(|kv| {
        let key = String::from_utf8_lossy(kv.key()).to_string();
        let sha256 = key.strip_prefix(USER_TOKENS)?.to_string();
        Some((sha256, decode_or_warn(&key, kv.value())?))
    });
    cache.load(revoked, users);
    Ok(revision)
}

/// The key-values of each get of a transaction, in order.
fn gets(responses: &[TxnOpResponse]) -> Vec<Vec<KeyValue>> {
    responses
        .iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().to_vec()),
            _ => None,
        })
        .collect()
}

/// The record `kv` of `key` holds, with the revision `revision` reads.
fn at<T: serde::de::DeserializeOwned>(
    key: &str,
    kv: Option<&KeyValue>,
    revision: fn(&KeyValue) -> i64,
) -> Result<Option<At<T>>, Error> {
    kv.map(|kv| {
        Ok::<_, Error>(At {
            value: decode(key, kv.value())?,
            revision: revision(kv),
        })
    })
    .transpose()
}

/// The compare that fences a write on what was read of `key`: its
/// modification when it was there, its absence otherwise.
fn unchanged(key: &str, read: Option<&KeyValue>) -> Compare {
    match read {
        Some(kv) => Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
        None => Compare::version(key, CompareOp::Equal, 0),
    }
}

impl Store {
    /// This master's cache of revoked certificates and user tokens.
    pub fn access(&self) -> &AccessCache {
        &self.access
    }

    /// Starts the shared watch now, which loads the [`AccessCache`] (it
    /// starts with the first long-poll otherwise).
    pub async fn start_watch(&self) {
        self.feed().await;
    }

    /// Makes the records of `strata cluster init`'s secrets where they are
    /// absent: the join token of the user-data (`secret_sha256`) and the
    /// CLI tokens of `cli_token_sha256`, an admin's; and the key claims of
    /// nodes that joined before claims were kept. An existing record is
    /// never replaced: a revoked bootstrap token stays revoked. Returns how
    /// many records it made.
    pub async fn seed_access(
        &self,
        join_secret_sha256: &str,
        cli_token_sha256: &[String],
        now: u64,
    ) -> Result<usize, Error> {
        let mut puts = vec![(
            format!("{JOIN_TOKENS}{join_secret_sha256}"),
            json(&JoinTokenRecord::bootstrap(join_secret_sha256, now)),
        )];
        for sha256 in cli_token_sha256 {
            puts.push((
                format!("{USER_TOKENS}{sha256}"),
                json(&UserTokenRecord::bootstrap(sha256, now)),
            ));
        }
        let claimed: BTreeSet<String> = self
            .get(
                NODE_KEYS,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).to_string())
            .collect();
        for node in self.list_nodes().await? {
            let key = format!("{NODE_KEYS}{}", node.key_sha256);
            if !claimed.contains(&key) {
                let claim = KeyClaim {
                    format: Default::default(),
                    name: node.info.name.clone(),
                    claimed_at: node.joined_at,
                    removed_at: None,
                };
                puts.push((key, json(&claim)));
            }
        }
        let mut made = 0;
        for (key, value) in puts {
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value, None)]);
            if self.txn(txn).await?.succeeded() {
                made += 1;
            }
        }
        Ok(made)
    }

    /// The join token whose secret's sha256 is `secret_sha256`.
    pub async fn join_token(&self, secret_sha256: &str) -> Result<Option<JoinTokenRecord>, Error> {
        self.get_record(&format!("{JOIN_TOKENS}{secret_sha256}"))
            .await
    }

    /// The user token whose sha256 is `sha256`, read from etcd (not the
    /// cache).
    pub async fn user_token(&self, sha256: &str) -> Result<Option<UserTokenRecord>, Error> {
        self.get_record(&format!("{USER_TOKENS}{sha256}")).await
    }

    async fn get_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let resp = self.get(key, None).await?;
        resp.kvs()
            .first()
            .map(|kv| decode(key, kv.value()))
            .transpose()
    }

    /// A node joins: reads the token, the name's record and removal and
    /// the key's claim in one transaction, decides with
    /// `control::access::plan_join`, and commits what it plans only if
    /// none of the four changed meanwhile (a token without a use limit is
    /// compared, not written, so joins with it never conflict). Reads and
    /// decides again after a conflict. A refusal is [`Error::Join`].
    pub async fn join(
        &self,
        secret_sha256: &str,
        attempt: &JoinAttempt,
        now: u64,
    ) -> Result<JoinPlan, Error> {
        let token_key = format!("{JOIN_TOKENS}{secret_sha256}");
        let node_key = format!("{NODES}{}", attempt.name);
        let removed_key = format!("{REMOVED}{}", attempt.name);
        let claim_key = format!("{NODE_KEYS}{}", attempt.key_sha256);
        let keys = [&token_key, &node_key, &removed_key, &claim_key];
        for _ in 0..ATTEMPTS {
            let read = Txn::new().and_then(
                keys.iter()
                    .map(|k| TxnOp::get(k.as_str(), None))
                    .collect::<Vec<_>>(),
            );
            let resp = self.txn(read).await?;
            let found: Vec<Option<KeyValue>> = gets(&resp.op_responses())
                .into_iter()
                .map(|kvs| kvs.into_iter().next())
                .collect();
            let [token, node, removed, claim] =
                [0, 1, 2, 3].map(|i| found.get(i).cloned().flatten());
            let snapshot = JoinSnapshot {
                // A token is as old as its creation; a removal and a claim
                // as their last write.
                token: at(&token_key, token.as_ref(), KeyValue::create_revision)?,
                node: node
                    .as_ref()
                    .map(|kv| decode(&node_key, kv.value()))
                    .transpose()?,
                removed: at(&removed_key, removed.as_ref(), KeyValue::mod_revision)?,
                claim: at(&claim_key, claim.as_ref(), KeyValue::mod_revision)?,
            };
            let plan = plan_join(&snapshot, attempt, now)?;
            let compares = vec![
                unchanged(&token_key, token.as_ref()),
                unchanged(&node_key, node.as_ref()),
                unchanged(&removed_key, removed.as_ref()),
                unchanged(&claim_key, claim.as_ref()),
            ];
            let mut ops = vec![
                TxnOp::put(node_key.as_str(), json(&plan.node), None),
                TxnOp::put(claim_key.as_str(), json(&plan.claim), None),
            ];
            if let Some(t) = &plan.token {
                ops.push(TxnOp::put(token_key.as_str(), json(t), None));
            }
            if plan.clear_removal {
                ops.push(TxnOp::delete(removed_key.as_str(), None));
            }
            let txn = Txn::new().when(compares).and_then(ops);
            if self.txn(txn).await?.succeeded() {
                return Ok(plan);
            }
        }
        Err(Error::Conflict {
            what: format!("the join of node `{}`", attempt.name),
            attempts: ATTEMPTS,
        })
    }

    /// Stores a new join token; `false` when its key exists already.
    pub async fn create_join_token(
        &self,
        secret_sha256: &str,
        record: &JoinTokenRecord,
    ) -> Result<bool, Error> {
        self.create(&format!("{JOIN_TOKENS}{secret_sha256}"), json(record))
            .await
    }

    /// Stores a new user token; `false` when its key exists already.
    pub async fn create_user_token(
        &self,
        sha256: &str,
        record: &UserTokenRecord,
    ) -> Result<bool, Error> {
        self.create(&format!("{USER_TOKENS}{sha256}"), json(record))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<bool, Error> {
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Every join token, oldest first.
    pub async fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, Error> {
        let mut all: Vec<JoinTokenRecord> = self
            .decode_prefix(JOIN_TOKENS)
            .await?
            .into_values()
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// Every user token, oldest first.
    pub async fn user_tokens(&self) -> Result<Vec<UserTokenRecord>, Error> {
        let mut all: Vec<UserTokenRecord> = self
            .decode_prefix(USER_TOKENS)
            .await?
            .into_values()
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// Marks the join token `id` revoked; `None` when there is none.
    pub async fn revoke_join_token(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<JoinTokenRecord>, Error> {
        self.revoke(JOIN_TOKENS, id, now).await
    }

    /// Marks the user token `id` revoked; `None` when there is none.
    pub async fn revoke_user_token(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<UserTokenRecord>, Error> {
        self.revoke(USER_TOKENS, id, now).await
    }

    /// Marks the token `id` under `prefix` revoked at `now` (a token
    /// revoked already keeps its time), fenced on its record.
    async fn revoke<T>(&self, prefix: &str, id: &str, now: u64) -> Result<Option<T>, Error>
    where
        T: TokenRecord + serde::Serialize + serde::de::DeserializeOwned,
    {
        for _ in 0..ATTEMPTS {
            let resp = self
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await?;
            let mut found = None;
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key()).to_string();
                let record: T = decode(&key, kv.value())?;
                if record.id() == id {
                    found = Some((key, record, kv.mod_revision()));
                    break;
                }
            }
            let Some((key, mut record, revision)) = found else {
                return Ok(None);
            };
            if record.revoked_at().is_some() {
                return Ok(Some(record));
            }
            record.revoke(now);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::put(key.as_str(), json(&record), None)]);
            if self.txn(txn).await?.succeeded() {
                return Ok(Some(record));
            }
        }
        Err(Error::Conflict {
            what: format!("revoking token {id}"),
            attempts: ATTEMPTS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::rbac::Role;

    #[test]
    fn the_cache_follows_puts_and_deletes_of_its_prefixes() {
        let cache = AccessCache::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        assert!(!rt.block_on(cache.wait_loaded(Duration::from_millis(10))));
        let admin = UserTokenRecord::bootstrap(&"ab".repeat(32), 1);
        cache.load(["0a".to_string()], [("ab".repeat(32), admin.clone())]);
        assert!(rt.block_on(cache.wait_loaded(Duration::from_millis(10))));
        assert!(cache.is_revoked("0a"));
        assert_eq!(cache.user_token(&"ab".repeat(32)), Some(admin.clone()));

        cache.apply(&format!("{REVOKED}0b"), Some(b"{}".as_slice()));
        cache.apply(&format!("{REVOKED}0a"), None);
        assert!(cache.is_revoked("0b") && !cache.is_revoked("0a"));

        let mut viewer = admin.clone();
        viewer.role = Role::Viewer;
        let key = format!("{USER_TOKENS}{}", "cd".repeat(32));
        cache.apply(&key, Some(json(&viewer).as_slice()));
        assert_eq!(
            cache.user_token(&"cd".repeat(32)).map(|r| r.role),
            Some(Role::Viewer)
        );
        // A value that does not decode drops the token rather than keep an
        // old one.
        cache.apply(&key, Some(b"not json".as_slice()));
        assert_eq!(cache.user_token(&"cd".repeat(32)), None);
        cache.apply(&format!("{NODES}n1"), Some(b"{}".as_slice()));

        cache.mark_stale();
        assert!(!rt.block_on(cache.wait_loaded(Duration::from_millis(10))));
    }
}
