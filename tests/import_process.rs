//! Process-level test of where `torua import graphrag` places entities, on a 2-node cluster (8
//! shards, 2 copies): the import keys each Dulce entity by its level-0 community (with
//! `--min-split 1`, the two largest split, being much larger than a shard's share; the default
//! splits no community this small), `--routing none` imports the folder
//! again without keys, and `--routing-level 1` keys by the finer communities. After each import
//! every entity reads back by id from every node with the key the importer computed
//! ([`assign_routing`]), from its key's shard (its id's without one), with all its relations and
//! their ends' keys; each entity is stored once (entities that changed key moved, leaving no
//! copy behind) and every shard's copies agree.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;
use torua::cmd::import::{assign_routing, read_folder};
use torua::graph::model::{Batch, Relation};
use torua::graph::partition::home_shard;
use torua_testkit::{dulce_dir, import_graphrag_with, ClusterOptions, TestCluster};

const SETTLE: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(30);
const SHARDS: u32 = 8;

/// `torua import graphrag <Dulce> --url <url> --quiet <extra>`; its stdout.
fn import(url: &str, extra: &[&str]) -> String {
    let stdout = import_graphrag_with(&dulce_dir(), url, extra);
    assert!(
        stdout.contains("39 entities, 107 relations, 5 chunks, 10 communities, 1 documents"),
        "{stdout}"
    );
    stdout
}

/// A routing key as the API writes it: a string, or null for none.
fn key_json(key: &Option<String>) -> Value {
    key.as_deref().map_or(Value::Null, Value::from)
}

/// Every entity of `expected` readable from every node with its routing key, from its home
/// shard, with its relations and their ends' keys; each stored once; every shard's copies agree.
fn check_placement(cluster: &mut TestCluster, expected: &Batch) {
    let relations: HashMap<&str, &Relation> = (expected.relations.iter())
        .map(|r| (r.id.as_str(), r))
        .collect();
    let mut rel_count: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &expected.relations {
        *rel_count.entry(r.source.as_str()).or_default() += 1;
        if r.target != r.source {
            *rel_count.entry(r.target.as_str()).or_default() += 1;
        }
    }
    for i in cluster.running() {
        let node = cluster.node(i);
        for e in &expected.entities {
            let got = node
                .get_json(&format!("/graph/entities/{}", e.id), T)
                .unwrap();
            let what = format!("{} on {}: {got}", e.id, node.id);
            assert_eq!(got["entity"]["title"], e.title.as_str(), "{what}");
            assert_eq!(got["entity"]["routing"], key_json(&e.routing), "{what}");
            let home = home_shard(&e.id, e.routing.as_deref(), SHARDS);
            assert_eq!(got["shard"], home, "read from the key's shard: {what}");
            let rels = got["relations"].as_array().cloned().unwrap_or_default();
            let want = rel_count.get(e.id.as_str()).copied().unwrap_or(0);
            assert_eq!(rels.len(), want, "relations of {what}");
            for r in &rels {
                let sent = relations[r["id"].as_str().unwrap()];
                assert_eq!(
                    r["source_routing"],
                    key_json(&sent.source_routing),
                    "{what}"
                );
                assert_eq!(
                    r["target_routing"],
                    key_json(&sent.target_routing),
                    "{what}"
                );
            }
        }
    }
    let shards = cluster.wait_applied(0, T).unwrap();
    let mut per_shard: BTreeMap<u64, u64> = BTreeMap::new();
    for c in shards["copies"].as_array().unwrap() {
        if c["in_sync"] == true {
            per_shard.insert(
                c["shard"].as_u64().unwrap(),
                c["entities"].as_u64().unwrap_or(u64::MAX),
            );
        }
    }
    assert_eq!(per_shard.len(), SHARDS as usize, "{shards}");
    let total: u64 = per_shard.values().sum();
    assert_eq!(total as usize, expected.entities.len(), "{shards}");
    torua_testkit::wait::poll(SETTLE, Duration::from_millis(200), || {
        cluster.copies_agree(0).map_err(|e| e.to_string())
    })
    .unwrap();
}

#[test]
fn graphrag_import_keys_entities_by_community_and_routing_none_places_them_by_id() {
    let mut cluster = TestCluster::start_green(2, ClusterOptions::graph(2), SETTLE).unwrap();
    let url = cluster.node(0).url("");

    // Default: level-0 communities, balanced for the cluster's 8 shards.
    let mut by_community = read_folder(&dulce_dir()).unwrap();
    let placement = assign_routing(&mut by_community, 0, SHARDS, 1);
    assert_eq!((placement.communities, placement.split), (7, 2));
    let stdout = import(&url, &["--min-split", "1"]);
    assert!(stdout.contains(&placement.line()), "{stdout}");
    check_placement(&mut cluster, &by_community);
    // Importing again moves nothing and keeps the keys.
    import(&cluster.node(1).url(""), &["--min-split", "1"]);
    check_placement(&mut cluster, &by_community);

    // `--routing none`: no keys; every entity moves back to its id's shard.
    let by_id = read_folder(&dulce_dir()).unwrap();
    let stdout = import(&url, &["--routing", "none"]);
    assert!(stdout.contains("placed entities by id"), "{stdout}");
    check_placement(&mut cluster, &by_id);

    // `--routing-level 1`: community 0's entities take its sub-communities 7, 8 and 9.
    let mut finer = read_folder(&dulce_dir()).unwrap();
    let placement = assign_routing(&mut finer, 1, SHARDS, 1);
    let stdout = import(&url, &["--routing-level", "1", "--min-split", "1"]);
    assert!(stdout.contains(&placement.line()), "{stdout}");
    let keys: Vec<&str> = (finer.entities.iter())
        .filter_map(|e| e.routing.as_deref())
        .collect();
    for sub in ["community:7", "community:8", "community:9"] {
        assert!(keys.contains(&sub), "{sub} in {keys:?}");
    }
    check_placement(&mut cluster, &finer);
}
