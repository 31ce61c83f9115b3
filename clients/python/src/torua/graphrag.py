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

Placement (`routing`, `routing_level`), as `torua import graphrag --routing --routing-level`: by
default each entity's routing key is its GraphRAG community, so that a community's entities share
a shard. `assign_routing` picks, for each entity, the community at `routing_level` that lists it
(0, the default, is the coarsest level); an entity that level does not reach takes its deepest
community above it, and an entity in no community keeps no key (placed by id). The key is
`community:<number>`. A community larger than 1.5 x the folder's entities per shard (the
cluster's shard count) is split into the fewest parts of at most that size, keyed
`community:<number>/<part>`, cut from its entities in breadth-first order over the
relationships inside it. Relations carry their ends' keys. `routing="none"` sends no keys.

Re-running an import is harmless: ingest upserts by id, and the keys depend only on the folder,
the level and the shard count.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union, cast

from ._exchange import Op
from .types import Batch, Chunk, Community, Document, Entity, IngestResult, Relation

PathLike = Union[str, "os.PathLike[str]"]

# The shard count assumed when `GET /cluster/shards` does not say (`TORUA_SHARDS`' default).
DEFAULT_SHARDS = 16
# A community larger than this many times the entities per shard is split, as a fraction: 3/2.
_SPLIT_ABOVE = (3, 2)
# Communities of at most this many entities are never split (`torua import graphrag --min-split`).
MIN_SPLIT = 1000


@dataclass
class Placement:
    """What `assign_routing` did; `str()` is the line `torua import graphrag` prints."""

    level: int = 0
    shards: int = 0
    # The most entities one key may hold before its community is split.
    max_per_key: int = 0
    # Communities whose entities got keys (whole or split); of those, the ones split; the keys
    # the split ones became.
    communities: int = 0
    split: int = 0
    parts: int = 0
    # Entities in no community at or above the level: placed by id.
    unkeyed: int = 0

    def __str__(self) -> str:
        return (
            f"placed entities by community (level {self.level}): {self.communities} communities "
            f"as routing keys, {self.split} of them split into {self.parts} keys of at most "
            f"{self.max_per_key} entities (1.5 × the entities per shard of {self.shards} "
            f"shards, at least --min-split); {self.unkeyed} entities in no community, placed by id"
        )


@dataclass
class ImportSummary:
    """What an import loaded: items per kind, the ingest answers summed, and where the entities
    were placed (None with `routing="none"`)."""

    counts: Dict[str, int] = field(default_factory=dict)
    ingest: IngestResult = field(default_factory=IngestResult)
    placement: Optional[Placement] = None

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


