#!/usr/bin/env python3
"""The operator console (/ui) in headless Chromium, driven by selenium, against a live cluster.

Run by tests/console_process.rs (through scripts/console_check.sh, which provides the venv) with
a 3-node cluster loaded with the Dulce data. It opens the console on the first node and checks
each page against the API's own answers:

  cluster   three nodes listed, the coordinator named as the API names it
  shards    every copy of /cluster/shards in the grid, with its role
  query     a Cypher count typed in the editor equals the API's count
  retrieve  context_text shown verbatim (it contains -----Entities-----)
  explorer  a named entity drawn with its neighbours: as many nodes as /graph/neighborhood
            returns for it (capped at 300)
  drain     the Drain button (confirmed) moves every copy off a node; Undrain lifts it
  kill -9   the cluster page shows the killed node dead within 10 s, without a reload
  login     on a node that asks for API keys (--login-url): the 401 shown with a key field;
            with the key typed in, the cluster page fills and the key is in sessionStorage

and that the browser logged no error or warning on any page (but the 401s of the login step). To kill a node it prints
"KILL <node id>" and waits for a line on stdin (the Rust test owns the processes).
Screenshots of every page go to --shots. Exits 1 listing every failed check.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

# The explorer's cap (GRAPH_CAP in app.js).
GRAPH_CAP = 300
# The whole run may not take longer than this (the Rust test has its own budget).
RUN_LIMIT_S = 300

failures = []


def log(msg):
    print(f"console-test: {msg}", flush=True)


def check(ok, msg):
    if not ok:
        failures.append(msg)
        log("FAILED: " + msg)
    return ok


def wait_for(what, timeout, probe, every=0.2):
    """Calls probe until it returns something truthy; raises with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (WebDriverException, urllib.error.URLError, KeyError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s; last seen: {str(last)[:600]}")
        time.sleep(every)


class Api:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, body):
        return self.call("POST", path, body)


