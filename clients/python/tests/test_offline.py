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
from torua.graphrag import read_folder
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
