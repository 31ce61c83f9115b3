//! The write log of one shard copy: where a write becomes durable before it is acknowledged.
//!
//! Why: Kuzu commits a relation insert by rewriting the relation table's storage for the node
//! groups it touches, so a commit costs about the same for 500 rows as for 20,000. Committing
//! every replicated write on its own ran at ~1.5k relations/s. Instead a write is appended here
//! (checksummed, fdatasync'ed) and acknowledged; a background applier (see `kuzu_shard`) moves
//! what has accumulated into Kuzu in one large transaction. This is Elasticsearch's translog
//! design: durability from the log, visibility after the apply.
//!
//! Format: segment files `shard-<n>.log.<first seq>`; each record is
//! `[format << 28 | payload length, u32 LE][crc32 of payload u32 LE][postcard (seq, WriteOp)]`.
//! The format number ([`FORMAT`]) names the payload's encoding; records without one (format 0)
//! are read as format 1, whose encoding they share. A torn or corrupt record ends the log (only
//! the newest segment's tail can be torn: records are written in order); a sound record of a
//! newer format stops the node instead, so that a downgrade never cuts writes it cannot read.
//!
//! Retention: applied records are kept (up to `RETAIN_BYTES` of closed segments) so that a copy
//! that fell out of the in-sync set can catch up from the primary's log by sequence number
//! (`replication::rejoin_in_sync`); older applied segments are deleted.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::{Error, WriteOp};

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Applied records kept for catching up copies (closed segments; the open one is always kept).
const RETAIN_BYTES: u64 = 64 << 20;
/// The encoding of the records this binary writes: `postcard (seq, WriteOp)`. A change to
/// [`WriteOp`]'s serialized form takes the next number, and the reader learns the old one
/// ([`format1`]: entities and relations without routing keys). Format 3 only added writes at the
/// end of [`WriteOp`], so format 2 records decode as format 3.
pub const FORMAT: u32 = 3;
/// The length word's top bits hold the format; the rest the payload length.
const FORMAT_SHIFT: u32 = 28;
/// Largest record payload (a write is at most the 64 MiB ingest limit).
const MAX_RECORD: u32 = (1 << FORMAT_SHIFT) - 1;

struct Segment {
    path: PathBuf,
    first_seq: u64,
    /// Highest sequence number written into it (0 when empty).
    last_seq: u64,
    bytes: u64,
}

pub struct ShardLog {
    dir: PathBuf,
    shard: u32,
    /// Oldest first; the last one is the one appended to.
    segments: Vec<Segment>,
    file: File,
    /// Sequence number and checksum of the newest record (to detect diverged copies).
    last: Option<(u64, u32)>,
}

/// Encodes one record (done by the caller, off the log's lock).
pub fn encode(seq: u64, op: &WriteOp) -> Result<Vec<u8>, Error> {
    let payload = postcard::to_stdvec(&(seq, op))
        .map_err(|e| Error::Invalid(format!("cannot encode write {seq}: {e}")))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "write {seq} encodes to {} bytes; a log record holds at most {MAX_RECORD}",
                payload.len()
            ))
        })?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(FORMAT << FORMAT_SHIFT | len).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

