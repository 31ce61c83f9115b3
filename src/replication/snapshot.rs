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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use serde::{Deserialize, Serialize};

use super::state::Active;
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::node::wire::Serve;

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

/// Whole-copy transfers, asked of a shard's primary by the node rebuilding a copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SnapshotRequest {
    /// Copy the database file (at a round boundary) for transfer, and keep the log from there on.
    Prepare { shard: u32 },
    /// A piece of a prepared snapshot.
    Piece { id: u64, offset: u64, len: u32 },
    /// The snapshot was received (or abandoned): delete it, release the log.
    Release { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SnapshotResponse {
    /// A snapshot ready for transfer: the database file holds writes up to `seq`.
    Ready {
        id: u64,
        seq: u64,
        bytes: u64,
    },
    Bytes(Vec<u8>),
    Released,
}

/// Answers a [`SnapshotRequest`] from `from`.
impl Serve for SnapshotRequest {
    type Reply = SnapshotResponse;

    async fn serve(self, ctx: &Arc<NodeContext>, from: &str) -> Result<SnapshotResponse, Error> {
        match self {
            SnapshotRequest::Prepare { shard } => prepare(ctx, shard, from).await,
            SnapshotRequest::Piece { id, offset, len } => piece(ctx, id, offset, len).await,
            SnapshotRequest::Release { id } => {
                release(ctx, id);
                Ok(SnapshotResponse::Released)
            }
        }
    }
}

/// On the primary: answer to [`SnapshotRequest::Prepare`].
async fn prepare(
    ctx: &Arc<NodeContext>,
    shard: u32,
    from: &str,
) -> Result<SnapshotResponse, Error> {
    let map = super::map_if_primary(ctx, shard)?;
    ctx.trusted(&map)?;
    let store = ctx.storage.open(shard).await?;
    let dir = ctx.storage.transfer_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    // Ids are unique per process; the file name also carries the process start, so a restarted
    // node never serves a leftover file under a reused id.
    let id = ctx.snapshots.next.fetch_add(1, Ordering::SeqCst) + 1;
    let path = dir.join(format!(
        "snapshot-{shard}-{}-{id}.kz",
        ctx.cluster.generation()
    ));
    let started = Instant::now();
    let seq = store
        .snapshot(path.clone(), id)
        .await
        .map_err(|e| Error::from(e).context(format!("shard {shard}")))?;
    let bytes = match tokio::fs::metadata(&path).await {
        Ok(m) => m.len(),
        Err(e) => {
            store.unpin(id);
            return Err(Error::Internal(format!("snapshot file: {e}")));
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
    Ok(SnapshotResponse::Ready { id, seq, bytes })
}

/// On the primary: answer to [`SnapshotRequest::Piece`].
async fn piece(
    ctx: &Arc<NodeContext>,
    id: u64,
    offset: u64,
    len: u32,
) -> Result<SnapshotResponse, Error> {
    let found = {
        let mut active = ctx.snapshots.active.lock().expect("snapshots lock");
        active.get_mut(&id).map(|a| {
            a.last_used = Instant::now();
            (a.path.clone(), a.bytes)
        })
    };
    let Some((path, bytes)) = found else {
        return Err(Error::NotFound(format!(
            "no snapshot {id} here: it was released or expired; start the copy again"
        )));
    };
    if offset > bytes {
        return Err(Error::Invalid(format!(
            "offset {offset} is past the snapshot's {bytes} bytes"
        )));
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
        Ok(Ok(buf)) => Ok(SnapshotResponse::Bytes(buf)),
        Ok(Err(e)) => Err(Error::Internal(format!("reading snapshot {id}: {e}"))),
        Err(e) => Err(Error::Internal(format!("reading snapshot {id}: {e}"))),
    }
}

/// On the primary: answer to [`SnapshotRequest::Release`] (and expiry).
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
    pub async fn release(self, ctx: &Arc<NodeContext>, primary: &str) {
        let req = SnapshotRequest::Release { id: self.id };
        if let Err(e) = crate::peer::call(ctx, primary, req, RELEASE_TIMEOUT).await {
            tracing::debug!(error = %e, "snapshot release not delivered (it expires)");
        }
    }
}

/// On the node whose copy must be rebuilt: pulls a snapshot of `shard` from its primary and
/// installs it in place of this node's copy. The caller then asks to be put in sync and releases
/// the lease.
pub async fn rebuild(ctx: &Arc<NodeContext>, shard: u32, primary: &str) -> Result<Lease, Error> {
    let started = Instant::now();
    let req = SnapshotRequest::Prepare { shard };
    let (id, seq, bytes) = match crate::peer::call(ctx, primary, req, PREPARE_TIMEOUT).await? {
        SnapshotResponse::Ready { id, seq, bytes } => (id, seq, bytes),
        other => return Err(Error::Internal(format!("unexpected answer {other:?}"))),
    };
    let lease = Lease { id, seq };
    tracing::info!(
        shard,
        from = primary,
        seq,
        mb = bytes >> 20,
        "receiving a snapshot"
    );
    match fetch_and_install(ctx, shard, primary, id, bytes).await {
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
            lease.release(ctx, primary).await;
            Err(e)
        }
    }
}

async fn fetch_and_install(
    ctx: &Arc<NodeContext>,
    shard: u32,
    primary: &str,
    id: u64,
    bytes: u64,
) -> Result<u64, Error> {
    let io = |what: &str, path: &std::path::Path, e: std::io::Error| {
        Error::Internal(format!("{what} {}: {e}", path.display()))
    };
    let dir = ctx.storage.transfer_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| io("cannot create", &dir, e))?;
    let incoming = dir.join(format!("incoming-{shard}.kz"));
    let mut file = tokio::fs::File::create(&incoming)
        .await
        .map_err(|e| io("cannot create", &incoming, e))?;
    let offsets: Vec<u64> = (0..bytes).step_by(PIECE as usize).collect();
    let mut pieces = futures_util::stream::iter(offsets)
        .map(|offset| async move {
            let req = SnapshotRequest::Piece {
                id,
                offset,
                len: PIECE,
            };
            let answer = crate::peer::call(ctx, primary, req, PIECE_TIMEOUT).await;
            (offset, answer)
        })
        .buffered(IN_FLIGHT);
    while let Some((offset, answer)) = pieces.next().await {
        let buf = match answer? {
            SnapshotResponse::Bytes(b) => b,
            other => return Err(Error::Internal(format!("unexpected answer {other:?}"))),
        };
        let expected = (PIECE as u64).min(bytes - offset) as usize;
        if buf.len() != expected {
            return Err(Error::Internal(format!(
                "snapshot piece at {offset}: {} bytes instead of {expected}",
                buf.len()
            )));
        }
        file.write_all(&buf)
            .await
            .map_err(|e| io("writing", &incoming, e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| io("syncing", &incoming, e))?;
    drop(file);
    tracing::debug!(shard, "snapshot received; replacing the local copy");
    let store = ctx.storage.install(shard, &incoming).await?;
    Ok(store.seq())
}
