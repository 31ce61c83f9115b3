"""Every endpoint of the torua HTTP API, once, as a generator driven by `Client` or `AsyncClient`.

Each method builds its request (path, query parameters, JSON body without unset fields), runs it
through `_exchange.exchange` and returns the typed answer. Methods made of several requests —
batched ingest, waiting for writes to be applied — are generators of generators (`yield from`).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Type, TypeVar, Union
from urllib.parse import quote

from ._exchange import Call, Nodes, Op, Settings, Sleep, backoff, exchange
from .errors import IngestFailed, ToruaError
from .types import (
    Batch,
    BroadcastResult,
    ChunkRecord,
    DocumentRecord,
    ClusterHealth,
    CreatedKey,
    DocumentDeleted,
    DrainStatus,
    RebuildStatus,
    EntityDeleted,
    EntityRecord,
    IngestResult,
    Item,
    KeyInfo,
    Member,
    Model,
    Neighborhood,
    NodeHealth,
    Path,
    QueryResult,
    Registry,
    Retrieval,
    Shards,
    Task,
)

M = TypeVar("M", bound=Model)


def _id(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id must be a non-empty string, not {value!r}")
    return quote(value, safe="")


def _body(**fields: Any) -> Dict[str, Any]:
    """A JSON body without the fields left as None (the server applies its defaults)."""
    return {k: v for k, v in fields.items() if v is not None}


def _flag(value: bool) -> Optional[str]:
    """A boolean query parameter set only when true (`"true"`)."""
    return "true" if value else None


def _duration(value: Union[None, float, int, str]) -> Optional[str]:
    """A server duration (`500ms`, `30s`) from seconds or a string given as is."""
    if value is None or isinstance(value, str):
        return value
    return f"{int(round(float(value) * 1000))}ms"


FRESHNESS = """`freshness` (every read): `"bounded"` (the server's default) waits up to the node's
`TORUA_READ_WAIT` for writes acknowledged before the read, then answers from the applied ones and
lists the shard copies still behind in `_shards.behind` (header `x-torua-behind`); `"strict"`
waits for them (read-your-writes) and raises `Unavailable` when they are not applied within 8 s."""


class Api:
    """The endpoints. Every method returns an `Op`: a generator the clients drive."""

    def __init__(self, settings: Settings, nodes: Nodes) -> None:
        self.settings = settings
        # Which node to ask first; shared by every call of the client.
        self.targets = nodes

    def call(self, call: Call) -> Op[Any]:
        return exchange(self.settings, self.targets, call)

    def _one(
        self,
        method: str,
        path: str,
        item_id: str,
        answer: Type[M],
        params: Optional[Dict[str, str]] = None,
    ) -> Op[M]:
        """`method path` with the quoted `item_id` in place of `{}`, answered with an `answer`."""
        path = path.format(_id(item_id))
        return self.call(Call(method, path, params=params or None, parse=answer.from_json))

    def _read(
        self,
        path: str,
        answer: Type[M],
        timeout_ms: Optional[int],
        allow_partial: Optional[bool],
        freshness: Optional[str],
        /,
        **body: Any,
    ) -> Op[M]:
        """`POST path` of a read across shards: `body` with the server's `timeout_ms` and
        `allow_partial` (without the unset fields), `freshness` as the query parameter; the HTTP
        timeout outlasts `timeout_ms`."""
        slow = None if timeout_ms is None else max(self.settings.timeout, timeout_ms / 1000 + 5)
        body = _body(**body, timeout_ms=timeout_ms, allow_partial=allow_partial)
        params = _body(freshness=freshness) or None
        call = Call("POST", path, params=params, json=body, parse=answer.from_json, timeout=slow)
        return self.call(call)

    # -- Nodes and cluster ----------------------------------------------------------------------

    def health(self) -> Op[NodeHealth]:
        """`GET /health`: whether the node that answers is up (no key needed)."""
        return (yield from self.call(Call("GET", "/health", parse=NodeHealth.from_json)))

    def cluster_health(
        self,
        wait_for_status: Optional[str] = None,
        timeout: Union[None, float, str] = None,
    ) -> Op[ClusterHealth]:
        """`GET /cluster/health`; with `wait_for_status` (`green`, `yellow`, `red`) the server waits
        up to `timeout` (seconds, or `"30s"`) for that status and sets `timed_out`."""
        params = _body(wait_for_status=wait_for_status, timeout=_duration(timeout))
        wait = 60.0 if wait_for_status else None
        if isinstance(timeout, (int, float)):
            wait = float(timeout)
        call = Call(
            "GET",
            "/cluster/health",
            params=params or None,
            parse=ClusterHealth.from_json,
            timeout=None if wait is None else max(self.settings.timeout, wait + 5),
        )
        return (yield from self.call(call))

    def cluster_nodes(self) -> Op[Registry]:
        """`GET /cluster/nodes`: the coordinator's registry of nodes and their last reports."""
        return (yield from self.call(Call("GET", "/cluster/nodes", parse=Registry.from_json)))

    def nodes(self) -> Op[List[Member]]:
        """`GET /nodes`: the members in the answering node's gossip view."""
        parse = lambda body: [Member.from_json(n) for n in body.get("nodes", [])]  # noqa: E731
        return (yield from self.call(Call("GET", "/nodes", parse=parse)))

    def shards(self, checksum: bool = False) -> Op[Shards]:
        """`GET /cluster/shards`: every shard copy; `checksum=True` adds each copy's checksum."""
        params = {"checksum": "true"} if checksum else None
        return (
            yield from self.call(
                Call("GET", "/cluster/shards", params=params, parse=Shards.from_json)
            )
        )

    def drain(self, node_id: str) -> Op[DrainStatus]:
        """`POST /nodes/{id}/drain`: move every copy and primary role off the node (admin)."""
        return (yield from self._one("POST", "/nodes/{}/drain", node_id, DrainStatus))

    def undrain(self, node_id: str) -> Op[DrainStatus]:
        """`DELETE /nodes/{id}/drain`: end an operator's drain (admin)."""
        return (yield from self._one("DELETE", "/nodes/{}/drain", node_id, DrainStatus))

    def rebuild_copy(self, node_id: str, shard: int) -> Op[RebuildStatus]:
        """`POST /nodes/{id}/shards/{shard}/rebuild`: rebuild the node's copy of the shard from
        another in-sync copy (admin)."""
        path = f"/nodes/{_id(node_id)}/shards/{int(shard)}/rebuild"
        return (yield from self.call(Call("POST", path, parse=RebuildStatus.from_json)))

    def metrics(self) -> Op[str]:
        """`GET /metrics`: Prometheus text."""
        return (yield from self.call(Call("GET", "/metrics", text=True)))

    def openapi(self) -> Op[Dict[str, Any]]:
        """`GET /openapi.json`: the API's OpenAPI 3.1 contract."""
        return (yield from self.call(Call("GET", "/openapi.json")))

    def broadcast(
        self, path: str, payload: Any, timeout: Union[None, float, str] = None
    ) -> Op[BroadcastResult]:
        """`POST /broadcast`: send `payload` to the handler `path` of every node (admin)."""
        params = _body(timeout=_duration(timeout))
        call = Call(
            "POST",
            "/broadcast",
            params=params or None,
            json={"path": path, "payload": payload},
            parse=BroadcastResult.from_json,
            idempotent=False,
        )
        return (yield from self.call(call))

    def wait_applied(self, timeout: float = 600.0, poll: float = 0.2) -> Op[None]:
        """Wait until every acknowledged write is applied (visible): `pending_writes` of
        `/cluster/shards` is 0. Raises `TimeoutError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            shards = yield from self.shards()
            if shards.pending_writes == 0:
                return None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{shards.pending_writes} writes still being applied after {timeout:.0f} s"
                )
            yield Sleep(poll)

    # -- Graph writes and point reads -----------------------------------------------------------

    def ingest(
        self,
        items: Union[Batch, Mapping[str, Sequence[Item]]],
        batch_size: Optional[int] = None,
        wait: bool = False,
    ) -> Op[IngestResult]:
        """`POST /graph/ingest`: upsert entities, relations, chunks, communities and documents
        (dataclasses or dicts), `batch_size` items per request (default the client's), entities
        first. 429/503 are retried with backoff; a batch the cluster wrote only in part is sent
        again, and raises `IngestFailed` listing the items if it still fails. `wait=True` returns
        once the writes are visible to reads."""
        batch = Batch.of(items)
        total = IngestResult(batches=0)
        retries = self.settings.retries
        for part in batch.split(batch_size or self.settings.batch_size):
            body = part.to_json()
            call = Call(
                "POST",
                "/graph/ingest",
                json=body,
                parse=IngestResult.from_json,
                timeout=max(self.settings.timeout, 70.0),
            )
            for attempt in range(retries + 1):
                answer = yield from self.call(call)
                if not answer.errors:
                    break
                if attempt == retries:
                    raise IngestFailed(
                        f"{answer.failed} items were not written",
                        status=200,
                        body=answer.raw,
                        method="POST",
                        url="/graph/ingest",
                    )
                yield Sleep(backoff(self.settings, attempt, None))
            total.add(answer)
        if wait:
            yield from self.wait_applied()
        return total

    def get_entity(self, entity_id: str, *, freshness: Optional[str] = None) -> Op[EntityRecord]:
        """`GET /graph/entities/{id}`: the entity and its relations; `NotFound` if absent.
        See `FRESHNESS`."""
        params = _body(freshness=freshness)
        return (yield from self._one("GET", "/graph/entities/{}", entity_id, EntityRecord, params))

    def get_chunk(self, chunk_id: str, *, freshness: Optional[str] = None) -> Op[ChunkRecord]:
        """`GET /graph/chunks/{id}`: a text unit; `NotFound` if absent. See `FRESHNESS`."""
        params = _body(freshness=freshness)
        return (yield from self._one("GET", "/graph/chunks/{}", chunk_id, ChunkRecord, params))

    def get_document(
        self, document_id: str, *, freshness: Optional[str] = None
    ) -> Op[DocumentRecord]:
        """`GET /graph/documents/{id}`: a document; `NotFound` if absent. See `FRESHNESS`."""
        params = _body(freshness=freshness)
        path = "/graph/documents/{}"
        return (yield from self._one("GET", path, document_id, DocumentRecord, params))

    def delete_entity(self, entity_id: str) -> Op[EntityDeleted]:
        """`DELETE /graph/entities/{id}`: the entity and its relations, in every shard."""
        return (yield from self._one("DELETE", "/graph/entities/{}", entity_id, EntityDeleted))

    def delete_document(self, document_id: str) -> Op[DocumentDeleted]:
        """`DELETE /graph/documents/{id}`: the document, its text units, and what only they
        supported; the answer says what was removed and what updated, by kind."""
        return (yield from self._one("DELETE", "/graph/documents/{}", document_id, DocumentDeleted))

    # -- Queries, traversals, retrieval ---------------------------------------------------------

    def query(
        self,
        cypher: str,
        params: Optional[Mapping[str, Any]] = None,
        *,
        shards: Optional[Sequence[int]] = None,
        merge: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        allow_partial: Optional[bool] = None,
        freshness: Optional[str] = None,
    ) -> Op[QueryResult]:
        """`POST /query`: read-only Cypher over every shard (admin), merged as one database would
        answer (`merge="global"`) or shard by shard (`merge="per_shard"`)."""
        read = self._read(
            "/query",
            QueryResult,
            timeout_ms,
            allow_partial,
            freshness,
            cypher=cypher,
            params=dict(params) if params is not None else None,
            shards=list(shards) if shards is not None else None,
            merge=merge,
        )
        return (yield from read)

    def neighborhood(
        self,
        seeds: Union[str, Iterable[str]],
        hops: Optional[int] = None,
        *,
        direction: Optional[str] = None,
        min_weight: Optional[float] = None,
        description_contains: Optional[str] = None,
        max_nodes: Optional[int] = None,
        max_relations: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        allow_partial: Optional[bool] = None,
        freshness: Optional[str] = None,
    ) -> Op[Neighborhood]:
        """`POST /graph/neighborhood`: entities and relations within `hops` of the seeds."""
        seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        rfilter = _body(min_weight=min_weight, description_contains=description_contains)
        read = self._read(
            "/graph/neighborhood",
            Neighborhood,
            timeout_ms,
            allow_partial,
            freshness,
            seeds=seeds,
            hops=hops,
            direction=direction,
            relation_filter=rfilter or None,
            max_nodes=max_nodes,
            max_relations=max_relations,
        )
        return (yield from read)

    def path(
        self,
        source: str,
        target: str,
        max_hops: Optional[int] = None,
        *,
        direction: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        allow_partial: Optional[bool] = None,
        freshness: Optional[str] = None,
    ) -> Op[Path]:
        """`POST /graph/path`: a shortest path from `source` to `target` (`found=False` with the
        reason when there is none within `max_hops`; `NotFound` when an end does not exist)."""
        read = self._read(
            "/graph/path",
            Path,
            timeout_ms,
            allow_partial,
            freshness,
            **{"from": source, "to": target},
            max_hops=max_hops,
            direction=direction,
        )
        return (yield from read)

    def retrieve(
        self,
        query: Optional[str] = None,
        *,
        embedding: Optional[Sequence[float]] = None,
        mode: Optional[str] = None,
        top_k: Optional[int] = None,
        hops: Optional[int] = None,
        max_tokens: Optional[int] = None,
        include: Optional[Sequence[str]] = None,
        community_level: Optional[int] = None,
        tokenizer: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        allow_partial: Optional[bool] = None,
        freshness: Optional[str] = None,
    ) -> Op[Retrieval]:
        """`POST /retrieve`: the entities, relations, text units and community reports for a
        question (text, embedding or both), ranked and fitted to `max_tokens`, with
        `context_text` in GraphRAG's layout."""
        if query is None and embedding is None:
            raise ValueError("retrieve needs a query text, an embedding, or both")
        read = self._read(
            "/retrieve",
            Retrieval,
            timeout_ms,
            allow_partial,
            freshness,
            query=query,
            embedding=[float(x) for x in embedding] if embedding is not None else None,
            mode=mode,
            top_k=top_k,
            hops=hops,
            max_tokens=max_tokens,
            include=list(include) if include is not None else None,
            community_level=community_level,
            tokenizer=tokenizer,
        )
        return (yield from read)

    # -- Graph algorithms, run as tasks ---------------------------------------------------------

    def _task_call(
        self,
        method: str,
        path: str,
        wait: bool,
        timeout: Union[None, float, str],
        json: Any = None,
        idempotent: bool = True,
    ) -> Call:
        """A call answered with a `Task` (200 ended, 202 running), with `wait_for_completion` and
        `timeout` as query parameters; while the server waits (up to 60 s), so does the client."""
        params = _body(wait_for_completion=_flag(wait), timeout=_duration(timeout))
        slow = None
        if wait:
            seconds = float(timeout) if isinstance(timeout, (int, float)) else 60.0
            slow = max(self.settings.timeout, min(seconds, 60.0) + 10)
        return Call(
            method,
            path,
            params=params or None,
            json=json,
            parse=Task.from_json,
            idempotent=idempotent,
            timeout=slow,
        )

    def run_algorithm(
        self,
        name: str,
        *,
        wait: bool = False,
        timeout: Union[None, float, str] = None,
        damping: Optional[float] = None,
        iterations: Optional[int] = None,
        tolerance: Optional[float] = None,
        top_k: Optional[int] = None,
        members: Optional[bool] = None,
        write: Optional[bool] = None,
    ) -> Op[Task]:
        """`POST /graph/algorithms/{name}` (write): start `pagerank` (`damping`, `iterations`,
        `tolerance`), `wcc` (`members`), `degree` or `louvain` (`iterations`, `members`) over
        the whole graph, as a task driven by the node that answers; `top_k` results
        (`write=True`: also stored as entity properties). Returns the task at once (running), or
        with `wait=True` once it ended or the server's wait (`timeout`, seconds or `"30s"`,
        default 30 s, at most 60 s) ran out: check `done`, or use `wait_task`. A parameter for
        another algorithm raises `BadRequest`. Never sent twice after a timeout (it would start
        a second task)."""
        body = _body(
            damping=damping,
            iterations=iterations,
            tolerance=tolerance,
            top_k=top_k,
            members=members,
            write=write,
        )
        path = f"/graph/algorithms/{_id(name)}"
        call = self._task_call("POST", path, wait, timeout, json=body, idempotent=False)
        return (yield from self.call(call))

    def pagerank(self, **options: Any) -> Op[Task]:
        """`POST /graph/algorithms/pagerank` (write): `run_algorithm("pagerank", **options)`
        (`damping`, `iterations`, `tolerance`, `top_k`, `write`, `wait`, `timeout`); the
        result's `top` holds the highest ranks (`write=True`: each entity's `pagerank`)."""
        return (yield from self.run_algorithm("pagerank", **options))

    def wcc(self, **options: Any) -> Op[Task]:
        """`POST /graph/algorithms/wcc` (write): weakly connected components (`top_k`,
        `members`, `write`, `wait`, `timeout`); the result has their number (`components`) and
        the `top_k` largest (with `members=True`, their ids; `write=True`: each entity's
        `component`)."""
        return (yield from self.run_algorithm("wcc", **options))

    def degree(self, **options: Any) -> Op[Task]:
        """`POST /graph/algorithms/degree` (write): relations at each entity (`top_k`, `write`,
        `wait`, `timeout`); `write=True` stores each entity's `degree`."""
        return (yield from self.run_algorithm("degree", **options))

    def louvain(self, **options: Any) -> Op[Task]:
        """`POST /graph/algorithms/louvain` (write): communities (`iterations`, `top_k`,
        `members`, `write`, `wait`, `timeout`); the result has their number (`components`), the
        `top_k` largest (with `members=True`, their ids) and `modularity` (`write=True`: each
        entity's `community`)."""
        return (yield from self.run_algorithm("louvain", **options))

    def task(
        self, task_id: str, *, wait: bool = False, timeout: Union[None, float, str] = None
    ) -> Op[Task]:
        """`GET /tasks/{id}` (read): a task's state, progress and result, from any node. With
        `wait=True` the answer comes once it ended or `timeout` ran out (at most 60 s)."""
        path = f"/tasks/{_id(task_id)}"
        return (yield from self.call(self._task_call("GET", path, wait, timeout)))

    def tasks(self) -> Op[List[Task]]:
        """`GET /tasks` (read): the tasks the answering node drives, running and recently
        ended, newest first."""
        parse = lambda body: [Task.from_json(t) for t in body.get("tasks", [])]  # noqa: E731
        return (yield from self.call(Call("GET", "/tasks", parse=parse)))

    def cancel_task(self, task_id: str) -> Op[str]:
        """`POST /tasks/{id}/_cancel` (write): ask a running task to stop before its next
        superstep (it writes nothing); returns its id. An ended task is left as it is."""
        parse = lambda body: body.get("cancel_requested", task_id)  # noqa: E731
        path = f"/tasks/{_id(task_id)}/_cancel"
        return (yield from self.call(Call("POST", path, parse=parse)))

    def wait_task(self, task_id: str, timeout: float = 600.0, poll: float = 0.2) -> Op[Task]:
        """Poll `GET /tasks/{id}` every `poll` seconds until the task ended (completed, failed
        or cancelled) and return it. Raises `TimeoutError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            task = yield from self.task(task_id)
            if task.done:
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"task {task_id} still {task.state} ({task.progress.phase}, "
                    f"{task.progress.supersteps} supersteps) after {timeout:.0f} s"
                )
            yield Sleep(poll)

    # -- API keys -------------------------------------------------------------------------------

    def create_key(self, role: str, name: Optional[str] = None) -> Op[CreatedKey]:
        """`POST /keys`: a new key with `role` (`read`, `write`, `admin`); the answer is the only
        place the key itself appears (admin)."""
        call = Call(
            "POST",
            "/keys",
            json=_body(role=role, name=name),
            parse=CreatedKey.from_json,
            idempotent=False,
        )
        return (yield from self.call(call))

    def list_keys(self) -> Op[List[KeyInfo]]:
        """`GET /keys`: every key's id, name, role and creation time (admin)."""
        parse = lambda body: [KeyInfo.from_json(k) for k in body.get("keys", [])]  # noqa: E731
        return (yield from self.call(Call("GET", "/keys", parse=parse)))

    def revoke_key(self, key_id: str) -> Op[str]:
        """`DELETE /keys/{id}`: revoke a key; returns its id (admin)."""
        parse = lambda body: body.get("revoked", key_id)  # noqa: E731
        return (yield from self.call(Call("DELETE", f"/keys/{_id(key_id)}", parse=parse)))


# The endpoint methods the clients expose, in the order of the API reference.
ENDPOINTS = (
    "health",
    "cluster_health",
    "cluster_nodes",
    "nodes",
    "shards",
    "drain",
    "undrain",
    "rebuild_copy",
    "metrics",
    "openapi",
    "broadcast",
    "wait_applied",
    "ingest",
    "get_entity",
    "get_chunk",
    "get_document",
    "delete_entity",
    "delete_document",
    "query",
    "neighborhood",
    "path",
    "retrieve",
    "run_algorithm",
    "pagerank",
    "wcc",
    "degree",
    "louvain",
    "task",
    "tasks",
    "cancel_task",
    "wait_task",
    "create_key",
    "list_keys",
    "revoke_key",
)

__all__ = ["Api", "ENDPOINTS", "ToruaError"]
