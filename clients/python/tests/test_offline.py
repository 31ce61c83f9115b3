"""The client's policy without a cluster: failover, retries honouring Retry-After, errors with the
server's reason, batching, the GraphRAG folder mapping. Answers come from `httpx.MockTransport`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Callable, Dict, List

import httpx
import pytest

import torua
from torua.graphrag import assign_routing, import_graphrag, read_folder
from torua.types import Batch

from conftest import DULCE


def mock(cls: type, handler: Callable[[httpx.Request], httpx.Response], urls: List[str], **kw):
    """A `torua.Client` or `torua.AsyncClient` whose answers come from `handler`."""
    c = cls(urls, backoff=0.001, **kw)
    c._http = c._http_class(transport=httpx.MockTransport(handler), headers=c._http.headers)
    return c


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], urls: List[str], **kw
) -> torua.Client:
    return mock(torua.Client, handler, urls, **kw)


def refusing_a(
    seen: List[str], answer: Callable[[httpx.Request], httpx.Response]
) -> Callable[[httpx.Request], httpx.Response]:
    """A handler that records each request's host, refuses connections to host `a` and answers
    the others with `answer`."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "a":
            raise httpx.ConnectError("refused", request=request)
        return answer(request)

    return handler


HEALTH = {
    "status": "ok",
    "node_id": "node-2",
    "state": "ready",
    "generation": 1,
    "version": "0.1.0",
    "uptime_ms": 5,
    "log_filter": "info",
}


