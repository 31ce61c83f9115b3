"""Every method of the sync `Client` against the live cluster: cluster views, ingest and read back,
deletes, queries, traversals, retrieval, keys and roles, errors with the server's reason, and
failover past a dead node and a node that never answers."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Iterator, List

import pytest

import torua
from torua.types import Batch, Chunk, Document, Entity, Relation

from conftest import wait_for


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- Nodes and cluster -------------------------------------------------------------------------


def test_health_and_cluster_views(client: torua.Client, urls: List[str]) -> None:
    h = client.health()
    assert h.status == "ok" and h.node_id and h.raw["node_id"] == h.node_id
    ch = client.cluster_health()
    assert ch.status == "green" and ch.number_of_nodes == len(urls) and ch.coordinator
    waited = client.cluster_health(wait_for_status="green", timeout=5)
    assert waited.timed_out is False
    registry = client.cluster_nodes()
    assert registry.coordinator == ch.coordinator and len(registry.nodes) == len(urls)
    members = client.nodes()
    assert sorted(m.state for m in members) == ["ready"] * len(urls)
    assert {m.addr for m in members} == {u.split("://")[1] for u in urls}
    shards = client.shards()
    assert shards.shards > 0 and len(shards.copies) == shards.shards * shards.replicas
    assert all(c.state for c in shards.copies)
    with_checksums = client.shards(checksum=True)
    assert any("checksum" in c.raw for c in with_checksums.copies)
    assert "torua_" in client.metrics()
    spec = client.openapi()
    assert "/retrieve" in spec["paths"]
    b = client.broadcast("/control", {"log_filter": "info"}, timeout=5)
    assert b.sent_to == len(urls) and all(r["ok"] for r in b.results), b.raw


def test_drain_and_undrain(client: torua.Client) -> None:
    node = client.nodes()[-1].id
    drained = client.drain(node)
    assert drained.node == node and drained.draining is True
    back = client.undrain(node)
    assert back.node == node and back.draining is False
    # Copies a drain started moving settle before the other tests read checksums.
    wait_for(
        lambda: client.shards(),
        lambda s: not s.draining and not s.moves,
        90,
        "no drain and no moves",
    )
    wait_for(lambda: client.cluster_health(), lambda h: h.status == "green", 90, "green")
    with pytest.raises(torua.NotFound):
        client.drain("no-such-node")


def test_rebuild_copy(client: torua.Client) -> None:
    before = client.shards()
    copy = next(c for c in before.copies if not c.primary)
    status = client.rebuild_copy(copy.node, copy.shard)
    assert (status.node, status.shard, status.rebuilding) == (copy.node, copy.shard, True)
    # The copy leaves the in-sync set and comes back: two map changes.
    wait_for(
        lambda: client.shards(),
        lambda s: s.version >= before.version + 2,
        90,
        "the copy out of the in-sync set and back",
    )
    wait_for(lambda: client.cluster_health(), lambda h: h.status == "green", 90, "green")
    with pytest.raises(torua.NotFound):
        client.rebuild_copy("no-such-node", copy.shard)


# -- Ingest, reads, deletes --------------------------------------------------------------------


def test_ingest_read_back_and_delete(client: torua.Client) -> None:
    a, b, c = uid("e"), uid("e"), uid("e")
    t, d = uid("t"), uid("d")
    batch = Batch(
        entities=[
            Entity(id=a, title="ALPHA PY", type="THING", description="first", text_unit_ids=[t]),
            Entity(id=b, title="BETA PY", type="THING", description="second", text_unit_ids=[t]),
            {"id": c, "title": "GAMMA PY", "type": "THING"},
        ],
        relations=[
            Relation(id=uid("r"), source=a, target=b, description="alpha knows beta", weight=2.0),
            Relation(id=uid("r"), source=b, target=c, description="beta knows gamma"),
        ],
        chunks=[
            Chunk(
                id=t, text="alpha and beta are things", n_tokens=6, document_id=d, entity_ids=[a, b]
            )
        ],
        documents=[Document(id=d, title="py doc", text="alpha and beta", text_unit_ids=[t])],
    )
    result = client.ingest(batch, batch_size=2)
    assert not result.errors and result.batches == 4
    assert result.counts["entities"] == 3 and result.counts["relations"] == 2

    # A strict read waits for the writes acknowledged before it: no polling needed.
    rec = client.get_entity(a, freshness="strict")
    assert rec.entity.title == "ALPHA PY" and rec.entity.text_unit_ids == [t]
    assert [r.target for r in rec.relations] == [b] and rec.relations[0].weight == 2.0
    chunk = client.get_chunk(t, freshness="strict")
    assert chunk.chunk.text == "alpha and beta are things" and chunk.chunk.entity_ids == [a, b]

    gone = client.delete_entity(c)
    assert gone.deleted == c and gone.relations == 1
    with pytest.raises(torua.NotFound) as e:
        client.get_entity(c, freshness="strict")
    assert e.value.reason
    relations = client.get_entity(b, freshness="strict").relations
    assert all(c not in (r.source, r.target) for r in relations)


def test_delete_document(client: torua.Client) -> None:
    d, t = uid("doc"), uid("t")
    e = uid("e")
    client.ingest(
        {
            "entities": [{"id": e, "title": "ONLY IN DOC PY", "text_unit_ids": [t]}],
            "chunks": [{"id": t, "text": "only here", "document_id": d, "entity_ids": [e]}],
            "documents": [
                {"id": d, "title": "to delete", "text": "only here", "text_unit_ids": [t]}
            ],
        }
    )
    doc = client.get_document(d)
    assert doc.document.id == d and doc.document.text_unit_ids == [t]
    answer = client.delete_document(d)
    assert answer["found"] is True
    assert answer.removed["documents"] == 1 and answer.removed["chunks"] == 1
    assert answer.removed["entities"] == 1
    with pytest.raises(torua.NotFound):
        client.get_document(d)
    # The text unit went with its document, and so did the entity only it supported.
    with pytest.raises(torua.NotFound):
        client.get_chunk(t)
    with pytest.raises(torua.NotFound):
        client.get_entity(e)
    # Deleting again is a no-op.
    again = client.delete_document(d)
    assert again["found"] is False and again.removed["entities"] == 0


# -- Queries and traversals --------------------------------------------------------------------


def test_query_neighborhood_and_path(client: torua.Client) -> None:
    a, b, c = uid("q"), uid("q"), uid("q")
    client.ingest(
        {
            "entities": [{"id": x, "title": f"Q {x}", "type": "QTEST"} for x in (a, b, c)],
            "relations": [
                {"id": uid("r"), "source": a, "target": b, "description": "ab", "weight": 1.0},
                {"id": uid("r"), "source": b, "target": c, "description": "bc", "weight": 3.0},
            ],
        }
    )
    q = client.query(
        "MATCH (e:Entity) WHERE e.type = $t RETURN e.id AS id ORDER BY id", {"t": "QTEST"}
    )
    ids = [row[0] for row in q.rows]
    assert {a, b, c} <= set(ids) and q.columns == ["id"]
    assert q.shards_report.failed == 0 and q.shards_report.total > 0
    assert q.shards_report.behind == []
    fresh = client.query("MATCH (e:Entity) RETURN count(*)", freshness="strict")
    assert fresh.rows[0][0] >= 3 and fresh.shards_report.behind == []
    assert q.records()[0]["id"] == ids[0]
    per = client.query("MATCH (e:Entity) RETURN count(*)", merge="per_shard", shards=[0, 1])
    assert per.merge == "per_shard" and sorted(s["shard"] for s in per.per_shard) == [0, 1]

    n = client.neighborhood([a], hops=2)
    assert {e.id for e in n.entities} >= {a, b, c}
    assert {e.hop for e in n.entities if e.id == c} == {2}
    followed = n.traversal.relations_local + n.traversal.relations_remote
    assert followed >= 2 and n.traversal.rounds >= 1, n.traversal
    filtered = client.neighborhood(b, min_weight=2.0, direction="out")
    assert [r.target for r in filtered.relations] == [c]
    assert client.neighborhood(["no-such-entity"]).missing_seeds == ["no-such-entity"]

    p = client.path(a, c, max_hops=3)
    assert p.found and p.length == 2 and [e.id for e in p.entities] == [a, b, c]
    none = client.path(c, a, max_hops=3, direction="out")
    assert not none.found and none.reason
    with pytest.raises(torua.NotFound):
        client.path(a, "no-such-entity")


def test_retrieve(client: torua.Client, dulce) -> None:
    top = max(dulce["entities"], key=lambda e: e["degree"])
    r = client.retrieve(f"Who is {top['title'].title()}?", top_k=5, max_tokens=4000)
    assert r.mode == "local" and r.entities and r.context_text
    assert r.seeds[0].id == top["id"], [s.id for s in r.seeds]
    assert r.tokens["total"] <= 4000 and r.shards_report.failed == 0
    g = client.retrieve("What is the mission?", mode="global", max_tokens=2000)
    assert g.community_reports and not g.entities
    only = client.retrieve(top["title"], include=["entities"], hops=0)
    assert only.entities and not only.text_units and not only.relations


# -- Graph algorithms as tasks -----------------------------------------------------------------


def test_graph_algorithms_as_tasks(client: torua.Client, urls: List[str], connect) -> None:
    # Two components of our own: a star around a hub (4 entities) and a pair. The cluster holds
    # other tests' entities too, so counts are checked on these ids.
    hub, spokes = uid("hub"), [uid("spoke") for _ in range(3)]
    x, y = uid("pair"), uid("pair")
    ours = {hub, *spokes, x, y}
    client.ingest(
        {
            "entities": [{"id": e, "title": f"ALGO {e}", "type": "ALGO"} for e in sorted(ours)],
            "relations": [
                {"id": uid("r"), "source": s, "target": t, "description": "algo"}
                for s, t in [(spokes[0], hub), (spokes[1], hub), (spokes[2], hub), (x, y)]
            ],
        },
        wait=True,
    )

    # PageRank, waiting for it: every spoke points at the hub, which ranks above them.
    pr = client.pagerank(wait=True, timeout=60, top_k=100000)
    assert pr.done and pr.state == "completed", pr.raw
    assert pr.algorithm == "pagerank" and pr.error is None and pr.result is not None
    top = pr.result.top or []
    ranks = {s.id: s.value for s in top}
    assert ours <= set(ranks) and pr.progress.vertices >= len(ours)
    assert sum(ranks.values()) <= 1.0 + 1e-6
    assert [s.value for s in top] == sorted((s.value for s in top), reverse=True)
    assert all(ranks[hub] > ranks[s] for s in spokes), {e: ranks[e] for e in ours}
    assert ranks[y] > ranks[x]
    # The answering node drives it and lists it; any node answers about it.
    assert pr.id in {t.id for t in client.tasks()}
    for url in urls:
        with torua.Client([url], **connect) as c:
            assert c.task(pr.id).state == "completed"

    # Weakly connected components with their members: ours are the star and the pair.
    cc = client.wcc(wait=True, timeout=60, members=True, top_k=100000)
    assert cc.state == "completed" and cc.result is not None, cc.raw
    largest = cc.result.largest or []
    assert cc.result.components == len(largest) and len(largest) >= 2
    mine = sorted((sorted(m.members or []), m.size) for m in largest if ours & set(m.members or []))
    assert mine == sorted([(sorted([hub, *spokes]), 4), (sorted([x, y]), 2)])

    # Louvain: the pair is a community of its own; the answer carries its modularity.
    lv = client.louvain(wait=True, timeout=60, members=True, top_k=100000)
    assert lv.state == "completed" and lv.result is not None, lv.raw
    assert lv.result.modularity is not None and lv.result.modularity > 0
    assert any(sorted(m.members or []) == sorted([x, y]) for m in lv.result.largest or [])

    # Degree, written to each entity.
    deg = client.degree(wait=True, timeout=60, write=True, top_k=100000)
    assert deg.state == "completed" and deg.result is not None, deg.raw
    assert (deg.result.written or 0) >= len(ours)
    degrees = {s.id: s.value for s in deg.result.top or []}
    assert degrees[hub] == 3 and degrees[x] == 1
    assert client.get_entity(hub, freshness="strict").entity.degree == 3
    assert client.get_entity(spokes[0], freshness="strict").entity.degree == 1

    # A long run, cancelled: it stops before its next superstep and writes nothing. On a small
    # graph even the longest run takes well under a second, so a cancellation that arrives after
    # the last superstep (the task then shows `completed`) is tried again.
    for _ in range(3):
        # The most iterations the server allows, without stopping early.
        long = client.pagerank(iterations=1000, tolerance=0.0)
        assert long.algorithm == "pagerank" and long.state == "running" and not long.done
        assert client.cancel_task(long.id) == long.id
        ended = client.wait_task(long.id, timeout=60)
        assert ended.cancel_requested and ended.state in ("cancelled", "completed"), ended.raw
        if ended.state == "cancelled":
            break
    assert ended.state == "cancelled" and ended.result is None, ended.raw
    # Cancelling an ended task changes nothing.
    assert client.cancel_task(long.id) == long.id
    assert client.task(long.id).state == "cancelled"

    # Refusals carry the server's reason.
    with pytest.raises(torua.BadRequest) as bad:
        client.pagerank(iterations=1001)
    assert "iterations" in bad.value.reason
    with pytest.raises(torua.BadRequest) as bad:
        client.wcc(top_k=0)
    assert "top_k" in bad.value.reason
    with pytest.raises(torua.BadRequest) as bad:
        client.run_algorithm("wcc", damping=0.5)
    assert "pagerank" in bad.value.reason
    with pytest.raises(torua.NotFound):
        client.run_algorithm("no-such-algorithm")
    with pytest.raises(torua.NotFound):
        client.task(f"{ended.id.rsplit(':', 1)[0]}:999999")
    with pytest.raises(torua.BadRequest):
        client.task("not-a-task-id")


# -- Errors ------------------------------------------------------------------------------------


def test_errors_carry_status_and_reason(client: torua.Client) -> None:
    with pytest.raises(torua.BadRequest) as e:
        client.retrieve("x", top_k=0)
    assert e.value.status == 400 and "top_k" in e.value.reason
    with pytest.raises(torua.BadRequest) as e:
        client.query("MATCH (e:Entity) DELETE e")
    assert e.value.reason
    with pytest.raises(torua.BadRequest) as e:
        client.ingest({"entities": [{"id": "ok"}, {"id": "", "title": "no id"}]})
    assert e.value.items and e.value.items[0]["index"] == 1
    with pytest.raises(torua.NotFound) as e:
        client.get_chunk("no-such-chunk")
    assert e.value.status == 404 and e.value.body["error"]["status"] == 404
    with pytest.raises(ValueError):
        client.retrieve()
    with pytest.raises(torua.BadRequest) as e:
        client.get_entity("any", freshness="sometimes")
    assert "freshness" in e.value.reason


# -- Keys and roles ----------------------------------------------------------------------------


def test_keys_and_roles(client: torua.Client, urls: List[str], connect) -> None:
    if not connect["api_key"]:
        pytest.skip("the cluster runs without API keys")
    created = client.create_key("read", name="py reader")
    assert created.key.startswith("torua_") and created.role == "read"
    assert created.id in {k.id for k in client.list_keys()}
    with torua.Client(urls, api_key=created.key, ca=connect["ca"]) as reader:
        assert reader.cluster_health().status
        with pytest.raises(torua.Forbidden) as e:
            reader.ingest({"entities": [{"id": uid("forbidden")}]})
        assert e.value.status == 403 and e.value.reason
        assert client.revoke_key(created.id) == created.id
        # A revocation reaches every node within seconds.
        wait_for(lambda: _refused(reader), lambda refused: refused, 15, "revoked key refused")
    with torua.Client(urls, api_key="torua_000000000000_wrong", ca=connect["ca"]) as wrong:
        with pytest.raises(torua.Unauthorized):
            wrong.cluster_health()
        assert wrong.health().status == "ok"


def _refused(c: torua.Client) -> bool:
    try:
        c.cluster_health()
        return False
    except torua.Unauthorized:
        return True


# -- Failover and timeouts ---------------------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: List[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for s in held:
        s.close()
    server.close()


def test_failover_past_a_dead_node(urls: List[str], dead_url: str, connect, dulce) -> None:
    with torua.Client([dead_url] + urls, **connect) as c:
        assert c.health().status == "ok"
        assert c.cluster_health().status in ("green", "yellow")
        r = c.retrieve(dulce["entities"][0]["title"], top_k=3)
        assert r.entities
        e = uid("fo")
        c.ingest({"entities": [{"id": e, "title": "FAILOVER"}]})
        assert c.get_entity(e).entity.title == "FAILOVER"
    with torua.Client([dead_url], retries=1, backoff=0.01, **connect) as c:
        with pytest.raises(torua.ConnectionFailed):
            c.health()


def test_failover_past_a_node_that_never_answers(urls: List[str], black_hole: str, connect) -> None:
    scheme = urls[0].split("://")[0]
    with torua.Client([f"{scheme}://{black_hole}"] + urls, timeout=1.0, **connect) as c:
        started = time.monotonic()
        assert c.health().status == "ok"
        assert time.monotonic() - started < 20
        # The node that answered is asked first from now on.
        assert c._api.targets.preferred != 0
        assert c.health().status == "ok"
    # Alone, it makes the call fail once the timeout has passed on every try.
    with torua.Client([f"{scheme}://{black_hole}"], timeout=0.5, retries=1, backoff=0.01) as c:
        started = time.monotonic()
        with pytest.raises(torua.ConnectionFailed):
            c.health()
        assert 0.9 < time.monotonic() - started < 20
