// torua operator console: one page, five tabs (cluster, shards, query, retrieve, explorer), plain
// JavaScript without a build step. Everything it shows comes from the public HTTP API of the node
// that served it (same origin). When the cluster asks for API keys (a 401), a login field takes
// the key; it is kept in sessionStorage and sent as "Authorization: Bearer <key>".
//
// Rendering builds DOM nodes with textContent only (never innerHTML with data from the API), and
// every failed request ends up as a visible message next to what asked for it.
'use strict';

const KEY_STORAGE = 'torua.apiKey';
/** How often the cluster and shard pages ask again. */
const POLL_MS = 1500;
/** A poll that takes longer than this is abandoned (the next one asks again). */
const POLL_TIMEOUT_MS = 5000;
/** The most entities the explorer draws at once; more are cut with a notice. */
const GRAPH_CAP = 300;
const PAGES = ['cluster', 'shards', 'query', 'retrieve', 'explorer'];

// ---------------------------------------------------------------------------------------------
// DOM helpers

const $ = (id) => document.getElementById(id);

/** `el('td', {class: 'x', text: 'y', 'data-id': 3, onclick: f}, child, ...)`. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = String(v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

/** Replaces the children of `node` (null and false children are left out). */
function fill(node, ...children) {
  clear(node).append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** "1 entity", "3 entities". */
function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

/** A table from column names and rows of cells (strings, numbers or DOM nodes). */
function table(columns, rows, attrs = {}) {
  return el('table', attrs,
    el('thead', {}, el('tr', {}, columns.map((c) => el('th', {text: c})))),
    el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) => el('td', {}, cell(c)))))));
}

/** How one value of an answer is shown in a table cell. */
function cell(v) {
  if (v instanceof Node) return v;
  if (v === null || v === undefined) return el('span', {class: 'muted', text: 'null'});
  if (typeof v === 'object') return short(JSON.stringify(v), 300);
  return String(v);
}

function short(s, n) {
  s = String(s ?? '');
  return s.length > n ? s.slice(0, n) + '…' : s;
}

function showMsg(id, text, kind = 'error') {
  const box = $(id);
  box.className = 'msg ' + kind;
  box.textContent = text;
  box.hidden = false;
}

function hideMsg(id) {
  $(id).hidden = true;
}

/** Runs `work` with the button disabled, showing any error in the message box `msgId`. */
async function busy(button, msgId, work) {
  button.disabled = true;
  hideMsg(msgId);
  try {
    await work();
  } catch (e) {
    showMsg(msgId, errorText(e));
  } finally {
    button.disabled = false;
  }
}

function errorText(e) {
  return e instanceof ApiError ? e.message : 'Error: ' + (e && e.message ? e.message : e);
}

// ---------------------------------------------------------------------------------------------
// Formatting

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function fmtMb(mb) {
  if (mb === null || mb === undefined) return '–';
  return mb >= 10240 ? `${(mb / 1024).toFixed(1)} GiB` : `${mb} MiB`;
}

