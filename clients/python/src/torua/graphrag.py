"""Loading a Microsoft GraphRAG output folder (parquet) into torua, as `torua import graphrag` does:
the same columns, the same mapping, the same batches (needs the `[graphrag]` extra: pyarrow).

Mapping (only the columns named here are read; others are ignored):
- `entities`: id, title, type, description, text_unit_ids, frequency, degree.
- `relationships`: id, source, target (entity *titles*, mapped to entity ids; a title with no
  entity is kept as the id of a stub), description, weight (1.0 when absent), text_unit_ids.
- `text_units` -> chunks: id, text, n_tokens, document_id (or the first of document_ids),
  entity_ids.
- `communities` + `community_reports` -> communities: the id is the community number (GraphRAG's
  short id, which its prompts cite), parent the parent's number (empty for a root), the report's
  title (else the community's), summary, full_content and rank.
- `documents`: id, title, text, text_unit_ids.

Re-running an import is harmless: ingest upserts by id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from ._exchange import Op
from .types import Batch, Chunk, Community, Document, Entity, IngestResult, Relation

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class ImportSummary:
    """What an import loaded: items per kind, and the ingest answers summed."""

    counts: Dict[str, int] = field(default_factory=dict)
    ingest: IngestResult = field(default_factory=IngestResult)

    def __str__(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in self.counts.items())


def _rows(folder: str, name: str, required: bool) -> List[Dict[str, Any]]:
    path = os.path.join(folder, f"{name}.parquet")
    if not os.path.exists(path):
        if required:
            raise FileNotFoundError(f"{path} is missing; is {folder} a GraphRAG output folder?")
        return []
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "reading GraphRAG parquet files needs pyarrow: pip install 'torua[graphrag]'"
        ) from e
    return pq.read_table(path).to_pylist()


def _str(row: Dict[str, Any], name: str) -> str:
    value = row.get(name)
    return "" if value is None else str(value)


def _int(row: Dict[str, Any], name: str) -> int:
    value = row.get(name)
    return 0 if value is None else int(value)


def _float(row: Dict[str, Any], name: str, default: float = 0.0) -> float:
    if name not in row:
        return default
    value = row.get(name)
    return 0.0 if value is None else float(value)


def _list(row: Dict[str, Any], name: str) -> List[str]:
    value = row.get(name)
    if value is None:
        return []
    return [str(v) for v in value if v is not None]


def _required(rows: List[Dict[str, Any]], table: str, *columns: str) -> None:
    if rows:
        missing = [c for c in columns if c not in rows[0]]
        if missing:
            raise ValueError(f"{table}.parquet has no column {missing[0]!r}")


def read_folder(folder: PathLike) -> Batch:
    """Every table of a GraphRAG output folder as one `Batch`."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(
            f"{folder} is not a folder; give the GraphRAG output folder holding entities.parquet"
        )
    batch = Batch()
    entities = _rows(folder, "entities", True)
    _required(entities, "entities", "id", "title")
    title_to_id: Dict[str, str] = {}
    for row in entities:
        e = Entity(
            id=_str(row, "id"),
            title=_str(row, "title"),
            type=_str(row, "type"),
            description=_str(row, "description"),
            text_unit_ids=_list(row, "text_unit_ids"),
            frequency=_int(row, "frequency"),
            degree=_int(row, "degree"),
        )
        title_to_id[e.title] = e.id
        batch.entities.append(e)

    relationships = _rows(folder, "relationships", False)
    _required(relationships, "relationships", "id", "source", "target")
    for row in relationships:
        source, target = _str(row, "source"), _str(row, "target")
        batch.relations.append(
            Relation(
                id=_str(row, "id"),
                source=title_to_id.get(source, source),
                target=title_to_id.get(target, target),
                description=_str(row, "description"),
                weight=_float(row, "weight", 1.0),
                text_unit_ids=_list(row, "text_unit_ids"),
            )
        )

    text_units = _rows(folder, "text_units", False)
    _required(text_units, "text_units", "id")
    for row in text_units:
        if "document_id" in row:
            document = _str(row, "document_id")
        else:
            document = next(iter(_list(row, "document_ids")), "")
        batch.chunks.append(
            Chunk(
                id=_str(row, "id"),
                text=_str(row, "text"),
                n_tokens=_int(row, "n_tokens"),
                document_id=document,
                entity_ids=_list(row, "entity_ids"),
            )
        )

    reports: Dict[int, Tuple[str, str, str, float]] = {}
    report_rows = _rows(folder, "community_reports", False)
    _required(report_rows, "community_reports", "community")
    for row in report_rows:
        reports[_int(row, "community")] = (
            _str(row, "title"),
            _str(row, "summary"),
            _str(row, "full_content"),
            _float(row, "rank"),
        )
    communities = _rows(folder, "communities", False)
    _required(communities, "communities", "community")
    for row in communities:
        number = _int(row, "community")
        report: Optional[Tuple[str, str, str, float]] = reports.pop(number, None)
        parent = row.get("parent")
        title = report[0] if report is not None and report[0] else _str(row, "title")
        batch.communities.append(
            Community(
                id=str(number),
                level=_int(row, "level"),
                parent=str(int(parent)) if parent is not None and int(parent) >= 0 else "",
                title=title,
                entity_ids=_list(row, "entity_ids"),
                summary=report[1] if report else "",
                full_content=report[2] if report else "",
                rank=report[3] if report else 0.0,
            )
        )

    documents = _rows(folder, "documents", False)
    _required(documents, "documents", "id")
    for row in documents:
        batch.documents.append(
            Document(
                id=_str(row, "id"),
                title=_str(row, "title"),
                text=_str(row, "text"),
                text_unit_ids=_list(row, "text_unit_ids"),
            )
        )
    return batch


def _import(api: Any, folder: PathLike, batch_size: int, wait: bool) -> Op[ImportSummary]:
    batch = read_folder(folder)
    if not len(batch):
        raise ValueError(f"{os.fspath(folder)}: no GraphRAG items found")
    answer = yield from api.ingest(batch, batch_size=batch_size)
    if wait:
        yield from api.wait_applied()
    return ImportSummary(counts=batch.counts(), ingest=answer)


def import_graphrag(
    client: Any, folder: PathLike, *, batch_size: int = 2000, wait: bool = True
) -> ImportSummary:
    """Load the GraphRAG output `folder` through `client` (a `torua.Client`) in batches of
    `batch_size` items; with `wait` (default) return once everything is visible to reads, as
    `torua import graphrag` does."""
    return client._drive(_import(client._api, folder, batch_size, wait))  # type: ignore[no-any-return]


async def aimport_graphrag(
    client: Any, folder: PathLike, *, batch_size: int = 2000, wait: bool = True
) -> ImportSummary:
    """`import_graphrag` through a `torua.AsyncClient`."""
    return await client._drive(_import(client._api, folder, batch_size, wait))  # type: ignore[no-any-return]
