//! Observing shard copies: the copies `/cluster/shards` lists, and one probe of a node
//! (health, shard map, copies) turned into a [`View`] of what is where.

use super::*;

#[derive(Debug, Clone)]
pub(crate) struct CopyInfo {
    pub(crate) shard: u64,
    pub(crate) node: String,
    pub(crate) primary: bool,
    pub(crate) state: String,
    pub(crate) in_sync: bool,
    pub(crate) size: Option<u64>,
    pub(crate) counts: [Option<u64>; 5],
    pub(crate) checksum: Option<String>,
    /// Logged and applied sequence numbers.
    pub(crate) seq: (Option<u64>, Option<u64>),
}

pub(crate) const COUNT_KEYS: [&str; 5] = [
    "entities",
    "relations",
    "chunks",
    "documents",
    "communities",
];

pub(crate) type Pair = (u64, String);

impl CopyInfo {
    pub(crate) fn pair(&self) -> Pair {
        (self.shard, self.node.clone())
    }
    pub(crate) fn label(&self) -> String {
        format!(
            "{}{}",
            self.state,
            if self.in_sync { ", in sync" } else { "" }
        )
    }
}

pub(crate) fn parse_copies(v: &Value) -> Option<Vec<CopyInfo>> {
    let list = v["copies"].as_array()?;
    Some(
        list.iter()
            .map(|c| CopyInfo {
                shard: c["shard"].as_u64().unwrap_or(u64::MAX),
                node: c["node"].as_str().unwrap_or("?").to_string(),
                primary: c["primary"] == true,
                state: c["state"].as_str().unwrap_or("?").to_string(),
                in_sync: c["in_sync"] == true,
                size: c["size_bytes"].as_u64(),
                counts: COUNT_KEYS.map(|k| c[k].as_u64()),
                checksum: c["checksum"].as_str().map(String::from),
                seq: (c["seq"].as_u64(), c["applied_seq"].as_u64()),
            })
            .collect(),
    )
}

pub(crate) fn list_len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// One sample: every running node's health, one node's shard table.
pub(crate) struct View {
    pub(crate) t: f64,
    pub(crate) statuses: Vec<(String, String)>,
    pub(crate) all_green: bool,
    pub(crate) health: Value,
    /// `reasons` of the first node that did not answer green.
    pub(crate) not_green_reasons: Value,
    pub(crate) copies: Option<Vec<CopyInfo>>,
    pub(crate) moves: usize,
    draining: usize,
    pub(crate) per_node: BTreeMap<String, usize>,
    balanced: bool,
    /// Every shard has R in-sync copies on running nodes, and nothing else.
    pub(crate) full: bool,
}

impl View {
    pub(crate) fn settled(&self) -> bool {
        self.all_green && self.full && self.balanced && self.moves == 0 && self.draining == 0
    }
    pub(crate) fn line(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(id, s)| format!("{id}={s}"))
            .collect();
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for c in self.copies.iter().flatten() {
            *states.entry(c.label()).or_default() += 1;
        }
        format!(
            "health [{}]; copies {:?}; per node {:?}; moves {}, draining {}",
            statuses.join(" "),
            states,
            self.per_node,
            self.moves,
            self.draining
        )
    }
}

/// What one sample asks: the running nodes (when the sample was launched) and which node
/// answers `/cluster/shards`.
#[derive(Clone)]
pub(crate) struct Probe {
    ids: Vec<String>,
    health_urls: Vec<String>,
    shards_url: Option<String>,
    avoid_id: Option<String>,
}

impl Probe {
    pub(crate) fn new(cluster: &mut TestCluster, avoid: Option<usize>) -> Probe {
        let running = cluster.running();
        let observer = running
            .iter()
            .copied()
            .find(|&i| Some(i) != avoid)
            .or(running.first().copied());
        Probe {
            ids: running
                .iter()
                .map(|&i| cluster.nodes[i].id.clone())
                .collect(),
            health_urls: running
                .iter()
                .map(|&i| cluster.nodes[i].url("/cluster/health"))
                .collect(),
            shards_url: observer.map(|i| cluster.nodes[i].url("/cluster/shards")),
            avoid_id: avoid.map(|i| cluster.nodes[i].id.clone()),
        }
    }
}

/// Takes one sample (HTTP only: runs on its own thread).
pub(crate) fn probe(agent: &ureq::Agent, p: &Probe, shards: u32, replicas: usize, t: f64) -> View {
    let ids = p.ids.clone();
    let mut statuses = Vec::new();
    let mut health = Value::Null;
    let mut not_green_reasons = Value::Null;
    let mut all_green = !ids.is_empty();
    for (id, url) in ids.iter().zip(&p.health_urls) {
        let status = match get_full(agent, url) {
            Ok((200, v, _)) => {
                let s = v["status"].as_str().unwrap_or("?").to_string();
                if s != "green" && not_green_reasons.is_null() {
                    not_green_reasons = json!({"node": id, "reasons": v["reasons"]});
                }
                if health.is_null() && Some(id) != p.avoid_id.as_ref() {
                    health = v;
                }
                s
            }
            Ok((code, v, _)) => format!("{code} {}", short(&v.to_string(), 80)),
            Err(e) => format!("error: {}", short(&e.to_string(), 80)),
        };
        if status != "green" {
            all_green = false;
        }
        statuses.push((id.clone(), status));
    }
    let answer = p
        .shards_url
        .as_ref()
        .and_then(|url| match get_full(agent, url) {
            Ok((200, v, _)) => Some(v),
            _ => None,
        });
    let copies = answer.as_ref().and_then(parse_copies);
    let (moves, draining) = answer.as_ref().map_or((0, 0), |v| {
        (list_len(&v["moves"]), list_len(&v["draining"]))
    });
    let mut per_node: BTreeMap<String, usize> = ids.iter().map(|id| (id.clone(), 0)).collect();
    let mut full = copies.is_some();
    if let Some(copies) = &copies {
        let mut good = vec![0usize; shards as usize];
        for c in copies {
            if let Some(n) = per_node.get_mut(&c.node) {
                *n += 1;
            } else {
                full = false; // a copy on a stopped node
            }
            // In sync on a running node. (A copy its node has not opened yet, e.g. never written
            // since the cluster formed, is listed as "initializing" although in sync.)
            if c.in_sync && c.state != "unavailable" && ids.contains(&c.node) {
                if let Some(g) = good.get_mut(c.shard as usize) {
                    *g += 1;
                }
            } else {
                full = false;
            }
        }
        if good.iter().any(|&g| g < replicas) {
            full = false;
        }
    }
    let balanced = per_node.values().max().copied().unwrap_or(0)
        <= per_node.values().min().copied().unwrap_or(0) + 1;
    View {
        t,
        statuses,
        all_green,
        health,
        not_green_reasons,
        copies,
        moves,
        draining,
        per_node,
        balanced,
        full,
    }
}