function fmtBytes(b) {
  if (b === null || b === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${b < 10 && i > 0 ? b.toFixed(1) : Math.round(b)} ${units[i]}`;
}

function fmtNum(x, digits = 2) {
  if (x === null || x === undefined) return '–';
  return Number.isInteger(x) ? String(x) : x.toFixed(digits);
}

/** Node ids in the cluster's order: digit runs compare as numbers (node-2 < node-10). */
const byNodeId = (a, b) => a.localeCompare(b, 'en', {numeric: true});

function shardsLine(s) {
  if (!s) return '';
  const failed = s.failed ? `, ${s.failed} failed: ` +
    (s.failures || []).map((f) => `shard ${f.shard}${f.node ? ' on ' + f.node : ''}: ${f.reason}`).join('; ') : '';
  return `_shards: ${s.successful}/${s.total} answered${failed}`;
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, reason, method, path) {
    let hint = '';
    if (status === 401) hint = ' (enter an API key in the field at the top)';
    if (status === 403) hint = ' (this key\'s role does not allow it; use a key with a larger role)';
    super(`${method} ${path} failed${status ? ' with ' + status : ''}: ${reason}${hint}`);
    this.status = status;
    this.reason = reason;
  }
}

/** One request to this node's API; the answer's JSON, or an ApiError saying what went wrong. */
async function api(method, path, body, timeoutMs = 70000) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = 'Bearer ' + key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, cache: 'no-store', signal: abort.signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    const why = abort.signal.aborted
      ? `no answer within ${timeoutMs / 1000} s`
      : `cannot reach the node that served this page (${e.message}); is it running? Every node serves the console at /ui`;
    throw new ApiError(0, why, method, path);
  } finally {
    clearTimeout(timer);
  }
  const stale = resp.headers.get('x-torua-stale');
  $('banner').hidden = !stale;
  if (stale) $('banner').textContent = `This node has no quorum: answers may miss recent writes (${stale}).`;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    const reason = data && data.error && data.error.reason ? data.error.reason : (short(text, 300) || resp.statusText);
    if (resp.status === 401) showLogin();
    throw new ApiError(resp.status, reason, method, path);
  }
  if (data === null) throw new ApiError(resp.status, 'the answer is not JSON: ' + short(text, 200), method, path);
  return data;
}

// ---------------------------------------------------------------------------------------------
// API key login

/** Shows the key field; the refused request's own message says why, next to what asked. */
function showLogin() {
  $('login').hidden = false;
}

function updateKeyButtons() {
  $('logout-btn').hidden = !sessionStorage.getItem(KEY_STORAGE);
}

function setupLogin() {
  const use = () => {
    const key = $('api-key').value.trim();
    if (!key) { $('login-reason').textContent = '(type the key first)'; return; }
    sessionStorage.setItem(KEY_STORAGE, key);
    $('api-key').value = '';
    $('login').hidden = true;
    updateKeyButtons();
    refreshNow();
  };
  // A form, so that browsers treat the field as a password; it is never submitted anywhere.
  $('login').addEventListener('submit', (e) => { e.preventDefault(); use(); });
  $('logout-btn').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    updateKeyButtons();
    refreshNow();
  });
  updateKeyButtons();
}

// ---------------------------------------------------------------------------------------------
// Tabs and polling

let currentPage = 'cluster';

function showPage(name) {
  if (!PAGES.includes(name)) name = 'cluster';
  currentPage = name;
  for (const p of PAGES) {
    $('page-' + p).hidden = p !== name;
    $('tab-' + p).classList.toggle('active', p === name);
  }
  if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
  if (name === 'explorer' && graph.cy) graph.cy.resize();
  if (name === 'explorer') explorerShown();
  refreshNow();
}

let pollTimer = null;
let polling = false;

/** One round of polling: the health (header and cluster page) and the visible page's data. */
async function poll() {
  if (polling) return;
  polling = true;
  clearTimeout(pollTimer);
  try {
    const work = [refreshHealth()];
    if (currentPage === 'cluster') work.push(refreshRegistry());
    if (currentPage === 'shards') work.push(refreshShards());
    await Promise.allSettled(work);
  } finally {
    polling = false;
    pollTimer = setTimeout(poll, POLL_MS);
  }
}

function refreshNow() {
  if (!polling) poll();
}

// ---------------------------------------------------------------------------------------------
// 1. Cluster

/** The last answers, shared by the pages (the shard grid needs every node, even dead ones). */
const last = {health: null, healthAt: 0, registry: null, shards: null};

async function refreshHealth() {
  try {
    const h = await api('GET', '/cluster/health', undefined, POLL_TIMEOUT_MS);
    last.health = h;
    last.healthAt = Date.now();
    hideMsg('cluster-msg');
    renderBadge(h);
    renderCluster();
  } catch (e) {
    const age = last.healthAt ? ` Showing the answer of ${fmtMs(Date.now() - last.healthAt)} ago.` : '';
    showMsg('cluster-msg', errorText(e) + age);
    const badge = $('health-badge');
    badge.className = 'pill grey';
    badge.textContent = e.status === 401 ? 'API key needed' : 'no answer';
  }
}

async function refreshRegistry() {
  try {
    last.registry = await api('GET', '/cluster/nodes', undefined, POLL_TIMEOUT_MS);
  } catch (e) {
    // The registry is the coordinator's; while it does not answer the table shows gossip only.
    last.registry = null;
  }
  renderCluster();
}

function renderBadge(h) {
  const badge = $('health-badge');
  badge.className = 'pill ' + h.status;
  badge.textContent = `${h.status} · ${h.number_of_ready_nodes}/${h.number_of_nodes} ready`;
  badge.title = h.reasons.length ? h.reasons.join('\n') : 'no problems';
}

function stateClass(state) {
  return {ready: 'green', dead: 'red', joining: 'yellow', leaving: 'yellow', left: 'grey'}[state] || 'grey';
}

function card(title, value, sub, attrs = {}) {
  return el('div', Object.assign({class: 'card'}, attrs),
    el('div', {class: 'card-title', text: title}),
    el('div', {class: 'card-value'}, value),
    sub ? el('div', {class: 'card-sub muted'}, sub) : null);
}

function renderCluster() {
  const h = last.health;
  if (!h) return;
  const s = h.shards;
  const dead = h.nodes.filter((n) => n.state === 'dead').length;
  clear($('cluster-summary')).append(
    card('Health', el('span', {id: 'cluster-status', class: 'pill big ' + h.status, text: h.status}),
      h.reasons.length ? `${h.reasons.length} reason${h.reasons.length > 1 ? 's' : ''} below` : 'no problems'),
    card('Coordinator', el('span', {id: 'coordinator', text: h.coordinator ?? 'none'}),
      h.term !== null && h.term !== undefined ? `term ${h.term}` : 'no term'),
    card('Nodes', `${h.number_of_ready_nodes} / ${h.number_of_nodes} ready`,
      [h.number_of_registered_nodes !== null && h.number_of_registered_nodes !== undefined
        ? `${h.number_of_registered_nodes} registered` : null,
      dead ? `${dead} dead` : null].filter(Boolean).join(' · ') || null),
    s ? card('Shard copies', `${s.active_shards} active`,
      `${s.total_shards} shards · ${s.active_primary_shards} primaries live · ${s.initializing_shards} initializing · ` +
      `${s.relocating_shards} relocating · ${s.unavailable_shards} unavailable · ${s.unassigned_shards} unassigned`)
      : card('Shard copies', 'no shard map yet', 'the cluster is forming'),
    card('Answered by', h.answered_by, `${h.source === 'coordinator' ? 'the coordinator\'s view' : 'this node\'s local view'}` +
      (h.coordinator_error ? ` (coordinator: ${h.coordinator_error})` : '')),
    card('Cluster', h.cluster_id, null));
  clear($('cluster-reasons')).append(...h.reasons.map((r) => el('li', {class: h.status, text: r})));

  const registry = new Map();
  for (const entry of (last.registry && last.registry.nodes) || []) registry.set(entry.registration.node_id, entry);
  const draining = new Set(((last.shards && last.shards.draining) || []).map((d) => d.node));
  const nodes = [...h.nodes].sort((a, b) => byNodeId(a.id, b.id));
  const scheme = location.protocol;
  clear($('nodes-table').tBodies[0]).append(...nodes.map((n) => {
    const r = n.report;
    const reg = registry.get(n.id);
    const link = n.http_addr && n.state !== 'dead'
      ? el('a', {href: `${scheme}//${n.http_addr}/ui`, text: n.http_addr, title: 'this node\'s console'})
      : (n.http_addr || '–');
    return el('tr', {'data-node-id': n.id, 'data-state': n.state, class: 'state-' + n.state},
      el('td', {}, el('strong', {text: n.id})),
      el('td', {}, el('span', {class: 'pill ' + stateClass(n.state), text: n.state}),
        draining.has(n.id) ? el('span', {class: 'pill yellow', text: 'draining'}) : null),
      el('td', {text: n.is_coordinator ? '★ coordinator' : ''}),
      el('td', {text: n.generation}),
      el('td', {text: n.version ?? '–'}),
      el('td', {}, link),
      el('td', {text: r ? fmtMs(r.uptime_ms) : '–'}),
      el('td', {text: r ? r.load_1m.toFixed(2) : '–'}),
      el('td', {text: r ? fmtMb(r.memory_rss_mb) : '–'}),
      el('td', {text: r ? fmtMb(r.memory_available_mb) : '–'}),
      el('td', {text: r ? `${fmtMb(r.disk_free_mb)} of ${fmtMb(r.disk_total_mb)}` : '–'}),
      el('td', {text: r ? r.errors_total : '–'}),
      el('td', {text: fmtMs(n.last_heartbeat_ms_ago) + ' ago'}),
      el('td', {text: reg && reg.last_report_ms_ago !== null && reg.last_report_ms_ago !== undefined
        ? fmtMs(reg.last_report_ms_ago) + ' ago' : (n.registered === false ? 'not registered' : '–')}));
  }));
  $('cluster-updated').textContent =
    `Updated ${new Date(last.healthAt).toLocaleTimeString()}; asks again every ${POLL_MS / 1000} s.`;
}