def browser():
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                   if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        sys.exit("console-test: chromium and chromedriver are needed: run scripts/setup.sh "
                 "(Debian packages chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=options)
    d.set_page_load_timeout(30)
    d.set_script_timeout(30)
    return d


def console_problems(d, page, allowed=lambda message: False):
    """Errors and warnings the browser logged since the last call (each entry is returned once),
    but those `allowed` accepts."""
    bad = [e for e in d.get_log("browser")
           if e["level"] in ("SEVERE", "WARNING") and not allowed(e["message"])]
    for e in bad:
        log(f"browser {e['level']} on the {page} page: {e['message']}")
    check(not bad, f"the browser logged {len(bad)} error(s)/warning(s) on the {page} page: "
          + "; ".join(e["message"][:300] for e in bad))


def shot(d, shots, name):
    path = os.path.join(shots, f"console-{name}.png")
    d.save_screenshot(path)
    log(f"screenshot {path}")


def tab(d, name):
    d.find_element(By.ID, f"tab-{name}").click()
    wait_for(f"the {name} page to show", 5,
             lambda: d.find_element(By.ID, f"page-{name}").is_displayed())


def text_of(d, element_id):
    return d.find_element(By.ID, element_id).get_attribute("textContent")


def count(d, selector):
    return d.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def submit(d, field_id, text, button_id):
    """Types `text` into the emptied field `field_id` and clicks `button_id`."""
    field = d.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(text)
    d.find_element(By.ID, button_id).click()


def page_checked(d, shots, page, summary):
    """The end of a page's checks: its summary logged, its screenshot, the browser's complaints."""
    log(summary)
    shot(d, shots, page)
    console_problems(d, page)


def cluster_page(d, api, shots, ids):
    health = api.get("/cluster/health")
    coordinator = health["coordinator"]
    rows = wait_for("three ready nodes in the nodes table", 15, lambda: (lambda r: r if len(r) == 3 and all(
        x[1] == "ready" for x in r) else None)(d.execute_script(
            "return [...document.querySelectorAll('#nodes-table tbody tr')]"
            ".map(tr => [tr.dataset.nodeId, tr.dataset.state])")))
    check(sorted(r[0] for r in rows) == sorted(ids), f"the nodes table lists {rows}, expected {ids}")
    shown = wait_for("the coordinator", 10, lambda: text_of(d, "coordinator") or None)
    check(shown == coordinator, f"the page names {shown!r} as coordinator, the API {coordinator!r}")
    star = d.execute_script(
        "return [...document.querySelectorAll('#nodes-table tbody tr')]"
        ".filter(tr => tr.textContent.includes('coordinator')).map(tr => tr.dataset.nodeId)")
    check(star == [coordinator], f"the row marked coordinator is {star}, the API says {coordinator}")
    status = text_of(d, "cluster-status")
    check(status == health["status"], f"the page shows health {status!r}, the API {health['status']!r}")
    page_checked(d, shots, "cluster", f"cluster page: {len(rows)} nodes, coordinator {shown}")


def grid_copies(d):
    return d.execute_script(
        "return [...document.querySelectorAll('#shards-grid td.copy')]"
        ".map(td => [Number(td.dataset.shard), td.dataset.node, td.querySelector('.role').textContent])")


def api_copies(api):
    return sorted([c["shard"], c["node"], "P" if c["primary"] else "R"]
                  for c in api.get("/cluster/shards")["copies"])


def shards_page(d, api, shots):
    tab(d, "shards")
    expected = api_copies(api)
    try:
        wait_for("the grid to show every copy of /cluster/shards", 10,
                 lambda: sorted(grid_copies(d)) == api_copies(api))
    except AssertionError as e:
        check(False, f"{e}; API: {expected}")
    page_checked(d, shots, "shards",
                 f"shards page: {len(grid_copies(d))} copies in the grid, API {len(expected)}")


def query_page(d, api, shots):
    tab(d, "query")
    cypher = "MATCH (e:Entity) RETURN count(*) AS n"
    expected = api.post("/query", {"cypher": cypher})["rows"][0][0]
    submit(d, "cypher", cypher, "run-query")
    shown = wait_for("the count in the result table", 20, lambda: d.execute_script(
        "const td = document.querySelector('#query-rows tbody td'); return td && td.textContent"))
    check(shown == str(expected), f"the Query page shows {shown!r} entities, the API {expected}")
    meta = text_of(d, "query-shards")
    check("_shards" in meta and "answered" in meta, f"_shards is not shown: {meta!r}")
    page_checked(d, shots, "query", f"query page: count {shown} (API {expected}); {meta}")


def retrieve_page(d, api, shots):
    tab(d, "retrieve")
    question = "Who is Alex Mercer?"
    submit(d, "rq-query", question, "run-retrieve")
    context = wait_for("context_text", 30, lambda: text_of(d, "context-text"))
    check("-----Entities-----" in context, f"context_text lacks -----Entities-----: {context[:300]!r}")
    answer = api.post("/retrieve", {"query": question, "mode": "local", "top_k": 10, "hops": 1,
                                    "max_tokens": 12000})
    check(context == answer["context_text"],
          "the playground's context_text differs from the API's for the same request")
    seeds = count(d, "#rq-seeds tbody tr")
    check(seeds == len(answer["seeds"]), f"{seeds} seed rows shown, the API has {len(answer['seeds'])}")
    page_checked(d, shots, "retrieve",
                 f"retrieve page: {len(context)} characters of context, {seeds} seeds")


def explorer_page(d, api, shots):
    tab(d, "explorer")
    title = "ALEX MERCER"
    submit(d, "explore-q", title, "explore-search")
    graph = d.find_element(By.ID, "graph")
    wait_for("the neighbourhood drawing", 30, lambda: graph.get_attribute("data-state") == "ready")
    root = graph.get_attribute("data-root")
    drawn = int(graph.get_attribute("data-node-count"))
    entity = api.get(f"/graph/entities/{root}")["entity"]
    check(entity["title"] == title, f"the explorer drew {entity['title']!r}, searched {title!r}")
    nb = api.post("/graph/neighborhood", {"seeds": [root], "hops": 1, "direction": "both",
                                          "max_nodes": GRAPH_CAP})
    check(drawn == len(nb["entities"]) and 1 < drawn <= GRAPH_CAP,
          f"the explorer drew {drawn} entities, /graph/neighborhood returns {len(nb['entities'])}")
    details = wait_for("the details panel", 15, lambda: d.execute_script(
        "const h = document.getElementById('details-title'); return h && h.textContent"))
    check(details == title, f"the details panel shows {details!r}")
    wait_for("communities in the details", 15, lambda: count(d, "#details .communities li"))
    shot(d, shots, "explorer")
    # Double-click the best-connected neighbour: its neighbours join the drawing.
    other = max((e for e in nb["entities"] if e["id"] != root), key=lambda e: e["degree"])
    d.execute_script("graph.cy.getElementById(arguments[0]).emit('dbltap')", other["id"])
    more = api.post("/graph/neighborhood", {"seeds": [other["id"]], "hops": 1, "max_nodes": GRAPH_CAP})
    union = len({e["id"] for e in nb["entities"]} | {e["id"] for e in more["entities"]})
    wait_for("the expanded drawing", 15,
             lambda: int(graph.get_attribute("data-node-count")) == min(union, GRAPH_CAP))
    log(f"explorer: {title} drawn with {drawn} entities (API {len(nb['entities'])}); "
        f"expanding {other['title']} gives {graph.get_attribute('data-node-count')}")
    console_problems(d, "explorer")


def confirm_click(d, element_id):
    d.find_element(By.ID, element_id).click()
    alert = wait_for("the confirmation dialog", 5, lambda: d.switch_to.alert)
    alert.accept()


def drain(d, api, shots, node):
    tab(d, "shards")
    wait_for(f"the Drain button of {node}", 10, lambda: d.find_elements(By.ID, f"drain-{node}"))
    before = sum(1 for c in api_copies(api) if c[1] == node)
    confirm_click(d, f"drain-{node}")
    wait_for(f"{node} draining in the API", 10,
             lambda: any(x["node"] == node for x in api.get("/cluster/shards")["draining"]))
    wait_for(f"every copy off {node} (GET /cluster/shards)", 90,
             lambda: not any(c[1] == node for c in api_copies(api)), every=0.5)
    wait_for(f"the grid showing no copy on {node}", 10,
             lambda: not count(d, f"#shards-grid td.copy[data-node='{node}']"))
    log(f"drain: {before} copies moved off {node}")
    shot(d, shots, "shards-drained")
    wait_for(f"the Undrain button of {node}", 10, lambda: d.find_elements(By.ID, f"undrain-{node}"))
    confirm_click(d, f"undrain-{node}")
    wait_for(f"{node} no longer draining", 10,
             lambda: not any(x["node"] == node for x in api.get("/cluster/shards")["draining"]))
    wait_for(f"the Drain button of {node} back", 10, lambda: d.find_elements(By.ID, f"drain-{node}"))
    console_problems(d, "shards (drain)")


def kill(d, shots, node):
    tab(d, "cluster")
    d.execute_script("window.__sameDocument = true")
    print(f"KILL {node}", flush=True)
    line = sys.stdin.readline().strip()
    check(line == "KILLED", f"the test harness answered {line!r} to KILL")
    killed = time.monotonic()
    state = None
    try:
        wait_for(f"{node} dead on the cluster page", 10, lambda: d.execute_script(
            "const tr = document.querySelector(`#nodes-table tr[data-node-id='${arguments[0]}']`);"
            "return tr && tr.dataset.state === 'dead'", node), every=0.1)
        state = "dead"
    except AssertionError as e:
        check(False, str(e))
    check(d.execute_script("return window.__sameDocument === true"), "the page was reloaded")
    log(f"kill -9 {node}: shown {state} after {time.monotonic() - killed:.1f} s")
    shot(d, shots, "cluster-node-dead")
    console_problems(d, "cluster (after kill -9)")


def login(d, shots, url, key):
    d.get(url.rstrip("/") + "/ui")
    wait_for("the API key field", 10, lambda: d.find_element(By.ID, "login").is_displayed())
    msg = wait_for("the 401 message", 10, lambda: d.find_element(By.ID, "cluster-msg").is_displayed()
                   and text_of(d, "cluster-msg"))
    check("401" in msg, f"the cluster page does not say the API answered 401: {msg!r}")
    shot(d, shots, "login")
    submit(d, "api-key", key, "login-btn")
    wait_for("the node listed once the key is given", 15,
             lambda: count(d, "#nodes-table tbody tr") == 1)
    check(not d.find_element(By.ID, "login").is_displayed(), "the key field is still shown")
    stored = d.execute_script("return sessionStorage.getItem('torua.apiKey')")
    check(stored == key, "the key is not in sessionStorage")
    check(d.find_element(By.ID, "logout-btn").is_displayed(), "no Forget key button")
    log("login: 401 shown, the key accepted, the cluster page filled")
    console_problems(d, "cluster (login)", allowed=lambda m: "status of 401" in m)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the node whose console is opened")
    p.add_argument("--ids", required=True, help="the nodes' ids, comma separated")
    p.add_argument("--drain", required=True, help="the node to drain and undrain")
    p.add_argument("--kill", required=True, help="the node to have killed (last)")
    p.add_argument("--shots", required=True, help="directory for screenshots")
    p.add_argument("--login-url", help="a node that asks for API keys (checked last)")
    p.add_argument("--key", help="a key --login-url accepts")
    a = p.parse_args()
    signal.alarm(RUN_LIMIT_S)
    os.makedirs(a.shots, exist_ok=True)
    api = Api(a.url)
    ids = a.ids.split(",")
    started = time.monotonic()
    d = browser()
    try:
        d.get(a.url.rstrip("/") + "/ui")
        for step in (lambda: cluster_page(d, api, a.shots, ids),
                     lambda: shards_page(d, api, a.shots),
                     lambda: query_page(d, api, a.shots),
                     lambda: retrieve_page(d, api, a.shots),
                     lambda: explorer_page(d, api, a.shots),
                     lambda: drain(d, api, a.shots, a.drain),
                     lambda: kill(d, a.shots, a.kill),
                     lambda: a.login_url and login(d, a.shots, a.login_url, a.key)):
            try:
                step()
            except AssertionError as e:
                check(False, str(e))
                try:
                    shot(d, a.shots, "failure-%d" % len(failures))
                except WebDriverException:
                    pass
    finally:
        d.quit()
    log(f"{len(failures)} failed check(s) in {time.monotonic() - started:.1f} s")
    for f in failures:
        log("  - " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
