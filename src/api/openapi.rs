//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` and checked in as
//! `openapi.json`. It is derived from the handlers' `#[utoipa::path]` annotations and the types'
//! schemas, so that the contract cannot drift from the code unnoticed: a test compares the
//! generated document with the checked-in file.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::schema::ErrorBody;

mod paths;

use paths::{failure, Failure};

/// Name of the security scheme every operation but the public ones requires.
const SCHEME: &str = "api_key";
/// Operations open to everyone: probes and the contract itself.
const PUBLIC: [&str; 2] = ["/health", "/openapi.json"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "torua",
        description = "The HTTP API every torua node answers: a distributed GraphRAG store. Any node answers any request (it routes to the shards' copies).\n\nEvery error is JSON: `{\"error\": {\"status\": 400, \"reason\": \"...\"}}`; a condition that passes (busy, forming, a shard down) carries `Retry-After: 1`. A route that does not exist answers 404 with that body. On a node without a quorum (the minority side of a partition) every answer carries `x-torua-stale: <reason>`: reads still answer, from copies that may miss the majority's latest writes.\n\nRequest bodies are at most 1 MiB (`POST /graph/ingest`: 64 MiB). No request may take longer than 65 s (408, no body).",
    ),
    paths(
        paths::node_health,
        paths::metrics,
        paths::openapi_json,
        paths::cluster_health,
        paths::registry,
        paths::nodes,
        paths::drain,
        paths::undrain,
        paths::rebuild,
        paths::broadcast,
        paths::shards,
        paths::ingest,
        paths::get_entity,
        paths::delete_entity,
        paths::get_chunk,
        paths::get_document,
        paths::delete_document,
        paths::query,
        paths::neighborhood,
        paths::path,
        paths::retrieve,
        paths::run_algorithm,
        paths::list_tasks,
        paths::get_task,
        paths::cancel_task,
        paths::create,
        paths::list,
        paths::revoke,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Access),
    security(("api_key" = [])),
    tags(
        (name = "node", description = "This node: liveness, metrics, the API contract"),
        (name = "cluster", description = "Membership, health, shard copies, drains, broadcast"),
        (name = "graph", description = "Writes and point reads of the graph"),
        (name = "query", description = "Distributed reads: Cypher and traversals"),
        (name = "retrieve", description = "GraphRAG retrieval"),
        (name = "algorithms", description = "Graph algorithms over the whole graph, run as tasks"),
        (name = "keys", description = "API keys and their roles"),
    )
)]
struct ApiDoc;

/// Adds the API key scheme, opens the public operations, and gives every other operation the
/// answers of the key check (401, 403) and of the HTTP layer's time limit (408).
struct Access;

impl Modify for Access {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `Authorization: Bearer <key>` or `Authorization: ApiKey <key>`",
                    ))
                    .build(),
            ),
        );
        let error = |description: &str| failure(&Failure::Error, description);
        let timed_out = RefOr::T(
            ResponseBuilder::new()
                .description("The request took longer than 65 s (no body)")
                .build(),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = PUBLIC.contains(&path.as_str());
            let operations: [&mut Option<Operation>; 4] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                if public {
                    operation.security = Some(Vec::new());
                    continue;
                }
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    error("No API key, or a key this cluster does not know"),
                );
                responses.insert(
                    "403".into(),
                    error("The API key's role does not allow this operation"),
                );
                responses.insert("408".into(), timed_out.clone());
            }
        }
    }
}

/// The document as pretty JSON with a final newline, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // Serialising a document of plain maps and strings cannot fail.
        let mut json = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        json.push('\n');
        json
    })
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regenerates the checked-in file when `UPDATE_OPENAPI` is set.
    #[test]
    fn openapi_json_matches_the_checked_in_file() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, document()).expect("write openapi.json");
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == document(),
            "openapi.json differs from the document the code generates; regenerate it with\n  \
             UPDATE_OPENAPI=1 cargo test --release -p torua --lib openapi\n\
             then validate it with scripts/check_openapi.sh and commit it"
        );
    }

    #[test]
    fn every_operation_but_the_public_ones_answers_401_and_403() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("JSON");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.contains_key("/openapi.json"));
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = &operation["responses"];
                if PUBLIC.contains(&path.as_str()) {
                    assert_eq!(
                        operation["security"],
                        serde_json::json!([]),
                        "{method} {path}"
                    );
                    assert!(responses.get("401").is_none(), "{method} {path}");
                } else {
                    assert!(operation.get("security").is_none(), "{method} {path}");
                    for status in ["401", "403", "408"] {
                        assert!(responses.get(status).is_some(), "{method} {path}: {status}");
                    }
                    let description = operation["description"].as_str().unwrap_or_default();
                    assert!(description.starts_with("Role: `"), "{method} {path}");
                    // The role the contract states is the one the gate asks for.
                    let stated = description["Role: `".len()..].split('`').next();
                    let concrete = path.replace("{id}", "x");
                    let method_ = axum::http::Method::from_bytes(method.to_uppercase().as_bytes())
                        .expect("an HTTP method");
                    let asked =
                        super::super::auth::required_role(&method_, &concrete).map(|r| r.as_str());
                    assert_eq!(stated, asked, "{method} {path}");
                }
            }
        }
        assert_eq!(doc["security"], serde_json::json!([{SCHEME: []}]));
    }

    /// The limits the annotations and schemas state as numbers.
    #[test]
    fn the_stated_limits_are_the_code_s() {
        use crate::retrieve::request as r;
        assert_eq!(super::super::MAX_BODY_BYTES, 1 << 20);
        assert_eq!(super::super::REQUEST_TIMEOUT.as_secs(), 65);
        assert_eq!(super::super::graph::MAX_INGEST_BYTES, 64 << 20);
        assert_eq!(crate::graph::model::MAX_ID_BYTES, 512);
        assert_eq!(crate::graph::model::MAX_TEXT_BYTES, 1 << 20);
        assert_eq!(crate::graph::model::MAX_LIST, 100_000);
        assert_eq!(crate::cluster::broadcast::MAX_PAYLOAD_BYTES, 65_536);
        assert_eq!(crate::cluster::broadcast::MAX_TIMEOUT.as_secs(), 30);
        assert_eq!(crate::query::scatter::MAX_SHARD_ANSWER_BYTES, 12 << 20);
        assert_eq!(
            (
                r::MAX_QUERY_BYTES,
                r::MAX_TOP_K,
                r::MAX_HOPS,
                r::MAX_TIMEOUT_MS
            ),
            (4096, 100, 3, 60_000)
        );
        assert_eq!(
            (r::MIN_MAX_TOKENS, r::MAX_MAX_TOKENS, r::DEFAULT_MAX_TOKENS),
            (100, 200_000, 12_000)
        );
        use super::super::query as q;
        assert_eq!(
            (
                q::MAX_TIMEOUT_MS,
                q::MAX_SEEDS,
                q::MAX_HOPS,
                q::MAX_PATH_HOPS
            ),
            (60_000, 1000, 3, 8)
        );
        assert_eq!((q::MAX_NODES, q::MAX_RELATIONS), (100_000, 1_000_000));
        assert_eq!(super::super::cluster::MAX_WAIT.as_secs(), 60);
    }
}