// ---------------------------------------------------------------------------------------------
// 2. Shards

async function refreshShards() {
  try {
    last.shards = await api('GET', '/cluster/shards', undefined, POLL_TIMEOUT_MS);
    hideMsg('shards-msg');
    renderShards();
  } catch (e) {
    showMsg('shards-msg', errorText(e));
  }
}

function renderShards() {
  const m = last.shards;
  if (!m) return;
  const nodeIds = new Set(m.copies.map((c) => c.node));
  const nodeState = new Map();
  for (const n of (last.health && last.health.nodes) || []) {
    nodeIds.add(n.id);
    nodeState.set(n.id, n.state);
  }
  const nodes = [...nodeIds].sort(byNodeId);
  const draining = new Set(m.draining.map((d) => d.node));
  const byCell = new Map(m.copies.map((c) => [`${c.shard}/${c.node}`, c]));
  const primaryOf = new Map(m.copies.filter((c) => c.primary).map((c) => [c.shard, c]));

  clear($('shards-summary')).append(
    card('Shard map', `version ${m.version}`, `term ${m.term} · cluster ${m.cluster_id}`),
    card('Shards', `${m.shards} × ${m.replicas}`, `${m.copies.length} copies`),
    card('Pending writes', m.pending_writes ?? '–', 'logged, not yet applied'),
    card('Moves', m.moves.length, m.draining.length ? `${m.draining.length} node(s) draining` : 'no drains'));

  const moves = $('moves');
  clear(moves);
  if (m.moves.length) {
    moves.append(el('h3', {text: 'Moves in progress'}), el('ul', {class: 'moves'}, m.moves.map((mv) => {
      const target = byCell.get(`${mv.shard}/${mv.to}`);
      const primary = primaryOf.get(mv.shard);
      let pct = null;
      if (target && primary && primary.seq) pct = Math.min(100, Math.round(100 * (target.applied_seq || 0) / primary.seq));
      if (target && target.in_sync) pct = 100;
      return el('li', {'data-shard': mv.shard},
        `shard ${mv.shard}: ${mv.from} → ${mv.to} `,
        el('span', {class: 'progress'}, el('span', {style: `width:${pct ?? 0}%`})),
        ` ${pct === null ? (target ? target.state : 'starting') : pct + ' %'}`);
    })));
  }
  const drains = $('draining');
  clear(drains);
  if (m.draining.length) {
    drains.append(el('p', {class: 'msg warn'}, 'Draining: ', m.draining.map((d) => {
      const left = m.copies.filter((c) => c.node === d.node).length;
      return `${d.node} (${left} cop${left === 1 ? 'y' : 'ies'} left${d.until_restart ? ', until it restarts' : ''}) `;
    })));
  }

  const head = el('tr', {}, el('th', {text: 'Shard'}), nodes.map((id) => {
    const held = m.copies.filter((c) => c.node === id).length;
    const state = nodeState.get(id) || 'unknown';
    const button = draining.has(id)
      ? el('button', {type: 'button', id: 'undrain-' + id, 'data-node': id, class: 'small', text: 'Undrain', onclick: () => setDrain(id, false)})
      : el('button', {type: 'button', id: 'drain-' + id, 'data-node': id, class: 'small', text: 'Drain', onclick: () => setDrain(id, true)});
    return el('th', {'data-node': id},
      el('div', {text: id}),
      el('div', {}, el('span', {class: 'pill ' + stateClass(state), text: state}),
        draining.has(id) ? el('span', {class: 'pill yellow', text: 'draining'}) : null),
      el('div', {class: 'muted', text: `${held} cop${held === 1 ? 'y' : 'ies'}`}),
      button);
  }));
  const rows = [];
  for (let shard = 0; shard < m.shards; shard++) {
    rows.push(el('tr', {}, el('th', {text: shard}), nodes.map((id) => {
      const c = byCell.get(`${shard}/${id}`);
      if (!c) return el('td', {class: 'empty'});
      return el('td', {class: `copy ${c.state} ${c.in_sync ? 'in-sync' : 'out-of-sync'}`, 'data-shard': shard, 'data-node': id,
        title: `entities ${c.entities ?? '?'}, relations ${c.relations ?? '?'}, chunks ${c.chunks ?? '?'}, ` +
          `communities ${c.communities ?? '?'}, documents ${c.documents ?? '?'}, failed writes ${c.failed_writes ?? 0}`},
        el('div', {}, el('span', {class: 'role ' + (c.primary ? 'primary' : 'replica'), text: c.primary ? 'P' : 'R'}),
          ' ', c.state),
        el('div', {class: c.in_sync ? 'ok' : 'bad', text: c.in_sync ? 'in sync' : 'not in sync'}),
        el('div', {class: 'muted', text: `seq ${c.seq ?? '–'} / applied ${c.applied_seq ?? '–'}`}),
        el('div', {class: 'muted', text: `pending ${c.pending_writes ?? '–'} · ${fmtBytes(c.size_bytes)}`}));
    })));
  }
  const grid = clear($('shards-grid'));
  grid.append(el('thead', {}, head), el('tbody', {}, rows));
  grid.setAttribute('data-copies', m.copies.length);
  $('shards-updated').textContent = `Updated ${new Date().toLocaleTimeString()}; asks again every ${POLL_MS / 1000} s.`;
  if (last.health) renderCluster();
}

