"""Shared fixtures of the client's tests.

The live tests need a running cluster, described by the environment that
`tests/python_client_process.rs` sets (or a person running pytest by hand):
- `TORUA_URLS`: the nodes' URLs, comma-separated;
- `TORUA_API_KEY`: an admin key (unset for a cluster without keys); `TORUA_CA`: the CA to trust
  for HTTPS (unset for plain HTTP);
- `TORUA_DEAD_URL`: a URL where no node listens (default: a closed port on 127.0.0.1);
- `TORUA_EMBEDDING_DIM`: the cluster's embedding dimension (0: no embeddings);
- `TORUA_BIN`: the `torua` binary, to compare the Python importer with `torua import`.
Without `TORUA_URLS` the live tests are skipped and only the offline ones run.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar

import pytest

import torua

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
DULCE = Path(
    os.environ.get("TORUA_DULCE") or HERE.parents[2] / "tests" / "data" / "graphrag-operation-dulce"
)


def wait_for(
    probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Polls `probe` until `ok` holds for its value; fails after `timeout` seconds with the
    last value (or exception)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if ok(last):
                return last
        except torua.ToruaError as e:
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout:.0f} s; last: {last!r}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def urls() -> List[str]:
    value = os.environ.get("TORUA_URLS")
    if not value:
        pytest.skip("no cluster: set TORUA_URLS")
    return [u for u in value.split(",") if u]


@pytest.fixture(scope="session")
def connect() -> Dict[str, Optional[str]]:
    """The key and CA every client of the tests uses."""
    return {
        "api_key": os.environ.get("TORUA_API_KEY") or None,
        "ca": os.environ.get("TORUA_CA") or None,
    }


@pytest.fixture(scope="session")
def client(urls: List[str], connect: Dict[str, Optional[str]]) -> Iterator[torua.Client]:
    with torua.Client(urls, **connect) as c:
        c.cluster_health(wait_for_status="green", timeout=60)
        yield c


@pytest.fixture(scope="session")
def dead_url(urls: List[str]) -> str:
    """A URL where nothing listens: connections are refused."""
    value = os.environ.get("TORUA_DEAD_URL")
    if value:
        return value
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scheme = urls[0].split("://")[0]
    return f"{scheme}://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def embedding_dim() -> int:
    return int(os.environ.get("TORUA_EMBEDDING_DIM") or 0)


def parquet(name: str) -> List[Dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(DULCE / f"{name}.parquet").to_pylist()


def count_ids(client: torua.Client, label: str, ids: List[str]) -> int:
    """How many of `ids` the cluster holds as `label` (entities: not stubs)."""
    if label == "RELATED":
        cypher = "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE r.id IN $ids RETURN count(*) AS n"
    else:
        cypher = f"MATCH (x:{label}) WHERE x.id IN $ids RETURN count(*) AS n"
    return int(client.query(cypher, {"ids": ids}).rows[0][0])


@pytest.fixture(scope="session")
def dulce(client: torua.Client) -> Dict[str, Any]:
    """The Dulce GraphRAG output, loaded into the cluster by the Python importer (once per
    session), placed by id: the retrieval tests expect one database's BM25 ranking, which shards
    placed by id approach (placement by community makes the shards' term statistics differ more;
    see the README's known limits). Returns the parquet rows, the item ids by label, what was in
    the cluster before, and the importer's summary."""
    from torua.graphrag import import_graphrag, read_folder

    batch = read_folder(DULCE)
    ids = {
        "Entity": [e.id for e in batch.entities],
        "RELATED": [r.id for r in batch.relations],
        "Chunk": [c.id for c in batch.chunks],
        "Community": [c.id for c in batch.communities],
        "Document": [d.id for d in batch.documents],
    }
    before = {label: count_ids(client, label, v) for label, v in ids.items()}
    started = time.monotonic()
    summary = import_graphrag(client, DULCE, batch_size=50, routing="none")
    return {
        "batch": batch,
        "ids": ids,
        "before": before,
        "summary": summary,
        "seconds": time.monotonic() - started,
        "entities": parquet("entities"),
    }
