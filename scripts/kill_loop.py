"""One torua node with one copy per shard (R=1), killed with kill -9 during a continuous ingest,
restarted, and read back: every acknowledged entity must be there with its acknowledged (or a later,
unacknowledged) description. Reproduces the Kuzu 0.11 kill -9 problem of the README's known limits.

Usage: python3 scripts/kill_loop.py target/release/torua [rounds]   (prints wrong answers per round)
"""
import json, os, random, signal, subprocess, sys, tempfile, threading, time, urllib.request, urllib.error
BIN = sys.argv[1]; ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 12
WORK = tempfile.mkdtemp(prefix="torua-kill-loop-"); D = os.path.join(WORK, "data"); os.makedirs(D)
print("data and node log in", WORK, flush=True)
env = dict(os.environ, TORUA_NODE_ID="node-1", TORUA_DATA_DIR=D, TORUA_HTTP_ADDR="127.0.0.91:7100",
           TORUA_GOSSIP_ADDR="127.0.0.91:7200", TORUA_PEER_ADDR="127.0.0.91:7300", TORUA_SHARDS="2",
           TORUA_REPLICAS="1", TORUA_BOOTSTRAP_EXPECT="1", TORUA_MEMORY_MB="256", TORUA_LOG="info")
URL = "http://127.0.0.91:7100"
def req(method, path, body=None, timeout=20):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(URL + path, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp: return resp.status, resp.read()
    except urllib.error.HTTPError as e: return e.code, e.read()
    except Exception as e: return None, str(e).encode()
log = open(os.path.join(WORK, "node.log"), "ab")
def start():
    p = subprocess.Popen([BIN, "serve"], env=env, stdout=log, stderr=log)
    t = time.time()
    while time.time() - t < 60:
        s, _ = req("GET", "/cluster/health?wait_for_status=green&timeout=1s", timeout=5)
        if s == 200: return p
        time.sleep(0.2)
    raise SystemExit("node did not come up")
acked = {}  # id -> description
tried = {}  # id -> descriptions sent in updates (maybe applied though not acknowledged)
lock = threading.Lock(); stop = threading.Event(); n = [0]
def writer():
    rnd = random.Random(1)
    while not stop.is_set():
        n[0] += 1; k = n[0]
        ents = [{"id": f"w{k}-{i}", "title": f"w{k}-{i}", "type": "T", "description": f"d{k}"} for i in range(20)]
        with lock: old = list(acked)[-200:]
        upd = [{"id": i, "title": i, "type": "T", "description": f"u{k}"} for i in rnd.sample(old, min(5, len(old)))]
        rels = [{"id": f"r{k}-{i}", "source": ents[i]["id"], "target": ents[i+1]["id"], "description": "x", "weight": 1.0} for i in range(19)]
        with lock:
            for e in upd: tried.setdefault(e["id"], set()).add(e["description"])
        s, b = req("POST", "/graph/ingest", {"entities": ents + upd, "relations": rels}, timeout=10)
        if s == 200 and not json.loads(b).get("errors"):
            with lock:
                for e in ents + upd: acked[e["id"]] = e["description"]
        time.sleep(0.01)
bad_total = 0
for r in range(ROUNDS):
    p = start()
    stop.clear(); t = threading.Thread(target=writer); t.start()
    time.sleep(random.uniform(0.5, 3.0))
    p.send_signal(signal.SIGKILL); p.wait(); stop.set(); t.join()
    p = start()
    with lock: items = dict(acked)
    bad = []
    for i, d in items.items():
        s, b = req("GET", f"/graph/entities/{i}")
        if s != 200: bad.append((i, s, b[:160])); continue
        got = json.loads(b)["entity"]["description"] if "entity" in json.loads(b) else json.loads(b).get("description")
        if got != d and got not in tried.get(i, ()): bad.append((i, got, d))
    bad_total += len(bad)
    print(f"round {r+1}: {len(items)} acked, {len(bad)} wrong {bad[:3]}", flush=True)
    p.send_signal(signal.SIGINT); p.wait()
print("TOTAL WRONG", bad_total)
sys.exit(1 if bad_total else 0)