impl ShardLog {
    /// Opens the log of `shard` in `dir` and returns it with every record whose sequence number
    /// is above `applied` (in order), for the applier to redo.
    pub fn open(
        dir: &Path,
        shard: u32,
        applied: u64,
    ) -> Result<(ShardLog, Vec<(u64, WriteOp)>), Error> {
        let prefix = format!("shard-{shard}.log.");
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| Error::Io(format!("cannot list {}: {e}", dir.display())))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let first = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((first, e.path()))
            })
            .collect();
        found.sort();
        let mut segments = Vec::new();
        let mut redo = Vec::new();
        let mut torn = false;
        let mut last = None;
        for (first_seq, path) in found {
            if torn {
                // Nothing after a torn record can be trusted to follow it in order.
                tracing::warn!(path = %path.display(), "dropping a log segment that follows a torn record");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let (records, good_bytes, ok) = read_segment(&path)?;
            let mut last_seq = 0;
            for rec in records {
                last_seq = rec.seq;
                last = Some((rec.seq, rec.crc));
                if rec.seq > applied {
                    redo.push((rec.seq, rec.op));
                }
            }
            if !ok {
                torn = true;
                tracing::warn!(path = %path.display(), good_bytes, "the shard log ends in a torn record (a crash mid-append); truncating it there");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
                f.set_len(good_bytes)
                    .map_err(|e| Error::Io(format!("cannot truncate {}: {e}", path.display())))?;
            }
            segments.push(Segment {
                path,
                first_seq,
                last_seq,
                bytes: good_bytes,
            });
        }
        if segments.is_empty() {
            let path = dir.join(format!("{prefix}{}", applied + 1));
            segments.push(Segment {
                path,
                first_seq: applied + 1,
                last_seq: 0,
                bytes: 0,
            });
        }
        let file = open_append(&segments.last().expect("a segment").path)?;
        let mut log = ShardLog {
            dir: dir.to_path_buf(),
            shard,
            segments,
            file,
            last,
        };
        log.trim(applied);
        Ok((log, redo))
    }

    /// Highest sequence number in the log (0 when it is empty).
    pub fn last_seq(&self) -> u64 {
        self.segments.iter().map(|s| s.last_seq).max().unwrap_or(0)
    }

    /// Appends one encoded record and waits until it is on disk.
    pub fn append(&mut self, seq: u64, record: &[u8]) -> Result<(), Error> {
        if self.segments.last().expect("a segment").bytes >= SEGMENT_BYTES {
            self.roll(seq)?;
        }
        let seg = self.segments.last_mut().expect("a segment");
        let written = self
            .file
            .write_all(record)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A partial record may be on disk; cut it off so the next append starts clean.
            let _ = self.file.set_len(seg.bytes);
            return Err(Error::Io(format!(
                "cannot write the shard log {}: {e} (is the disk full?)",
                seg.path.display()
            )));
        }
        seg.bytes += record.len() as u64;
        seg.last_seq = seq;
        let crc = u32::from_le_bytes(record[4..8].try_into().expect("a record header"));
        self.last = Some((seq, crc));
        Ok(())
    }

    /// Sequence number and checksum of the newest record, if the log has one.
    pub fn last(&self) -> Option<(u64, u32)> {
        self.last
    }

    /// The segments that may hold records after `seq`, to read without holding the log: a
    /// catch-up must not stall appends.
    pub fn segments_after(&self, seq: u64) -> SegmentsView {
        SegmentsView(
            self.segments
                .iter()
                .filter(|s| s.last_seq >= seq)
                .map(|s| (s.path.clone(), s.first_seq, s.last_seq))
                .collect(),
        )
    }

    fn roll(&mut self, next_seq: u64) -> Result<(), Error> {
        let path = self
            .dir
            .join(format!("shard-{}.log.{next_seq}", self.shard));
        self.file = open_append(&path)?;
        self.segments.push(Segment {
            path,
            first_seq: next_seq,
            last_seq: 0,
            bytes: 0,
        });
        Ok(())
    }

    /// Deletes the oldest closed segments whose every record is applied, while the closed
    /// segments hold more than `RETAIN_BYTES`.
    pub fn trim(&mut self, applied: u64) {
        let closed =
            |segs: &[Segment]| -> u64 { segs[..segs.len() - 1].iter().map(|s| s.bytes).sum() };
        while self.segments.len() > 1
            && self.segments[0].last_seq <= applied
            && closed(&self.segments) > RETAIN_BYTES
        {
            let seg = self.segments.remove(0);
            if let Err(e) = std::fs::remove_file(&seg.path) {
                tracing::warn!(path = %seg.path.display(), error = %e, "cannot delete an applied log segment");
            }
        }
    }

    /// Bytes on disk (for stats).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

/// Paths and sequence ranges of segments, read after the log's lock is released. A segment
/// deleted meanwhile reads as an error (the caller retries later).
pub struct SegmentsView(Vec<(PathBuf, u64, u64)>);

impl SegmentsView {
    /// Checksum of the record `seq`, if the log still holds it.
    pub fn crc_at(&self, seq: u64) -> Result<Option<u32>, Error> {
        for (path, _, _) in self.0.iter().filter(|(_, f, l)| *f <= seq && seq <= *l) {
            let (records, _, _) = read_segment(path)?;
            if let Some(rec) = records.iter().find(|r| r.seq == seq) {
                return Ok(Some(rec.crc));
            }
        }
        Ok(None)
    }

