//! Apps and their deployments: deploying a file's apps, listing and
//! showing apps, their versions, scaling, restarting and removing one, and
//! promoting or rolling back a deployment. Every change is checked, then
//! admitted as a version with its deployment (`control::deploy::apply`)
//! and stored only over the records it was read from; the scheduler's
//! leader rolls it out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};

use control::app::record::{
    AppRecord, AppVersion, AppView, DeployOutcome, DeployRequest, InstanceView, ScaleRequest,
};
use control::app::{AgentRole, AppId, Place};
use control::deploy::apply::{self, Admitted, Change};
use control::deploy::{Deployment, DeploymentState};
use control::model::{NodeStatus, node_statuses};
use control::schedule::{NodeView, Resources};
use control::task::{Health, TaskState};

use crate::api::server::ApiState;
use crate::api::server::audit::AuditNote;
use crate::api::server::auth::{DeployApps, Operator, ReadState};
use crate::api::server::error::ApiError;

/// How often a change is read and written again when another came between.
const ATTEMPTS: u32 = 5;

fn app_id(key: &str) -> Result<AppId, ApiError> {
    AppId::from_key(key).map_err(|why| ApiError::BadPath(format!("app `{key}`: {why}")))
}

async fn nodes(state: &ApiState) -> Result<Vec<NodeStatus>, ApiError> {
    let records = state.store.list_nodes().await?;
    let alive = state.store.alive().await?;
    Ok(node_statuses(records, &alive))
}

async fn views(state: &ApiState, only: Option<&AppId>) -> Result<Vec<AppView>, ApiError> {
    let apps = match only {
        Some(id) => match state.store.get_app(id).await? {
            Some((r, _)) => vec![r],
            None => return Err(ApiError::NoSuchApp(id.to_string())),
        },
        None => state.store.list_apps().await?,
    };
    let tasks = state.store.list_tasks().await?;
    let reports = state.store.task_reports().await?;
    let mut by_app: BTreeMap<AppId, Vec<InstanceView>> = BTreeMap::new();
    for (id, t) in &tasks {
        let Some(of) = &t.instance_of else { continue };
        let r = reports.get(id);
        by_app
            .entry(of.app.clone())
            .or_default()
            .push(InstanceView {
                id: id.clone(),
                node: t.node.clone(),
                version: of.version,
                state: r.map_or(TaskState::Pending, |r| r.state),
                health: r.and_then(|r| r.health).unwrap_or(Health::Unknown),
                address: r.and_then(|r| r.address),
                host_ports: t.host_ports.clone(),
                stopping: t.stopping,
            });
    }
    Ok(apps
        .into_iter()
        .map(|record| AppView {
            format: Default::default(),
            instances: by_app.remove(&record.spec.id).unwrap_or_default(),
            record,
            vip_addresses: Default::default(),
            exposed: Vec::new(),
        })
        .collect())
}

