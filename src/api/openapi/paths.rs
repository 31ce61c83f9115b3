//! Every route's entry in the OpenAPI document: its method and path, summary, description (with
//! the role it needs), parameters, body and answers, in one place, with the sets of failures
//! several routes share. Each entry documents the
//! handler of the same name in the area files (`super::super::<area>`); the document test keeps
//! `openapi.json` equal to what these generate, and the schemathesis test
//! (`tests/fuzz_process.rs`) checks a running cluster against it.
// The functions are anchors for the attributes; the handlers that serve the routes are the area
// files' functions of the same names.
#![allow(dead_code)]

use super::super::algorithms::{AlgorithmBody, Cancelled, TaskList, WaitQuery};
use super::super::broadcast::{BroadcastBody, BroadcastQuery};
use super::super::cluster::{HealthAnswer, HealthQuery};
use super::super::freshness::ReadParams;
use super::super::graph::ShardsQuery;
use super::super::keys::{CreateKey, CreatedKey, KeyList, Revoked};
use super::super::query::{NeighborhoodBody, PathBody, QueryBody};
use super::super::schema::{
    ChunkAnswer, CypherAnswer, DeleteAnswer, DocumentAnswer, DrainAnswer, EntityAnswer, ErrorBody,
    IngestAnswer, IngestRefused, IngestUnavailable, NeighborhoodAnswer, NodeHealthAnswer,
    NodesAnswer, PathAnswer, RebuildAnswer, RegistryAnswer, RetrieveAnswer,
};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, PartialSchema};

use crate::cluster::broadcast::BroadcastAnswer;
use crate::cluster::copies::Copies;
use crate::graph::model::Batch;
use crate::query::algorithms::TaskView;
use crate::replication::document::DocumentDeleted;
use crate::retrieve::request::RetrieveBody;

/// How a failure answers: its body, and whether it says when to ask again.
pub(super) enum Failure {
    /// An [`ErrorBody`].
    Error,
    /// An [`ErrorBody`] with `Retry-After: 1`.
    Retry,
    /// Plain text from the HTTP layer.
    Text,
}

/// The response a failure documents.
pub(super) fn failure(kind: &Failure, description: &str) -> RefOr<Response> {
    let json = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build()
    };
    let response = ResponseBuilder::new().description(description);
    RefOr::T(
        match kind {
            Failure::Error => response.content("application/json", json()),
            Failure::Retry => response.content("application/json", json()).header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(u32::schema())
                    .description(Some("Seconds to wait before asking again (always 1)"))
                    .build(),
            ),
            Failure::Text => response.content(
                "text/plain",
                ContentBuilder::new().schema(Some(String::schema())).build(),
            ),
        }
        .build(),
    )
}

/// A set of failures several operations share, listed once: `responses(..., ScatterFailures)`.
/// `+ Other` after the list adds another set's failures.
macro_rules! failures {
    ($(#[$doc:meta])* $name:ident: $(($status:literal, $kind:ident, $description:literal)),+ $(,)? $(+ $base:ident)?) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
                #[allow(unused_mut)]
                let mut all: std::collections::BTreeMap<String, RefOr<Response>> =
                    [$(($status.to_string(), failure(&Failure::$kind, $description))),+].into();
                $(all.extend($base::responses());)?
                all
            }
        }
    };
}

failures!(
    /// What every scatter read (`/query`, `/graph/neighborhood`, `/graph/path`, `/retrieve`) can
    /// answer besides its own failures.
    ScatterFailures:
    (413, Text, "The body is larger than 1 MiB (plain-text answer from the HTTP layer)"),
    (429, Retry, "Too many requests in flight on this node (for `POST /query`, also more than `TORUA_MAX_USER_QUERIES` Cypher statements)"),
    (503, Retry, "No shard map yet, or a shard had no copy that could answer (and `allow_partial` is false)"),
    (504, Error, "The shards did not answer within `timeout_ms`"),
    + Internal
);

failures!(
    /// What a point read of one item by id can answer besides its 404.
    PointReadFailures:
    (400, Error, "A query string that does not parse (`freshness` is `bounded` or `strict`)"),
    (503, Retry, "No shard map yet (the cluster is forming), or no copy of the shard could answer (with `Retry-After`; with `freshness=strict`, also a copy whose acknowledged writes are not applied within 8 s)"),
    (504, Error, "No copy answered in time"),
    + Internal
);

