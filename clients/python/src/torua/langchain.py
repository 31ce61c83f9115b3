"""`ToruaRetriever`: a LangChain retriever over `POST /retrieve` (needs the `[langchain]` extra).

It returns one `Document` per entity, relation, text unit and community report of the answer, each
with its metadata (`kind`, `id`, titles, scores, ranks), or, with `context_only=True`, a single
`Document` holding `context_text` laid out as GraphRAG's prompts expect. With `embed` (or
`aembed`) the question is embedded client-side and sent as `embedding` too.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError("torua.langchain needs langchain-core: pip install 'torua[langchain]'") from e

from ._pieces import aembedding, embedding, pieces, request_body
from .types import Retrieval


class ToruaRetriever(BaseRetriever):
    """Retrieves GraphRAG context for a question from a torua cluster.

    Give `client` (a `torua.Client`) and/or `async_client` (a `torua.AsyncClient`; without it the
    async path runs the sync client in a thread). The retrieval settings are those of
    `POST /retrieve`; `retrieve_options` passes any other (e.g. `tokenizer`, `timeout_ms`).
    """

    client: Optional[Any] = None
    async_client: Optional[Any] = None
    mode: str = "local"
    top_k: int = 10
    hops: int = 1
    max_tokens: int = 12000
    include: Optional[List[str]] = None
    community_level: Optional[int] = None
    context_only: bool = False
    embed: Optional[Callable[[str], Sequence[float]]] = None
    aembed: Optional[Callable[[str], Awaitable[Sequence[float]]]] = None
    # Whether the question's text is sent along with its embedding (BM25 and title matches).
    send_text: bool = True
    retrieve_options: Dict[str, Any] = {}

    def _request(self, query: str, embedding: Optional[Sequence[float]]) -> Dict[str, Any]:
        return request_body(self, query, embedding)

    def _documents(self, answer: Retrieval) -> List[Document]:
        return [
            Document(id=p.id, page_content=p.text, metadata={**p.metadata, "score": p.score})
            for p in pieces(answer, self.context_only)
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> List[Document]:
        if self.client is None:
            raise ValueError("ToruaRetriever needs client= (a torua.Client) for sync calls")
        answer = self.client.retrieve(**self._request(query, embedding(self, query)))
        return self._documents(answer)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> List[Document]:
        if self.async_client is None:
            return await super()._aget_relevant_documents(query, run_manager=run_manager)
        request = self._request(query, await aembedding(self, query))
        answer = await self.async_client.retrieve(**request)
        return self._documents(answer)
