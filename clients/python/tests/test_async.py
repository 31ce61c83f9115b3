"""The `AsyncClient` against the live cluster: the same endpoints awaited, concurrent requests,
failover past a dead node, and the async GraphRAG importer (idempotent on loaded data)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Dict, List

import pytest

import torua
from torua.graphrag import aimport_graphrag

from conftest import DULCE


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_async_endpoints(urls: List[str], connect: Dict, dulce) -> None:
    async def main() -> None:
        async with torua.AsyncClient(urls, **connect) as c:
            assert (await c.health()).status == "ok"
            assert (await c.cluster_health()).number_of_nodes == len(urls)
            assert len(await c.nodes()) == len(urls)
            assert (await c.cluster_nodes()).coordinator
            assert (await c.shards()).copies
            assert "torua_" in await c.metrics()
            assert "paths" in await c.openapi()

            e, f = f"ae-{uuid.uuid4().hex[:8]}", f"af-{uuid.uuid4().hex[:8]}"
            result = await c.ingest(
                {
                    "entities": [{"id": e, "title": "ASYNC E"}, {"id": f, "title": "ASYNC F"}],
                    "relations": [{"id": f"ar-{e}", "source": e, "target": f, "description": "ef"}],
                    "chunks": [{"id": f"at-{e}", "text": "async chunk"}],
                }
            )
            assert not result.errors and result.counts["entities"] == 2
            assert (await c.get_entity(e)).relations[0].target == f
            assert (await c.get_chunk(f"at-{e}")).chunk.text == "async chunk"
            q = await c.query(
                "MATCH (x:Entity) WHERE x.id IN $ids RETURN count(*)", {"ids": [e, f]}
            )
            assert q.rows == [[2]]
            assert {x.id for x in (await c.neighborhood([e])).entities} == {e, f}
            assert (await c.path(e, f)).length == 1
            assert (await c.delete_entity(f)).relations == 1
            with pytest.raises(torua.NotFound):
                await c.get_entity(f)
            with pytest.raises(torua.BadRequest) as bad:
                await c.retrieve("x", hops=9)
            assert "hops" in bad.value.reason

            # Concurrent retrievals on one client.
            titles = [row["title"] for row in dulce["entities"][:6]]
            answers = await asyncio.gather(*(c.retrieve(t, top_k=3, hops=0) for t in titles))
            for title, answer in zip(titles, answers):
                assert title in [x.title for x in answer.entities], (title, answer.seeds)

    run(main())


def test_async_keys(urls: List[str], connect: Dict) -> None:
    if not connect["api_key"]:
        pytest.skip("the cluster runs without API keys")

    async def main() -> None:
        async with torua.AsyncClient(urls, **connect) as c:
            created = await c.create_key("write", name="async writer")
            assert created.role == "write"
            assert created.id in {k.id for k in await c.list_keys()}
            assert await c.revoke_key(created.id) == created.id
            assert created.id not in {k.id for k in await c.list_keys()}

    run(main())


def test_async_failover_and_import(urls: List[str], dead_url: str, connect: Dict, dulce) -> None:
    async def main() -> None:
        async with torua.AsyncClient([dead_url] + urls, **connect) as c:
            assert (await c.health()).status == "ok"
            # Loading the same folder again changes nothing: ingest upserts by id.
            summary = await aimport_graphrag(c, DULCE, routing="none")
            assert summary.counts == dulce["summary"].counts

    run(main())
