//! The `torua` binary: every node runs this same program.

use torua::cli::{self, Command};

fn main() {
    let cli = cli::parse();
    let result = match cli.command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("torua")
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(torua::node::serve(*args))),
        Command::Dev(args) => torua::dev::run(args),
        Command::Cert(args) => torua::cert_cmd::run(args),
        Command::Import(args) => torua::import_graphrag::run(args),
        Command::Retrieve(args) => torua::retrieve_cmd::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
