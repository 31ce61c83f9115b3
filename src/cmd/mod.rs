//! The `torua` command line: the argument parser and one module per subcommand besides `serve`
//! (which is [`crate::node::serve`]).

pub mod cert;
pub mod cli;
pub mod client;
pub mod dev;
pub mod import;
pub mod key;
pub mod retrieve;
