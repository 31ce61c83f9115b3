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

/// This node's copy of the map, persisted in the data dir.
pub struct MapHolder {
    path: PathBuf,
    current: RwLock<Option<ShardMap>>,
    /// The last foreign cluster id refused, so the refusal is logged once, not every push.
    refused: std::sync::Mutex<Option<String>>,
}

impl MapHolder {
    pub fn load(data_dir: &Path) -> MapHolder {
        let path = data_dir.join("shard_map.json");
        let current = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        MapHolder {
            path,
            current: RwLock::new(current),
            refused: std::sync::Mutex::new(None),
        }
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
    fn last_in_sync_copy_is_never_marked_stale() {
        let mut map = ShardMap::create(&ids(2), BTreeMap::new(), 1, 2, 1);
        assert_eq!(map.mark_stale(0, "node-2"), Ok(true));
        assert!(map.mark_stale(0, "node-1").is_err());
    }
}
