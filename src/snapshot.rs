//! Copying a whole shard copy to another node: how a new copy (re-replication, a move) or one
//! that cannot catch up from the log (it diverged, or fell behind what the log keeps) gets the
//! data.
//!
//! The primary copies its database file at a round boundary (`KuzuShard::snapshot`, after a
//! checkpoint) and keeps its log from that point on; the receiving node pulls the file in pieces
//! over QUIC, several in flight, renames it into place and opens it, then asks the primary to put
//! it in sync — which first sends the writes made since the snapshot, by sequence number
//! (`replication::rejoin_in_sync`). Writes go on throughout. A snapshot is deleted when the
//! receiver releases it, or when nobody has read it for `IDLE_EXPIRY`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::context::NodeContext;
use crate::peer::wire::{PeerRequest, PeerResponse};
use crate::storage::KuzuShard;

/// Bytes per piece (below the transport's 16 MiB message limit).
const PIECE: u32 = 8 << 20;
/// Pieces requested at the same time (hides the round trip).
const IN_FLIGHT: usize = 4;
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);
/// A checkpoint and a local copy of a large file.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(300);
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// A snapshot not read for this long is deleted (its receiver died or gave up).
const IDLE_EXPIRY: Duration = Duration::from_secs(120);

/// The snapshots this node is serving.
#[derive(Default)]
pub struct Snapshots {
    next: AtomicU64,
    active: Mutex<HashMap<u64, Active>>,
}

struct Active {
    shard: u32,
    path: PathBuf,
    bytes: u64,
    store: Arc<KuzuShard>,
    last_used: Instant,
}

/// On the primary: answer to `PrepareSnapshot`.
pub async fn prepare(ctx: &Arc<NodeContext>, shard: u32, from: &str) -> PeerResponse {
    let Some(map) = ctx.shard_map.get() else {
        return PeerResponse::Failed("no shard map".into());
    };
    if map.assignment(shard).map(|a| a.primary.as_str()) != Some(ctx.node_id().as_str()) {
        return PeerResponse::NotPrimary {
            map_version: map.version,
        };
    }
    if let Err(e) = ctx.trusted(&map) {
        return PeerResponse::Failed(e);
    }
    let store = match ctx.storage.open(shard).await {
        Ok(s) => s,
        Err(e) => return PeerResponse::Failed(e),
    };
    let dir = ctx.storage.transfer_dir();
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return PeerResponse::Failed(format!("cannot create {}: {e}", dir.display()));
    }
    // Ids are unique per process; the file name also carries the process start, so a restarted
    // node never serves a leftover file under a reused id.
    let id = ctx.snapshots.next.fetch_add(1, Ordering::SeqCst) + 1;
    let path = dir.join(format!(
        "snapshot-{shard}-{}-{id}.kz",
        ctx.cluster.generation()
    ));
    let started = Instant::now();
    let seq = match store.snapshot(path.clone(), id).await {
        Ok(seq) => seq,
        Err(e) => return PeerResponse::Failed(format!("shard {shard}: {e}")),
    };
    let bytes = match tokio::fs::metadata(&path).await {
        Ok(m) => m.len(),
        Err(e) => {
            store.unpin(id);
            return PeerResponse::Failed(format!("snapshot file: {e}"));
        }
    };
    tracing::info!(
        shard,
        to = from,
        seq,
        mb = bytes >> 20,
        ms = started.elapsed().as_millis() as u64,
        "snapshot ready for transfer"
    );
    ctx.snapshots.active.lock().expect("snapshots lock").insert(
        id,
        Active {
            shard,
            path,
            bytes,
            store,
            last_used: Instant::now(),
        },
    );
    PeerResponse::Snapshot { id, seq, bytes }
}

/// On the primary: answer to `SnapshotChunk`.
pub async fn piece(ctx: &Arc<NodeContext>, id: u64, offset: u64, len: u32) -> PeerResponse {
    let found = {
        let mut active = ctx.snapshots.active.lock().expect("snapshots lock");
        active.get_mut(&id).map(|a| {
            a.last_used = Instant::now();
            (a.path.clone(), a.bytes)
        })
    };
    let Some((path, bytes)) = found else {
        return PeerResponse::Failed(format!(
            "no snapshot {id} here: it was released or expired; start the copy again"
        ));
    };
    if offset > bytes {
        return PeerResponse::Failed(format!(
            "offset {offset} is past the snapshot's {bytes} bytes"
        ));
    }
    let len = (len.min(PIECE) as u64).min(bytes - offset) as usize;
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    })
    .await;
    match read {
        Ok(Ok(buf)) => PeerResponse::SnapshotBytes(buf),
        Ok(Err(e)) => PeerResponse::Failed(format!("reading snapshot {id}: {e}")),
        Err(e) => PeerResponse::Failed(format!("reading snapshot {id}: {e}")),
    }
}