failures!(
    /// What a change the coordinator makes to cluster metadata (API keys) can fail with.
    CoordinatorFailures:
    (503, Retry, "The coordinator is not reachable, the cluster is forming, or no coordinator with a quorum accepted the change"),
    (504, Error, "The coordinator did not answer in time"),
    + Internal
);

failures!(
    /// What starting or stopping a drain can fail with.
    DrainFailures:
    (400, Error, "The request is invalid for this cluster"),
    (404, Error, "No node with this id"),
    + CoordinatorFailures
);

failures!(
    /// What a write of one item's change (a delete) can fail with besides its own answers.
    WriteFailures:
    (503, Retry, "No shard map yet (the cluster is forming), no quorum, a shard with no live copy, or no primary could take the write; what was done stays done: send the request again"),
    (504, Error, "The write was not acknowledged in time: send the request again"),
    + Internal
);

failures!(
    /// What an operator's call to one node about its copies can fail with.
    NodeCallFailures:
    (503, Retry, "No shard map yet, or the node could not be reached"),
    (504, Error, "The node did not answer in time"),
    + Internal
);

failures!(
    /// What every operation can answer when torua itself fails.
    Internal:
    (500, Error, "An internal error (a bug)"),
);

#[utoipa::path(
    get,
    path = "/health",
    tag = "node",
    summary = "Whether this process is up",
    description = "Open to everyone (no API key): load balancers probe it. Answers 200 while the process serves HTTP, whatever the cluster's state.",
    responses((status = 200, description = "The process is up", body = NodeHealthAnswer))
)]
fn node_health() {}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    summary = "Prometheus metrics of this node",
    description = "Role: `read`. The Prometheus text exposition format (version 0.0.4).",
    responses((status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String))
)]
fn metrics() {}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "node",
    summary = "This API's OpenAPI 3.1 document",
    description = "Open to everyone (no API key), like `GET /health`.",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object))
)]
fn openapi_json() {}

#[utoipa::path(
    get,
    path = "/cluster/health",
    tag = "cluster",
    summary = "The cluster's health",
    description = "Role: `read`. The coordinator's aggregated verdict, or this node's local one when the coordinator does not answer (`source`). With `wait_for_status`, waits until the status is at least that good or `timeout` passes (`timed_out`).",
    params(HealthQuery),
    responses(
        (status = 200, description = "The health", body = HealthAnswer),
        (status = 400, description = "A bad `wait_for_status` or `timeout`, or a query string that does not parse", body = ErrorBody),
    )
)]
fn cluster_health() {}

#[utoipa::path(
    get,
    path = "/cluster/nodes",
    tag = "cluster",
    summary = "The coordinator's registry",
    description = "Role: `read`. Every registered node with its registration and last health report, as the coordinator has them.",
    responses(
        (status = 200, description = "The registry", body = RegistryAnswer),
        (status = 503, description = "The coordinator did not answer or could not list its registry (no `Retry-After`; `GET /nodes` gives this node's gossip view)", body = ErrorBody),
    )
)]
fn registry() {}

#[utoipa::path(
    get,
    path = "/nodes",
    tag = "cluster",
    summary = "The members in this node's gossip view",
    description = "Role: `read`. `addr` is each node's HTTP address.",
    responses((status = 200, description = "The members", body = NodesAnswer))
)]
fn nodes() {}

#[utoipa::path(
    post,
    path = "/nodes/{id}/drain",
    tag = "cluster",
    summary = "Drain a node",
    description = "Role: `admin`. Moves every shard copy and primary role off the node (progress in `GET /cluster/shards`); lasts until `DELETE /nodes/{id}/drain`.",
    params(("id" = String, Path, description = "The node's id")),
    responses(
        (status = 200, description = "The shard map records the change", body = DrainAnswer),
        DrainFailures,
    )
)]
fn drain() {}

#[utoipa::path(
    delete,
    path = "/nodes/{id}/drain",
    tag = "cluster",
    summary = "Stop draining a node",
    description = "Role: `admin`. Copies may move back by rebalancing.",
    params(("id" = String, Path, description = "The node's id")),
    responses(
        (status = 200, description = "The shard map records the change", body = DrainAnswer),
        DrainFailures,
    )
)]
fn undrain() {}

