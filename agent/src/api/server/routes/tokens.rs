//! Join tokens and user tokens: an admin makes them (the answer holds the
//! token, the only time it is shown: masters keep its sha256), lists them
//! and revokes them (the record stays, marked revoked).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use control::access::{
    JoinTokenCreated, JoinTokenRecord, JoinTokenRequest, TokenState, UserTokenCreated,
    UserTokenRecord, UserTokenRequest,
};
use control::rbac::Role;

use crate::api::server::ApiState;
use crate::api::server::auth::{ManageJoinTokens, ManageUserTokens, Operator};
use crate::api::server::error::ApiError;
use crate::pki::{self, JoinToken};

pub async fn create_join_token(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<ManageJoinTokens>,
    Json(req): Json<JoinTokenRequest>,
) -> Result<Json<JoinTokenCreated>, ApiError> {
    req.check().map_err(ApiError::BadTokenRequest)?;
    let token =
        JoinToken::generate(&state.ca_sha256).map_err(|e| ApiError::Secret(e.to_string()))?;
    let secret_sha256 = token.secret_sha256();
    let record = JoinTokenRecord::new(
        &secret_sha256,
        &req,
        &user.label(),
        crate::clock::unix_secs(),
    );
    if !state
        .store
        .create_join_token(&secret_sha256, &record)
        .await?
    {
        return Err(ApiError::Secret("its secret exists already".into()));
    }
    tracing::info!(
        token = %record.id,
        by = %user.id,
        "api: join token {} made by {}",
        record.id,
        user.label()
    );
    Ok(Json(JoinTokenCreated {
        format: Default::default(),
        token: token.to_string(),
        record,
    }))
}

pub async fn list_join_tokens(
    State(state): State<Arc<ApiState>>,
    _: Operator<ManageJoinTokens>,
) -> Result<Json<Vec<JoinTokenRecord>>, ApiError> {
    Ok(Json(state.store.join_tokens().await?))
}

pub async fn revoke_join_token(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<ManageJoinTokens>,
    Path(id): Path<String>,
) -> Result<Json<JoinTokenRecord>, ApiError> {
    let record = state
        .store
        .revoke_join_token(&id, crate::clock::unix_secs())
        .await?
        .ok_or(ApiError::NoSuchToken(id))?;
    tracing::info!(
        token = %record.id,
        by = %user.id,
        "api: join token {} revoked by {}",
        record.id,
        user.label()
    );
    Ok(Json(record))
}

pub async fn create_user_token(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<ManageUserTokens>,
    Json(req): Json<UserTokenRequest>,
) -> Result<Json<UserTokenCreated>, ApiError> {
    req.check().map_err(ApiError::BadTokenRequest)?;
    let token = pki::generate_cli_token().map_err(|e| ApiError::Secret(e.to_string()))?;
    let sha256 = pki::sha256_hex(token.as_bytes());
    let record = UserTokenRecord::new(&sha256, &req, &user.label(), crate::clock::unix_secs());
    if !state.store.create_user_token(&sha256, &record).await? {
        return Err(ApiError::Secret("it exists already".into()));
    }
    tracing::info!(
        token = %record.id,
        role = %record.role,
        by = %user.id,
        "api: user token {} ({}) made by {}",
        record.id,
        record.role,
        user.label()
    );
    Ok(Json(UserTokenCreated {
        format: Default::default(),
        token,
        record,
    }))
}

pub async fn list_user_tokens(
    State(state): State<Arc<ApiState>>,
    _: Operator<ManageUserTokens>,
) -> Result<Json<Vec<UserTokenRecord>>, ApiError> {
    Ok(Json(state.store.user_tokens().await?))
}

/// Revokes a user token, unless it is the last admin token that works:
/// without one nobody could make tokens again. (Two admins revoking each
/// other's last tokens at once can still both succeed.)
pub async fn revoke_user_token(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<ManageUserTokens>,
    Path(id): Path<String>,
) -> Result<Json<UserTokenRecord>, ApiError> {
    let now = crate::clock::unix_secs();
    let all = state.store.user_tokens().await?;
    let Some(target) = all.iter().find(|t| t.id == id) else {
        return Err(ApiError::NoSuchToken(id));
    };
    let working_admin =
        |t: &UserTokenRecord| t.role == Role::Admin && t.state(now) == TokenState::Active;
    if working_admin(target) && all.iter().filter(|t| working_admin(t)).count() == 1 {
        return Err(ApiError::LastAdmin(id));
    }
    let record = state
        .store
        .revoke_user_token(&id, now)
        .await?
        .ok_or(ApiError::NoSuchToken(id))?;
    tracing::info!(
        token = %record.id,
        by = %user.id,
        "api: user token {} ({}) revoked by {}",
        record.id,
        record.role,
        user.label()
    );
    Ok(Json(record))
}