pub async fn list_apps(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<Vec<AppView>>, ApiError> {
    Ok(Json(views(&state, None).await?))
}

pub async fn show_app(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
    Path(key): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    let id = app_id(&key)?;
    let mut v = views(&state, Some(&id)).await?.remove(0);
    let named: Vec<&str> = v
        .record
        .spec
        .ports
        .iter()
        .flat_map(|p| p.vips.iter())
        .filter_map(|vip| match vip {
            control::app::VipSpec::Named { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if !named.is_empty() {
        v.vip_addresses = state
            .store
            .vip_leases()
            .await?
            .into_iter()
            .filter(|(n, _)| named.contains(&n.as_str()))
            .collect();
    }
    if v.record.spec.ports.iter().any(|p| !p.expose.is_empty()) {
        let public: Vec<(String, String)> = super::nodes::statuses(&state)
            .await?
            .into_iter()
            .filter(|n| {
                n.record.info.role == configs::Role::Public
                    && n.state == control::model::NodeState::Ready
            })
            .map(|n| {
                let addr = n.record.info.addresses.first().cloned().unwrap_or_default();
                (n.record.info.name, addr)
            })
            .collect();
        let certs: Vec<control::edge::EdgeCertView> = state
            .store
            .edge_certs()
            .await?
            .into_values()
            .map(|c| c.view)
            .collect();
        v.exposed =
            control::edge::exposed(&v.record.spec.ports, &public, (&state.edge).into(), &certs);
    }
    Ok(Json(v))
}

pub async fn app_versions(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
    Path(key): Path<String>,
) -> Result<Json<Vec<AppVersion>>, ApiError> {
    let id = app_id(&key)?;
    if state.store.get_app(&id).await?.is_none() {
        return Err(ApiError::NoSuchApp(id.to_string()));
    }
    Ok(Json(state.store.app_versions(&id).await?))
}

/// Checks the apps of a request as `strata app validate` does, and against
/// the cluster: each fits some agent it may run on, and each dependency is
/// an app (or group) of the request or of the cluster.
fn check_request(
    req: &DeployRequest,
    existing: &[AppRecord],
    nodes: &[NodeView],
    edge: &configs::cluster::Edge,
) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    let ids: BTreeSet<&AppId> = req
        .apps
        .iter()
        .map(|a| &a.id)
        .chain(existing.iter().map(|r| &r.spec.id))
        .collect();
    for (i, app) in req.apps.iter().enumerate() {
        let at = |field: &str| Place {
            path: format!("apps[{i}] ({}).{field}", app.id),
            line: 0,
            column: 0,
        };
        for p in app.check(&at) {
            problems.push(p.to_string());
        }
        problems.extend(control::app::expose::outside_edge(app, edge));
        if req.canary > app.instances {
            problems.push(format!(
                "{}: {} canaries is more than its {} instances",
                app.id, req.canary, app.instances
            ));
        }
        let want = Resources::of(app);
        let roles = app.roles();
        let candidates: Vec<&NodeView> = nodes.iter().filter(|n| roles.contains(&n.role)).collect();
        let fits = |n: &&NodeView| {
            n.allocatable.cpu_milli >= want.cpu_milli
                && n.allocatable.mem_mib >= want.mem_mib
                && n.allocatable.disk_mib >= want.disk_mib
        };
        if !candidates.is_empty() && !candidates.iter().any(fits) {
            let largest = candidates
                .iter()
                .map(|n| n.allocatable)
                .max_by_key(|r| (r.cpu_milli, r.mem_mib))
                .unwrap_or_default();
            problems.push(format!(
                "{}: one instance asks for {} cpus, {} MiB of memory and {} MiB of disk, more than any {} agent can give (the largest gives {} cpus, {} MiB, {} MiB)",
                app.id,
                app.cpus,
                want.mem_mib,
                want.disk_mib,
                if roles.contains(&AgentRole::Public) && roles.len() == 1 {
                    "public"
                } else {
                    "accepted"
                },
                largest.cpu_milli as f64 / 1000.0,
                largest.mem_mib,
                largest.disk_mib
            ));
        }
        for dep in &app.dependencies {
            let known = ids.contains(dep) || ids.iter().any(|i| i.is_under(dep));
            if !known {
                problems.push(format!(
                    "{}: dependency {dep} is not an app or group of the cluster or of this file",
                    app.id
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::BadApp(format!(
            "{} problem{} with the apps sent:\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        )))
    }
}

pub async fn deploy_apps(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployApps>,
    Json(req): Json<DeployRequest>,
) -> Result<(Extension<AuditNote>, Json<Vec<DeployOutcome>>), ApiError> {
    if req.apps.is_empty() {
        return Err(ApiError::BadApp("the request holds no app".into()));
    }
    let statuses = nodes(&state).await?;
    let views: Vec<NodeView> = statuses
        .iter()
        .filter_map(|n| apply::node_view(n, state.reserve))
        .collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let existing = state.store.list_apps().await?;
        check_request(&req, &existing, &views, &state.edge)?;
        let held = state.store.claims().await?;
        let ids: BTreeSet<&AppId> = existing.iter().map(|r| &r.spec.id).collect();
        let request: Vec<&control::app::AppSpec> = req.apps.iter().collect();
        let mut claims =
            control::app::expose::check_claims(&request, &held, &|id| ids.contains(id)).map_err(
                |taken| {
                    ApiError::ExposureTaken(format!(
                        "what the apps sent expose is another app's; nothing was stored:\n  {}",
                        taken.join("\n  ")
                    ))
                },
            )?;
        let others = existing
            .iter()
            .map(|r| &r.spec)
            .filter(|s| !req.apps.iter().any(|a| a.id == s.id));
        claims.leases = control::vip::allocate(
            state.vips.cidr,
            &state.store.vip_leases().await?,
            &control::vip::fixed_addresses(others),
            &request,
        )
        .map_err(|problems| {
            ApiError::BadApp(format!(
                "{} problem{} with the apps' VIPs:\n  {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("\n  ")
            ))
        })?;
        let now = crate::clock::unix_secs();
        let mut items = Vec::new();
        let mut outcomes = Vec::new();
        for spec in &req.apps {
            let current = state.store.get_app(&spec.id).await?;
            let admitted = apply::admit(
                current.as_ref().map(|(r, _)| r),
                spec.clone(),
                Change::Deploy { canary: req.canary },
                now,
            );
            let version = admitted.as_ref().map_or_else(
                || current.as_ref().map_or(0, |(r, _)| r.version),
                |a| a.record.version,
            );
            outcomes.push(DeployOutcome {
                format: Default::default(),
                app: spec.id.clone(),
                version,
                deployment: admitted.as_ref().map(|a| a.deployment.clone()),
                steps: Vec::new(),
            });
            if let Some(Admitted {
                record, version, ..
            }) = admitted
            {
                items.push((record, version, current.map_or(0, |(_, rev)| rev)));
            }
        }
        if req.dry_run {
            dry_run(&state, &statuses, &existing, &items, &mut outcomes).await?;
            let note = AuditNote {
                who: None,
                detail: format!("dry run of {} app(s)", req.apps.len()),
            };
            return Ok((Extension(note), Json(outcomes)));
        }
        if items.is_empty() || state.store.put_apps_if(&items, &claims).await? {
            let detail = outcomes
                .iter()
                .map(|o| match &o.deployment {
                    Some(d) => format!("{} version {} by {}", o.app, o.version, d.id),
                    None => format!("{} unchanged", o.app),
                })
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!("api: deploy: {detail}");
            return Ok((Extension(AuditNote { who: None, detail }), Json(outcomes)));
        }
        if attempt >= ATTEMPTS {
            return Err(ApiError::AppChanged(
                req.apps
                    .iter()
                    .map(|a| a.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
    }
}

/// The steps each admitted app's deployment would take, from the cluster
/// as it is.
async fn dry_run(
    state: &ApiState,
    statuses: &[NodeStatus],
    existing: &[AppRecord],
    items: &[(AppRecord, AppVersion, i64)],
    outcomes: &mut [DeployOutcome],
) -> Result<(), ApiError> {
    let tasks = state.store.list_tasks().await?;
    let reports = state.store.task_reports().await?;
    let mut apps: BTreeMap<AppId, AppRecord> = existing
        .iter()
        .map(|r| (r.spec.id.clone(), r.clone()))
        .collect();
    for (r, _, _) in items {
        apps.insert(r.spec.id.clone(), r.clone());
    }
    let apps: Vec<AppRecord> = apps.into_values().collect();
    let world = apply::world(
        statuses,
        &BTreeMap::new(),
        &apps,
        &tasks,
        &reports,
        state.reserve,
    );
    let now = crate::clock::unix_secs();
    for o in outcomes.iter_mut() {
        if o.deployment.is_some() {
            o.steps = control::deploy::simulate::steps(world.clone(), &o.app, now);
        }
    }
    Ok(())
}

/// Reads an app, applies `change` to its record and stores it over the one
/// read, again when another write came between.
async fn change_app(
    state: &ApiState,
    id: &AppId,
    change: impl Fn(&AppRecord, u64) -> Result<Option<Admitted>, ApiError>,
) -> Result<DeployOutcome, ApiError> {
    for _ in 0..ATTEMPTS {
        let (record, revision) = state
            .store
            .get_app(id)
            .await?
            .ok_or_else(|| ApiError::NoSuchApp(id.to_string()))?;
        let now = crate::clock::unix_secs();
        let Some(admitted) = change(&record, now)? else {
            return Ok(DeployOutcome {
                format: Default::default(),
                app: id.clone(),
                version: record.version,
                deployment: None,
                steps: Vec::new(),
            });
        };
        let outcome = DeployOutcome {
            format: Default::default(),
            app: id.clone(),
            version: admitted.record.version,
            deployment: Some(admitted.deployment.clone()),
            steps: Vec::new(),
        };
        if state
            .store
            .put_apps_if(
                &[(admitted.record, admitted.version, revision)],
                &Default::default(),
            )
            .await?
        {
            return Ok(outcome);
        }
    }
    Err(ApiError::AppChanged(id.to_string()))
}

fn refuse_removing(r: &AppRecord) -> Result<(), ApiError> {
    if r.removing {
        return Err(ApiError::BadApp(format!(
            "app {} is being removed: deploy it again to keep it",
            r.spec.id
        )));
    }
    Ok(())
}

pub async fn scale_app(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployApps>,
    Path(key): Path<String>,
    Json(req): Json<ScaleRequest>,
) -> Result<(Extension<AuditNote>, Json<DeployOutcome>), ApiError> {
    let id = app_id(&key)?;
    if req.instances > control::app::MAX_INSTANCES {
        return Err(ApiError::BadApp(format!(
            "{} instances is more than the {} an app may have",
            req.instances,
            control::app::MAX_INSTANCES
        )));
    }
    let outcome = change_app(&state, &id, |r, now| {
        refuse_removing(r)?;
        let mut spec = r.spec.clone();
        spec.instances = req.instances;
        Ok(apply::admit(
            Some(r),
            spec,
            Change::Deploy { canary: 0 },
            now,
        ))
    })
    .await?;
    let note = AuditNote {
        who: None,
        detail: format!("scale {id} to {}", req.instances),
    };
    Ok((Extension(note), Json(outcome)))
}

pub async fn restart_app(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployApps>,
    Path(key): Path<String>,
) -> Result<(Extension<AuditNote>, Json<DeployOutcome>), ApiError> {
    let id = app_id(&key)?;
    let outcome = change_app(&state, &id, |r, now| {
        refuse_removing(r)?;
        Ok(apply::admit(Some(r), r.spec.clone(), Change::Restart, now))
    })
    .await?;
    let note = AuditNote {
        who: None,
        detail: format!("restart {id}"),
    };
    Ok((Extension(note), Json(outcome)))
}

pub async fn remove_app(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployApps>,
    Path(key): Path<String>,
) -> Result<(Extension<AuditNote>, Json<serde_json::Value>), ApiError> {
    let id = app_id(&key)?;
    for _ in 0..ATTEMPTS {
        let (mut record, revision) = state
            .store
            .get_app(&id)
            .await?
            .ok_or_else(|| ApiError::NoSuchApp(id.to_string()))?;
        record.removing = true;
        if let Some(d) = record.deployments.last_mut()
            && !d.state.is_done()
        {
            d.state = DeploymentState::Superseded;
        }
        record.updated_at = crate::clock::unix_secs();
        if state.store.put_app_if(&record, revision).await? {
            let note = AuditNote {
                who: None,
                detail: format!("remove {id}"),
            };
            return Ok((
                Extension(note),
                Json(serde_json::json!({ "removing": id.to_string() })),
            ));
        }
    }
    Err(ApiError::AppChanged(id.to_string()))
}

/// Every app's deployments, newest last.
pub async fn list_deployments(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<Vec<Deployment>>, ApiError> {
    let mut all: Vec<Deployment> = state
        .store
        .list_apps()
        .await?
        .into_iter()
        .flat_map(|r| r.deployments)
        .collect();
    all.sort_by_key(|d| (d.started_at, d.id.clone()));
    Ok(Json(all))
}

/// The app a deployment id names (`<app key>-<version>`), and the
/// deployment in its record.
async fn find_deployment(
    state: &ApiState,
    id: &str,
) -> Result<(AppRecord, i64, Deployment), ApiError> {
    let missing = || ApiError::NoSuchDeployment(id.to_string());
    let (key, _) = id.rsplit_once('-').ok_or_else(missing)?;
    let app = AppId::from_key(key).map_err(|_| missing())?;
    let (record, revision) = state.store.get_app(&app).await?.ok_or_else(missing)?;
    let d = record
        .deployments
        .iter()
        .find(|d| d.id == id)
        .cloned()
        .ok_or_else(missing)?;
    Ok((record, revision, d))
}

pub async fn show_deployment(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    Ok(Json(find_deployment(&state, &id).await?.2))
}

/// Rolls an app back to the definition before a deployment: the app's
/// latest deployment, under way or done.
pub async fn rollback_deployment(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployApps>,
    Path(id): Path<String>,
) -> Result<(Extension<AuditNote>, Json<DeployOutcome>), ApiError> {
    let (record, _, d) = find_deployment(&state, &id).await?;
    if record.deployment().map(|l| &l.id) != Some(&d.id) {
        return Err(ApiError::DeploymentState {
            id: id.clone(),
            state: "not the app's latest".into(),
            what: "only an app's latest deployment can be rolled back",
        });
    }
    let Some(previous) = d.previous else {
        return Err(ApiError::DeploymentState {
            id: id.clone(),
            state: format!("{} (the app's first)", d.state),
            what: "there is no version before it to go back to; `strata app remove` removes the app",
        });
    };
    let app = record.spec.id.clone();
    let spec = state
        .store
        .app_version(&app, previous)
        .await?
        .map(|v| v.spec)
        .ok_or_else(|| {
            ApiError::NoSuchDeployment(format!("{id} (its previous version {previous} is gone)"))
        })?;
    let outcome = change_app(&state, &app, |r, now| {
        refuse_removing(r)?;
        Ok(apply::admit(
            Some(r),
            spec.clone(),
            Change::Rollback { config: previous },
            now,
        ))
    })
    .await?;
    let note = AuditNote {
        who: None,
        detail: format!("roll back {id}: {app} to the definition of version {previous}"),
    };
    Ok((Extension(note), Json(outcome)))
}

/// A deployment whose canaries are healthy rolls on.
pub async fn promote_deployment(
    State(state): State<Arc<ApiState>>,
    _: Operator<DeployApps>,
    Path(id): Path<String>,
) -> Result<(Extension<AuditNote>, Json<Deployment>), ApiError> {
    for _ in 0..ATTEMPTS {
        let (mut record, revision, mut d) = find_deployment(&state, &id).await?;
        if d.state.is_done() || d.canary == 0 || d.promoted {
            return Err(ApiError::DeploymentState {
                id: id.clone(),
                state: d.state.to_string(),
                what: "only a running deployment with canaries not yet promoted can be promoted",
            });
        }
        d.promoted = true;
        d.state = DeploymentState::Running;
        record.set_deployment(d.clone());
        record.updated_at = crate::clock::unix_secs();
        if state.store.put_app_if(&record, revision).await? {
            let note = AuditNote {
                who: None,
                detail: format!("promote {id}"),
            };
            return Ok((Extension(note), Json(d)));
        }
    }
    Err(ApiError::AppChanged(id))
}