#[utoipa::path(
    post,
    path = "/nodes/{id}/shards/{shard}/rebuild",
    tag = "cluster",
    summary = "Rebuild a shard copy from another copy",
    description = "Role: `admin`. The copy leaves the in-sync set (a primary hands its role to another in-sync copy first) and is replaced by a snapshot of the primary's, then rejoins; progress in `GET /cluster/shards`. For a copy you distrust, e.g. one of two copies anti-entropy found differing (`GET /cluster/health` names the shard).",
    params(
        ("id" = String, Path, description = "The node holding the copy"),
        ("shard" = u32, Path, description = "The shard"),
    ),
    responses(
        (status = 202, description = "The node marked its copy for a rebuild", body = RebuildAnswer),
        (status = 400, description = "The copy is the shard's only in-sync copy: there is nothing to rebuild it from", body = ErrorBody),
        (status = 404, description = "No such shard, or the node holds no copy of it", body = ErrorBody),
        NodeCallFailures,
    )
)]
fn rebuild() {}

#[utoipa::path(
    post,
    path = "/broadcast",
    tag = "cluster",
    summary = "Deliver a message to every member",
    description = "Role: `admin`. Sends `payload` to the `path` handler of every member and reports each node's answer. The body is at most 1 MiB; the payload at most 65536 bytes serialised.",
    params(BroadcastQuery),
    request_body(content = BroadcastBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Each member's answer", body = BroadcastAnswer),
        (status = 400, description = "Malformed JSON, a body over 1 MiB, a bad `timeout` or an unknown `path`", body = ErrorBody),
        (status = 413, description = "The payload is larger than 65536 bytes", body = ErrorBody),
    )
)]
fn broadcast() {}

#[utoipa::path(
    post,
    path = "/graph/ingest",
    tag = "graph",
    summary = "Write a batch of entities, relations, chunks, communities and documents",
    description = "Role: `write`. A JSON batch, or NDJSON (`Content-Type` containing `ndjson`): one `{\"entity\": {...}}`, `{\"relation\": ...}`, `{\"chunk\": ...}`, `{\"community\": ...}` or `{\"document\": ...}` per line. The body is at most 64 MiB. Every item is checked first (ids and titles at most 512 bytes, texts at most 1 MiB, id lists at most 100000 entries, embeddings of `TORUA_EMBEDDING_DIM` numbers): one invalid item refuses the whole batch. A document stored before whose `text_unit_ids` listed text units the new version does not list (and the batch does not write) first loses them, with whatever only they supported, as `DELETE /graph/documents/{id}` removes them (`replaced`). A 200 may still list items not written (`errors`, `items`).",
    request_body(content(
        (Batch = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "Written; `items` lists what was not (a shard's write not acknowledged)", body = IngestAnswer),
        (status = 400, description = "Malformed JSON or NDJSON, an empty batch, or invalid items (`items`; nothing was written)", body = IngestRefused),
        (status = 413, description = "The body is larger than 64 MiB (plain-text answer from the HTTP layer)", content_type = "text/plain", body = String),
        (status = 429, description = "Too many ingest requests in flight on this node", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before asking again (always 1)"))),
        (status = 503, description = "No shard map yet or no quorum (nothing written), or a shard had no room to apply (the answer lists the items not written)", body = IngestUnavailable, headers(("Retry-After" = u32, description = "Seconds to wait before asking again (always 1)"))),
    )
)]
fn ingest() {}

#[utoipa::path(
    get,
    path = "/graph/entities/{id}",
    tag = "graph",
    summary = "An entity and its relations",
    description = "Role: `read`. Read from an in-sync copy of the entity's shard.",
    params(("id" = String, Path, description = "The entity's id"), ReadParams),
    responses(
        (status = 200, description = "The entity", body = EntityAnswer, headers(("x-torua-behind" = String, description = "Present when a shard copy answered before the writes acknowledged ahead of the read were applied (`freshness=bounded`, past `TORUA_READ_WAIT`): `shard=N; node=ID; applied_seq=A; logged_seq=L` per copy, comma-separated"))),
        (status = 404, description = "No entity with this id", body = ErrorBody, headers(("x-torua-behind" = String, description = "Present when the copy that answered was behind acknowledged writes: the item may be among them"))),
        PointReadFailures,
    )
)]
fn get_entity() {}

