"""`ToruaRetriever`: a LlamaIndex retriever over `POST /retrieve` (needs the `[llama-index]` extra).

It returns one `NodeWithScore` (a `TextNode`) per entity, relation, text unit and community report
of the answer, each with its metadata (`kind`, `id`, titles, ranks) and score (an entity's fused
score, a text unit's score, a relation's weight, a report's rank; None for an entity reached by
expansion), or, with `context_only=True`, one node holding `context_text`. The question's
embedding comes from `embed` when given, else from the query bundle when it carries one.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "torua.llama_index needs llama-index-core: pip install 'torua[llama-index]'"
    ) from e

from ._pieces import aembedding, embedding, pieces, request_body
from .types import Retrieval


class ToruaRetriever(BaseRetriever):
    """Retrieves GraphRAG context for a question from a torua cluster.

    Give `client` (a `torua.Client`) and/or `async_client` (a `torua.AsyncClient`; without it
    `aretrieve` calls the sync client). The settings are those of `POST /retrieve`;
    `retrieve_options` passes any other (e.g. `tokenizer`, `timeout_ms`).
    """

    def __init__(
        self,
        client: Optional[Any] = None,
        *,
        async_client: Optional[Any] = None,
        mode: str = "local",
        top_k: int = 10,
        hops: int = 1,
        max_tokens: int = 12000,
        include: Optional[List[str]] = None,
        community_level: Optional[int] = None,
        context_only: bool = False,
        embed: Optional[Callable[[str], Sequence[float]]] = None,
        aembed: Optional[Callable[[str], Awaitable[Sequence[float]]]] = None,
        send_text: bool = True,
        retrieve_options: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        if client is None and async_client is None:
            raise ValueError("ToruaRetriever needs client= or async_client=")
        self.client = client
        self.async_client = async_client
        self.mode = mode
        self.top_k = top_k
        self.hops = hops
        self.max_tokens = max_tokens
        self.include = include
        self.community_level = community_level
        self.context_only = context_only
        self.embed = embed
        self.aembed = aembed
        self.send_text = send_text
        self.retrieve_options = dict(retrieve_options or {})
        super().__init__(**kwargs)

    def _request(self, bundle: QueryBundle, embedding: Optional[Sequence[float]]) -> Dict[str, Any]:
        if embedding is None and bundle.embedding is not None:
            embedding = bundle.embedding
        return request_body(self, bundle.query_str or None, embedding)

    def _nodes(self, answer: Retrieval) -> List[NodeWithScore]:
        return [
            NodeWithScore(node=TextNode(id_=p.id, text=p.text, metadata=p.metadata), score=p.score)
            for p in pieces(answer, self.context_only)
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        if self.client is None:
            raise ValueError("ToruaRetriever needs client= (a torua.Client) for sync calls")
        request = self._request(query_bundle, embedding(self, query_bundle.query_str))
        answer = self.client.retrieve(**request)
        return self._nodes(answer)

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        if self.async_client is None:
            return self._retrieve(query_bundle)
        request = self._request(query_bundle, await aembedding(self, query_bundle.query_str))
        answer = await self.async_client.retrieve(**request)
        return self._nodes(answer)