def assign_routing(
    batch: Batch, level: int = 0, shards: int = DEFAULT_SHARDS, min_split: int = MIN_SPLIT
) -> Placement:
    """Set each entity's routing key to its community (see the module doc) and each relation's
    `source_routing` / `target_routing` to its ends' keys, balancing for `shards` shards (`batch`
    holds dataclass items, as `read_folder` returns; communities of at most `min_split` entities
    are never split); the same keys as `torua import graphrag --routing-level <level>
    --min-split <min_split>` on a cluster of `shards` shards."""
    entities = cast(List[Entity], batch.entities)
    relations = cast(List[Relation], batch.relations)
    communities = cast(List[Community], batch.communities)
    index: Dict[str, int] = {}
    for e in entities:
        index.setdefault(e.id, len(index))
    n = len(index)
    # Each entity's community: the deepest at or above `level`, the first listed on a tie.
    chosen: List[Optional[Tuple[int, int]]] = [None] * n
    for ci, c in enumerate(communities):
        if c.level > level:
            continue
        for entity_id in c.entity_ids:
            ei = index.get(entity_id)
            if ei is not None:
                was = chosen[ei]
                if was is None or c.level > was[0]:
                    chosen[ei] = (c.level, ci)
    # Each community's entities in the order it lists them; `position`: an entity's place there.
    members: List[List[int]] = [[] for _ in communities]
    position = [0] * n
    listed = [False] * n
    for ci, c in enumerate(communities):
        for entity_id in c.entity_ids:
            ei = index.get(entity_id)
            if ei is None or listed[ei]:
                continue
            was = chosen[ei]
            if was is not None and was[1] == ci:
                listed[ei] = True
                position[ei] = len(members[ci])
                members[ci].append(ei)
    shards = max(int(shards), 1)
    num, den = _SPLIT_ABOVE
    max_per_key = max(-(-(num * n) // (den * shards)), int(min_split), 1)
    # The relationships inside each community to split, as neighbours.
    neighbours: List[List[int]] = [[] for _ in range(n)]
    for r in relations:
        a, b = index.get(r.source), index.get(r.target)
        if a is None or b is None or a == b:
            continue
        ca, cb = chosen[a], chosen[b]
        if ca is not None and cb is not None and ca[1] == cb[1]:
            if len(members[ca[1]]) > max_per_key:
                neighbours[a].append(b)
                neighbours[b].append(a)
    placement = Placement(
        level=level,
        shards=shards,
        max_per_key=max_per_key,
        unkeyed=sum(1 for c in chosen if c is None),
    )
    key: List[Optional[str]] = [None] * n
    for ci, group in enumerate(members):
        if not group:
            continue
        placement.communities += 1
        name = f"community:{communities[ci].id}"
        if len(group) <= max_per_key:
            for ei in group:
                key[ei] = name
            continue
        order = _walk(group, neighbours, position)
        parts = -(-len(group) // max_per_key)
        placement.split += 1
        placement.parts += parts
        start = 0
        for part in range(parts):
            # The first `len % parts` parts take one entity more.
            size = len(group) // parts + (1 if part < len(group) % parts else 0)
            for ei in order[start : start + size]:
                key[ei] = f"{name}/{part}"
            start += size

    def key_of(entity_id: str) -> Optional[str]:
        ei = index.get(entity_id)
        return None if ei is None else key[ei]

    for e in entities:
        e.routing = key_of(e.id)
    for r in relations:
        r.source_routing = key_of(r.source)
        r.target_routing = key_of(r.target)
    return placement


def _walk(group: List[int], neighbours: List[List[int]], position: List[int]) -> List[int]:
    """The entities `group` (one community's, in its order) in breadth-first order over
    `neighbours`: from each entity not reached yet, in group order, its neighbours by their
    position in the group."""
    reached = [False] * len(group)
    order: List[int] = []
    for start in group:
        if reached[position[start]]:
            continue
        reached[position[start]] = True
        queue = deque([start])
        while queue:
            ei = queue.popleft()
            order.append(ei)
            for b in sorted(neighbours[ei], key=lambda x: position[x]):
                if not reached[position[b]]:
                    reached[position[b]] = True
                    queue.append(b)
    return order


def _import(
    api: Any,
    folder: PathLike,
    batch_size: int,
    wait: bool,
    routing: str,
    routing_level: int,
    min_split: int,
) -> Op[ImportSummary]:
    if routing not in ("community", "none"):
        raise ValueError(f"routing is 'community' or 'none', not {routing!r}")
    batch = read_folder(folder)
    if not len(batch):
        raise ValueError(f"{os.fspath(folder)}: no GraphRAG items found")
    placement = None
    if routing == "community":
        shards = yield from api.shards()
        count = shards.shards or DEFAULT_SHARDS
        placement = assign_routing(batch, routing_level, count, min_split)
    answer = yield from api.ingest(batch, batch_size=batch_size)
    if wait:
        yield from api.wait_applied()
    return ImportSummary(counts=batch.counts(), ingest=answer, placement=placement)


def import_graphrag(
    client: Any,
    folder: PathLike,
    *,
    batch_size: int = 2000,
    wait: bool = True,
    routing: str = "community",
    routing_level: int = 0,
    min_split: int = MIN_SPLIT,
) -> ImportSummary:
    """Load the GraphRAG output `folder` through `client` (a `torua.Client`) in batches of
    `batch_size` items; with `wait` (default) return once everything is visible to reads, as
    `torua import graphrag` does. `routing` ("community" or "none"), `routing_level` and
    `min_split` place the entities as its `--routing`, `--routing-level` and `--min-split` do
    (see the module doc)."""
    op = _import(client._api, folder, batch_size, wait, routing, routing_level, min_split)
    return client._drive(op)  # type: ignore[no-any-return]


async def aimport_graphrag(
    client: Any,
    folder: PathLike,
    *,
    batch_size: int = 2000,
    wait: bool = True,
    routing: str = "community",
    routing_level: int = 0,
    min_split: int = MIN_SPLIT,
) -> ImportSummary:
    """`import_graphrag` through a `torua.AsyncClient`."""
    op = _import(client._api, folder, batch_size, wait, routing, routing_level, min_split)
    return await client._drive(op)  # type: ignore[no-any-return]