#[utoipa::path(
    get,
    path = "/graph/chunks/{id}",
    tag = "graph",
    summary = "A chunk (text unit)",
    description = "Role: `read`. Read from an in-sync copy of the chunk's shard.",
    params(("id" = String, Path, description = "The chunk's id"), ReadParams),
    responses(
        (status = 200, description = "The chunk", body = ChunkAnswer, headers(("x-torua-behind" = String, description = "Present when a shard copy answered before the writes acknowledged ahead of the read were applied (`freshness=bounded`, past `TORUA_READ_WAIT`): `shard=N; node=ID; applied_seq=A; logged_seq=L` per copy, comma-separated"))),
        (status = 404, description = "No chunk with this id", body = ErrorBody, headers(("x-torua-behind" = String, description = "Present when the copy that answered was behind acknowledged writes: the item may be among them"))),
        PointReadFailures,
    )
)]
fn get_chunk() {}

#[utoipa::path(
    get,
    path = "/graph/documents/{id}",
    tag = "graph",
    summary = "A document",
    description = "Role: `read`. Read from an in-sync copy of the document's shard.",
    params(("id" = String, Path, description = "The document's id"), ReadParams),
    responses(
        (status = 200, description = "The document", body = DocumentAnswer, headers(("x-torua-behind" = String, description = "Present when a shard copy answered before the writes acknowledged ahead of the read were applied (`freshness=bounded`, past `TORUA_READ_WAIT`): `shard=N; node=ID; applied_seq=A; logged_seq=L` per copy, comma-separated"))),
        (status = 404, description = "No document with this id", body = ErrorBody, headers(("x-torua-behind" = String, description = "Present when the copy that answered was behind acknowledged writes: the item may be among them"))),
        PointReadFailures,
    )
)]
fn get_document() {}

#[utoipa::path(
    delete,
    path = "/graph/documents/{id}",
    tag = "graph",
    summary = "Delete a document, its text units and what only they support",
    description = "Role: `write`. Removes the document, its text units (the chunks it lists in `text_unit_ids` and the chunks whose `document_id` it is), the entities and relations whose `text_unit_ids` cite only those text units (in every shard, both copies of each relation, with an entity's remaining relations), and takes the removed text units out of the `text_unit_ids` of the other entities and relations. Communities lose removed entities from `entity_ids` and their reports are marked `stale` in retrieval answers. Entities and relations with no `text_unit_ids` are never touched. Idempotent: after a failure (503, 504, a node down) send it again and it finishes what is left; a document already deleted answers 200 with `found: false` and zero counts. At most 100000 text units per document.",
    params(("id" = String, Path, description = "The document's id (at most 512 bytes)")),
    responses(
        (status = 200, description = "Deleted (or nothing left to delete: `found: false`)", body = DocumentDeleted),
        (status = 400, description = "The id is too long, or the document has too many text units", body = ErrorBody),
        WriteFailures,
    )
)]
fn delete_document() {}

#[utoipa::path(
    delete,
    path = "/graph/entities/{id}",
    tag = "graph",
    summary = "Delete an entity and its relations",
    description = "Role: `write`.",
    params(("id" = String, Path, description = "The entity's id")),
    responses(
        (status = 200, description = "Deleted", body = DeleteAnswer),
        (status = 400, description = "The request is invalid", body = ErrorBody),
        (status = 404, description = "No entity with this id", body = ErrorBody),
        WriteFailures,
    )
)]
fn delete_entity() {}

#[utoipa::path(
    get,
    path = "/cluster/shards",
    tag = "cluster",
    summary = "Every shard copy",
    description = "Role: `read`. Each copy's node, role, state, counts and size, with moves and drains in progress.",
    params(ShardsQuery),
    responses(
        (status = 200, description = "The copies", body = Copies),
        (status = 400, description = "A query string that does not parse", body = ErrorBody),
        (status = 503, description = "No shard map yet: the cluster is forming", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before asking again (always 1)"))),
    )
)]
fn shards() {}

