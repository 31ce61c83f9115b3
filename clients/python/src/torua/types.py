"""Typed answers and items of the torua HTTP API, as dataclasses.

Answers are read leniently: each class takes the fields it knows from the JSON answer and keeps the
whole answer in `raw`, so a field the server adds later is still reachable (`answer.raw["new"]`).
Items sent to ingest (`Entity`, `Relation`, `Chunk`, `Community`, `Document`, `Batch`) turn into
JSON with `to_json`, leaving out what is unset. The field names are the API's (see openapi.json);
`_shards` is `shards_report` here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import (
    Any,
    ClassVar,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    get_args,
    get_type_hints,
)

T = TypeVar("T", bound="Model")


class Model:
    """Base of every answer: `from_json` fills the fields and keeps the answer in `raw`.

    Each subclass is a dataclass; one that declares fields gets `raw` as its last field here
    (the answer as the server gave it, left out of `repr` and comparisons). A field holding models
    (alone, in a list, or optional) is read as those models, as its type says."""

    raw: Dict[str, Any]
    # Fields whose JSON key differs from the field name: name -> key.
    _keys: ClassVar[Dict[str, str]] = {"shards_report": "_shards"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__annotations__")
        if own:
            own["raw"] = "Dict[str, Any]"
            cls.raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls: Type[T], data: Any) -> T:
        if not isinstance(data, dict):
            data = {}
        values: Dict[str, Any] = {}
        for name, key, nested in _reading(cls):  # type: ignore[arg-type]
            if key not in data:
                continue
            value = data[key]
            if nested is not None and value is not None:
                if isinstance(value, list):
                    value = [nested.from_json(v) for v in value]
                else:
                    value = nested.from_json(value)
            values[name] = value
        obj = cls(**values)
        obj.raw = data
        return obj


@functools.lru_cache(maxsize=None)
def _reading(cls: Type[Model]) -> Tuple[Tuple[str, str, Optional[Type[Model]]], ...]:
    """How `cls.from_json` reads each field: its name, its JSON key and the model it holds."""
    hints = get_type_hints(cls)
    return tuple(
        (f.name, cls._keys.get(f.name, f.name), _model_in(hints[f.name]))
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name != "raw"
    )


def _model_in(hint: Any) -> Optional[Type[Model]]:
    """The model class of a field's type (`X`, `List[X]`, `Optional[...]`), else None."""
    if isinstance(hint, type) and issubclass(hint, Model):
        return hint
    return next(filter(None, map(_model_in, get_args(hint))), None)


# ---------------------------------------------------------------------------------------------
# Items (what ingest takes and point reads return).


class _Item(Model):
    """An item ingest takes: `to_json` leaves out what is unset (None)."""

    def to_json(self) -> Dict[str, Any]:
        values = ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))  # type: ignore
        return {k: v for k, v in values if k != "raw" and v is not None}


@dataclass
class Entity(_Item):
    """An entity: GraphRAG's `entities` row."""

    id: str = ""
    title: str = ""
    type: str = ""
    description: str = ""
    text_unit_ids: List[str] = field(default_factory=list)
    frequency: int = 0
    degree: int = 0
    embedding: Optional[List[float]] = None
    # Placement key: entities with the same key live in the same shard (None: placed by id).
    routing: Optional[str] = None


@dataclass
class Relation(_Item):
    """A relation between two entity ids (a missing endpoint is a stub until it arrives).

    `source_routing` / `target_routing` are the ends' routing keys, used only for an end that is
    neither in the same ingest nor stored yet (torua fills them in otherwise)."""

    id: str = ""
    source: str = ""
    target: str = ""
    description: str = ""
    weight: float = 1.0
    text_unit_ids: List[str] = field(default_factory=list)
    source_routing: Optional[str] = None
    target_routing: Optional[str] = None


@dataclass
class Chunk(_Item):
    """A text unit."""

    id: str = ""
    text: str = ""
    n_tokens: int = 0
    document_id: str = ""
    entity_ids: List[str] = field(default_factory=list)
    embedding: Optional[List[float]] = None


@dataclass
class Community(_Item):
    """A community with its report (`summary`, `full_content`, `rank`)."""

    id: str = ""
    level: int = 0
    parent: str = ""
    title: str = ""
    entity_ids: List[str] = field(default_factory=list)
    summary: str = ""
    full_content: str = ""
    rank: float = 0.0


@dataclass
class Document(_Item):
    """A source document and the text units cut from it."""

    id: str = ""
    title: str = ""
    text: str = ""
    text_unit_ids: List[str] = field(default_factory=list)


Item = Union[Entity, Relation, Chunk, Community, Document, Mapping[str, Any]]

