//! The shard map: which node holds which copy of each shard, which copy is primary, and which
//! copies are in sync (hold every acknowledged write).
//!
//! Only the coordinator changes it; every change bumps `version` and carries the coordinator's
//! `term`. Nodes accept a map only if it is newer (higher term, or same term and higher version),
//! so a stale coordinator cannot overwrite a newer map. Every node keeps the current map on disk
//! (`shard_map.json`), which is how the map survives a whole-cluster restart.
//!
//! Besides who holds what, the map records the moves in progress (a copy being filled on a new
//! node before the old one is dropped), the nodes being drained, and the generation (process
//! start) under which each node's copies were last trusted: a node that restarted is not in sync
//! until it has proven so again. How the coordinator changes it is in [`crate::cluster::plan`].

use crate::error::Error;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use membership::NodeId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Fixed when the first map is made; a node holding a map never installs one with another
    /// id, whatever its term: a node that lost its disk and re-created a map as coordinator (or
    /// a node started with the wrong seeds) cannot overwrite a cluster's data with an empty map.
    #[serde(default)]
    pub cluster_id: String,
    pub version: u64,
    pub term: u64,
    pub shards: u32,
    pub replicas: u32,
    /// Indexed by shard number.
    pub assignments: Vec<Assignment>,
    /// Generation of each node when the coordinator last saw it; a copy whose node runs another
    /// generation is not trusted as in sync (the process restarted, maybe with a wiped disk).
    #[serde(default)]
    pub generations: BTreeMap<String, u64>,
    /// Nodes whose copies are being moved away.
    #[serde(default)]
    pub draining: Vec<Drain>,
    /// Copies being moved: `to` is filled (a replica outside the in-sync set) before `from` is
    /// dropped, so a move never lowers the number of copies.
    #[serde(default)]
    pub moves: Vec<Move>,
    /// The cluster's API keys (salted hashes, never the keys): kept here so that they are changed
    /// under a quorum and reach every node like any other map change.
    #[serde(default)]
    pub api_keys: Vec<crate::node::access::KeyRecord>,
    /// Graph algorithm write-backs decided, oldest first, at most [`MAX_DECISIONS`]: `(write,
    /// publish)`. Every copy holding results staged under `write` publishes or discards them as
    /// recorded here, so a write-back is all or nothing whoever finishes it
    /// (`query::algorithms::publish`).
    #[serde(default)]
    pub decisions: Vec<(String, bool)>,
}

