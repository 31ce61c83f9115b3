"""A retrieval answer cut into framework-neutral pieces (text, id, metadata, score), which the
LangChain and LlamaIndex adapters wrap in their own document types.

One piece per entity, relation, text unit and community report, in that order and in the
server's rank order within each kind; or, with `context_only`, one piece holding `context_text`
(GraphRAG's prompt tables) with the token counts. `metadata["kind"]` says which kind a piece is.
Also the question's embedding and the request body both adapters send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .types import Retrieval


@dataclass
class Piece:
    id: str
    text: str
    metadata: Dict[str, Any] = field(default_factory=dict)
    score: Optional[float] = None


def pieces(answer: Retrieval, context_only: bool = False) -> List[Piece]:
    """The pieces of `answer` (see the module documentation)."""
    if context_only:
        meta: Dict[str, Any] = {
            "kind": "context",
            "mode": answer.mode,
            "tokens": answer.tokens.get("total"),
            "entity_ids": [e.id for e in answer.entities],
            "text_unit_ids": [t.id for t in answer.text_units],
            "community_report_ids": [r.id for r in answer.community_reports],
        }
        return [Piece(id=f"context:{answer.mode}", text=answer.context_text, metadata=meta)]
    titles = answer.titles()
    out: List[Piece] = []
    for rank, e in enumerate(answer.entities):
        meta = _meta("entity", e, "title", "type", "degree", "hop", rank=rank, score=e.score)
        out.append(
            Piece(e.id, f"{e.title}: {e.description}" if e.description else e.title, meta, e.score)
        )
    for rank, r in enumerate(answer.relations):
        source, target = titles.get(r.source, r.source), titles.get(r.target, r.target)
        meta = _meta(
            "relation",
            r,
            "source",
            "target",
            source_title=source,
            target_title=target,
            weight=r.weight,
            rank=rank,
        )
        out.append(Piece(r.id, f"{source} -> {target}: {r.description}", meta, r.weight))
    for rank, t in enumerate(answer.text_units):
        meta = _meta("text_unit", t, "document_id", "n_tokens", rank=rank, score=t.score)
        out.append(Piece(t.id, t.text, meta, t.score))
    for rank, c in enumerate(answer.community_reports):
        meta = _meta(
            "community_report",
            c,
            "title",
            "level",
            rank=rank,
            community_rank=c.rank,
            matches=c.matches,
            stale=bool(c.stale),
        )
        out.append(Piece(f"community:{c.id}", c.content, meta, c.rank))
    return out


def _meta(kind: str, item: Any, *copied: str, **more: Any) -> Dict[str, Any]:
    """A piece's metadata: its kind, the item's id and `copied` fields, then `more`."""
    return {"kind": kind, "id": item.id, **{name: getattr(item, name) for name in copied}, **more}


def embedding(retriever: Any, text: str) -> Optional[List[float]]:
    """The question's embedding from the retriever's `embed`; None without it."""
    return list(retriever.embed(text)) if retriever.embed is not None else None


async def aembedding(retriever: Any, text: str) -> Optional[List[float]]:
    """The question's embedding from the retriever's `aembed`, else from `embed`."""
    if retriever.aembed is not None:
        return list(await retriever.aembed(text))
    return embedding(retriever, text)


def request_body(
    retriever: Any, text: Optional[str], embedding: Optional[Sequence[float]]
) -> Dict[str, Any]:
    """The `POST /retrieve` body of both framework retrievers: the question's text (unless an
    embedding stands in for it and `send_text` is off), the embedding, and the retriever's
    options (`mode`, `top_k`, `hops`, `max_tokens`, `include`, `community_level`, and
    `retrieve_options` passed through)."""
    return dict(
        query=text if (retriever.send_text or embedding is None) else None,
        embedding=list(embedding) if embedding is not None else None,
        mode=retriever.mode,
        top_k=retriever.top_k,
        hops=retriever.hops,
        max_tokens=retriever.max_tokens,
        include=retriever.include,
        community_level=retriever.community_level,
        **retriever.retrieve_options,
    )
