//! The cluster's shared state beyond membership: the shard map (who holds which copy), how the
//! coordinator changes it (failures, replacements, moves, drains) and the coordinator's other
//! duties (registry of nodes, aggregated health, broadcast of control messages).
//!
//! - [`shard_map`]: the versioned, term-fenced map of shard copies and the node-side holder,
//!   with the promises that make a map change count once a majority holds it (`map_model`
//!   simulates that protocol over thousands of seeds).
//! - [`plan`]: pure functions computing the next map from the current one and the live members.
//! - [`coordinator`]: the coordinator's map loop and every node's map installation.
//! - [`registry`], [`reporter`]: push registration and periodic health reports.
//! - [`copies`]: every shard copy's state, counts and checksum, gathered from the nodes.
//! - [`health`]: green / yellow / red and the reasons; [`health_cache`]: the answer a node gives.
//! - [`drain`]: moving every copy off a node before it leaves.
//! - [`keys`]: API keys, kept in the map.
//! - [`broadcast`]: fan-out of control messages and their handlers.
//! - [`messages`]: this subsystem's peer messages (health, map); [`handlers`]: their answers.

pub mod broadcast;
pub mod coordinator;
pub mod copies;
pub mod drain;
pub mod handlers;
pub mod health;
pub mod health_cache;
pub mod keys;
#[cfg(test)]
mod map_model;
pub mod messages;
pub mod plan;
pub mod registry;
pub mod reporter;
pub mod shard_map;