/// Write-back decisions the map keeps; an older one is forgotten (its staged results were
/// published or discarded long before: copies follow a decision within seconds).
pub const MAX_DECISIONS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drain {
    pub node: String,
    /// Set by a node draining itself for a shutdown: the node clears it when it starts again.
    /// An operator's drain (`POST /nodes/{id}/drain`) lasts until `DELETE`.
    pub until_restart: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Move {
    pub shard: u32,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub shard: u32,
    pub primary: String,
    /// The other assigned copies.
    pub replicas: Vec<String>,
    /// Copies (primary included) that hold every acknowledged write.
    pub in_sync: Vec<String>,
}

impl ShardMap {
    /// Whether the write-back `write` is decided: `Some(true)` to publish, `Some(false)` to
    /// discard.
    pub fn decision(&self, write: &str) -> Option<bool> {
        (self.decisions.iter().rev())
            .find(|(w, _)| w == write)
            .map(|(_, publish)| *publish)
    }
}

impl Assignment {
    pub fn copies(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }
    pub fn is_in_sync(&self, node: &str) -> bool {
        self.in_sync.iter().any(|n| n == node)
    }

    /// Makes `next` (a replica) the primary; the old primary becomes a replica.
    pub fn promote(&mut self, next: &str) {
        if self.primary == next {
            return;
        }
        let old = std::mem::replace(&mut self.primary, next.to_string());
        self.replicas.retain(|r| r != next);
        self.replicas.push(old);
    }
}

impl ShardMap {
    /// A balanced map: copies are dealt round-robin over the nodes in id order, so copies (and
    /// primaries) per node differ by at most one and a shard's copies are on distinct nodes. With
    /// fewer nodes than `replicas`, each shard gets one copy per node.
    pub fn create(
        nodes: &[NodeId],
        generations: BTreeMap<String, u64>,
        shards: u32,
        replicas: u32,
        term: u64,
    ) -> ShardMap {
        let mut nodes: Vec<&NodeId> = nodes.iter().collect();
        nodes.sort();
        let n = nodes.len().max(1);
        let r = (replicas as usize).min(n).max(1);
        let assignments = (0..shards)
            .map(|s| {
                let copies: Vec<String> = (0..r)
                    .map(|k| nodes[(s as usize * r + k) % n].as_str().to_string())
                    .collect();
                Assignment {
                    shard: s,
                    primary: copies[0].clone(),
                    replicas: copies[1..].to_vec(),
                    in_sync: copies,
                }
            })
            .collect();
        ShardMap {
            cluster_id: format!("{:032x}", rand::random::<u128>()),
            version: 1,
            term,
            shards,
            replicas,
            assignments,
            generations,
            draining: Vec::new(),
            moves: Vec::new(),
            api_keys: Vec::new(),
            decisions: Vec::new(),
        }
    }

    pub fn is_newer_than(&self, other: &ShardMap) -> bool {
        (self.term, self.version) > (other.term, other.version)
    }

    pub fn assignment(&self, shard: u32) -> Option<&Assignment> {
        self.assignments.get(shard as usize)
    }

    /// Fencing: `Err` unless `node` is `shard`'s primary in this map. A primary that was replaced
    /// while it could not hear the coordinator must not get its writes acknowledged, by replicas
    /// or by the coordinator (in-sync changes).
    pub fn require_primary(&self, shard: u32, node: &str) -> Result<(), Error> {
        let primary = self
            .assignment(shard)
            .map(|a| a.primary.as_str())
            .ok_or_else(|| Error::NotFound(format!("no shard {shard}")))?;
        if primary != node {
            return Err(Error::Fenced(format!(
                "{node} is not the primary of shard {shard} in map version {} ({primary} is); retry",
                self.version
            )));
        }
        Ok(())
    }

    /// Shards `node` holds a copy of.
    pub fn held_by(&self, node: &str) -> Vec<u32> {
        self.assignments
            .iter()
            .filter(|a| a.copies().any(|c| c == node))
            .map(|a| a.shard)
            .collect()
    }

    /// Removes `node` from the in-sync set of `shard` (the primary could not replicate to it, or
    /// the copy's database refused writes); a primary hands its role to another in-sync copy.
    /// Refused if it would leave the shard with no in-sync copy.
    pub fn mark_stale(&mut self, shard: u32, node: &str) -> Result<bool, Error> {
        let a = self
            .assignments
            .get_mut(shard as usize)
            .ok_or_else(|| Error::NotFound(format!("no shard {shard}")))?;
        if !a.is_in_sync(node) {
            return Ok(false);
        }
        if a.in_sync.len() == 1 {
            return Err(Error::Invalid(format!(
                "{node} is the last in-sync copy of shard {shard}"
            )));
        }
        a.in_sync.retain(|n| n != node);
        if a.primary == node {
            let next = a.in_sync[0].clone();
            a.promote(&next);
        }
        Ok(true)
    }
}

impl ShardMap {
    /// Puts `node` back into `shard`'s in-sync set (its primary checked it is level).
    pub fn add_in_sync(&mut self, shard: u32, node: &str) -> Result<bool, Error> {
        let a = self
            .assignments
            .get_mut(shard as usize)
            .ok_or_else(|| Error::NotFound(format!("no shard {shard}")))?;
        if !a.copies().any(|c| c == node) {
            return Err(Error::Invalid(format!(
                "{node} holds no copy of shard {shard}"
            )));
        }
        if a.is_in_sync(node) {
            return Ok(false);
        }
        a.in_sync.push(node.to_string());
        Ok(true)
    }
}

/// Beside `shard_map.json`: the coordinator term this node promised, and to whom.
const PROMISE_FILE: &str = "shard_map_promise";

/// A member's promise to a coordinator: it installs no map pushed under a lower term, nor one
/// pushed under this term by another node (two nodes may claim one term number for a moment).
/// The coordinator's process generation is part of it: a node restarted without its disk may
/// claim a term number its earlier process claimed, and is another coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    pub term: u64,
    pub to: String,
    #[serde(default)]
    pub generation: u64,
}

impl Promise {
    /// Whether this is the promise of `term` to coordinator `to` in its process `generation`.
    pub fn is_to(&self, term: u64, to: &str, generation: u64) -> bool {
        self.term == term && self.to == to && self.generation == generation
    }

    /// Whether a map of `term` pushed by `from` may be installed under this promise.
    pub fn admits(&self, term: u64, from: &str) -> bool {
        term > self.term || (term == self.term && (self.to.is_empty() || self.to == from))
    }
}

