//! How the coordinator changes the shard map as nodes die, restart, join and drain: pure
//! functions of the map and of what the coordinator sees, so that every rule is unit-tested.
//!
//! One planning pass ([`plan`]), in order:
//! 1. quorum: no change at all unless a majority of the voting membership (the nodes holding
//!    copies) is live — the minority side of a partition must not promote anything;
//! 2. restarts: a node running a new generation leaves the in-sync sets (it proves it is level
//!    again by catching up);
//! 3. failures: dead copies leave the in-sync sets, a dead primary is replaced by an in-sync copy;
//! 4. replacement: copies on nodes dead for longer than `TORUA_REPLACE_AFTER` are dropped and
//!    re-created on other nodes;
//! 5. moves: finished moves drop their source; drains and imbalance start new ones, at most
//!    `TORUA_MAX_CONCURRENT_MOVES` copies being filled at a time.
//!
//! Never removed: the last in-sync copy of a shard (its data's only home), and a move's source
//! before its target is in sync.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::shard_map::{Assignment, Move, ShardMap};

/// What the coordinator sees of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// Live nodes and their generation.
    pub live: BTreeMap<String, u64>,
    /// Live nodes that may receive copies (ready, not draining are filtered by the planner).
    pub ready: BTreeSet<String>,
    /// Nodes dead (or absent) for longer than the replace delay.
    pub gone: BTreeSet<String>,
}

impl Members {
    fn is_live(&self, node: &str) -> bool {
        self.live.contains_key(node)
    }
}

/// Why a pass changed nothing although it might have had to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    NoQuorum { live: usize, voting: usize },
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocked::NoQuorum { live, voting } => write!(
                f,
                "no quorum: {live} of the {voting} nodes holding shard copies are reachable (a majority is needed)"
            ),
        }
    }
}

impl ShardMap {
    /// The voting membership: nodes holding a copy.
    pub fn voting(&self) -> BTreeSet<&str> {
        self.assignments
            .iter()
            .flat_map(|a| a.copies().map(String::as_str))
            .collect()
    }

    /// `Err` unless a strict majority of the voting membership is live.
    pub fn quorum(&self, is_live: impl Fn(&str) -> bool) -> Result<(), Blocked> {
        let voting = self.voting();
        let live = voting.iter().filter(|n| is_live(n)).count();
        if voting.is_empty() || live * 2 > voting.len() {
            Ok(())
        } else {
            Err(Blocked::NoQuorum {
                live,
                voting: voting.len(),
            })
        }
    }

    pub fn is_draining(&self, node: &str) -> bool {
        self.draining.iter().any(|d| d.node == node)
    }

    /// Copies being filled (live, outside the in-sync set).
    pub fn initializing(&self, m: &Members) -> usize {
        self.assignments
            .iter()
            .flat_map(|a| {
                a.copies()
                    .filter(|c| m.is_live(c) && !a.is_in_sync(c))
                    .map(|_| ())
            })
            .count()
    }

    fn copies_per_node(&self) -> BTreeMap<&str, usize> {
        let mut n = BTreeMap::new();
        for a in &self.assignments {
            for c in a.copies() {
                *n.entry(c.as_str()).or_insert(0) += 1;
            }
        }
        n
    }
}

/// One planning pass. Returns whether the map changed, or why nothing may change.
pub fn plan(map: &mut ShardMap, m: &Members, max_moves: usize) -> Result<bool, Blocked> {
    map.quorum(|n| m.is_live(n))?;
    let before = map.clone();
    handle_restarts(map, m);
    handle_failures(map, m);
    replace_gone(map, m);
    finish_moves(map, m);
    hand_over_primaries(map, m);
    let mut budget = max_moves.saturating_sub(map.initializing(m));
    fill_missing(map, m, &mut budget);
    start_moves(map, m, &mut budget);
    Ok(*map != before)
}

/// A live node whose generation differs from the map's restarted since its copies were trusted:
/// they leave the in-sync sets (a primary hands over to an in-sync copy) and rejoin by catching
/// up. The last in-sync copy of a shard stays (it is all there is).
fn handle_restarts(map: &mut ShardMap, m: &Members) {
    for (node, generation) in &m.live {
        if map.generations.get(node) == Some(generation) {
            continue;
        }
        if map.generations.contains_key(node) {
            for a in &mut map.assignments {
                if a.is_in_sync(node) && a.in_sync.len() > 1 {
                    a.in_sync.retain(|n| n != node);
                    if a.primary == *node {
                        let next = a.in_sync.iter().find(|n| m.is_live(n)).cloned();
                        if let Some(next) = next {
                            a.promote(&next);
                        }
                    }
                }
            }
        }
        map.generations.insert(node.clone(), *generation);
    }
}

