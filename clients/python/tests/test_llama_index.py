"""The LlamaIndex retriever on the Dulce data: scored nodes of every kind, sync and async, the
single-context option, and the embedding carried by a query bundle."""

from __future__ import annotations

import asyncio
import uuid
from typing import Dict, List

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.schema import NodeWithScore, QueryBundle  # noqa: E402

import torua  # noqa: E402
from torua.llama_index import ToruaRetriever  # noqa: E402


def top_entity(dulce) -> Dict:
    return max(dulce["entities"], key=lambda e: e["degree"])


def test_nodes_with_scores(client: torua.Client, dulce) -> None:
    top = top_entity(dulce)
    nodes = ToruaRetriever(client, top_k=5, max_tokens=8000).retrieve(
        f"Who is {top['title'].title()}?"
    )
    assert all(isinstance(n, NodeWithScore) for n in nodes)
    kinds = [n.node.metadata["kind"] for n in nodes]
    assert {"entity", "relation", "text_unit", "community_report"} <= set(kinds), kinds
    first = nodes[0]
    assert first.node.metadata["kind"] == "entity" and first.node.node_id == top["id"]
    assert first.node.metadata["title"] == top["title"] and first.score and first.score > 0
    assert top["title"] in first.node.get_content()


def test_async_and_context_only(
    urls: List[str], connect: Dict, client: torua.Client, dulce
) -> None:
    top = top_entity(dulce)
    question = f"What does {top['title'].title()} do?"

    async def main() -> List[NodeWithScore]:
        async with torua.AsyncClient(urls, **connect) as ac:
            return await ToruaRetriever(async_client=ac, top_k=5).aretrieve(question)

    nodes = asyncio.run(main())
    assert nodes[0].node.metadata["title"] == top["title"]
    context = ToruaRetriever(client, context_only=True, max_tokens=2000).retrieve(question)
    assert len(context) == 1 and top["title"] in context[0].node.get_content()


def test_query_bundle_embedding(client: torua.Client, embedding_dim: int) -> None:
    if embedding_dim <= 0:
        pytest.skip("the cluster stores no embeddings (TORUA_EMBEDDING_DIM=0)")
    tag = uuid.uuid4().hex[:8]
    v = [0.0] * embedding_dim
    v[-1] = 1.0
    eid = f"bundle-{tag}"
    client.ingest({"entities": [{"id": eid, "title": f"BUNDLE {tag}", "embedding": v}]})
    retriever = ToruaRetriever(client, top_k=1, hops=0, include=["entities"], send_text=False)
    nodes = retriever.retrieve(QueryBundle(query_str="anything", embedding=v))
    assert [n.node.node_id for n in nodes] == [eid]
