//! What tests read from answers about shards: the `_shards` section of a read answer (which
//! shards failed, and why) and the placement in a `/cluster/shards` answer.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The shards listed in `_shards.failures`.
pub fn failed_shards(answer: &Value) -> BTreeSet<u32> {
    failures(answer)
        .filter_map(|x| x["shard"].as_u64().map(|s| s as u32))
        .collect()
}

/// `_shards.failures` is a list and every failure in it gives a non-empty reason.
pub fn failures_have_reasons(answer: &Value) -> bool {
    answer["_shards"]["failures"].is_array()
        && failures(answer).all(|x| x["reason"].as_str().is_some_and(|r| !r.is_empty()))
}

fn failures(answer: &Value) -> impl Iterator<Item = &Value> {
    answer["_shards"]["failures"]
        .as_array()
        .into_iter()
        .flatten()
}

/// Shard -> ids of the nodes holding a copy, from a `/cluster/shards` answer (panics on a copy
/// without shard or node).
pub fn holders(shards: &Value) -> BTreeMap<u32, BTreeSet<String>> {
    let mut holders: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for c in shards["copies"].as_array().unwrap() {
        holders
            .entry(c["shard"].as_u64().unwrap() as u32)
            .or_default()
            .insert(c["node"].as_str().unwrap().to_string());
    }
    holders
}

/// The sum of `field` (`entities`, `relations`, ...) over every copy of a `/cluster/shards`
/// answer (panics when it lists no copies; a copy without the count adds 0).
pub fn copies_total(shards: &Value, field: &str) -> u64 {
    shards["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[field].as_u64().unwrap_or(0))
        .sum()
}

/// The shards without a copy on `survivor`; panics when every shard has one there (a test of
/// shards without a live copy would check nothing).
pub fn shards_not_on(holders: &BTreeMap<u32, BTreeSet<String>>, survivor: &str) -> BTreeSet<u32> {
    let dead: BTreeSet<u32> = holders
        .iter()
        .filter(|(_, nodes)| !nodes.contains(survivor))
        .map(|(s, _)| *s)
        .collect();
    assert!(
        !dead.is_empty(),
        "every shard has a copy on {survivor}: {holders:?}"
    );
    dead
}