/// On the primary: answer to `ReleaseSnapshot` (and expiry).
pub fn release(ctx: &NodeContext, id: u64) {
    let found = ctx
        .snapshots
        .active
        .lock()
        .expect("snapshots lock")
        .remove(&id);
    if let Some(a) = found {
        a.store.unpin(id);
        if let Err(e) = std::fs::remove_file(&a.path) {
            tracing::warn!(shard = a.shard, path = %a.path.display(), error = %e, "cannot delete a snapshot");
        }
    }
}

/// Deletes snapshots nobody has read for `IDLE_EXPIRY`, and leftovers of an earlier process.
pub fn expire_idle(ctx: &NodeContext) {
    let idle: Vec<u64> = ctx
        .snapshots
        .active
        .lock()
        .expect("snapshots lock")
        .iter()
        .filter(|(_, a)| a.last_used.elapsed() > IDLE_EXPIRY)
        .map(|(id, _)| *id)
        .collect();
    for id in idle {
        tracing::warn!(id, "a snapshot was not read for a while; deleting it");
        release(ctx, id);
    }
}

/// Deletes transfer files left by an earlier run of this node (call at start).
pub fn clean_leftovers(ctx: &NodeContext) {
    let dir = ctx.storage.transfer_dir();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A received snapshot, installed; the primary keeps its log until [`Lease::release`].
pub struct Lease {
    pub id: u64,
    pub seq: u64,
}

impl Lease {
    pub async fn release(self, ctx: &Arc<NodeContext>, primary: &str, addr: &str) {
        let req = PeerRequest::ReleaseSnapshot { id: self.id };
        if let Err(e) = crate::peer::call(ctx, primary, addr, &req, RELEASE_TIMEOUT).await {
            tracing::debug!(error = %e, "snapshot release not delivered (it expires)");
        }
    }
}

/// On the node whose copy must be rebuilt: pulls a snapshot of `shard` from its primary and
/// installs it in place of this node's copy. The caller then asks to be put in sync and releases
/// the lease.
pub async fn rebuild(
    ctx: &Arc<NodeContext>,
    shard: u32,
    primary: &str,
    addr: &str,
) -> Result<Lease, String> {
    let started = Instant::now();
    let req = PeerRequest::PrepareSnapshot { shard };
    let (id, seq, bytes) =
        match crate::peer::call(ctx, primary, addr, &req, PREPARE_TIMEOUT).await? {
            PeerResponse::Snapshot { id, seq, bytes } => (id, seq, bytes),
            PeerResponse::Failed(e) => return Err(e),
            other => return Err(format!("unexpected answer {other:?}")),
        };
    let lease = Lease { id, seq };
    tracing::info!(
        shard,
        from = primary,
        seq,
        mb = bytes >> 20,
        "receiving a snapshot"
    );
    match fetch_and_install(ctx, shard, primary, addr, id, bytes).await {
        Ok(installed_seq) => {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                shard,
                from = primary,
                seq,
                mb = bytes >> 20,
                secs = format!("{secs:.1}"),
                mb_per_s = format!("{:.0}", bytes as f64 / 1048576.0 / secs.max(1e-3)),
                "installed a copy from a snapshot"
            );
            if installed_seq != seq {
                tracing::warn!(
                    shard,
                    seq,
                    installed_seq,
                    "the snapshot holds another sequence number than announced"
                );
            }
            Ok(lease)
        }
        Err(e) => {
            lease.release(ctx, primary, addr).await;
            Err(e)
        }
    }
}

async fn fetch_and_install(
    ctx: &Arc<NodeContext>,
    shard: u32,
    primary: &str,
    addr: &str,
    id: u64,
    bytes: u64,
) -> Result<u64, String> {
    let dir = ctx.storage.transfer_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let incoming = dir.join(format!("incoming-{shard}.kz"));
    let mut file = tokio::fs::File::create(&incoming)
        .await
        .map_err(|e| format!("cannot create {}: {e}", incoming.display()))?;
    let offsets: Vec<u64> = (0..bytes).step_by(PIECE as usize).collect();
    let mut pieces = futures_util::stream::iter(offsets)
        .map(|offset| async move {
            let req = PeerRequest::SnapshotChunk {
                id,
                offset,
                len: PIECE,
            };
            let answer = crate::peer::call(ctx, primary, addr, &req, PIECE_TIMEOUT).await;
            (offset, answer)
        })
        .buffered(IN_FLIGHT);
    while let Some((offset, answer)) = pieces.next().await {
        let buf = match answer? {
            PeerResponse::SnapshotBytes(b) => b,
            PeerResponse::Failed(e) => return Err(e),
            other => return Err(format!("unexpected answer {other:?}")),
        };
        let expected = (PIECE as u64).min(bytes - offset) as usize;
        if buf.len() != expected {
            return Err(format!(
                "snapshot piece at {offset}: {} bytes instead of {expected}",
                buf.len()
            ));
        }
        file.write_all(&buf)
            .await
            .map_err(|e| format!("writing {}: {e}", incoming.display()))?;
    }
    file.sync_all()
        .await
        .map_err(|e| format!("syncing {}: {e}", incoming.display()))?;
    drop(file);
    tracing::debug!(shard, "snapshot received; replacing the local copy");
    let store = ctx.storage.install(shard, &incoming).await?;
    Ok(store.seq())
}
