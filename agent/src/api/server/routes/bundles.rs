//! Update bundles: an operator pushes one (`PUT /v1/bundles`, streamed to
//! the master's disk and verified there before it is recorded), lists
//! them, and nodes download one (`GET /v1/bundles/{sha256}`, resumable
//! with `Range`). Node upgrades and rollbacks are ordered here too
//! (`POST /v1/nodes/{name}/upgrade`, `.../rollback`), and nodes report
//! how far they got (`PUT /v1/nodes/{name}/upgrade/progress`). Cluster
//! upgrades are started, resumed and shown here (`/v1/rollout`); the
//! scheduler's leader drives them ([`crate::cluster::rollout`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use control::rollout::{Rollout, RolloutRequest};
use control::upgrade::{
    Action, BundleRecord, OrderRefused, Progress, ProgressReport, STALE_ORDER_SECONDS,
    UpgradeOrder, UpgradeRequest,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::api::server::ApiState;
use crate::api::server::audit::AuditNote;
use crate::api::server::auth::{
    FetchBundles, NodeCert, Operator, ReadState, ThisNode, UpgradeNodes,
};
use crate::api::server::error::ApiError;
use crate::upgrade::store::{BundleStore, StoreError};

fn store(state: &ApiState) -> Result<&Arc<BundleStore>, ApiError> {
    state.bundles.as_ref().ok_or(ApiError::NoBundleStore)
}

fn storage(e: StoreError) -> ApiError {
    match e {
        StoreError::Refused(e) => ApiError::BadBundle(e.to_string()),
        StoreError::BadDigest(_) => ApiError::BadBundle(e.to_string()),
        StoreError::Io { .. } => ApiError::BundleStorage(e.to_string()),
    }
}

/// Takes a bundle: streamed into a temporary file (at most
/// [`control::api::BUNDLE_BODY`] bytes), verified with the images' update
/// key, kept under its digest and recorded with this master as holder.
pub async fn push_bundle(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<UpgradeNodes>,
    body: Body,
) -> Result<(Extension<AuditNote>, Json<BundleRecord>), ApiError> {
    let bundles = store(&state)?.clone();
    let upload = bundles.upload_path().map_err(storage)?;
    let limit = u64::from(control::api::BUNDLE_BODY);
    let written = async {
        let mut file = tokio::fs::File::create(&upload)
            .await
            .map_err(|e| ApiError::BundleStorage(format!("{}: {e}", upload.display())))?;
        let mut stream = body.into_data_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadBundle(format!("the upload broke off: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ApiError::BadBundle(format!(
                    "larger than the {} MiB a master takes",
                    limit >> 20
                )));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| ApiError::BundleStorage(format!("{}: {e}", upload.display())))?;
        }
        file.flush()
            .await
            .map_err(|e| ApiError::BundleStorage(format!("{}: {e}", upload.display())))?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&upload).await;
        return Err(e);
    }
    let accepted = {
        let bundles = bundles.clone();
        tokio::task::spawn_blocking(move || bundles.accept(&upload))
            .await
            .map_err(|e| ApiError::BundleStorage(e.to_string()))?
    };
    let (sha256, manifest, size) = accepted.map_err(storage)?;
    let record = BundleRecord {
        format: Default::default(),
        sha256: sha256.clone(),
        version: manifest.version.clone(),
        role: manifest.role,
        size,
        pushed_at: crate::clock::unix_secs(),
        by: user.label(),
        holders: vec![],
    };
    state.store.add_bundle(&record, &state.answered_by).await?;
    tracing::info!(
        by = %user.id,
        "api: bundle {sha256} ({} {}, {size} bytes) pushed by {}",
        manifest.role,
        manifest.version,
        user.label()
    );
    let note = AuditNote {
        who: None,
        detail: format!(
            "push bundle {} {} {}",
            manifest.role, manifest.version, sha256
        ),
    };
    let mut record = record;
    record.holders = vec![state.answered_by.clone()];
    Ok((Extension(note), Json(record)))
}

