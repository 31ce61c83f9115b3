//! `POST /keys`, `GET /keys`, `DELETE /keys/{id}`: API key management (admin role).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::cluster::keys;
use crate::node::access::{KeyInfo, Role};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
}

/// The answer to `POST /keys`: the only time the key itself is shown.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    pub key: String,
}

#[derive(Debug, Serialize)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

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

pub async fn list(State(state): State<AppState>) -> Json<KeyList> {
    Json(KeyList {
        keys: keys::list(&state),
    })
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    keys::revoke(&state, &id).await?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}
