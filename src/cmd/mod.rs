//! The `torua` command line: the argument parser and one module per subcommand besides `serve`
//! (which is [`crate::node::serve`]).

pub mod cert;
pub mod cli;
pub mod dev;
pub mod import;
pub mod retrieve;
