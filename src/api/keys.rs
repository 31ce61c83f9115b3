//! `POST /keys`, `GET /keys`, `DELETE /keys/{id}`: API key management (admin role).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::openapi::CoordinatorFailures;
use super::schema::ErrorBody;
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
#[utoipa::path(
    post,
    path = "/keys",
    tag = "keys",
    summary = "Create an API key",
    description = "Role: `admin`. The answer holds the key itself; it is shown only this once (the cluster keeps a salted hash). Every node accepts it once the coordinator's map push reaches it (within a second or two).",
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key, shown only now", body = CreatedKey),
        (status = 400, description = "An unknown role, a bad name, or the cluster's 1000 keys are used up", body = ErrorBody),
        CoordinatorFailures,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateKey>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; expected {{\"role\": \"read\" | \"write\" | \"admin\", \"name\": \"...\"}}",
            e.body_text()
        ))
    })?;
    let name = body.name.unwrap_or_else(|| body.role.as_str().to_string());
    let (info, key) = keys::create(&state, &name, body.role).await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { info, key })).into_response())
}

/// `GET /keys`: the cluster's keys, without secrets.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    summary = "List the API keys",
    description = "Role: `admin`. Ids, names, roles and creation times; never the keys.",
    responses((status = 200, description = "The keys", body = KeyList))
)]
pub async fn list(State(state): State<AppState>) -> Json<KeyList> {
    Json(KeyList {
        keys: keys::list(&state),
    })
}

/// `DELETE /keys/{id}`: revokes a key on every node.
#[utoipa::path(
    delete,
    path = "/keys/{id}",
    tag = "keys",
    summary = "Revoke an API key",
    description = "Role: `admin`. Every node refuses the key once the coordinator's map push reaches it (within a second or two). The bootstrap key (`TORUA_BOOTSTRAP_API_KEY`) is not in the cluster's list: change it on the nodes and restart them.",
    params(("id" = String, Path, description = "The key's id (from `GET /keys`)")),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 404, description = "No key with this id", body = ErrorBody),
        CoordinatorFailures,
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    keys::revoke(&state, &id).await?;
    Ok(Json(Revoked { revoked: id }))
}