    /// The records after `seq`, in order, at most about `max_bytes` of them; an error when the log
    /// no longer holds record `seq + 1` (the copy asking is too far behind to catch up from it).
    pub fn records_after(&self, seq: u64, max_bytes: usize) -> Result<Vec<(u64, WriteOp)>, Error> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (path, _, _) in self.0.iter().filter(|(_, _, l)| *l > seq) {
            let (records, _, _) = read_segment(path)?;
            for Record {
                seq: s, len, op, ..
            } in records
            {
                if s <= seq {
                    continue;
                }
                let expected = out.last().map_or(seq + 1, |(p, _): &(u64, WriteOp)| p + 1);
                if s != expected {
                    return Err(Error::LogTrimmed(format!(
                        "the log no longer holds write {expected} (it starts at {s}); the copy needs a full rebuild"
                    )));
                }
                bytes += len as usize;
                out.push((s, op));
                if bytes >= max_bytes {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

fn open_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::Io(format!("cannot open the shard log {}: {e}", path.display())))
}

/// One record read back from a segment.
struct Record {
    seq: u64,
    crc: u32,
    /// Payload bytes.
    len: u32,
    op: WriteOp,
}

/// Reads a segment: its good records, the length of the good prefix, and whether the whole file
/// was good.
fn read_segment(path: &Path) -> Result<(Vec<Record>, u64, bool), Error> {
    let file =
        File::open(path).map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::new(file);
    let mut records = Vec::new();
    let mut good = 0u64;
    loop {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(_) => return Ok((records, good, good == total)),
        }
        let word = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let (format, len) = (word >> FORMAT_SHIFT, word & MAX_RECORD);
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if good + 8 + u64::from(len) > total {
            return Ok((records, good, false));
        }
        let mut payload = vec![0u8; len as usize];
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            return Ok((records, good, false));
        }
        if format > FORMAT {
            return Err(Error::Invalid(format!(
                "{} holds a write in log format {format} at byte {good}; this torua reads \
                 formats up to {FORMAT}: run the torua version that wrote it",
                path.display()
            )));
        }
        let decoded = if format >= 2 {
            postcard::from_bytes::<(u64, WriteOp)>(&payload)
        } else {
            postcard::from_bytes::<(u64, format1::WriteOp)>(&payload)
                .map(|(seq, op)| (seq, op.into()))
        };
        match decoded {
            Ok((seq, op)) => records.push(Record { seq, crc, len, op }),
            Err(_) => return Ok((records, good, false)),
        }
        good += 8 + u64::from(len);
    }
}

/// Log format 1: the same writes before entities and relations had routing keys.
mod format1 {
    use serde::Deserialize;

    use crate::graph::model::{self, Chunk, Community, Document};
    use crate::storage::{EntityProperty, PropertyValue, Prune};

    #[derive(Deserialize)]
    struct Entity {
        id: String,
        title: String,
        kind: String,
        description: String,
        text_unit_ids: Vec<String>,
        frequency: i64,
        degree: i64,
        embedding: Option<Vec<f32>>,
    }

    #[derive(Deserialize)]
    struct Relation {
        id: String,
        source: String,
        target: String,
        description: String,
        weight: f64,
        text_unit_ids: Vec<String>,
    }

    #[derive(Deserialize)]
    pub struct Batch {
        entities: Vec<Entity>,
        relations: Vec<Relation>,
        chunks: Vec<Chunk>,
        communities: Vec<Community>,
        documents: Vec<Document>,
    }

    #[derive(Deserialize)]
    pub enum WriteOp {
        Upsert(Batch),
        DeleteEntity(String),
        DeleteRelationsOf(String),
        Prune(Prune),
        SetProperty {
            property: EntityProperty,
            values: Vec<(String, PropertyValue)>,
        },
    }