#[utoipa::path(
    post,
    path = "/query",
    tag = "query",
    summary = "Read-only Cypher over every shard, merged",
    description = "Role: `admin`. The body is at most 1 MiB. Each shard's answer is at most 12 MiB. A node runs at most `TORUA_MAX_USER_QUERIES` statements at once (default 4). Refused before reaching a shard: writes, procedures that are not lookups, list lambdas and parameters used without a value in `params`.",
    request_body(content = QueryBody, content_type = "application/json"),
    params(ReadParams),
    responses(
        (status = 200, description = "The rows (`merge: global`) or each shard's rows (`merge: per_shard`)", body = CypherAnswer, headers(("x-torua-behind" = String, description = "Present when a shard copy answered before the writes acknowledged ahead of the read were applied (`freshness=bounded`, past `TORUA_READ_WAIT`): `shard=N; node=ID; applied_seq=A; logged_seq=L` per copy, comma-separated"))),
        (status = 400, description = "A malformed request, a bad field or `freshness`, or a statement that is not read-only or cannot be merged", body = ErrorBody),
        (status = 404, description = "A shard listed in `shards` is not in the shard map", body = ErrorBody),
        ScatterFailures,
    )
)]
fn query() {}

#[utoipa::path(
    post,
    path = "/graph/neighborhood",
    tag = "query",
    summary = "The entities and relations within `hops` of the seeds",
    description = "Role: `read`. The body is at most 1 MiB.",
    request_body(content = NeighborhoodBody, content_type = "application/json"),
    params(ReadParams),
    responses(
        (status = 200, description = "The neighborhood", body = NeighborhoodAnswer, headers(("x-torua-behind" = String, description = "Present when a shard copy answered before the writes acknowledged ahead of the read were applied (`freshness=bounded`, past `TORUA_READ_WAIT`): `shard=N; node=ID; applied_seq=A; logged_seq=L` per copy, comma-separated"))),
        (status = 400, description = "A malformed request, a field out of range, or a `freshness` that is not `bounded` or `strict`", body = ErrorBody),
        (status = 422, description = "The traversal grew too large to gather", body = ErrorBody),
        ScatterFailures,
    )
)]
fn neighborhood() {}

#[utoipa::path(
    post,
    path = "/graph/path",
    tag = "query",
    summary = "A shortest path between two entities",
    description = "Role: `read`. The body is at most 1 MiB. No path within `max_hops` is a 200 with `found: false`.",
    request_body(content = PathBody, content_type = "application/json"),
    params(ReadParams),
    responses(
        (status = 200, description = "The path, or why none was found", body = PathAnswer, headers(("x-torua-behind" = String, description = "Present when a shard copy answered before the writes acknowledged ahead of the read were applied (`freshness=bounded`, past `TORUA_READ_WAIT`): `shard=N; node=ID; applied_seq=A; logged_seq=L` per copy, comma-separated"))),
        (status = 400, description = "A malformed request, a field out of range, or a `freshness` that is not `bounded` or `strict`", body = ErrorBody),
        (status = 404, description = "`from` or `to` does not exist", body = ErrorBody, headers(("x-torua-behind" = String, description = "Present when the copy that answered was behind acknowledged writes: the item may be among them"))),
        (status = 422, description = "The traversal grew too large to gather", body = ErrorBody),
        ScatterFailures,
    )
)]
fn path() {}

#[utoipa::path(
    post,
    path = "/retrieve",
    tag = "retrieve",
    summary = "GraphRAG retrieval: the context of a question",
    description = "Role: `read`. From a question (text and/or embedding) to the entities, relations, text units and community reports that answer it, fitted into `max_tokens` in GraphRAG's proportions. The body is at most 1 MiB.",
    request_body(content = RetrieveBody, content_type = "application/json"),
    params(ReadParams),
    responses(
        (status = 200, description = "The context", body = RetrieveAnswer, headers(("x-torua-behind" = String, description = "Present when a shard copy answered before the writes acknowledged ahead of the read were applied (`freshness=bounded`, past `TORUA_READ_WAIT`): `shard=N; node=ID; applied_seq=A; logged_seq=L` per copy, comma-separated"))),
        (status = 400, description = "A malformed request, a field out of range, or a `freshness` that is not `bounded` or `strict`", body = ErrorBody),
        (status = 422, description = "The context grew too large to gather", body = ErrorBody),
        ScatterFailures,
    )
)]
fn retrieve() {}

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
fn create() {}