async function setDrain(id, drain) {
  const question = drain
    ? `Drain ${id}?\n\nEvery shard copy and primary role moves off ${id} to other nodes (copies are filled before the old ones are dropped). It stays drained until you undrain it.`
    : `Undrain ${id}?\n\nCopies may move back to ${id} by rebalancing.`;
  if (!confirm(question)) return;
  try {
    const a = await api(drain ? 'POST' : 'DELETE', `/nodes/${encodeURIComponent(id)}/drain`);
    showMsg('shards-msg', drain
      ? `${a.node} is draining: ${a.copies_left} cop${a.copies_left === 1 ? 'y' : 'ies'} to move (map version ${a.map_version}).`
      : `${a.node} is no longer draining (map version ${a.map_version}).`, 'ok');
    await refreshShards();
  } catch (e) {
    showMsg('shards-msg', errorText(e));
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Query: Cypher, neighbourhood, path

function parseJsonField(id, what) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON (${e.message})`);
  }
}

function intField(id, what, min, max) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${what} must be a whole number from ${min} to ${max}`);
  return n;
}

async function runCypher() {
  const cypher = $('cypher').value.trim();
  if (!cypher) throw new Error('type a Cypher query first, e.g. MATCH (e:Entity) RETURN count(*)');
  const body = {cypher, merge: $('cypher-merge').value};
  const params = parseJsonField('cypher-params', 'params');
  if (params !== undefined) body.params = params;
  const timeout = intField('cypher-timeout', 'timeout ms', 1, 60000);
  if (timeout !== undefined) body.timeout_ms = timeout;
  clear($('query-table'));
  clear($('query-meta'));
  $('query-json').textContent = '';
  const a = await api('POST', '/query', body);
  $('query-json').textContent = JSON.stringify(a, null, 2);
  $('query-meta').append(el('span', {id: 'query-shards', class: a._shards.failed ? 'bad' : '', text: shardsLine(a._shards)}),
    ` · merge ${a.merge} · ${a.took_ms} ms`);
  if (a.merge === 'per_shard') {
    for (const s of a.shards) {
      $('query-table').append(el('h4', {text: `shard ${s.shard} (node ${s.node}): ${s.rows.length} rows`}),
        table(s.columns, s.rows));
    }
  } else {
    $('query-table').append(table(a.columns, a.rows, {id: 'query-rows'}),
      el('p', {class: 'muted', text: `${a.rows.length} row${a.rows.length === 1 ? '' : 's'}`}));
  }
}

/** The entities whose titles best match `text` (BM25 over titles and descriptions, fused). */
async function searchEntities(text, k = 10) {
  const a = await api('POST', '/retrieve', {
    query: text, mode: 'local', top_k: k, hops: 0, include: ['entities'], max_tokens: 200000,
  });
  const byId = new Map(a.entities.map((e) => [e.id, e]));
  return a.seeds.map((s) => Object.assign({title: s.id, type: '', degree: null}, byId.get(s.id) || {}, {id: s.id, seed: s}));
}

/** The entity named by `text`: an exact title (any case), else an id. */
async function resolveEntity(text) {
  text = text.trim();
  if (!text) throw new Error('name an entity (its id or exact title)');
  const hits = await searchEntities(text, 10);
  const exact = hits.find((h) => h.title.toLowerCase() === text.toLowerCase() || h.id === text);
  if (exact) return exact;
  try {
    return (await api('GET', '/graph/entities/' + encodeURIComponent(text))).entity;
  } catch (e) {
    if (e.status !== 404) throw e;
    const close = hits.slice(0, 5).map((h) => h.title).join(', ');
    throw new Error(`no entity has the id or title "${text}"${close ? '; closest titles: ' + close : ''}`);
  }
}

function entityTable(entities) {
  return table(['title', 'type', 'degree', 'hop', 'id', 'description'],
    entities.map((e) => [e.title, e.type, e.degree, e.hop, e.id, short(e.description, 160)]));
}

function relationTable(relations, titleOf) {
  return table(['source', 'target', 'weight', 'description', 'id'],
    relations.map((r) => [titleOf(r.source), titleOf(r.target), fmtNum(r.weight), short(r.description, 160), r.id]));
}

async function runNeighbourhood() {
  const names = $('nb-seeds').value.split(',').map((s) => s.trim()).filter(Boolean);
  if (!names.length) throw new Error('name at least one seed entity (id or exact title)');
  const seeds = [];
  for (const n of names) seeds.push((await resolveEntity(n)).id);
  const body = {seeds, hops: Number($('nb-hops').value), direction: $('nb-dir').value};
  const maxNodes = intField('nb-max', 'max nodes', 1, 100000);
  if (maxNodes !== undefined) body.max_nodes = maxNodes;
  const filter = {};
  const minW = $('nb-minw').value.trim();
  if (minW) {
    if (!Number.isFinite(Number(minW))) throw new Error('min weight must be a number');
    filter.min_weight = Number(minW);
  }
  const contains = $('nb-contains').value.trim();
  if (contains) filter.description_contains = contains;
  if (Object.keys(filter).length) body.relation_filter = filter;
  const out = clear($('nb-result'));
  const a = await api('POST', '/graph/neighborhood', body);
  const titles = new Map(a.entities.map((e) => [e.id, e.title || e.id]));
  out.append(
    el('p', {class: 'meta'}, `${a.entities.length} entities, ${a.relations.length} relations · ${shardsLine(a._shards)} · ${a.took_ms} ms`,
      a.truncated ? el('span', {class: 'pill yellow', text: 'truncated'}) : null,
      a.missing_seeds.length ? ` · missing seeds: ${a.missing_seeds.join(', ')}` : '',
      ' ', el('button', {type: 'button', class: 'small', text: 'Draw in explorer',
        onclick: () => { showPage('explorer'); drawNeighbourhood(seeds[0], body.hops); }})),
    el('h4', {text: 'Entities'}), entityTable(a.entities),
    el('h4', {text: 'Relations'}), relationTable(a.relations, (id) => titles.get(id) || id));
}

