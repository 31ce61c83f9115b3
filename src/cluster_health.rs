//! Cluster health as this node sees it: green / yellow / red with the reasons, computed from the
//! membership view. (Later issues add shard states to the same verdict.)

use membership::{ClusterView, MemberState};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Green,
    Yellow,
    Red,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "green" => Some(Status::Green),
            "yellow" => Some(Status::Yellow),
            "red" => Some(Status::Red),
            _ => None,
        }
    }
}

/// The health verdict and why.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub status: Status,
    pub reasons: Vec<String>,
}

/// - red: no coordinator (no ready member in view);
/// - yellow: a coordinator exists but its term is not yet confirmed, or some member is dead,
///   joining or leaving;
/// - green: otherwise.
pub fn assess(view: &ClusterView) -> Verdict {
    let mut reasons = Vec::new();
    if view.coordinator.is_none() {
        reasons.push("no ready member: no coordinator can be elected".to_string());
        return Verdict {
            status: Status::Red,
            reasons,
        };
    }
    if view.term.is_none() {
        reasons.push("the coordinator's term has not reached this node yet".to_string());
    }
    for state in [MemberState::Dead, MemberState::Joining, MemberState::Leaving] {
        let ids: Vec<&str> = view
            .members
            .iter()
            .filter(|m| m.state == state)
            .map(|m| m.node_id.as_str())
            .collect();
        if !ids.is_empty() {
            reasons.push(format!("{} {}: {}", ids.len(), state.as_str(), ids.join(", ")));
        }
    }
    Verdict {
        status: if reasons.is_empty() {
            Status::Green
        } else {
            Status::Yellow
        },
        reasons,
    }
}