/// Dead copies leave the in-sync sets (the write path would wait for them) but one entry stays,
/// so the data's last known home is not forgotten (red until it returns); a dead primary is
/// replaced by a live in-sync copy.
fn handle_failures(map: &mut ShardMap, m: &Members) {
    for a in &mut map.assignments {
        let live_in_sync: Vec<String> =
            a.in_sync.iter().filter(|n| m.is_live(n)).cloned().collect();
        if !live_in_sync.is_empty() {
            a.in_sync = live_in_sync;
        }
        if !m.is_live(&a.primary) {
            if let Some(next) = a.in_sync.iter().find(|n| m.is_live(n)).cloned() {
                a.promote(&next);
            }
        }
    }
}

/// Copies on nodes gone for good (dead past the replace delay) that are not the shard's last
/// in-sync copy are dropped; moves to or from them are cancelled. `fill_missing` re-creates them.
fn replace_gone(map: &mut ShardMap, m: &Members) {
    map.moves
        .retain(|mv| !m.gone.contains(&mv.to) && !m.gone.contains(&mv.from));
    for a in &mut map.assignments {
        let gone: Vec<String> = a
            .replicas
            .iter()
            .filter(|r| m.gone.contains(*r) && !a.is_in_sync(r))
            .cloned()
            .collect();
        for node in gone {
            tracing::warn!(shard = a.shard, node = %node, "dropping the copy of a node dead past TORUA_REPLACE_AFTER");
            a.replicas.retain(|r| *r != node);
        }
    }
}

/// A move whose target is in sync drops its source (after handing over the primary role); a
/// move whose target died is cancelled (the target copy is dropped).
fn finish_moves(map: &mut ShardMap, m: &Members) {
    let moves = std::mem::take(&mut map.moves);
    for mv in moves {
        let Some(a) = map.assignments.get_mut(mv.shard as usize) else {
            continue;
        };
        if !a.copies().any(|c| *c == mv.to) {
            continue; // the target was dropped
        }
        if !m.is_live(&mv.to) {
            if !a.is_in_sync(&mv.to) {
                a.replicas.retain(|r| *r != mv.to);
                continue;
            }
        } else if a.is_in_sync(&mv.to) {
            if a.primary == mv.from {
                a.promote(&mv.to);
            }
            if a.primary != mv.from {
                a.replicas.retain(|r| *r != mv.from);
                a.in_sync.retain(|r| *r != mv.from);
                tracing::info!(shard = mv.shard, from = %mv.from, to = %mv.to, "moved a copy");
                continue;
            }
        }
        map.moves.push(mv);
    }
}

/// A draining node gives up its primary roles to live in-sync copies elsewhere at once (no data
/// moves for that).
fn hand_over_primaries(map: &mut ShardMap, m: &Members) {
    let draining: BTreeSet<String> = map.draining.iter().map(|d| d.node.clone()).collect();
    for a in &mut map.assignments {
        if !draining.contains(&a.primary) {
            continue;
        }
        let next = a
            .in_sync
            .iter()
            .find(|n| **n != a.primary && m.is_live(n) && !draining.contains(*n))
            .cloned();
        if let Some(next) = next {
            a.promote(&next);
        }
    }
}

/// Nodes that may receive copies: live, ready, not draining.
fn targets(map: &ShardMap, m: &Members) -> Vec<String> {
    m.ready
        .iter()
        .filter(|n| m.is_live(n) && !map.is_draining(n))
        .cloned()
        .collect()
}

/// The target node with the fewest copies that does not hold `a`.
fn least_loaded(map: &ShardMap, targets: &[String], a: &Assignment) -> Option<String> {
    let load = map.copies_per_node();
    targets
        .iter()
        .filter(|t| !a.copies().any(|c| c == *t))
        .min_by_key(|t| (load.get(t.as_str()).copied().unwrap_or(0), (*t).clone()))
        .cloned()
}

/// Shards with fewer copies than the replica count (after a replacement, or a cluster that grew
/// past a replica count it could not honour) get new copies.
fn fill_missing(map: &mut ShardMap, m: &Members, budget: &mut usize) {
    let targets = targets(map, m);
    for i in 0..map.assignments.len() {
        let want = map.replicas as usize;
        while *budget > 0 && map.assignments[i].copies().count() < want {
            let Some(node) = least_loaded(map, &targets, &map.assignments[i]) else {
                break;
            };
            tracing::info!(shard = i, node = %node, "adding a copy");
            map.assignments[i].replicas.push(node);
            *budget -= 1;
        }
    }
}