async function runPath() {
  const from = await resolveEntity($('path-from').value);
  const to = await resolveEntity($('path-to').value);
  const out = clear($('path-result'));
  const a = await api('POST', '/graph/path', {
    from: from.id, to: to.id, max_hops: Number($('path-hops').value), direction: $('path-dir').value,
  });
  if (!a.found) {
    out.append(el('p', {class: 'msg warn', text: `No path: ${a.reason}`}), el('p', {class: 'muted', text: shardsLine(a._shards)}));
    return;
  }
  const steps = [];
  a.entities.forEach((e, i) => {
    steps.push(el('span', {class: 'step', text: e.title || e.id, title: e.id}));
    const r = a.relations[i];
    if (r) steps.push(el('span', {class: 'arrow', title: r.description, text: ` —(${fmtNum(r.weight)})→ `}));
  });
  const titles = new Map(a.entities.map((e) => [e.id, e.title || e.id]));
  out.append(el('p', {class: 'meta', text: `length ${a.length} · ${shardsLine(a._shards)} · ${a.took_ms} ms`}),
    el('p', {class: 'path'}, steps),
    relationTable(a.relations, (id) => titles.get(id) || id));
}

function setupQuery() {
  const run = () => busy($('run-query'), 'query-msg', runCypher);
  $('run-query').addEventListener('click', run);
  $('cypher').addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) run(); });
  $('run-nb').addEventListener('click', () => busy($('run-nb'), 'nb-msg', runNeighbourhood));
  $('run-path').addEventListener('click', () => busy($('run-path'), 'path-msg', runPath));
}

// ---------------------------------------------------------------------------------------------
// 4. Retrieve playground

const BUDGET_PARTS = [
  ['community_reports', 'reports'], ['entities', 'entities'], ['relations', 'relations'], ['text_units', 'text units'],
];

async function runRetrieve() {
  const body = {mode: $('rq-mode').value};
  const query = $('rq-query').value.trim();
  if (query) body.query = query;
  const embedding = parseJsonField('rq-embedding', 'the embedding');
  if (embedding !== undefined) {
    if (!Array.isArray(embedding) || !embedding.every((x) => typeof x === 'number')) {
      throw new Error('the embedding must be a JSON array of numbers');
    }
    body.embedding = embedding;
  }
  if (!query && embedding === undefined) throw new Error('type a question (or give an embedding)');
  for (const [field, id, what, min, max] of [
    ['top_k', 'rq-topk', 'top_k', 1, 100], ['hops', 'rq-hops', 'hops', 0, 3],
    ['max_tokens', 'rq-budget', 'the budget', 100, 200000], ['community_level', 'rq-level', 'community level', 0, 100]]) {
    const v = intField(id, what, min, max);
    if (v !== undefined) body[field] = v;
  }
  $('rq-result').hidden = true;
  const a = await api('POST', '/retrieve', body);
  renderRetrieve(a);
}