def test_connection_refused_and_503_fail_over_to_the_next_node() -> None:
    seen: List[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "b":
            return httpx.Response(503, json={"error": {"status": 503, "reason": "no quorum"}})
        return httpx.Response(200, json=HEALTH)

    c = mock_client(refusing_a(seen, answer), ["http://a", "http://b", "http://c"])
    assert c.health().node_id == "node-2"
    assert seen == ["a", "b", "c"]
    # The node that answered is asked first next time.
    assert c.health().status == "ok"
    assert seen[-1] == "c" and len(seen) == 4


def test_read_timeouts_fail_over_only_when_the_call_is_safe_to_repeat() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(
            201,
            json={"id": "k1", "name": "n", "role": "read", "created_ms": 1, "key": "torua_k1_x"},
        )

    c = mock_client(handler, ["http://a", "http://b"])
    assert c.list_keys.__doc__
    with pytest.raises(torua.ConnectionFailed):
        c.create_key("read")
    assert c.get_chunk("t1").raw["id"] == "k1"


def test_429_is_retried_after_retry_after() -> None:
    answers = [
        httpx.Response(
            429, headers={"retry-after": "0"}, json={"error": {"status": 429, "reason": "busy"}}
        ),
        httpx.Response(
            200,
            json={
                "took_ms": 3,
                "errors": False,
                "counts": {"entities": 1},
                "failed": 0,
                "items": [],
            },
        ),
    ]
    bodies: List[Dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return answers.pop(0)

    c = mock_client(handler, ["http://a"])
    result = c.ingest({"entities": [{"id": "e1", "title": "A"}]})
    assert result.counts == {"entities": 1} and result.batches == 1
    assert len(bodies) == 2 and bodies[0] == bodies[1] == {"entities": [{"id": "e1", "title": "A"}]}


def test_overloaded_after_the_last_retry_carries_the_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            headers={"retry-after": "0"},
            json={"error": {"status": 429, "reason": "too many queries"}},
        )

    c = mock_client(handler, ["http://a"], retries=2)
    with pytest.raises(torua.Overloaded) as e:
        c.query("MATCH (e:Entity) RETURN count(*)")
    assert e.value.status == 429 and e.value.reason == "too many queries"


def test_errors_map_statuses_and_keep_the_reason_and_items() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/graph/ingest":
            return httpx.Response(
                400,
                json={
                    "error": {"status": 400, "reason": "1 invalid item"},
                    "items": [{"kind": "entity", "index": 0, "id": "", "reason": "empty id"}],
                },
            )
        if request.url.path == "/keys":
            return httpx.Response(401, json={"error": {"status": 401, "reason": "no API key"}})
        return httpx.Response(404, json={"error": {"status": 404, "reason": 'no entity "x"'}})

    c = mock_client(handler, ["http://a"])
    with pytest.raises(torua.BadRequest) as bad:
        c.ingest({"entities": [{"id": ""}]})
    assert bad.value.items[0]["reason"] == "empty id" and bad.value.reason == "1 invalid item"
    with pytest.raises(torua.NotFound) as nf:
        c.get_entity("x")
    assert nf.value.status == 404 and "no entity" in str(nf.value)
    with pytest.raises(torua.Unauthorized):
        c.list_keys()


def test_ingest_batches_kinds_in_order() -> None:
    sizes: List[Dict[str, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sizes.append({k: len(v) for k, v in body.items()})
        return httpx.Response(
            200,
            json={
                "took_ms": 1,
                "errors": False,
                "counts": {k: len(v) for k, v in body.items()},
                "failed": 0,
                "items": [],
            },
        )

    c = mock_client(handler, ["http://a"], batch_size=3)
    batch = Batch(
        entities=[torua.Entity(id=f"e{i}") for i in range(4)],
        relations=[torua.Relation(id="r", source="e0", target="e1")],
        documents=[{"id": "d"}],
    )
    result = c.ingest(batch)
    assert sizes == [{"entities": 3}, {"entities": 1, "relations": 1, "documents": 1}]
    assert result.batches == 2 and result.counts == {"entities": 4, "relations": 1, "documents": 1}
    with pytest.raises(ValueError):
        c.ingest({"nodes": []})


def test_async_client_fails_over_and_retries() -> None:
    calls: List[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if len(calls) == 2:
            return httpx.Response(
                503,
                headers={"retry-after": "0"},
                json={"error": {"status": 503, "reason": "forming"}},
            )
        return httpx.Response(200, json=HEALTH)

    async def main() -> None:
        c = mock(torua.AsyncClient, refusing_a(calls, answer), ["http://a", "http://b"])
        assert (await c.health()).node_id == "node-2"
        await c.aclose()

    asyncio.run(main())
    assert calls == ["a", "b", "a", "b"]


def test_api_key_header_and_urls() -> None:
    seen: List[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"keys": []})

    c = mock_client(handler, "a:1, http://b:2/", api_key="torua_abc_def")
    assert c.urls == ["http://a:1", "http://b:2"]
    assert c.list_keys() == []
    assert seen[0].headers["authorization"] == "Bearer torua_abc_def"


def test_graphrag_folder_maps_as_torua_import_does() -> None:
    b = read_folder(DULCE)
    assert b.counts() == {
        "entities": 39,
        "relations": 107,
        "chunks": 5,
        "communities": 10,
        "documents": 1,
    }
    ids = {e.id for e in b.entities}
    # Two relationships of this index name a title that is no entity: they point at stubs.
    assert sum(1 for r in b.relations if r.source in ids and r.target in ids) == 105
    assert any(c.full_content for c in b.communities)
    assert {c.parent for c in b.communities} == {"", "0"}
    assert all(c.id.isdigit() for c in b.communities)
    assert all(ch.document_id == b.documents[0].id for ch in b.chunks)


def test_graphrag_entities_are_keyed_by_community_as_torua_import_does() -> None:
    b = read_folder(DULCE)
    p = assign_routing(b, 0, 8, min_split=1)
    # 39 entities on 8 shards: at most 8 per key; communities 0 (10) and 3 (9) split in two.
    assert (p.max_per_key, p.communities, p.split, p.parts, p.unkeyed) == (8, 7, 2, 4, 0)
    assert str(p) == (
        "placed entities by community (level 0): 7 communities as routing keys, 2 of them split "
        "into 4 keys of at most 8 entities (1.5 × the entities per shard of 8 shards, at least "
        "--min-split); 0 entities in no community, placed by id"
    )
    per_key: Dict[str, int] = {}
    for e in b.entities:
        assert e.routing is not None
        per_key[e.routing] = per_key.get(e.routing, 0) + 1
    assert len(per_key) == 9 and max(per_key.values()) <= 8
    assert per_key["community:0/0"] == 5 and per_key["community:3/1"] == 4
    key = {e.id: e.routing for e in b.entities}
    for r in b.relations:
        assert (r.source_routing, r.target_routing) == (key.get(r.source), key.get(r.target))
    assert b.entities[0].to_json()["routing"] == b.entities[0].routing
    # Level 1 reaches community 0's sub-communities (7, 8, 9); the other entities keep level 0's.
    finer = read_folder(DULCE)
    assign_routing(finer, 1, 8, min_split=1)
    # By default no community this small is split.
    whole = read_folder(DULCE)
    assert assign_routing(whole, 0, 8).split == 0
    keys = {e.routing for e in finer.entities}
    assert {"community:7", "community:8", "community:9", "community:1"} <= keys
    assert not any(k.startswith("community:0") for k in keys)


def test_a_community_is_cut_along_its_relationships() -> None:
    # Community 7 lists x0..x11, two interleaved chains (even, odd); community 8 lists y0..y11
    # with no relationships; "lone" is in none: 25 entities on 4 shards, at most 10 per key.
    xs = [f"x{i}" for i in range(12)]
    ys = [f"y{i}" for i in range(12)]
    b = Batch(
        entities=[torua.Entity(id=i) for i in xs + ys + ["lone"]],
        relations=[torua.Relation(id=f"r{i}", source=xs[i], target=xs[i + 2]) for i in range(10)],
        communities=[
            torua.Community(id="7", entity_ids=xs),
            torua.Community(id="8", entity_ids=ys),
        ],
    )
    p = assign_routing(b, 0, 4, min_split=1)
    assert (p.max_per_key, p.split, p.parts, p.unkeyed) == (10, 2, 4, 1)
    key = {e.id: e.routing for e in b.entities}
    assert all(key[x] == f"community:7/{i % 2}" for i, x in enumerate(xs))
    assert (key["y5"], key["y6"], key["lone"]) == ("community:8/0", "community:8/1", None)
    assert "routing" not in b.entities[-1].to_json()


def test_graphrag_import_asks_the_shard_count_and_sends_the_keys() -> None:
    sent: List[Dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cluster/shards":
            return httpx.Response(200, json={"shards": 8, "pending_writes": 0, "copies": []})
        body = json.loads(request.content)
        sent.append(body)
        counts = {k: len(v) for k, v in body.items()}
        answer = {"took_ms": 1, "errors": False, "counts": counts, "failed": 0, "items": []}
        return httpx.Response(200, json=answer)

    c = mock_client(handler, ["http://a"])
    summary = import_graphrag(c, DULCE)
    assert summary.placement is not None and summary.placement.shards == 8
    entities = [e for body in sent for e in body.get("entities", [])]
    assert len(entities) == 39 and all(e["routing"].startswith("community:") for e in entities)
    relations = [r for body in sent for r in body.get("relations", [])]
    assert sum(1 for r in relations if "source_routing" in r and "target_routing" in r) == 105
    sent.clear()
    summary = import_graphrag(c, DULCE, routing="none")
    assert summary.placement is None
    assert not any("routing" in e for body in sent for e in body.get("entities", []))
    with pytest.raises(ValueError):
        import_graphrag(c, DULCE, routing="id")


def test_a_partly_written_batch_is_sent_again_then_reported() -> None:
    partial = {
        "took_ms": 1,
        "errors": True,
        "counts": {"entities": 0},
        "failed": 1,
        "items": [{"kind": "entity", "index": 0, "id": "e1", "reason": "shard 3 busy"}],
    }
    written = {"took_ms": 1, "errors": False, "counts": {"entities": 1}, "failed": 0, "items": []}
    answers = [partial, written]

    c = mock_client(lambda r: httpx.Response(200, json=answers.pop(0)), ["http://a"])
    assert c.ingest({"entities": [{"id": "e1"}]}).counts == {"entities": 1}

    c = mock_client(lambda r: httpx.Response(200, json=partial), ["http://a"], retries=2)
    with pytest.raises(torua.IngestFailed) as e:
        c.ingest({"entities": [{"id": "e1"}]})
    assert e.value.items[0]["reason"] == "shard 3 busy"


def test_a_node_that_never_answers_times_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    c = mock_client(handler, ["http://a"], retries=1)
    with pytest.raises(torua.ConnectionFailed) as e:
        c.health()
    assert "ReadTimeout" in str(e.value)


def task_view(state: str = "running", **extra) -> Dict:
    """A `TaskView` as the server answers it."""
    view = {
        "id": "node-1:3",
        "algorithm": "pagerank",
        "state": state,
        "started_at_ms": 1700000000000,
        "running_ms": 12,
        "cancel_requested": False,
        "progress": {
            "phase": "superstep" if state == "running" else "done",
            "supersteps": 4,
            "vertices": 3,
            "edges": 2,
            "workers": 3,
            "delta": 0.25,
            "changed": None,
        },
        "result": None,
        "error": None,
    }
    view.update(extra)
    return view


PAGERANK_DONE = task_view(
    "completed",
    result={
        "top": [{"id": "b", "value": 0.5}, {"id": "a", "value": 0.25}],
        "components": None,
        "largest": None,
        "converged": True,
        "written": None,
        "later": "kept in raw",
    },
)


def test_algorithm_tasks_send_only_set_fields_and_parse_202_and_200() -> None:
    seen: List[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.raw_path.split(b"?")[0]
        if path == b"/graph/algorithms/pagerank":
            waited = request.url.params.get("wait_for_completion") == "true"
            if waited:
                return httpx.Response(200, json=PAGERANK_DONE)
            return httpx.Response(202, headers={"location": "/tasks/node-1:3"}, json=task_view())
        if path == b"/graph/algorithms/wcc":
            result = {
                "components": 2,
                "largest": [
                    {"component": "a", "size": 2, "members": ["a", "b"]},
                    {"component": "c", "size": 1, "members": ["c"]},
                ],
            }
            return httpx.Response(200, json=task_view("completed", algorithm="wcc", result=result))
        if path == b"/tasks":
            return httpx.Response(200, json={"tasks": [task_view(), PAGERANK_DONE]})
        if path == b"/tasks/node-1%3A3":
            return httpx.Response(202, json=task_view())
        if path == b"/tasks/node-1%3A3/_cancel":
            return httpx.Response(200, json={"cancel_requested": "node-1:3"})
        return httpx.Response(404, json={"error": {"status": 404, "reason": "no route"}})

    c = mock_client(handler, ["http://a"])
    running = c.pagerank(damping=0.9, top_k=5)
    assert isinstance(running, torua.Task) and running.id == "node-1:3"
    assert running.state == "running" and not running.done and running.result is None
    assert running.progress.supersteps == 4 and running.progress.delta == 0.25
    assert running.progress.changed is None and running.raw["started_at_ms"] == 1700000000000
    assert json.loads(seen[-1].content) == {"damping": 0.9, "top_k": 5}
    assert "wait_for_completion" not in seen[-1].url.params

    done = c.run_algorithm("pagerank", wait=True, timeout=5, iterations=50, tolerance=0.0)
    assert seen[-1].url.params["wait_for_completion"] == "true"
    assert seen[-1].url.params["timeout"] == "5000ms"
    assert json.loads(seen[-1].content) == {"iterations": 50, "tolerance": 0.0}
    assert done.done and done.state == "completed" and done.result is not None
    assert [(s.id, s.value) for s in done.result.top or []] == [("b", 0.5), ("a", 0.25)]
    assert isinstance(done.result.top[0], torua.Scored) and done.result.converged is True
    assert done.result.raw["later"] == "kept in raw"

    wcc = c.wcc(members=True, wait=True)
    assert json.loads(seen[-1].content) == {"members": True}
    assert wcc.result is not None and wcc.result.components == 2
    largest = wcc.result.largest or []
    assert isinstance(largest[0], torua.Component)
    assert [(x.component, x.size, x.members) for x in largest] == [
        ("a", 2, ["a", "b"]),
        ("c", 1, ["c"]),
    ]

    listed = c.tasks()
    assert [t.state for t in listed] == ["running", "completed"]
    assert listed[1].result is not None and listed[1].result.top[0].id == "b"
    # Task ids hold a ':', quoted in the path.
    assert c.task("node-1:3").state == "running"
    assert c.cancel_task("node-1:3") == "node-1:3"
    assert seen[-1].method == "POST"
    with pytest.raises(torua.NotFound):
        c.degree(write=True)
    assert seen[-1].url.path == "/graph/algorithms/degree"
    assert json.loads(seen[-1].content) == {"write": True}
    with pytest.raises(ValueError):
        c.task("")


def test_waiting_requests_outlast_the_servers_wait() -> None:
    c = torua.Client(["http://a"], timeout=30.0)
    send = next(c._api.run_algorithm("wcc", wait=True, timeout=45))
    assert send.params == {"wait_for_completion": "true", "timeout": "45000ms"}
    assert send.timeout.read == 55.0
    # The server waits at most 60 s, 30 s unless told: the client allows for the longest wait.
    assert next(c._api.task("n:1", wait=True, timeout="50s")).timeout.read == 70.0
    assert next(c._api.task("n:1")).timeout.read == 30.0
    assert next(c._api.pagerank()).params is None


def test_starting_a_task_is_never_sent_twice_after_a_timeout() -> None:
    seen: List[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host} {request.method} {request.url.path}")
        if request.url.host == "a":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(202, json=task_view())

    c = mock_client(handler, ["http://a", "http://b"])
    with pytest.raises(torua.ConnectionFailed):
        c.pagerank()
    assert seen == ["a POST /graph/algorithms/pagerank"]
    # Reading a task (and asking to cancel it) is safe to repeat: on to the next node.
    assert c.task("node-1:3").id == "node-1:3"
    assert seen[-2:] == ["a GET /tasks/node-1:3", "b GET /tasks/node-1:3"]


def test_wait_task_polls_until_the_task_ended_or_times_out() -> None:
    states = ["running", "running", "cancelled"]
    polls: List[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        polls.append(request.url.path)
        state = states.pop(0) if states else "running"
        return httpx.Response(202 if state == "running" else 200, json=task_view(state))

    c = mock_client(handler, ["http://a"])
    ended = c.wait_task("node-1:3", timeout=10, poll=0.001)
    assert ended.state == "cancelled" and ended.done and len(polls) == 3
    with pytest.raises(TimeoutError) as e:
        c.wait_task("node-1:3", timeout=0.05, poll=0.01)
    assert "node-1:3" in str(e.value) and "running" in str(e.value)

    async def main() -> None:
        states.extend(["running", "failed"])
        c = mock(torua.AsyncClient, handler, ["http://a"])
        task = await c.wait_task("node-1:3", poll=0.001)
        assert task.state == "failed" and task.done
        await c.aclose()

    asyncio.run(main())


def test_every_endpoint_is_a_method_of_both_clients() -> None:
    from torua._api import ENDPOINTS

    for name in ENDPOINTS:
        assert getattr(torua.Client, name).__doc__, name
        assert getattr(torua.AsyncClient, name).__doc__, name


# Every route of the API contract and the client method that calls it.
COVERED = {
    ("POST", "/broadcast"): "broadcast",
    ("GET", "/cluster/health"): "cluster_health",
    ("GET", "/cluster/nodes"): "cluster_nodes",
    ("GET", "/cluster/shards"): "shards",
    ("GET", "/graph/chunks/{id}"): "get_chunk",
    ("GET", "/graph/entities/{id}"): "get_entity",
    ("DELETE", "/graph/entities/{id}"): "delete_entity",
    ("GET", "/graph/documents/{id}"): "get_document",
    ("DELETE", "/graph/documents/{id}"): "delete_document",
    ("POST", "/graph/ingest"): "ingest",
    ("POST", "/graph/neighborhood"): "neighborhood",
    ("POST", "/graph/path"): "path",
    ("GET", "/health"): "health",
    ("GET", "/keys"): "list_keys",
    ("POST", "/keys"): "create_key",
    ("DELETE", "/keys/{id}"): "revoke_key",
    ("GET", "/metrics"): "metrics",
    ("GET", "/nodes"): "nodes",
    ("POST", "/nodes/{id}/drain"): "drain",
    ("DELETE", "/nodes/{id}/drain"): "undrain",
    ("POST", "/nodes/{id}/shards/{shard}/rebuild"): "rebuild_copy",
    ("GET", "/openapi.json"): "openapi",
    ("POST", "/query"): "query",
    ("POST", "/retrieve"): "retrieve",
    ("POST", "/graph/algorithms/{name}"): "run_algorithm",
    ("GET", "/tasks"): "tasks",
    ("GET", "/tasks/{id}"): "task",
    ("POST", "/tasks/{id}/_cancel"): "cancel_task",
}


def test_every_route_of_the_contract_has_a_method() -> None:
    # The repository's openapi.json (this file is clients/python/tests/test_offline.py).
    contract = Path(__file__).resolve().parents[3] / "openapi.json"
    if not contract.exists():
        pytest.skip(f"no {contract}")
    spec = json.loads(contract.read_text())
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    missing = sorted(routes - set(COVERED))
    assert not missing, f"routes without a client method: {missing}"
    for name in COVERED.values():
        assert callable(getattr(torua.Client, name)) and callable(getattr(torua.AsyncClient, name))


def test_the_package_exports_every_error_class() -> None:
    exported = {name for name in torua.__all__ if name in torua.errors.__all__}
    assert exported == set(torua.errors.__all__) - {"error_for"}
