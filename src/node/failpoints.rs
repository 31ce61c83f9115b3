//! Fault injection for tests: named points in the code where a test can make a node stop
//! (sleep, panic, return early) at an exact moment, such as between two steps of a document
//! delete, and then kill it there. The points are the [`fail`] crate's; a node configures them
//! from `TORUA_FAILPOINTS` at start. Unset (always, outside tests), every point does nothing
//! but one lookup in an empty table.

/// Before each write step of a document cascade (`replication::document`): relation prunes,
/// community prunes, entity prunes, chunk removal, document removal, in that order.
pub const DOCUMENT_CASCADE_STEP: &str = "document-cascade-step";

/// Where a shard copy applies a round of logged writes, and again where it applies one write of
/// a failed round: returning makes the database refuse it (as Kuzu can, see `storage`).
pub const APPLY_REFUSED: &str = "apply-refused";

/// Where a shard copy applies a round of logged writes: returning makes the round vanish (counted
/// as applied, never written), a silent divergence from the other copies.
pub const APPLY_LOST: &str = "apply-lost";

/// Where a shard copy starts applying a round of logged writes: sleeping there is a stuck
/// applier (nothing applied while writes wait).
pub const APPLY_STALL: &str = "apply-stall";

/// Where a graph algorithm's driver has published its decided results in the first shard and
/// is about to publish them in the others: sleeping there and killing the node leaves the
/// write-back published in one shard only, for the shards' primaries to finish.
pub const ALGORITHM_PUBLISH: &str = "algorithm-publish";

/// Where a graph algorithm's driver has staged its results in every shard and is about to
/// decide to publish them: killing the node there leaves them staged and undecided.
pub const ALGORITHM_DECIDE: &str = "algorithm-decide";

/// Every point a node knows, so a misspelt name is refused at start instead of never firing.
const KNOWN: &[&str] = &[
    DOCUMENT_CASCADE_STEP,
    APPLY_REFUSED,
    APPLY_LOST,
    APPLY_STALL,
    ALGORITHM_PUBLISH,
    ALGORITHM_DECIDE,
];

/// Evaluates point `name` from async code, off the runtime's worker threads: a `sleep` there
/// holds the caller without blocking a worker (whose queued tasks, the transport's among them,
/// would wait with it).
pub async fn pause(name: &'static str) {
    let _ = tokio::task::spawn_blocking(move || fail::fail_point!(name)).await;
}

/// Configures the points listed in `spec`: `name=actions` pairs separated by `;`, the actions
/// in the `fail` crate's syntax (e.g. `document-cascade-step=1*off->sleep(60000)`: the first
/// step runs, the second sleeps a minute).
pub fn configure(spec: &str) -> anyhow::Result<()> {
    for pair in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, actions)) = pair.split_once('=') else {
            anyhow::bail!("TORUA_FAILPOINTS: {pair:?} is not name=actions");
        };
        let name = name.trim();
        if !KNOWN.contains(&name) {
            anyhow::bail!("TORUA_FAILPOINTS: unknown point {name:?}; known: {KNOWN:?}");
        }
        fail::cfg(name, actions.trim())
            .map_err(|e| anyhow::anyhow!("TORUA_FAILPOINTS: {name}: {e}"))?;
        tracing::warn!(point = name, actions, "fault injection armed (tests only)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_points_and_bad_actions() {
        assert!(configure("no-such-point=panic").is_err());
        assert!(configure("document-cascade-step").is_err());
        assert!(configure("document-cascade-step=explode(3)").is_err());
        assert!(configure("").is_ok());
    }
}