function renderRetrieve(a) {
  const titles = new Map(a.entities.map((e) => [e.id, e.title]));
  const titleOf = (id) => titles.get(id) || id;
  const t = a.tokens;
  clear($('rq-summary')).append(
    card('Mode', a.mode, null),
    card('Tokens', `${t.total} / ${t.budget}`, `${t.tokenizer}`),
    card('Chosen', `${plural(a.entities.length, 'entity', 'entities')} · ${plural(a.relations.length, 'relation', 'relations')}`,
      `${plural(a.text_units.length, 'text unit', 'text units')} · ${plural(a.community_reports.length, 'report', 'reports')}`),
    card('Shards', `${a._shards.successful} / ${a._shards.total}`, a._shards.failed ? shardsLine(a._shards) : 'all answered'),
    card('Time', fmtMs(a.timings_ms.total ?? 0), 'wall time on the node'));

  const bar = clear($('rq-budget-bar'));
  const legend = clear($('rq-budget-legend'));
  for (const [key, label] of BUDGET_PARTS) {
    const n = t[key] || 0;
    bar.append(el('span', {class: 'part ' + key, style: `width:${(100 * n / t.budget).toFixed(2)}%`, title: `${label}: ${n} tokens`}));
    legend.append(el('span', {class: 'key ' + key}), `${label} ${n} `);
  }
  legend.append(el('span', {class: 'key unused'}), `unused ${Math.max(0, t.budget - t.total)}`);

  // Stages in the order they run (the answer's map is sorted by name), then any others.
  const order = ['seeds', 'expand', 'text_units', 'community_reports', 'assemble', 'total'];
  const rank = (k) => (order.includes(k) ? order.indexOf(k) : order.length - 1.5);
  const timings = Object.entries(a.timings_ms).sort(([x], [y]) => rank(x) - rank(y));
  const longest = Math.max(1, ...timings.map(([, v]) => v));
  clear($('rq-timings')).append(table(['stage', 'ms', ''], timings.map(([k, v]) =>
    [k, fmtNum(v, 1), el('span', {class: 'progress wide'}, el('span', {style: `width:${(100 * v / longest).toFixed(1)}%`}))])));

  const seedRow = (s, i) => [i + 1, titleOf(s.id), fmtNum(s.score, 4), s.vector_rank ?? '–', fmtNum(s.distance, 4),
    s.title_rank ?? '–', fmtNum(s.title_score, 3), s.bm25_rank ?? '–', fmtNum(s.bm25_score, 3)];
  const seedCols = ['#', 'seed', 'fused score', 'vector rank', 'distance', 'title rank', 'title score', 'bm25 rank', 'bm25 score'];
  const seeds = clear($('rq-seeds'));
  seeds.append(a.seeds.length ? table(seedCols, a.seeds.map(seedRow)) : el('p', {class: 'muted', text: 'no entity seeds'}));
  if (a.chunk_seeds && a.chunk_seeds.length) {
    seeds.append(el('h4', {text: 'Chunk seeds'}), table(seedCols, a.chunk_seeds.map(seedRow)));
  }

  $('rq-entities-h').textContent = `Entities (${a.entities.length}, ${t.entities} tokens)`;
  clear($('rq-entities')).append(table(['title', 'type', 'degree', 'hop', 'score', 'description'],
    a.entities.map((e) => [e.title, e.type, e.degree, e.hop, fmtNum(e.score, 4), short(e.description, 200)])));
  $('rq-relations-h').textContent = `Relations (${a.relations.length}, ${t.relations} tokens)`;
  clear($('rq-relations')).append(relationTable(a.relations, titleOf));
  $('rq-units-h').textContent = `Text units (${a.text_units.length}, ${t.text_units} tokens)`;
  clear($('rq-units')).append(table(['id', 'tokens', 'score', 'document', 'text'],
    a.text_units.map((u) => [u.id, u.n_tokens, fmtNum(u.score, 4), u.document_id, short(u.text, 240)])));
  $('rq-reports-h').textContent = `Community reports (${a.community_reports.length}, ${t.community_reports} tokens)`;
  clear($('rq-reports')).append(table(['id', 'title', 'level', 'rank', 'matches', 'content'],
    a.community_reports.map((r) => [r.id, r.title, r.level, fmtNum(r.rank, 1), r.matches ?? '–', short(r.content, 240)])));
  $('context-text').textContent = a.context_text;
  $('copy-msg').textContent = `${a.context_text.length} characters`;
  $('rq-result').hidden = false;
}

async function copyContext() {
  const text = $('context-text').textContent;
  try {
    await navigator.clipboard.writeText(text);
    $('copy-msg').textContent = 'copied to the clipboard';
  } catch (_) {
    // No clipboard permission (e.g. plain HTTP on another host): select it for Ctrl+C instead.
    const range = document.createRange();
    range.selectNodeContents($('context-text'));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    $('copy-msg').textContent = 'the browser refused the clipboard: the text is selected, press Ctrl+C';
  }
}

function setupRetrieve() {
  const run = () => busy($('run-retrieve'), 'rq-msg', runRetrieve);
  $('run-retrieve').addEventListener('click', run);
  $('rq-query').addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); run(); } });
  $('copy-context').addEventListener('click', copyContext);
}

// ---------------------------------------------------------------------------------------------
// 5. Graph explorer

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#86bcb6'];

const graph = {
  cy: null,
  root: null,
  /** Entity type → colour, in the order types were first seen. */
  colours: new Map(),
};

function colourOf(type) {
  const t = type || '(none)';
  if (!graph.colours.has(t)) graph.colours.set(t, t === '(none)' ? '#bbbbbb' : PALETTE[graph.colours.size % PALETTE.length]);
  return graph.colours.get(t);
}

function ensureCy() {
  if (graph.cy) return graph.cy;
  if (typeof cytoscape !== 'function') throw new Error('the graph library (cytoscape.min.js) did not load; reload the page');
  graph.cy = cytoscape({
    container: $('graph'),
    minZoom: 0.05,
    maxZoom: 4,
    style: [
      {selector: 'node', style: {
        'background-color': 'data(colour)', label: 'data(label)', width: 'data(size)', height: 'data(size)',
        'font-size': 9, color: '#222', 'text-valign': 'bottom', 'text-margin-y': 2,
        'text-outline-color': '#fff', 'text-outline-width': 1.5, 'min-zoomed-font-size': 6}},
      {selector: 'node.root', style: {'border-width': 3, 'border-color': '#111', 'font-weight': 'bold'}},
      {selector: 'node:selected', style: {'border-width': 4, 'border-color': '#d62728'}},
      {selector: 'edge', style: {
        width: 'data(width)', 'line-color': '#a9b4c2', 'curve-style': 'bezier', opacity: 0.75,
        'target-arrow-shape': 'triangle', 'target-arrow-color': '#a9b4c2', 'arrow-scale': 0.6}},
      {selector: 'edge:selected', style: {'line-color': '#d62728', 'target-arrow-color': '#d62728', opacity: 1}},
    ],
  });
  graph.cy.on('tap', 'node', (evt) => showDetails(evt.target.id()));
  graph.cy.on('dbltap', 'node', (evt) => expand(evt.target.id()));
  graph.cy.on('tap', 'edge', (evt) => {
    const d = evt.target.data();
    fill($('details'), el('h3', {text: 'Relation'}),
      el('p', {}, `${graph.cy.getElementById(d.source).data('label')} → ${graph.cy.getElementById(d.target).data('label')}`),
      el('p', {text: `weight ${fmtNum(d.weight)}`}), el('p', {text: d.description}), el('p', {class: 'muted', text: d.rid}));
  });
  return graph.cy;
}

/** Cytoscape elements for entities and the relations between them (and already drawn ones). */
function elements(entities, relations, present) {
  const nodes = entities.map((e) => ({group: 'nodes', data: {
    id: e.id, label: e.title || e.id, type: e.type, degree: e.degree || 0, description: e.description, hop: e.hop,
    colour: colourOf(e.type)}}));
  const edges = relations.filter((r) => present(r.source) && present(r.target)).map((r) => ({group: 'edges', data: {
    id: `rel:${r.id}:${r.source}:${r.target}`, rid: r.id, source: r.source, target: r.target,
    weight: r.weight, description: r.description}}));
  return nodes.concat(edges);
}

