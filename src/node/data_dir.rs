//! The node's data directory: an exclusive lock (two nodes sharing one directory would corrupt
//! each other's files) and the node id kept across restarts.

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use membership::NodeId;
use rand::Rng;

const LOCK_FILE: &str = "LOCK";
const NODE_ID_FILE: &str = "node_id";

/// An opened, locked data directory. The lock is released when this is dropped (or the process
/// dies, including kill -9).
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(path).with_context(|| {
            format!(
                "TORUA_DATA_DIR: cannot create {}; check permissions or choose another directory",
                path.display()
            )
        })?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK_FILE))
            .with_context(|| format!("TORUA_DATA_DIR: cannot write in {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            bail!(
                "TORUA_DATA_DIR: {} is in use by another torua process; give each node its own directory",
                path.display()
            );
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configured id wins (and is remembered); else the remembered one; else a new one.
    pub fn node_id(&self, configured: Option<&NodeId>) -> anyhow::Result<NodeId> {
        let file = self.path.join(NODE_ID_FILE);
        let remembered = match fs::read_to_string(&file) {
            Ok(s) => Some(NodeId::new(s.trim()).with_context(|| {
                format!(
                    "{} holds an invalid node id; fix or delete it",
                    file.display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        let id = match (configured, remembered) {
            (Some(c), Some(r)) if c != &r => {
                tracing::warn!(configured = %c, remembered = %r, "TORUA_NODE_ID differs from the id remembered in the data dir; using the configured one");
                c.clone()
            }
            (Some(c), _) => c.clone(),
            (None, Some(r)) => return Ok(r),
            (None, None) => NodeId::new(&format!("node-{:08x}", rand::thread_rng().gen::<u32>()))
                .expect("generated ids are valid"),
        };
        fs::write(&file, id.as_str())
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(id)
    }
}