    impl From<WriteOp> for super::WriteOp {
        fn from(op: WriteOp) -> super::WriteOp {
            match op {
                WriteOp::Upsert(b) => super::WriteOp::Upsert(model::Batch {
                    entities: (b.entities.into_iter())
                        .map(|e| model::Entity {
                            id: e.id,
                            title: e.title,
                            kind: e.kind,
                            description: e.description,
                            text_unit_ids: e.text_unit_ids,
                            frequency: e.frequency,
                            degree: e.degree,
                            embedding: e.embedding,
                            routing: None,
                        })
                        .collect(),
                    relations: (b.relations.into_iter())
                        .map(|r| model::Relation {
                            id: r.id,
                            source: r.source,
                            target: r.target,
                            description: r.description,
                            weight: r.weight,
                            text_unit_ids: r.text_unit_ids,
                            source_routing: None,
                            target_routing: None,
                        })
                        .collect(),
                    chunks: b.chunks,
                    communities: b.communities,
                    documents: b.documents,
                }),
                WriteOp::DeleteEntity(id) => super::WriteOp::DeleteEntity(id),
                WriteOp::DeleteRelationsOf(id) => super::WriteOp::DeleteRelationsOf(id),
                WriteOp::Prune(p) => super::WriteOp::Prune(p),
                WriteOp::SetProperty { property, values } => {
                    super::WriteOp::SetProperty { property, values }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: &str) -> WriteOp {
        WriteOp::DeleteEntity(id.to_string())
    }

    #[test]
    fn reopen_redoes_what_is_not_applied_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, redo) = ShardLog::open(dir.path(), 3, 0).unwrap();
            assert!(redo.is_empty());
            for seq in 1..=5 {
                log.append(seq, &encode(seq, &op(&format!("e{seq}"))).unwrap())
                    .unwrap();
            }
            assert_eq!(log.last_seq(), 5);
        }
        // A crash mid-append leaves half a record.
        let path = dir.path().join("shard-3.log.1");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let rec = encode(6, &op("e6")).unwrap();
        f.write_all(&rec[..rec.len() - 3]).unwrap();
        drop(f);
        let (mut log, redo) = ShardLog::open(dir.path(), 3, 2).unwrap();
        assert_eq!(
            redo.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(redo[0].1, op("e3"));
        // The torn tail is gone: appending 6 again and reopening reads it back.
        log.append(6, &encode(6, &op("e6")).unwrap()).unwrap();
        drop(log);
        let (log, redo) = ShardLog::open(dir.path(), 3, 5).unwrap();
        assert_eq!(redo, vec![(6, op("e6"))]);
        assert_eq!(log.last_seq(), 6);
    }

    #[test]
    fn applied_records_are_kept_for_catching_up() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = ShardLog::open(dir.path(), 0, 0).unwrap();
        for seq in 1..=5 {
            log.append(seq, &encode(seq, &op(&format!("x{seq}"))).unwrap())
                .unwrap();
        }
        log.trim(5);
        let after: Vec<u64> = log
            .segments_after(2)
            .records_after(2, 1 << 20)
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(after, vec![3, 4, 5]);
        assert_eq!(
            log.segments_after(0).records_after(0, 1).unwrap().len(),
            1,
            "a byte limit stops early"
        );
        assert_eq!(
            log.segments_after(4).crc_at(4).unwrap(),
            Some(crc32fast::hash(
                &postcard::to_stdvec(&(4u64, op("x4"))).unwrap()
            ))
        );
        assert_eq!(log.last().map(|(s, _)| s), Some(5));
        drop(log);
        let (log, redo) = ShardLog::open(dir.path(), 0, 5).unwrap();
        assert!(redo.is_empty());
        assert_eq!(log.last_seq(), 5);
        assert_eq!(log.last().map(|(s, _)| s), Some(5));
    }

    #[test]
    fn records_without_a_format_are_read_and_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-2.log.1");
        let record = |format: u32, seq: u64, id: &str| {
            let payload = postcard::to_stdvec(&(seq, op(id))).unwrap();
            let mut out = (format << FORMAT_SHIFT | payload.len() as u32)
                .to_le_bytes()
                .to_vec();
            out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
            out
        };
        let mut bytes = record(0, 1, "old");
        bytes.extend(encode(2, &op("new")).unwrap());
        assert_eq!(
            bytes[bytes.len() - record(FORMAT, 2, "new").len()..],
            record(FORMAT, 2, "new")
        );
        // Format 2 records decode as the current format (it only added writes).
        bytes.extend(record(2, 3, "two"));
        std::fs::write(&path, &bytes).unwrap();
        let (_, redo) = ShardLog::open(dir.path(), 2, 0).unwrap();
        assert_eq!(redo, vec![(1, op("old")), (2, op("new")), (3, op("two"))]);