/** Sizes by degree and widths by weight, relative to what is drawn. */
function restyle() {
  const cy = graph.cy;
  const maxDegree = Math.max(1, ...cy.nodes().map((n) => n.data('degree')));
  cy.nodes().forEach((n) => n.data('size', 14 + 36 * Math.sqrt(n.data('degree') / maxDegree)));
  const weights = cy.edges().map((e) => e.data('weight'));
  const lo = Math.min(...weights, 0);
  const hi = Math.max(...weights, 1);
  cy.edges().forEach((e) => e.data('width', 1 + 7 * (e.data('weight') - lo) / ((hi - lo) || 1)));
  const g = $('graph');
  g.setAttribute('data-node-count', cy.nodes().length);
  g.setAttribute('data-edge-count', cy.edges().length);
  const legend = clear($('graph-legend'));
  const types = new Set(cy.nodes().map((n) => n.data('type') || '(none)'));
  for (const [type, colour] of graph.colours) {
    if (types.has(type)) legend.append(el('span', {class: 'key', style: `background:${colour}`}), `${type} `);
  }
  legend.append(el('span', {class: 'muted', text: ' · size: degree · edge width: weight'}));
}

function layout(fit = true) {
  const cy = graph.cy;
  cy.layout({name: 'cose', animate: false, randomize: true, fit, padding: 30, nodeDimensionsIncludeLabels: false,
    idealEdgeLength: () => 70, nodeRepulsion: () => 9000, numIter: 1500}).run();
}

function notice(text) {
  if (text) showMsg('graph-notice', text, 'warn');
  else hideMsg('graph-notice');
}

/** Draws the neighbourhood of `id` within `hops`, capped at GRAPH_CAP entities. */
async function drawNeighbourhood(id, hops) {
  hideMsg('explore-msg');
  const g = $('graph');
  g.setAttribute('data-state', 'loading');
  try {
    const cy = ensureCy();
    const a = await api('POST', '/graph/neighborhood', {seeds: [id], hops, direction: 'both', max_nodes: GRAPH_CAP});
    if (a.missing_seeds.length) throw new Error(`entity ${id} is not in the graph`);
    cy.elements().remove();
    const ids = new Set(a.entities.map((e) => e.id));
    cy.add(elements(a.entities, a.relations, (x) => ids.has(x)));
    cy.getElementById(id).addClass('root');
    graph.root = id;
    g.setAttribute('data-root', id);
    restyle();
    layout();
    notice(a.truncated
      ? `This neighbourhood has more than ${GRAPH_CAP} entities (or too many relations): showing the ${cy.nodes().length} nearest. ` +
        'Use 1 hop, or draw from a less connected entity.'
      : '');
    g.setAttribute('data-state', 'ready');
    showDetails(id);
  } catch (e) {
    g.setAttribute('data-state', 'error');
    showMsg('explore-msg', errorText(e));
  }
}

/** Adds the neighbours of `id` to the drawing, as long as the total stays within the cap. */
async function expand(id) {
  const cy = ensureCy();
  const room = GRAPH_CAP - cy.nodes().length;
  if (room <= 0) {
    notice(`The drawing already has ${GRAPH_CAP} entities, the most it shows; draw from this entity instead to see its neighbours.`);
    return;
  }
  try {
    const a = await api('POST', '/graph/neighborhood', {seeds: [id], hops: 1, direction: 'both', max_nodes: GRAPH_CAP});
    const fresh = a.entities.filter((e) => cy.getElementById(e.id).empty());
    const added = fresh.slice(0, room);
    const keep = new Set(added.map((e) => e.id));
    const present = (x) => keep.has(x) || !cy.getElementById(x).empty();
    const edges = elements(added, a.relations, present).filter((x) => x.group === 'nodes' || cy.getElementById(x.data.id).empty());
    cy.add(edges);
    restyle();
    layout();
    notice(fresh.length > added.length || a.truncated
      ? `Expanding ${id} found more neighbours than fit: the drawing is capped at ${GRAPH_CAP} entities.`
      : '');
  } catch (e) {
    showMsg('explore-msg', errorText(e));
  }
}

