//! The `torua` binary: every node runs this same program.

use torua::cmd::cli::{self, Command};

fn main() {
    limit_malloc_arenas();
    let cli = cli::parse();
    let result = match cli.command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("torua")
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(torua::node::serve(*args))),
        Command::Dev(args) => torua::cmd::dev::run(args),
        Command::Cert(args) => torua::cmd::cert::run(args),
        Command::Import(args) => torua::cmd::import::run(args),
        Command::Retrieve(args) => torua::cmd::retrieve::run(args),
        Command::Key(args) => torua::cmd::key::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// Caps glibc's malloc arenas at 4 (unless MALLOC_ARENA_MAX says otherwise). Kuzu allocates from
/// many threads per shard copy; with glibc's default of 8 arenas per core, freed memory stays
/// spread over arenas: one node loading 30k entities with 384-dimension embeddings and 300k
/// relations into 16 shards held 5.5 GB resident, 3.6 GB with 4 arenas (bench/RESULTS.md).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }
}