/// Every bundle the masters hold.
pub async fn list_bundles(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<Vec<BundleRecord>>, ApiError> {
    let mut all = state.store.bundles().await?;
    all.sort_by(|a, b| (a.role, &a.version, a.pushed_at).cmp(&(b.role, &b.version, b.pushed_at)));
    Ok(Json(all))
}

/// The first byte a `Range: bytes=N-` header asks for.
fn range_start(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || ApiError::BadBundle("only a `Range: bytes=N-` request is served".into());
    let text = value.to_str().map_err(|_| bad())?;
    let start = text
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(bad)?;
    Ok(Some(start))
}

/// A bundle's bytes, from the offset a `Range` asks for.
pub async fn fetch_bundle(
    State(state): State<Arc<ApiState>>,
    _: NodeCert<FetchBundles>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = store(&state)?.path(&sha256).map_err(storage)?;
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NoSuchBundle(sha256));
        }
        Err(e) => return Err(ApiError::BundleStorage(format!("{}: {e}", path.display()))),
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::BundleStorage(e.to_string()))?
        .len();
    let start = range_start(&headers)?;
    let from = start.unwrap_or(0);
    if from >= size && start.is_some() {
        return Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{size}"))],
        )
            .into_response());
    }
    file.seek(std::io::SeekFrom::Start(from))
        .await
        .map_err(|e| ApiError::BundleStorage(e.to_string()))?;
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let body = Body::from_stream(chunks);
    let len = (size - from).to_string();
    Ok(match start {
        Some(_) => (
            StatusCode::PARTIAL_CONTENT,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, len),
                (
                    header::CONTENT_RANGE,
                    format!("bytes {from}-{}/{size}", size - 1),
                ),
            ],
            body,
        )
            .into_response(),
        None => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, len),
            ],
            body,
        )
            .into_response(),
    })
}

/// Orders a node to install a bundle into its other slot and reboot.
pub async fn upgrade_node(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<UpgradeNodes>,
    Path(name): Path<String>,
    Json(req): Json<UpgradeRequest>,
) -> Result<(Extension<AuditNote>, Json<UpgradeOrder>), ApiError> {
    let node = state
        .store
        .get_node(&name)
        .await?
        .ok_or_else(|| ApiError::NoSuchNode(name.clone()))?;
    let bundles = state.store.bundles().await?;
    let bundle = control::upgrade::pick_bundle(&req, &name, node.info.role, &bundles)
        .map_err(ApiError::OrderRefused)?;
    let action = Action::Install {
        sha256: bundle.sha256.clone(),
        version: bundle.version.clone(),
        size: bundle.size,
        allow_downgrade: req.allow_downgrade,
    };
    let detail = format!(
        "upgrade {name} to {} ({})",
        bundle.version,
        &bundle.sha256[..12.min(bundle.sha256.len())]
    );
    order(&state, &name, action, &user.label(), detail).await
}

/// Orders a node to boot its other slot.
pub async fn rollback_node(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<UpgradeNodes>,
    Path(name): Path<String>,
) -> Result<(Extension<AuditNote>, Json<UpgradeOrder>), ApiError> {
    state
        .store
        .get_node(&name)
        .await?
        .ok_or_else(|| ApiError::NoSuchNode(name.clone()))?;
    order(
        &state,
        &name,
        Action::Rollback,
        &user.label(),
        format!("roll back {name}"),
    )
    .await
}

async fn order(
    state: &ApiState,
    name: &str,
    action: Action,
    by: &str,
    detail: String,
) -> Result<(Extension<AuditNote>, Json<UpgradeOrder>), ApiError> {
    let now = crate::clock::unix_secs();
    let last = state.store.upgrade(name).await?;
    if let Some((old, _)) = &last
        && control::upgrade::busy(old, now, STALE_ORDER_SECONDS)
    {
        return Err(ApiError::OrderRefused(OrderRefused::Busy {
            node: name.to_string(),
            progress: old.progress.to_string(),
        }));
    }
    let suffix = crate::pki::random_hex(4).map_err(|e| ApiError::Secret(e.to_string()))?;
    let order = UpgradeOrder {
        format: Default::default(),
        id: format!("{now}-{suffix}"),
        node: name.to_string(),
        action,
        at: now,
        by: by.to_string(),
        progress: Progress::Ordered,
        updated_at: now,
    };
    if !state
        .store
        .put_upgrade(&order, last.map(|(_, rev)| rev))
        .await?
    {
        return Err(ApiError::OrderRefused(OrderRefused::Busy {
            node: name.to_string(),
            progress: "another order came in meanwhile".into(),
        }));
    }
    tracing::info!(node = %name, "api: {detail} ordered by {by}");
    Ok((Extension(AuditNote { who: None, detail }), Json(order)))
}