KINDS = ("entities", "relations", "chunks", "communities", "documents")


@dataclass
class Batch:
    """Items to ingest, of any of the five kinds. Items may be dataclasses or plain dicts."""

    entities: List[Item] = field(default_factory=list)
    relations: List[Item] = field(default_factory=list)
    chunks: List[Item] = field(default_factory=list)
    communities: List[Item] = field(default_factory=list)
    documents: List[Item] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(getattr(self, k)) for k in KINDS)

    def counts(self) -> Dict[str, int]:
        return {k: len(getattr(self, k)) for k in KINDS}

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for kind in KINDS:
            items = getattr(self, kind)
            if items:
                out[kind] = [i.to_json() if hasattr(i, "to_json") else dict(i) for i in items]
        return out

    @classmethod
    def of(cls, value: Union["Batch", Mapping[str, Sequence[Item]]]) -> "Batch":
        """A batch from a `Batch` or a dict of lists (the API's JSON shape)."""
        if isinstance(value, Batch):
            return value
        unknown = set(value) - set(KINDS)
        if unknown:
            raise ValueError(
                f"unknown item kinds {sorted(unknown)}; expected some of {list(KINDS)}"
            )
        return cls(**{k: list(value.get(k) or []) for k in KINDS})

    def split(self, size: int) -> Iterator["Batch"]:
        """Batches of at most `size` items, in kind order (entities first, so that relations
        usually find their endpoints)."""
        size = max(1, size)
        current = Batch()
        for kind in KINDS:
            for item in getattr(self, kind):
                getattr(current, kind).append(item)
                if len(current) >= size:
                    yield current
                    current = Batch()
        if len(current):
            yield current


# ---------------------------------------------------------------------------------------------
# Cluster answers.


@dataclass
class NodeHealth(Model):
    """`GET /health`: this process is up."""

    status: str = ""
    node_id: str = ""
    state: str = ""
    generation: int = 0
    version: str = ""
    uptime_ms: int = 0
    log_filter: str = ""


@dataclass
class ClusterHealth(Model):
    """`GET /cluster/health`: green, yellow or red, with the reasons and every node."""

    cluster_id: str = ""
    status: str = ""
    reasons: List[str] = field(default_factory=list)
    coordinator: Optional[str] = None
    term: int = 0
    number_of_nodes: int = 0
    number_of_ready_nodes: int = 0
    number_of_registered_nodes: int = 0
    answered_by: str = ""
    source: str = ""
    shards: Dict[str, Any] = field(default_factory=dict)
    coordinator_error: Optional[str] = None
    nodes: List[Dict[str, Any]] = field(default_factory=list)
    timed_out: Optional[bool] = None


@dataclass
class Member(Model):
    """A member of `GET /nodes` (`addr` is its HTTP address)."""

    id: str = ""
    addr: Optional[str] = None
    state: str = ""
    gossip_addr: str = ""
    peer_addr: Optional[str] = None
    generation: int = 0


@dataclass
class Registry(Model):
    """`GET /cluster/nodes`: the coordinator's registry."""

    coordinator: str = ""
    term: int = 0
    nodes: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class ShardCopy(Model):
    """One shard copy of `GET /cluster/shards`."""

    shard: int = 0
    node: str = ""
    primary: bool = False
    state: str = ""
    in_sync: bool = False
    entities: Optional[int] = None
    relations: Optional[int] = None
    chunks: Optional[int] = None
    checksum: Optional[str] = None


@dataclass
class Shards(Model):
    """`GET /cluster/shards`: the shard map and every copy."""

    cluster_id: str = ""
    version: int = 0
    term: int = 0
    shards: int = 0
    replicas: int = 0
    pending_writes: int = 0
    moves: List[Dict[str, Any]] = field(default_factory=list)
    draining: List[Dict[str, Any]] = field(default_factory=list)
    copies: List[ShardCopy] = field(default_factory=list)


@dataclass
class DrainStatus(Model):
    """`POST|DELETE /nodes/{id}/drain`."""

    node: str = ""
    draining: bool = False
    copies_left: int = 0
    map_version: int = 0


@dataclass
class RebuildStatus(Model):
    """`POST /nodes/{id}/shards/{shard}/rebuild`."""

    node: str = ""
    shard: int = 0
    rebuilding: bool = False