/// This node's copy of the map, persisted in the data dir, and its promise to coordinators.
///
/// A map change counts as made once a majority of the map's voting members hold it (see
/// `cluster::coordinator::commit`). A new coordinator starts by collecting the maps of a majority
/// under its term; each member that answers *promises* that term: from then on it installs no
/// map pushed under a lower term, nor one of that term from another node. Two majorities share a
/// member, so a change the previous coordinator completed is in what the new one collects, and one
/// it had not completed can no longer complete: its pushes reach at most a minority that made no
/// promise.
///
/// A node that starts without a map (a new node, or a wiped data directory) has forgotten its
/// promises and the maps it held: it installs maps but counts towards no majority until it has
/// promised a coordinator and then held a map of that coordinator (`cluster::coordinator` collects
/// restarted members under its term, and pushes its map every second).
pub struct MapHolder {
    path: PathBuf,
    current: RwLock<Option<ShardMap>>,
    promise: std::sync::Mutex<Promise>,
    /// Started without a map and not collected since: its acceptance does not count.
    amnesiac: std::sync::atomic::AtomicBool,
    /// The term under which this node, as coordinator, collected a majority's maps: it changes
    /// the map only under that term (before, its own copy may be older than the cluster's).
    collected: std::sync::atomic::AtomicU64,
    /// The last foreign cluster id refused, so the refusal is logged once, not every push.
    refused: std::sync::Mutex<Option<String>>,
}

