//! The embedded-Kuzu baselines' database: opened in this process with the threads torua gives
//! each database, so that both sides get the same CPU.

use std::path::Path;

use anyhow::{Context, Result};
use kuzu::{Database, SystemConfig};

/// Kuzu's threads per database in torua (`src/storage`): the cores, at most 2.
pub fn kuzu_threads() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        .min(2)
}

/// Opens (or creates) a compressed database with a `memory_mb` buffer pool and room for
/// `max_db_size` bytes.
pub fn open_embedded(path: &Path, memory_mb: u64, max_db_size: u64) -> Result<Database> {
    let config = SystemConfig::default()
        .buffer_pool_size(memory_mb << 20)
        .max_num_threads(kuzu_threads())
        .max_db_size(max_db_size)
        .enable_compression(true);
    Database::new(path, config).with_context(|| format!("cannot open {}", path.display()))
}