@dataclass
class BroadcastResult(Model):
    """`POST /broadcast`."""

    sent_to: int = 0
    results: List[Dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Graph answers.


@dataclass
class ShardsReport(Model):
    """What a distributed answer covered (`_shards`)."""

    total: int = 0
    successful: int = 0
    failed: int = 0
    failures: List[Dict[str, Any]] = field(default_factory=list)
    # Copies that answered before every write acknowledged ahead of the read was applied:
    # {shard, node, applied_seq, logged_seq}; empty when the answer is fresh.
    behind: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class TraversalStats(Model):
    """How a traversal ran: relations followed where the expanding node also holds the far
    end's shard (`relations_local`) or not (`relations_remote`), and rounds of requests."""

    relations_local: int = 0
    relations_remote: int = 0
    rounds: int = 0


@dataclass
class IngestResult(Model):
    """`POST /graph/ingest` (summed over the batches one `ingest` call sent)."""

    took_ms: int = 0
    errors: bool = False
    counts: Dict[str, int] = field(default_factory=dict)
    failed: int = 0
    items: List[Dict[str, Any]] = field(default_factory=list)
    batches: int = 1

    def add(self, other: "IngestResult") -> None:
        self.took_ms += other.took_ms
        self.errors = self.errors or other.errors
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        self.failed += other.failed
        self.items.extend(other.items)
        self.batches += other.batches


@dataclass
class EntityRecord(Model):
    """`GET /graph/entities/{id}`: the entity, its relations and its shard."""

    entity: Entity = field(default_factory=Entity)
    relations: List[Relation] = field(default_factory=list)
    shard: int = 0


@dataclass
class ChunkRecord(Model):
    """`GET /graph/chunks/{id}`."""

    chunk: Chunk = field(default_factory=Chunk)
    shard: int = 0


@dataclass
class DocumentRecord(Model):
    """`GET /graph/documents/{id}`."""

    document: Document = field(default_factory=Document)
    shard: int = 0


@dataclass
class EntityDeleted(Model):
    """`DELETE /graph/entities/{id}`: the id and how many relations went with it."""

    deleted: str = ""
    relations: int = 0


@dataclass
class DocumentDeleted(Model):
    """`DELETE /graph/documents/{id}`: what the cascade removed and what it updated, by kind
    (`removed["entities"]`, `updated["relations"]`, ...). The answer as the server gave it is in
    `raw`; indexing (`answer["removed"]`) reads it."""

    removed: Dict[str, Any] = field(default_factory=dict)
    updated: Dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


@dataclass
class QueryResult(Model):
    """`POST /query`: `columns` and `rows` (global merge), or `per_shard` answers."""

    merge: str = "global"
    columns: List[str] = field(default_factory=list)
    rows: List[List[Any]] = field(default_factory=list)
    per_shard: List[Dict[str, Any]] = field(default_factory=list)
    shards_report: ShardsReport = field(default_factory=ShardsReport)
    took_ms: int = 0

    _keys: ClassVar[Dict[str, str]] = {"shards_report": "_shards", "per_shard": "shards"}

    def records(self) -> List[Dict[str, Any]]:
        """The rows as dicts keyed by column."""
        return [dict(zip(self.columns, row)) for row in self.rows]


@dataclass
class _EntityFields:
    """The fields every entity answer shows (no embedding, no id lists), first in
    `NeighborEntity` and `RetrievedEntity`. A plain dataclass, not a `Model`, so that `raw`
    stays the last field of the answers built on it."""

    id: str = ""
    title: str = ""
    type: str = ""
    description: str = ""
    degree: int = 0


@dataclass
class NeighborEntity(Model, _EntityFields):
    """An entity of a neighborhood or path (`hop` is its distance from the nearest seed)."""

    frequency: int = 0
    hop: int = 0


@dataclass
class Edge(Model):
    """A relation as traversals and retrieval return it."""

    id: str = ""
    source: str = ""
    target: str = ""
    description: str = ""
    weight: float = 0.0


@dataclass
class Neighborhood(Model):
    """`POST /graph/neighborhood`."""

    entities: List[NeighborEntity] = field(default_factory=list)
    relations: List[Edge] = field(default_factory=list)
    truncated: bool = False
    missing_seeds: List[str] = field(default_factory=list)
    shards_report: ShardsReport = field(default_factory=ShardsReport)
    traversal: TraversalStats = field(default_factory=TraversalStats)
    took_ms: int = 0


@dataclass
class Path(Model):
    """`POST /graph/path`: a shortest path, or `found=False` with the reason."""

    found: bool = False
    length: Optional[int] = None
    entities: List[NeighborEntity] = field(default_factory=list)
    relations: List[Edge] = field(default_factory=list)
    reason: Optional[str] = None
    shards_report: ShardsReport = field(default_factory=ShardsReport)
    traversal: TraversalStats = field(default_factory=TraversalStats)
    took_ms: int = 0


# ---------------------------------------------------------------------------------------------
# Retrieval.


@dataclass
class Seed(Model):
    """A fused hit with its rank and raw score in each list it came from."""

    id: str = ""
    score: float = 0.0
    vector_rank: Optional[int] = None
    distance: Optional[float] = None
    title_rank: Optional[int] = None
    title_score: Optional[float] = None
    bm25_rank: Optional[int] = None
    bm25_score: Optional[float] = None


@dataclass
class RetrievedEntity(Model, _EntityFields):
    """An entity of a retrieval: a seed (with its fused `score`) or reached by expansion
    (`score` None)."""

    hop: int = 0
    score: Optional[float] = None


@dataclass
class TextUnit(Model):
    """A text unit of a retrieval."""

    id: str = ""
    text: str = ""
    n_tokens: int = 0
    document_id: str = ""
    score: float = 0.0


@dataclass
class CommunityReport(Model):
    """A community report of a retrieval."""

    id: str = ""
    title: str = ""
    level: int = 0
    rank: float = 0.0
    content: str = ""
    matches: Optional[int] = None
    # Whether a document deleted since the report was written removed some of its entities.
    stale: Optional[bool] = None


@dataclass
class Retrieval(Model):
    """`POST /retrieve`: the ranked context of a question, and `context_text` laid out as
    GraphRAG's prompts expect."""

    mode: str = ""
    seeds: List[Seed] = field(default_factory=list)
    entities: List[RetrievedEntity] = field(default_factory=list)
    relations: List[Edge] = field(default_factory=list)
    text_units: List[TextUnit] = field(default_factory=list)
    community_reports: List[CommunityReport] = field(default_factory=list)
    context_text: str = ""
    tokens: Dict[str, Any] = field(default_factory=dict)
    shards_report: ShardsReport = field(default_factory=ShardsReport)
    traversal: TraversalStats = field(default_factory=TraversalStats)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    chunk_seeds: Optional[List[Seed]] = None

    def titles(self) -> Dict[str, str]:
        """Entity id -> title, for the entities of this answer."""
        return {e.id: e.title for e in self.entities}


# ---------------------------------------------------------------------------------------------
# Graph algorithms, run as tasks.


@dataclass
class TaskProgress(Model):
    """How far a task got: its `phase` (loading, connecting, superstep, gathering, writing:
    results staged in every shard, publishing: decided and made visible, done), supersteps
    run, the graph's size and workers; `delta` (PageRank: the sum of rank changes in the last
    superstep) and `changed` (wcc: labels changed in it) when they apply."""

    phase: str = ""
    supersteps: int = 0
    vertices: int = 0
    edges: int = 0
    workers: int = 0
    delta: Optional[float] = None
    changed: Optional[int] = None


@dataclass
class Scored(Model):
    """An entity and its value (PageRank's rank, or its degree)."""

    id: str = ""
    value: float = 0.0


@dataclass
class Component(Model):
    """A weakly connected component: named by one of its entities, with its size and, when
    asked (`members=True`), up to `top_k` of its entity ids."""

    component: str = ""
    size: int = 0
    members: Optional[List[str]] = None


@dataclass
class TaskResult(Model):
    """A finished task's answer: `top` (pagerank, degree: the highest values, highest first),
    `components` and `largest` (wcc, louvain: their number and the largest), `converged`
    (pagerank: stopped on `tolerance`), `written` (degree with `write`: entities whose `degree`
    was written), `modularity` (louvain)."""

    top: Optional[List[Scored]] = None
    components: Optional[int] = None
    largest: Optional[List[Component]] = None
    converged: Optional[bool] = None
    written: Optional[int] = None
    modularity: Optional[float] = None


@dataclass
class Task(Model):
    """`POST /graph/algorithms/{name}`, `GET /tasks/{id}`: a graph algorithm's run. `state` is
    `running`, `completed`, `failed` (with `error`) or `cancelled`; `result` is set once it
    completed. The id (`<node>:<number>`) names the node that drives it."""

    id: str = ""
    algorithm: str = ""
    state: str = ""
    started_at_ms: int = 0
    running_ms: int = 0
    cancel_requested: bool = False
    progress: TaskProgress = field(default_factory=TaskProgress)
    result: Optional[TaskResult] = None
    error: Optional[str] = None

    @property
    def done(self) -> bool:
        """Whether the task ended (completed, failed or cancelled)."""
        return self.state != "running"


# ---------------------------------------------------------------------------------------------
# API keys.


@dataclass
class KeyInfo(Model):
    """A key as `GET /keys` lists it (never the key itself)."""

    id: str = ""
    name: str = ""
    role: str = ""
    created_ms: int = 0


@dataclass
class CreatedKey(KeyInfo):
    """`POST /keys`: the only answer that shows the key (`torua_<id>_<secret>`)."""

    key: str = ""