        bytes.extend(record(FORMAT + 1, 4, "future"));
        std::fs::write(&path, &bytes).unwrap();
        let Err(Error::Invalid(why)) = ShardLog::open(dir.path(), 2, 0) else {
            panic!("a record of a newer format must stop the open");
        };
        assert!(why.contains(&format!("log format {}", FORMAT + 1)), "{why}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing is cut");
    }

    #[test]
    fn format_1_upserts_are_read_without_routing_keys() {
        // Format 1's upsert, field by field: (seq, variant 0, entities, relations, chunks,
        // communities, documents), an entity and a relation without routing keys.
        type Entity1 = (
            String,
            String,
            String,
            String,
            Vec<String>,
            i64,
            i64,
            Option<Vec<f32>>,
        );
        type Relation1 = (String, String, String, String, f64, Vec<String>);
        let entity: Entity1 = (
            "a".into(),
            "A".into(),
            "T".into(),
            "d".into(),
            vec![],
            1,
            2,
            None,
        );
        let relation: Relation1 = (
            "r".into(),
            "a".into(),
            "b".into(),
            String::new(),
            0.5,
            vec![],
        );
        let old = (
            7u64,
            0u8,
            (
                vec![entity],
                vec![relation],
                Vec::<()>::new(),
                Vec::<()>::new(),
                Vec::<()>::new(),
            ),
        );
        let payload = postcard::to_stdvec(&old).unwrap();
        let mut bytes = (1 << FORMAT_SHIFT | payload.len() as u32)
            .to_le_bytes()
            .to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shard-4.log.7"), &bytes).unwrap();
        let (_, redo) = ShardLog::open(dir.path(), 4, 0).unwrap();
        let [(7, WriteOp::Upsert(batch))] = &redo[..] else {
            panic!("one upsert: {redo:?}");
        };
        assert_eq!(
            (batch.entities[0].id.as_str(), batch.entities[0].degree),
            ("a", 2)
        );
        assert_eq!(batch.entities[0].routing, None);
        assert_eq!(
            (
                batch.relations[0].target.as_str(),
                batch.relations[0].weight
            ),
            ("b", 0.5)
        );
        assert_eq!(batch.relations[0].source_routing, None);
    }

    #[test]
    fn a_corrupt_record_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = ShardLog::open(dir.path(), 1, 0).unwrap();
        log.append(1, &encode(1, &op("a")).unwrap()).unwrap();
        log.append(2, &encode(2, &op("b")).unwrap()).unwrap();
        drop(log);
        let path = dir.path().join("shard-1.log.1");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff; // flip a bit in record 2
        std::fs::write(&path, bytes).unwrap();
        let (_, redo) = ShardLog::open(dir.path(), 1, 0).unwrap();
        assert_eq!(redo, vec![(1, op("a"))]);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// A record with a correct length and checksum around `payload`, so arbitrary bytes reach
        /// the record decoder instead of stopping at the checksum.
        fn framed(payload: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&(FORMAT << FORMAT_SHIFT | payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            out.extend_from_slice(payload);
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

            /// A segment of arbitrary bytes after a good record: the open keeps the good record
            /// and cuts the rest, or says why it cannot open; it never panics.
            #[test]
            fn arbitrary_segment_bytes_never_panic(
                tail in proptest::collection::vec(any::<u8>(), 0..2048),
                checksummed in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut bytes = encode(1, &op("a")).unwrap();
                if checksummed {
                    bytes.extend(framed(&tail));
                } else {
                    bytes.extend(&tail);
                }
                std::fs::write(dir.path().join("shard-3.log.1"), &bytes).unwrap();
                if let Ok((log, redo)) = ShardLog::open(dir.path(), 3, 0) {
                    prop_assert!(!redo.is_empty() && redo[0] == (1, op("a")), "{redo:?}");
                    prop_assert!(log.last_seq() >= 1);
                }
            }
        }
    }
}
