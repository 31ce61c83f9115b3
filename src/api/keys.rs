//! `POST /keys`, `GET /keys`, `DELETE /keys/{id}`: API key management (admin role).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::cluster::keys;
use crate::node::access::{KeyInfo, Role};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub role: Role,
    /// 1 to 100 characters, no control characters; default: the role's name.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
}

/// The answer to `POST /keys`: the only time the key itself is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The key: `torua_<id>_<secret>`. Send it as `Authorization: Bearer <key>`.
    pub key: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// The revoked key's id.
    pub revoked: String,
}

/// `POST /keys`: a new API key.
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateKey>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = super::json_body(
        body,
        r#"{"role": "read" | "write" | "admin", "name": "..."}"#,
    )?;
    let name = body.name.unwrap_or_else(|| body.role.as_str().to_string());
    let (info, key) = keys::create(&state, &name, body.role).await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { info, key })).into_response())
}

/// `GET /keys`: the cluster's keys, without secrets.
pub async fn list(State(state): State<AppState>) -> Json<KeyList> {
    Json(KeyList {
        keys: keys::list(&state),
    })
}

/// `DELETE /keys/{id}`: revokes a key on every node.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    keys::revoke(&state, &id).await?;
    Ok(Json(Revoked { revoked: id }))
}
