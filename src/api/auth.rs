//! The gate in front of every route: which role a request needs, and whether its API key has
//! it. `/health`, `/openapi.json` and the console's static files under `/ui` stay open (load
//! balancers, client generators, a browser that has no key yet). A missing or unknown key is
//! 401, a key with too small a role 403, each with the JSON error body; repeated failures from
//! one address are answered more slowly, and all are counted in `/metrics`. A refused request's
//! body is read and dropped (within the route's size limit and a few seconds) before the answer,
//! so that a client still sending it gets the 401/403 rather than a connection closed under it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, MAX_BODY_BYTES};
use crate::api::graph::MAX_INGEST_BYTES;
use crate::node::access::{Denied, Role};

/// The role a request needs; `None` for the open routes.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let path = path.trim_end_matches('/');
    match path {
        "/health" | "/openapi.json" | "/ui" => return None,
        "/query" | "/broadcast" | "/keys" => return Some(Role::Admin),
        "/graph/ingest" => return Some(Role::Write),
        _ => {}
    }
    if path.starts_with("/ui/") {
        return None;
    }
    let node_admin =
        path.starts_with("/nodes/") && (path.ends_with("/drain") || path.ends_with("/rebuild"));
    if path.starts_with("/keys/") || node_admin {
        return Some(Role::Admin);
    }
    let deletes = path.starts_with("/graph/entities/") || path.starts_with("/graph/documents/");
    if deletes && method == Method::DELETE {
        return Some(Role::Write);
    }
    // A graph algorithm may write results back, and takes the whole cluster's time.
    let tasks = path.starts_with("/graph/algorithms/")
        || (path.starts_with("/tasks/") && path.ends_with("/_cancel"));
    if tasks && method == Method::POST {
        return Some(Role::Write);
    }
    Some(Role::Read)
}

/// Lets the request through when its key has the role its route needs.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.access.enabled {
        return next.run(request).await;
    }
    let Some(need) = required_role(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let checked = state.shard_map.read(|map| {
        let keys = map.map(|m| m.api_keys.as_slice()).unwrap_or_default();
        state.access.authenticate(header, keys)
    });
    let denied = match checked {
        Ok(caller) if caller.role >= need => {
            request.extensions_mut().insert(caller);
            return next.run(request).await;
        }
        Ok(caller) => Denied::Forbidden {
            have: caller.role,
            need,
        },
        Err(denied) => denied,
    };
    state.metrics.auth_failed(denied.label());
    let status = match denied {
        Denied::Forbidden { .. } => StatusCode::FORBIDDEN,
        Denied::Missing | Denied::Unknown => StatusCode::UNAUTHORIZED,
    };
    // Only a wrong key is an attempt at guessing one; a missing key gets its answer at once.
    if denied == Denied::Unknown {
        let from = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = from {
            let delay = state.access.failed(ip);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
    let limit = if request.uri().path().trim_end_matches('/') == "/graph/ingest" {
        MAX_INGEST_BYTES
    } else {
        MAX_BODY_BYTES
    };
    drain(request.into_body(), limit).await;
    let mut response = ApiError::new(status, denied.reason()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"torua\"".parse().expect("header"),
        );
    }
    response
}

/// How long a refused request's body is read for at most.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads and drops up to `limit` bytes of `body` within [`DRAIN_TIME`]. A body that is larger or
/// slower is left unread: hyper then closes the connection after the answer, as it would anyway.
async fn drain(body: axum::body::Body, limit: usize) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > limit {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_roles_the_readme_lists() {
        let cases = [
            (Method::GET, "/health", None),
            (Method::GET, "/openapi.json", None),
            (Method::GET, "/ui", None),
            (Method::GET, "/ui/", None),
            (Method::GET, "/ui/app.js", None),
            (Method::GET, "/uix", Some(Role::Read)),
            (Method::GET, "/cluster/health", Some(Role::Read)),
            (Method::GET, "/metrics", Some(Role::Read)),
            (Method::GET, "/graph/entities/x", Some(Role::Read)),
            (Method::POST, "/graph/neighborhood", Some(Role::Read)),
            (Method::POST, "/retrieve", Some(Role::Read)),
            (Method::POST, "/graph/ingest", Some(Role::Write)),
            (Method::POST, "/graph/ingest/", Some(Role::Write)),
            (Method::DELETE, "/graph/entities/x", Some(Role::Write)),
            (Method::GET, "/graph/documents/x", Some(Role::Read)),
            (Method::DELETE, "/graph/documents/x", Some(Role::Write)),
            (
                Method::POST,
                "/graph/algorithms/pagerank",
                Some(Role::Write),
            ),
            (Method::GET, "/tasks/node-1:1", Some(Role::Read)),
            (Method::POST, "/tasks/node-1:1/_cancel", Some(Role::Write)),
            (Method::POST, "/query", Some(Role::Admin)),
            (Method::POST, "/broadcast", Some(Role::Admin)),
            (Method::POST, "/nodes/node-2/drain", Some(Role::Admin)),
            (Method::DELETE, "/nodes/node-2/drain", Some(Role::Admin)),
            (
                Method::POST,
                "/nodes/node-2/shards/3/rebuild",
                Some(Role::Admin),
            ),
            (Method::GET, "/keys", Some(Role::Admin)),
            (Method::DELETE, "/keys/abc", Some(Role::Admin)),
            (Method::GET, "/no/such/route", Some(Role::Read)),
        ];
        for (method, path, role) in cases {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
    }
}