/// Moves copies off draining nodes, then from the most to the least loaded node until copies per
/// node differ by at most one.
fn start_moves(map: &mut ShardMap, m: &Members, budget: &mut usize) {
    let targets = targets(map, m);
    if targets.is_empty() {
        return;
    }
    let moving = |map: &ShardMap, shard: u32| map.moves.iter().any(|mv| mv.shard == shard);
    // Drains first.
    for i in 0..map.assignments.len() {
        if *budget == 0 {
            return;
        }
        let shard = i as u32;
        if moving(map, shard) {
            continue;
        }
        let a = &map.assignments[i];
        let Some(from) = a.copies().find(|c| map.is_draining(c)).cloned() else {
            continue;
        };
        if let Some(to) = least_loaded(map, &targets, a) {
            add_move(map, shard, from, to);
            *budget -= 1;
        }
    }
    // Balance, counting a move's target as already there and its source as gone.
    while *budget > 0 {
        let mut load: BTreeMap<String, usize> = targets.iter().map(|t| (t.clone(), 0)).collect();
        for a in &map.assignments {
            for c in a.copies() {
                if let Some(n) = load.get_mut(c) {
                    *n += 1;
                }
            }
        }
        for mv in &map.moves {
            if let Some(n) = load.get_mut(&mv.from) {
                *n = n.saturating_sub(1);
            }
        }
        let (Some((max_node, max)), Some((min_node, min))) = (
            load.iter()
                .max_by_key(|(n, c)| (**c, std::cmp::Reverse((*n).clone()))),
            load.iter().min_by_key(|(n, c)| (**c, (*n).clone())),
        ) else {
            return;
        };
        if max - min <= 1 {
            return;
        }
        let (from, to) = (max_node.clone(), min_node.clone());
        let candidate = map.assignments.iter().find(|a| {
            a.copies().any(|c| *c == from)
                && !a.copies().any(|c| *c == to)
                && !moving(map, a.shard)
                && a.is_in_sync(&from)
        });
        let Some(shard) = candidate.map(|a| a.shard) else {
            return;
        };
        add_move(map, shard, from, to);
        *budget -= 1;
    }
}