/** The details panel of one entity: description, relations, text units, communities. */
async function showDetails(id) {
  const box = $('details');
  const node = graph.cy && graph.cy.getElementById(id);
  if (node && !node.empty()) { graph.cy.nodes().unselect(); node.select(); }
  fill(box, el('p', {class: 'muted', text: 'loading…'}));
  try {
    const a = await api('GET', '/graph/entities/' + encodeURIComponent(id));
    const e = a.entity;
    const label = (x) => {
      const n = graph.cy && graph.cy.getElementById(x);
      return n && !n.empty() ? n.data('label') : x;
    };
    const units = el('ul', {class: 'units'});
    const communities = el('div', {}, el('p', {class: 'muted', text: 'loading communities…'}));
    fill(box,
      el('h3', {id: 'details-title', text: e.title || e.id}),
      el('p', {}, el('span', {class: 'key', style: `background:${colourOf(e.type)}`}), ` ${e.type || 'no type'} · degree ${e.degree} · shard ${a.shard}`),
      el('p', {class: 'muted small', text: e.id}),
      el('div', {class: 'buttons'},
        el('button', {type: 'button', class: 'small', text: 'Expand', onclick: () => expand(e.id)}),
        el('button', {type: 'button', class: 'small', text: 'Center here', onclick: () => drawNeighbourhood(e.id, Number($('explore-hops').value))}),
        el('button', {type: 'button', class: 'small', text: 'Retrieve about it', onclick: () => {
          $('rq-query').value = e.title; showPage('retrieve'); busy($('run-retrieve'), 'rq-msg', runRetrieve); }}),
        el('button', {type: 'button', class: 'small', text: 'Path from here', onclick: () => {
          $('path-from').value = e.id; showPage('query'); $('path-to').focus(); }})),
      el('p', {class: 'description', text: e.description || '(no description)'}),
      el('h4', {text: `Relations (${a.relations.length})`}),
      el('ul', {class: 'rels'}, a.relations.slice(0, 50).map((r) => el('li', {},
        `${label(r.source)} → ${label(r.target)} `, el('span', {class: 'muted', text: `(${fmtNum(r.weight)}) ${short(r.description, 120)}`})))),
      a.relations.length > 50 ? el('p', {class: 'muted', text: `and ${a.relations.length - 50} more`}) : null,
      el('h4', {text: `Text units (${e.text_unit_ids.length})`}), units,
      el('h4', {text: 'Communities'}), communities);
    e.text_unit_ids.forEach((tid, i) => {
      const li = el('li', {}, el('code', {text: short(tid, 16)}), ' ');
      const load = async () => {
        try {
          const c = await api('GET', '/graph/chunks/' + encodeURIComponent(tid));
          li.append(el('div', {class: 'chunk', text: `${c.chunk ? c.chunk.text : c.text}`}));
        } catch (err) {
          li.append(el('div', {class: 'msg error', text: errorText(err)}));
        }
      };
      if (i < 2) load();
      else li.append(el('button', {type: 'button', class: 'small', text: 'show', onclick: (ev) => { ev.target.remove(); load(); }}));
      units.append(li);
    });
    loadCommunities(e.id, communities);
  } catch (err) {
    fill(box, el('p', {class: 'msg error', text: errorText(err)}));
  }
}

/** Communities that list the entity (read with per-shard Cypher: each lives in one shard). */
async function loadCommunities(id, box) {
  try {
    const a = await api('POST', '/query', {
      cypher: 'MATCH (c:Community) WHERE list_contains(c.entity_ids, $id) RETURN c.id, c.title, c.level, c.rank',
      params: {id}, merge: 'per_shard',
    });
    const rows = a.shards.flatMap((s) => s.rows).sort((x, y) => (x[2] - y[2]) || (y[3] - x[3]));
    fill(box, rows.length
      ? el('ul', {class: 'communities'}, rows.map((r) => el('li', {}, `${r[1]} `, el('span', {class: 'muted', text: `(id ${r[0]}, level ${r[2]}, rank ${fmtNum(r[3], 1)})`}))))
      : el('p', {class: 'muted', text: 'in no community'}));
  } catch (err) {
    fill(box, el('p', {class: 'muted', text: err.status === 403
      ? 'Communities are read with POST /query, which needs an admin key.' : errorText(err)}));
  }
}

/** Set once the operator searched: the starting suggestions must not replace the results. */
let searched = false;

async function runSearch() {
  const q = $('explore-q').value.trim();
  if (!q) throw new Error('type an entity title (or words from its description)');
  searched = true;
  const out = clear($('explore-results'));
  const hits = await searchEntities(q, 12);
  if (!hits.length) {
    out.append(el('p', {class: 'muted', text: `nothing matches "${q}"`}));
    return;
  }
  const hops = () => Number($('explore-hops').value);
  out.append(...hits.map((h) => el('button', {type: 'button', class: 'result', 'data-id': h.id, title: h.description || '',
    onclick: () => drawNeighbourhood(h.id, hops())},
  el('span', {class: 'key', style: `background:${colourOf(h.type)}`}), ` ${h.title} `,
  el('span', {class: 'muted', text: `${h.type || ''}${h.degree !== null ? ' · ' + h.degree : ''}`}))));
  const exact = hits.find((h) => h.title.toLowerCase() === q.toLowerCase());
  if (exact) await drawNeighbourhood(exact.id, hops());
}

let explorerStarted = false;

/** The first time the explorer opens, offer the best-connected entities as starting points. */
function explorerShown() {
  if (explorerStarted) return;
  explorerStarted = true;
  api('POST', '/query', {cypher: 'MATCH (e:Entity) RETURN e.id AS id, e.title AS title, e.type AS type, e.degree AS degree ORDER BY degree DESC LIMIT 12'})
    .then((a) => {
      if (searched) return;
      $('explore-results').append(el('span', {class: 'muted', text: 'Most connected: '}),
        ...a.rows.map(([id, title, type, degree]) => el('button', {type: 'button', class: 'result', 'data-id': id,
          onclick: () => drawNeighbourhood(id, Number($('explore-hops').value))},
        el('span', {class: 'key', style: `background:${colourOf(type)}`}), ` ${title} `, el('span', {class: 'muted', text: `${type} · ${degree}`}))));
    })
    .catch(() => { /* a key without the admin role: the search box is enough */ });
}

function setupExplorer() {
  const run = () => busy($('explore-search'), 'explore-msg', runSearch);
  $('explore-search').addEventListener('click', run);
  $('explore-q').addEventListener('keydown', (e) => { if (e.key === 'Enter') run(); });
}

// ---------------------------------------------------------------------------------------------
// Start

window.addEventListener('error', (e) => showMsg('banner', 'The console hit an error: ' + e.message + ' (reload the page)'));
window.addEventListener('unhandledrejection', (e) => showMsg('banner', 'The console hit an error: ' + errorText(e.reason)));

document.addEventListener('DOMContentLoaded', () => {
  setupLogin();
  setupQuery();
  setupRetrieve();
  setupExplorer();
  for (const p of PAGES) $('tab-' + p).addEventListener('click', () => showPage(p));
  $('health-badge').addEventListener('click', () => showPage('cluster'));
  window.addEventListener('hashchange', () => showPage(location.hash.slice(1)));
  fetch('/health', {cache: 'no-store'}).then((r) => r.json()).then((h) => {
    $('served-by').textContent = `served by ${h.node_id} · v${h.version}`;
  }).catch(() => {});
  showPage(location.hash.slice(1) || 'cluster');
});