#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    summary = "List the API keys",
    description = "Role: `admin`. Ids, names, roles and creation times; never the keys.",
    responses((status = 200, description = "The keys", body = KeyList))
)]
fn list() {}

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
fn revoke() {}

failures!(
    /// What a graph algorithm task's start or status can fail with besides its own answers.
    TaskFailures:
    (503, Retry, "This node already drives 2 running tasks, no shard map yet, a shard with no live in-sync copy, or the node that drives the task could not be reached"),
    (504, Error, "The node that drives the task did not answer in time"),
    + Internal
);

#[utoipa::path(
    post,
    path = "/graph/algorithms/{name}",
    tag = "algorithms",
    summary = "Run a graph algorithm over the whole graph, as a task",
    description = "Role: `write`. `pagerank` (Kuzu's PageRank: damping, iterations, tolerance), `wcc` (weakly connected components, run until no label changes), `degree` (relations at each entity) or `louvain` (communities: rounds of moves across the shards, then Louvain on the contracted graph; the answer carries its modularity). With `write: true` each entity's result is stored in its property `pagerank`, `component`, `degree` or `community` (components and communities are named by one of their entities), through the replicated write path, after the last superstep; each shard's write is all or nothing, shards one after another. Every shard is read from one live in-sync copy when the task starts; the shards exchange values over QUIC in supersteps. Answers at once with the task (`202`, `Location: /tasks/{id}`), or with `wait_for_completion=true` once it ended (`200`; `202` if still running at `timeout`). A task that loses a worker fails; nothing is written before every superstep finished. The body is optional.",
    params(
        ("name" = String, Path, description = "`pagerank`, `wcc`, `degree` or `louvain`"),
        WaitQuery,
    ),
    request_body(content = Option<AlgorithmBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The task, ended (`completed`, `failed` or `cancelled`)", body = TaskView),
        (status = 202, description = "The task, still running", body = TaskView, headers(("Location" = String, description = "`/tasks/{id}`"))),
        (status = 400, description = "A malformed body, or a parameter out of range or for another algorithm", body = ErrorBody),
        (status = 404, description = "No algorithm of this name", body = ErrorBody),
        TaskFailures,
    )
)]
fn run_algorithm() {}

#[utoipa::path(
    get,
    path = "/tasks",
    tag = "algorithms",
    summary = "The tasks this node drives",
    description = "Role: `read`. Running tasks and the last 100 ended ones, newest first. Tasks do not survive a restart of the node that drives them.",
    responses((status = 200, description = "The tasks", body = TaskList))
)]
fn list_tasks() {}

#[utoipa::path(
    get,
    path = "/tasks/{id}",
    tag = "algorithms",
    summary = "A task's state, progress and result",
    description = "Role: `read`. Any node answers: it asks the node that drives the task (the id's part before the last `:`).",
    params(
        ("id" = String, Path, description = "The task's id, `<node>:<number>`"),
        WaitQuery,
    ),
    responses(
        (status = 200, description = "The task, ended", body = TaskView),
        (status = 202, description = "The task, still running", body = TaskView, headers(("Location" = String, description = "`/tasks/{id}`"))),
        (status = 400, description = "Not a task id, or a malformed `timeout`", body = ErrorBody),
        (status = 404, description = "No such task on its node (only the last 100 ended tasks are kept), or no node of the id's name in the cluster", body = ErrorBody),
        TaskFailures,
    )
)]
fn get_task() {}

#[utoipa::path(
    post,
    path = "/tasks/{id}/_cancel",
    tag = "algorithms",
    summary = "Cancel a task",
    description = "Role: `write`. The task stops before its next superstep and writes nothing; `GET /tasks/{id}` then shows `cancelled`. Cancelling an ended task changes nothing.",
    params(("id" = String, Path, description = "The task's id, `<node>:<number>`")),
    responses(
        (status = 200, description = "Cancellation asked", body = Cancelled),
        (status = 400, description = "Not a task id", body = ErrorBody),
        (status = 404, description = "No such task on its node", body = ErrorBody),
        TaskFailures,
    )
)]
fn cancel_task() {}