impl MapHolder {
    pub fn load(data_dir: &Path) -> MapHolder {
        let path = data_dir.join("shard_map.json");
        let current: Option<ShardMap> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let promise = std::fs::read(path.with_file_name(PROMISE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        MapHolder {
            amnesiac: std::sync::atomic::AtomicBool::new(current.is_none()),
            path,
            current: RwLock::new(current),
            promise: std::sync::Mutex::new(promise),
            collected: std::sync::atomic::AtomicU64::new(0),
            refused: std::sync::Mutex::new(None),
        }
    }

    /// Promises coordinator `to` (in its process `generation`) its `term` (see the type's doc)
    /// unless a higher term, or this one to another coordinator, was promised before. Returns the
    /// promise in force afterwards: the asker is the coordinator the cluster follows only if it is
    /// `(term, to, generation)`.
    pub fn promise(&self, term: u64, to: &str, generation: u64) -> Promise {
        let mut promise = self.promise.lock().expect("promise lock");
        if term > promise.term {
            let new = Promise {
                term,
                to: to.to_string(),
                generation,
            };
            let path = self.path.with_file_name(PROMISE_FILE);
            let tmp = path.with_extension("tmp");
            let bytes = serde_json::to_vec(&new).expect("a promise serializes");
            if let Err(e) = std::fs::write(&tmp, bytes)
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
            {
                tracing::error!(error = %e, "cannot persist the promise to a coordinator term");
            }
            *promise = new;
        }
        promise.clone()
    }

    pub fn promised(&self) -> Promise {
        self.promise.lock().expect("promise lock").clone()
    }

    /// Records that this node, coordinating under `term`, collected a majority's maps: it holds
    /// the newest of them, which has every change committed before, so it remembers again.
    pub fn set_collected(&self, term: u64) {
        self.collected
            .store(term, std::sync::atomic::Ordering::SeqCst);
        self.amnesiac
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The term under which this node last collected a majority's maps (0: never).
    pub fn collected(&self) -> u64 {
        self.collected.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A push from coordinator `from`: installs `map` as [`MapHolder::offer`] does unless this
    /// node's promise forbids it. Returns whether it installed it, and whether this node's
    /// acceptance counts: it holds `map` or a later map of the same term (which includes its
    /// changes) and remembers its promises.
    pub fn accept(&self, map: ShardMap, from: &str) -> (bool, bool) {
        let (term, version) = (map.term, map.version);
        // Under the promise's lock: a promise made meanwhile must not let an older push in.
        let promise = self.promise.lock().expect("promise lock");
        if !promise.admits(term, from) {
            tracing::debug!(
                term,
                version,
                from,
                promised = promise.term,
                promised_to = %promise.to,
                "refused a shard map pushed by a coordinator this node promised not to follow"
            );
            return (false, false);
        }
        let installed = self.offer(map);
        let holds = self.read(|m| m.is_some_and(|m| m.term == term && m.version >= version));
        if holds && promise.term == term && promise.to == from {
            // A map of the coordinator it promised holds everything committed before that
            // coordinator's collection: from here on what this node holds can be counted on.
            self.amnesiac
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        drop(promise);
        (installed, holds && !self.forgot())
    }

    /// Whether this node started without a map and has not yet held a map of the coordinator it
    /// promised since: what it holds may miss changes it once held, so it counts towards no
    /// majority (neither a commit nor a collection).
    pub fn forgot(&self) -> bool {
        self.amnesiac.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn get(&self) -> Option<ShardMap> {
        self.current.read().expect("map lock").clone()
    }

    /// Runs `f` on the current map without copying it (keep `f` short: installs wait for it).
    pub fn read<T>(&self, f: impl FnOnce(Option<&ShardMap>) -> T) -> T {
        f(self.current.read().expect("map lock").as_ref())
    }

    pub fn version(&self) -> (u64, u64) {
        self.get().map(|m| (m.term, m.version)).unwrap_or((0, 0))
    }

    /// Installs `map` if it is newer than the current one and of the same cluster; persists it.
    /// Returns whether it did.
    pub fn offer(&self, map: ShardMap) -> bool {
        let mut current = self.current.write().expect("map lock");
        if let Some(c) = current.as_ref() {
            if !c.cluster_id.is_empty() && c.cluster_id != map.cluster_id {
                self.log_refusal(c, &map);
                return false;
            }
            if !map.is_newer_than(c) {
                return false;
            }
        }
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&map).expect("map serializes");
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &self.path))
        {
            tracing::error!(error = %e, "cannot persist the shard map");
        }
        tracing::info!(
            version = map.version,
            term = map.term,
            "installed shard map"
        );
        *current = Some(map);
        true
    }
}

impl MapHolder {
    fn log_refusal(&self, current: &ShardMap, offered: &ShardMap) {
        let mut refused = self.refused.lock().expect("refusal lock");
        if refused.as_deref() == Some(offered.cluster_id.as_str()) {
            return;
        }
        *refused = Some(offered.cluster_id.clone());
        tracing::error!(
            ours = %current.cluster_id,
            theirs = %offered.cluster_id,
            their_term = offered.term,
            "refused a shard map of another cluster: two clusters were formed from these nodes \
             (e.g. a node that lost its disk created a new map). Keep the cluster holding the data: \
             stop the nodes of the other one, empty their data directories and restart them"
        );
    }
}

/// Reads are answered only by a copy its own map calls in sync (a copy that just fell out may
/// miss acknowledged writes); the asker then tries another copy.
/// `Err` unless `map` lists this node's copy of `shard` in sync, under this process's generation
/// (a restarted node answers for its copies only once they have rejoined).
pub fn in_sync_here(
    map: Option<&ShardMap>,
    shard: u32,
    me: &str,
    generation: u64,
) -> Result<(), Error> {
    if let Some(m) = map {
        if m.generations.get(me) != Some(&generation) {
            return Err(Error::Unavailable(format!(
                "{me} restarted; its copy of shard {shard} has not rejoined yet"
            )));
        }
    }
    match map.and_then(|m| m.assignment(shard)) {
        Some(a) if a.is_in_sync(me) => Ok(()),
        Some(_) => Err(Error::Unavailable(format!(
            "this node's copy of shard {shard} is not in sync"
        ))),
        None => Err(Error::Unavailable(format!(
            "this node has no shard map with shard {shard}"
        ))),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `node-1` .. `node-n`.
    pub(in crate::cluster) fn ids(n: usize) -> Vec<NodeId> {
        (1..=n)
            .map(|i| NodeId::new(&format!("node-{i}")).unwrap())
            .collect()
    }

    #[test]
    fn a_primary_marked_stale_hands_its_role_to_an_in_sync_copy() {
        let mut map = ShardMap::create(&ids(3), BTreeMap::new(), 4, 3, 1);
        let a = map.assignment(0).unwrap().clone();
        let primary = a.primary.clone();
        assert!(map.mark_stale(0, &primary).unwrap());
        let b = map.assignment(0).unwrap();
        assert_ne!(b.primary, primary);
        assert!(b.is_in_sync(&b.primary) && !b.is_in_sync(&primary));
        assert!(b.replicas.contains(&primary) && !b.replicas.contains(&b.primary));
        // Down to one in-sync copy: that one stays, whatever asks.
        let next = b.primary.clone();
        let other = b.in_sync.iter().find(|n| **n != next).unwrap().clone();
        assert!(map.mark_stale(0, &other).unwrap());
        assert!(map.mark_stale(0, &next).is_err());
        assert_eq!(map.assignment(0).unwrap().primary, next);
    }

    #[test]
    fn maps_are_balanced_with_distinct_copies() {
        for (nodes, shards, replicas) in [(3, 16, 2), (5, 16, 2), (2, 7, 3), (10, 16, 3), (1, 4, 2)]
        {
            let map = ShardMap::create(&ids(nodes), BTreeMap::new(), shards, replicas, 1);
            let mut per_node = std::collections::BTreeMap::new();
            let mut primaries = std::collections::BTreeMap::new();
            for a in &map.assignments {
                let copies: Vec<&String> = a.copies().collect();
                let mut distinct = copies.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(
                    distinct.len(),
                    copies.len(),
                    "copies on distinct nodes: {a:?}"
                );
                assert_eq!(copies.len(), (replicas as usize).min(nodes));
                for c in copies {
                    *per_node.entry(c.clone()).or_insert(0) += 1;
                }
                *primaries.entry(a.primary.clone()).or_insert(0) += 1;
            }
            let spread = |m: &std::collections::BTreeMap<String, i32>| {
                m.values().max().unwrap() - m.values().min().unwrap()
            };
            assert!(spread(&per_node) <= 1, "{nodes} nodes: {per_node:?}");
            assert!(spread(&primaries) <= 1, "{nodes} nodes: {primaries:?}");
        }
    }

    #[test]
    fn a_map_of_another_cluster_is_refused_whatever_its_term() {
        let dir = tempfile::tempdir().unwrap();
        let holder = MapHolder::load(dir.path());
        let ours = ShardMap::create(&ids(3), BTreeMap::new(), 4, 2, 3);
        assert!(holder.offer(ours.clone()));
        let mut newer = ours.clone();
        newer.version += 1;
        assert!(
            holder.offer(newer.clone()),
            "same cluster, newer: installed"
        );
        let theirs = ShardMap::create(&ids(1), BTreeMap::new(), 4, 2, 9);
        assert_ne!(theirs.cluster_id, ours.cluster_id);
        assert!(
            !holder.offer(theirs),
            "another cluster's map must be refused"
        );
        assert_eq!(holder.get(), Some(newer));
        // The refusal survives a restart: the id is persisted with the map.
        let reloaded = MapHolder::load(dir.path());
        assert_eq!(reloaded.get().unwrap().cluster_id, ours.cluster_id);
    }

    #[test]
    fn a_promise_refuses_older_coordinators_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let holder = MapHolder::load(dir.path());
        let first = ShardMap::create(&ids(3), BTreeMap::new(), 4, 2, 3);
        holder.offer(first.clone());
        // Started without a map: installs pushes but does not count until it promised a
        // coordinator and held one of its maps.
        assert_eq!(holder.accept(first.clone(), "node-1"), (false, false));
        assert!(holder.forgot());
        let promise = Promise {
            term: 5,
            to: "node-2".into(),
            generation: 7,
        };
        assert_eq!(holder.promise(5, "node-2", 7), promise);
        assert!(
            holder.forgot(),
            "a promise alone does not bring back what it held"
        );
        assert_eq!(holder.accept(first.clone(), "node-1"), (false, false));
        // A push of the promised term from its coordinator counts; from another node it does not.
        let mut ok = first.clone();
        ok.term = 5;
        ok.version += 1;
        assert_eq!(holder.accept(ok.clone(), "node-3"), (false, false));
        assert_eq!(holder.accept(ok.clone(), "node-2"), (true, true));
        assert!(!holder.forgot());
        // An older term's newer version is refused, even from the coordinator of that term.
        let mut old = first.clone();
        old.version += 10;
        assert_eq!(holder.accept(old, "node-1"), (false, false));
        // A lower term cannot take the promise back; a higher one can.
        assert_eq!(holder.promise(4, "node-1", 1).term, 5);
        assert_eq!(holder.promise(5, "node-3", 1).to, "node-2");
        // The same node in another process is another coordinator.
        assert!(!holder.promise(5, "node-2", 8).is_to(5, "node-2", 8));
        // Persisted: a restart keeps the promise and is not amnesiac (it has a map).
        let reloaded = MapHolder::load(dir.path());
        assert_eq!(reloaded.promised(), promise);
        let mut later = ok.clone();
        later.version += 1;
        assert_eq!(reloaded.accept(later, "node-2"), (true, true));
        assert_eq!(
            reloaded.accept(ok, "node-2"),
            (false, true),
            "holds a later map of the term"
        );
    }

    #[test]
    fn last_in_sync_copy_is_never_marked_stale() {
        let mut map = ShardMap::create(&ids(2), BTreeMap::new(), 1, 2, 1);
        assert_eq!(map.mark_stale(0, "node-2"), Ok(true));
        assert!(map.mark_stale(0, "node-1").is_err());
    }
}
