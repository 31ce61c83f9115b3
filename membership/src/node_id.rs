//! Node identifiers and the total order the coordinator election uses.
//!
//! The election picks the *lowest* live, ready node id, so the order must be total, stable across
//! versions and intuitive to operators: `node-2` sorts before `node-10` ("natural" order). The order
//! compares ids chunk by chunk, where a chunk is a maximal run of ASCII digits or of non-digits:
//! digit runs compare by numeric value (leading zeros ignored, any length), other runs byte-wise;
//! when two ids are equal under that rule (`n01` vs `n1`), the plain byte-wise comparison decides,
//! so distinct ids never compare equal.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest accepted node id, in bytes. Ids travel in every gossip digest, so they stay short.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A validated node id: 1..=64 characters from `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(Arc<str>);

/// Why a string is not a valid node id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidNodeId {
    #[error("node id is empty")]
    Empty,
    #[error("node id is {0} bytes long; at most {MAX_NODE_ID_LEN} are accepted")]
    TooLong(usize),
    #[error("node id contains {0:?}; only letters, digits, '.', '_' and '-' are accepted")]
    BadChar(char),
}

impl NodeId {
    pub fn new(id: &str) -> Result<Self, InvalidNodeId> {
        if id.is_empty() {
            return Err(InvalidNodeId::Empty);
        }
        if id.len() > MAX_NODE_ID_LEN {
            return Err(InvalidNodeId::TooLong(id.len()));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(InvalidNodeId::BadChar(c));
        }
        Ok(NodeId(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidNodeId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(&s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0.to_string()
    }
}

impl std::str::FromStr for NodeId {
    type Err = InvalidNodeId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> Ordering {
        natural_cmp(&self.0, &other.0).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Chunk-wise natural comparison; see the module documentation.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let (ca, ra) = split_chunk(a, x.is_ascii_digit());
                let (cb, rb) = split_chunk(b, y.is_ascii_digit());
                let ord = match (x.is_ascii_digit(), y.is_ascii_digit()) {
                    (true, true) => cmp_digits(ca, cb),
                    // A digit run sorts before a letter run, as '0'..'9' sort before letters.
                    _ => ca.cmp(cb),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
                a = ra;
                b = rb;
            }
        }
    }
}

fn split_chunk(s: &[u8], digits: bool) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|c| c.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Compares two digit runs by value without parsing, so runs of any length work.
fn cmp_digits(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().position(|&c| c != b'0').unwrap_or(s.len()) };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn numbers_sort_by_value() {
        assert!(id("node-2") < id("node-10"));
        assert!(id("node-9") < id("node-10"));
        assert!(id("node-10") < id("node-11"));
        assert!(id("n99999999999999999999999") < id("n100000000000000000000000"));
    }

    #[test]
    fn order_is_total_and_consistent_with_equality() {
        assert_ne!(id("n01").cmp(&id("n1")), Ordering::Equal);
        let mut ids: Vec<NodeId> = ["b", "a10", "a2", "a", "A", "a02", "a2b", "10", "9", "a-1"]
            .iter()
            .map(|s| id(s))
            .collect();
        ids.sort();
        let sorted: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
        assert_eq!(
            sorted,
            ["9", "10", "A", "a", "a02", "a2", "a2b", "a10", "a-1", "b"]
        );
        for x in &ids {
            for y in &ids {
                assert_eq!(x.cmp(y), y.cmp(x).reverse(), "{x} vs {y}");
                assert_eq!(x.cmp(y) == Ordering::Equal, x == y);
            }
        }
    }

    #[test]
    fn validation_explains_itself() {
        assert_eq!(NodeId::new(""), Err(InvalidNodeId::Empty));
        assert_eq!(NodeId::new("a b"), Err(InvalidNodeId::BadChar(' ')));
        assert!(matches!(
            NodeId::new(&"x".repeat(65)),
            Err(InvalidNodeId::TooLong(65))
        ));
        assert!(NodeId::new("node_1.eu-west").is_ok());
    }
}