fn add_move(map: &mut ShardMap, shard: u32, from: String, to: String) {
    tracing::info!(shard, from = %from, to = %to, "moving a copy");
    map.assignments[shard as usize].replicas.push(to.clone());
    map.moves.push(Move { shard, from, to });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::shard_map::tests::ids;
    use crate::cluster::shard_map::Drain;

    fn members(live: &[usize], gone: &[usize]) -> Members {
        let name = |i: &usize| format!("node-{i}");
        Members {
            live: live.iter().map(|i| (name(i), 1)).collect(),
            ready: live.iter().map(name).collect(),
            gone: gone.iter().map(name).collect(),
        }
    }

    fn map(nodes: usize, shards: u32) -> ShardMap {
        let gens = (1..=nodes).map(|i| (format!("node-{i}"), 1)).collect();
        ShardMap::create(&ids(nodes), gens, shards, 2, 1)
    }

    /// Puts every copy in sync (as the copies' catching up would).
    fn catch_up(map: &mut ShardMap, m: &Members) {
        for a in &mut map.assignments {
            let live: Vec<String> = a.copies().filter(|c| m.is_live(c)).cloned().collect();
            for c in live {
                if !a.is_in_sync(&c) {
                    a.in_sync.push(c);
                }
            }
        }
    }

    fn per_node(map: &ShardMap) -> BTreeMap<String, usize> {
        map.copies_per_node()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// `nodes` nodes hold copies, and no node holds more than one copy more than another.
    fn assert_balanced(map: &ShardMap, nodes: usize) {
        let load = per_node(map);
        assert_eq!(load.len(), nodes, "{load:?}");
        assert!(
            load.values().max().unwrap() - load.values().min().unwrap() <= 1,
            "{load:?}"
        );
    }

    fn check_invariants(map: &ShardMap) {
        for a in &map.assignments {
            assert!(
                !a.in_sync.is_empty(),
                "shard {} lost its last in-sync copy",
                a.shard
            );
            let mut c: Vec<&String> = a.copies().collect();
            c.sort();
            c.dedup();
            assert_eq!(c.len(), a.copies().count(), "duplicate copy: {a:?}");
            assert!(
                a.in_sync.iter().all(|n| a.copies().any(|c| c == n)),
                "{a:?}"
            );
        }
    }

    #[test]
    fn minority_changes_nothing() {
        let mut map = map(5, 8);
        let before = map.clone();
        let m = members(&[1, 2], &[3, 4, 5]);
        assert!(matches!(
            plan(&mut map, &m, 2),
            Err(Blocked::NoQuorum { live: 2, voting: 5 })
        ));
        assert_eq!(map, before);
        let m = members(&[3, 4, 5], &[]);
        assert_eq!(plan(&mut map, &m, 2), Ok(true), "the majority promotes");
        for a in &map.assignments {
            assert!(m.is_live(&a.primary) || !a.in_sync.iter().any(|n| m.is_live(n)));
        }
    }

    #[test]
    fn dead_node_is_replaced_after_the_delay_and_health_returns() {
        let mut map = map(5, 16);
        let dead = members(&[1, 2, 3, 4], &[]);
        plan(&mut map, &dead, 2).unwrap();
        check_invariants(&map);
        assert!(map.assignments.iter().all(|a| !a.is_in_sync("node-5")));
        assert!(
            map.assignments
                .iter()
                .any(|a| a.copies().any(|c| c == "node-5")),
            "kept until the replace delay"
        );
        let gone = members(&[1, 2, 3, 4], &[5]);
        for _ in 0..20 {
            plan(&mut map, &gone, 2).unwrap();
            check_invariants(&map);
            assert!(
                map.initializing(&gone) <= 2,
                "at most 2 copies filled at once"
            );
            catch_up(&mut map, &gone);
        }
        assert!(map.assignments.iter().all(|a| a.copies().count() == 2
            && a.in_sync.len() == 2
            && !a.copies().any(|c| c == "node-5")));
        assert_balanced(&map, 4);
    }

    #[test]
    fn last_in_sync_copy_is_never_dropped() {
        let mut map = map(5, 10);
        // Shards with both copies on node-4 and node-5 lose both for good: they stay red (their
        // last known homes kept) instead of being re-created empty.
        let m = members(&[1, 2, 3], &[4, 5]);
        for _ in 0..10 {
            plan(&mut map, &m, 2).unwrap();
            check_invariants(&map);
            catch_up(&mut map, &m);
        }
        let both: Vec<&Assignment> = map
            .assignments
            .iter()
            .filter(|a| a.in_sync.iter().all(|n| m.gone.contains(n)))
            .collect();
        assert!(
            !both.is_empty(),
            "the layout puts some shard on node-4 and node-5 only"
        );
        for a in both {
            assert_eq!(a.copies().count(), 2, "{a:?}");
        }
    }

    #[test]
    fn restarted_node_leaves_in_sync_and_primary_role() {
        let mut map = map(3, 6);
        let mut m = members(&[1, 2, 3], &[]);
        m.live.insert("node-2".into(), 2);
        assert_eq!(plan(&mut map, &m, 2), Ok(true));
        check_invariants(&map);
        for a in &map.assignments {
            assert!(!a.is_in_sync("node-2") || a.in_sync.len() == 1);
            assert_ne!(a.primary, "node-2");
        }
        assert_eq!(map.generations["node-2"], 2);
        // The next pass leaves it alone.
        let before = map.clone();
        assert_eq!(plan(&mut map, &m, 0), Ok(false));
        assert_eq!(map, before);
    }

    #[test]
    fn new_node_gets_copies_by_moves_that_never_lower_the_copy_count() {
        let mut map = map(5, 16);
        let m = members(&[1, 2, 3, 4, 5, 6], &[]);
        for _ in 0..40 {
            plan(&mut map, &m, 2).unwrap();
            check_invariants(&map);
            assert!(map.moves.len() <= 2);
            for a in &map.assignments {
                assert!(a.in_sync.len() >= 2, "a move lowered the copies of {a:?}");
            }
            catch_up(&mut map, &m);
        }
        assert!(map.moves.is_empty());
        assert_balanced(&map, 6);
    }

    #[test]
    fn drain_moves_every_copy_and_primary_away() {
        let mut map = map(5, 16);
        map.draining.push(Drain {
            node: "node-1".into(),
            until_restart: true,
        });
        let m = members(&[1, 2, 3, 4, 5], &[]);
        plan(&mut map, &m, 2).unwrap();
        assert!(
            map.assignments.iter().all(|a| a.primary != "node-1"),
            "primaries handed over at once"
        );
        for _ in 0..40 {
            plan(&mut map, &m, 2).unwrap();
            check_invariants(&map);
            catch_up(&mut map, &m);
        }
        assert!(map.held_by("node-1").is_empty());
        assert!(map.assignments.iter().all(|a| a.in_sync.len() == 2));
    }
}
