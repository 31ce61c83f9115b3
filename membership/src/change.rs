//! Membership changes as events, computed by diffing two consecutive views.

use serde::Serialize;

use crate::member::Member;
use crate::view::ClusterView;
use crate::NodeId;

/// One change between two views. A subscriber first receives an `Added` for every current member
/// (and the current coordinator), so it never has to read a snapshot separately.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Changes are rare (membership events), so boxing the big variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum MembershipChange {
    /// A node id appeared (or reappeared after it had left).
    Added(Member),
    /// Same node id, but its state, generation or published keys changed (a restart shows up as an
    /// update with a higher generation).
    Updated { before: Member, after: Member },
    /// A node id is no longer listed: it left gracefully, or it was dead long enough to be forgotten.
    Removed(Member),
    /// The coordinator or its confirmed term changed.
    CoordinatorChanged {
        coordinator: Option<NodeId>,
        term: Option<u64>,
    },
}

/// The changes that turn `before` into `after`.
pub(crate) fn diff(before: &ClusterView, after: &ClusterView) -> Vec<MembershipChange> {
    let mut changes = Vec::new();
    for m in &after.members {
        match before.member(&m.node_id) {
            None => changes.push(MembershipChange::Added(m.clone())),
            Some(old) if !old.same_as(m) => changes.push(MembershipChange::Updated {
                before: old.clone(),
                after: m.clone(),
            }),
            Some(_) => {}
        }
    }
    for m in &before.members {
        if after.member(&m.node_id).is_none() {
            changes.push(MembershipChange::Removed(m.clone()));
        }
    }
    if (&before.coordinator, before.term) != (&after.coordinator, after.term) {
        changes.push(MembershipChange::CoordinatorChanged {
            coordinator: after.coordinator.clone(),
            term: after.term,
        });
    }
    changes
}

/// The events a new subscriber is replayed: the whole current view as additions.
pub(crate) fn replay(view: &ClusterView) -> Vec<MembershipChange> {
    let mut changes: Vec<MembershipChange> = view
        .members
        .iter()
        .cloned()
        .map(MembershipChange::Added)
        .collect();
    changes.push(MembershipChange::CoordinatorChanged {
        coordinator: view.coordinator.clone(),
        term: view.term,
    });
    changes
}