/// A node reports how far its order got.
pub async fn report_upgrade(
    State(state): State<Arc<ApiState>>,
    ThisNode { name, .. }: ThisNode,
    Json(report): Json<ProgressReport>,
) -> Result<Json<bool>, ApiError> {
    let recorded = state
        .store
        .report_upgrade(&name, &report, crate::clock::unix_secs())
        .await?;
    if recorded {
        tracing::info!(node = %name, "api: node `{name}` upgrade {}: {}", report.id, report.progress);
    }
    Ok(Json(recorded))
}

/// An operator starts a cluster upgrade: refused while another is under
/// way, and when the masters hold no bundle of the version for a role
/// with nodes to upgrade; nothing is stored then.
pub async fn start_rollout(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<UpgradeNodes>,
    Json(req): Json<RolloutRequest>,
) -> Result<(Extension<AuditNote>, Json<Rollout>), ApiError> {
    let now = crate::clock::unix_secs();
    let current = state.store.rollout().await?;
    let nodes = super::nodes::statuses(&state).await?;
    let facts = control::rollout::facts(None, &nodes, &Default::default(), &Default::default());
    let bundles = state.store.bundles().await?;
    let rollout = control::rollout::begin(
        &req,
        current.as_ref().map(|(r, _)| r),
        &facts,
        &bundles,
        &user.label(),
        now,
    )
    .map_err(ApiError::RolloutRefused)?;
    if !state
        .store
        .put_rollout(&rollout, current.map(|(_, rev)| rev))
        .await?
    {
        return Err(ApiError::RolloutChanged);
    }
    let detail = format!(
        "cluster upgrade to {} over {} nodes, {} at once",
        rollout.version,
        rollout.nodes.len(),
        rollout.max_unavailable
    );
    tracing::info!("api: {detail} started by {}", user.label());
    Ok((Extension(AuditNote { who: None, detail }), Json(rollout)))
}

/// An operator resumes a halted cluster upgrade: the node it halted at
/// is tried again.
pub async fn resume_rollout(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<UpgradeNodes>,
) -> Result<(Extension<AuditNote>, Json<Rollout>), ApiError> {
    let now = crate::clock::unix_secs();
    change_rollout(&state, &user.label(), "resumed", |current| {
        control::rollout::resume_stored(current, now)
    })
    .await
}

/// An operator halts the cluster upgrade under way: no node is started
/// after this; a node upgrading finishes its own upgrade.
pub async fn cancel_rollout(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<UpgradeNodes>,
) -> Result<(Extension<AuditNote>, Json<Rollout>), ApiError> {
    let by = user.label();
    change_rollout(&state, &by, "cancelled", |current| {
        control::rollout::cancel_stored(current, &by)
    })
    .await
}

/// Applies `change` to the stored rollout and stores the result over the
/// revision it read (a rollout changed meanwhile is refused); the audit
/// note says the rollout was `done` by `by`.
async fn change_rollout(
    state: &ApiState,
    by: &str,
    done: &str,
    change: impl FnOnce(Option<&Rollout>) -> Result<Rollout, control::rollout::RolloutRefused>,
) -> Result<(Extension<AuditNote>, Json<Rollout>), ApiError> {
    let current = state.store.rollout().await?;
    let rollout = change(current.as_ref().map(|(r, _)| r)).map_err(ApiError::RolloutRefused)?;
    if !state
        .store
        .put_rollout(&rollout, current.map(|(_, rev)| rev))
        .await?
    {
        return Err(ApiError::RolloutChanged);
    }
    let detail = format!("cluster upgrade to {} {done}", rollout.version);
    tracing::info!("api: {detail} by {by}");
    Ok((Extension(AuditNote { who: None, detail }), Json(rollout)))
}

/// The cluster upgrade, the last one when none is under way.
pub async fn show_rollout(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<Rollout>, ApiError> {
    state
        .store
        .rollout()
        .await?
        .map(|(r, _)| Json(r))
        .ok_or(ApiError::NoRollout)
}
