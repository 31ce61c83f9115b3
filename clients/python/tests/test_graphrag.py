"""The Python GraphRAG importer loads the Dulce output into the cluster, and what it loads is what
`torua import graphrag` loads: importing again with the CLI leaves every shard copy's checksum
unchanged, and so does every property of every Dulce item."""

from __future__ import annotations

import os
import subprocess

import pytest

import torua

from conftest import DULCE, count_ids, wait_for


def test_python_importer_loads_dulce(client: torua.Client, dulce) -> None:
    assert dulce["before"] == {label: 0 for label in dulce["ids"]}, "Dulce was loaded before"
    expected = {"entities": 39, "relations": 107, "chunks": 5, "communities": 10, "documents": 1}
    assert dulce["summary"].counts == expected
    assert dulce["summary"].ingest.batches == 4 and not dulce["summary"].ingest.errors
    loaded = {label: count_ids(client, label, ids) for label, ids in dulce["ids"].items()}
    assert loaded == {
        "Entity": 39,
        "RELATED": counted_relations(dulce),
        "Chunk": 5,
        "Community": 10,
        "Document": 1,
    }
    # Relationship endpoints are entity ids, not titles.
    first = dulce["batch"].relations[0]
    rec = client.get_entity(first.source)
    assert any(r.id == first.id and r.target == first.target for r in rec.relations)
    # Communities carry their reports.
    q = client.query(
        "MATCH (c:Community) WHERE c.id IN $ids AND c.full_content <> '' RETURN count(*)",
        {"ids": dulce["ids"]["Community"]},
    )
    assert q.rows[0][0] == 10


def test_cli_import_changes_nothing_after_the_python_import(client: torua.Client, dulce) -> None:
    binary = os.environ.get("TORUA_BIN")
    if not binary:
        pytest.skip("set TORUA_BIN to compare with torua import")

    def checksums() -> dict:
        shards = client.shards(checksum=True)
        return {(c.shard, c.node): c.raw.get("checksum") for c in shards.copies}

    before = wait_for(
        lambda: (client.wait_applied(), checksums())[1],
        lambda sums: all(isinstance(v, str) for v in sums.values()),
        60,
        "every copy's checksum",
    )
    items_before = snapshot(client, dulce)
    env = dict(os.environ)
    out = subprocess.run(
        [binary, "import", "graphrag", str(DULCE), "--url", client.urls[0], "--quiet"]
        + ["--routing", "none"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "39 entities, 107 relations, 5 chunks, 10 communities, 1 documents" in out.stdout
    client.wait_applied()
    assert checksums() == before
    assert snapshot(client, dulce) == items_before


def counted_relations(dulce) -> int:
    """The Dulce relations a global relation query counts: those whose source is an entity (two
    name a title that is no entity, a stub, which global relation queries leave out)."""
    entities = set(dulce["ids"]["Entity"])
    return sum(1 for r in dulce["batch"].relations if r.source in entities)


def snapshot(client: torua.Client, dulce) -> dict:
    """Every property of the Dulce items, as the cluster holds them."""
    ids = dulce["ids"]
    queries = {
        "Entity": "MATCH (x:Entity) WHERE x.id IN $ids RETURN x.id, x.title, x.type, "
        "x.description, x.text_unit_ids, x.frequency, x.degree ORDER BY x.id",
        "RELATED": "MATCH (a:Entity)-[x:RELATED]->(b:Entity) WHERE x.id IN $ids RETURN x.id, "
        "x.source, x.target, b.id, x.description, x.weight, x.text_unit_ids ORDER BY x.id",
        "Chunk": "MATCH (x:Chunk) WHERE x.id IN $ids RETURN x.id, x.text, x.n_tokens, "
        "x.document_id, x.entity_ids ORDER BY x.id",
        "Community": "MATCH (x:Community) WHERE x.id IN $ids RETURN x.id, x.level, x.parent, "
        "x.title, x.entity_ids, x.summary, x.full_content, x.rank ORDER BY x.id",
        "Document": "MATCH (x:Document) WHERE x.id IN $ids RETURN x.id, x.title, x.text, "
        "x.text_unit_ids ORDER BY x.id",
    }
    out = {label: client.query(q, {"ids": ids[label]}).rows for label, q in queries.items()}
    expected = [39, counted_relations(dulce), 5, 10, 1]
    assert [len(out[k]) for k in queries] == expected, {k: len(v) for k, v in out.items()}
    return out
