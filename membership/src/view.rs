//! The live view: chitchat's raw node states turned into one [`Member`] per node id, plus the
//! coordinator every node derives from it.
//!
//! Building the view is a pure function of a [`RawNode`] list, so the election rules are tested
//! without sockets or timers.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::member::{Member, MemberState, PublishedState};
use crate::NodeId;

/// What chitchat knows about one (node id, generation) pair.
#[derive(Debug, Clone)]
pub(crate) struct RawNode {
    pub node_id: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// chitchat's verdict: `Some(true)` live, `Some(false)` dead, `None` not enough heartbeats yet.
    pub live: Option<bool>,
    pub is_self: bool,
    pub heartbeat_age: Duration,
    pub state: Option<String>,
    pub http_addr: Option<String>,
    pub peer_addr: Option<String>,
    pub version: Option<String>,
    pub started_at_ms: Option<u64>,
    pub term: Option<u64>,
    pub leader_term: Option<u64>,
    pub term_by: Option<String>,
}

/// A node's picture of the cluster at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub self_id: NodeId,
    /// One entry per node id (highest generation wins), sorted by the node-id order. Members that
    /// left gracefully are not listed; dead ones are, with state `dead`, until forgotten.
    pub members: Vec<Member>,
    /// The live, ready member with the lowest node id.
    pub coordinator: Option<NodeId>,
    /// The coordinator's term once it has claimed one at least as high as any term this node
    /// knows of; `None` while the claim is still travelling through gossip.
    pub term: Option<u64>,
    /// The highest term this node has seen anywhere.
    pub max_term: u64,
    /// The node that claimed `max_term`, if known.
    pub max_term_by: Option<String>,
}

impl ClusterView {
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| &m.node_id == id)
    }

    /// The member with this id, given as text.
    pub fn member_by_str(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.node_id.as_str() == id)
    }

    pub fn live_members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.is_live())
    }

    pub fn ready_members(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Ready)
    }

    pub fn is_coordinator(&self) -> bool {
        self.coordinator.as_ref() == Some(&self.self_id)
    }

    pub fn count_in(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

/// Builds the view. `known_term` is the highest term remembered locally (persisted or claimed).
pub(crate) fn build_view(
    cluster_id: &str,
    self_id: &NodeId,
    raw: Vec<RawNode>,
    known_term: u64,
) -> ClusterView {
    let mut newest: Vec<RawNode> = Vec::with_capacity(raw.len());
    for node in raw {
        match newest.iter_mut().find(|n| n.node_id == node.node_id) {
            // A restart brings a higher generation; the old one lingers in chitchat until its
            // heartbeats time out and must not show up as a second member.
            Some(existing) if existing.generation < node.generation => *existing = node,
            Some(_) => {}
            None => newest.push(node),
        }
    }
    let max_term = newest
        .iter()
        .flat_map(|n| [n.term, n.leader_term])
        .flatten()
        .fold(known_term, u64::max);
    // Who claimed `max_term`: a node holding it as its leader term, else whom adopters name.
    let max_term_by = newest
        .iter()
        .filter(|n| n.leader_term == Some(max_term))
        .map(|n| n.node_id.clone())
        .chain(
            newest
                .iter()
                .filter(|n| n.term == Some(max_term))
                .filter_map(|n| n.term_by.clone()),
        )
        .min_by(|a, b| NodeId::new(a).ok().cmp(&NodeId::new(b).ok()).then(a.cmp(b)));

    let mut members: Vec<Member> = newest.into_iter().filter_map(to_member).collect();
    members.sort_by(|a, b| a.node_id.cmp(&b.node_id));

    let coordinator = members
        .iter()
        .find(|m| m.state == MemberState::Ready)
        .map(|m| m.node_id.clone());
    let term = coordinator
        .as_ref()
        .and_then(|c| members.iter().find(|m| &m.node_id == c))
        .and_then(|c| c.leader_term)
        .filter(|t| *t >= max_term);
    ClusterView {
        cluster_id: cluster_id.to_string(),
        self_id: self_id.clone(),
        members,
        coordinator,
        term,
        max_term,
        max_term_by,
    }
}

fn to_member(n: RawNode) -> Option<Member> {
    // A node id that does not validate cannot come from a torua node; ignore it.
    let node_id = NodeId::new(&n.node_id).ok()?;
    let published = n
        .state
        .as_deref()
        .and_then(MemberState::parse_published)
        .unwrap_or(PublishedState::Member(MemberState::Joining));
    let state = match (published, n.live) {
        (PublishedState::Left, _) => return None,
        (_, Some(false)) => MemberState::Dead,
        // Heard of but not yet heard from twice: not eligible for anything yet.
        (PublishedState::Member(_), None) if !n.is_self => MemberState::Joining,
        (PublishedState::Member(s), _) => s,
    };
    Some(Member {
        node_id,
        generation: n.generation,
        state,
        gossip_addr: n.gossip_addr,
        http_addr: n.http_addr,
        peer_addr: n.peer_addr,
        version: n.version,
        started_at_ms: n.started_at_ms,
        term: n.term.unwrap_or(0),
        leader_term: n.leader_term,
        term_by: n.term_by,
        heartbeat_age: n.heartbeat_age,
        is_self: n.is_self,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str, generation: u64, live: Option<bool>, state: &str) -> RawNode {
        RawNode {
            node_id: id.to_string(),
            generation,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            live,
            is_self: false,
            heartbeat_age: Duration::ZERO,
            state: Some(state.to_string()),
            http_addr: None,
            peer_addr: None,
            version: None,
            started_at_ms: None,
            term: None,
            leader_term: None,
            term_by: None,
        }
    }

    fn view(nodes: Vec<RawNode>) -> ClusterView {
        build_view("c", &NodeId::new("self").unwrap(), nodes, 0)
    }

    #[test]
    fn lowest_ready_live_member_coordinates() {
        let v = view(vec![
            raw("node-10", 1, Some(true), "ready"),
            raw("node-2", 1, Some(true), "ready"),
            raw("node-1", 1, Some(false), "ready"),
            raw("node-0", 1, Some(true), "joining"),
            raw("node-00", 1, Some(true), "leaving"),
        ]);
        assert_eq!(v.coordinator.unwrap().as_str(), "node-2");
        let ids: Vec<&str> = v.members.iter().map(|m| m.node_id.as_str()).collect();
        assert_eq!(ids, ["node-0", "node-00", "node-1", "node-2", "node-10"]);
    }

    #[test]
    fn highest_generation_wins_and_left_members_vanish() {
        let mut old = raw("a", 1, Some(true), "ready");
        old.leader_term = Some(3);
        let v = view(vec![
            old,
            raw("a", 2, Some(true), "joining"),
            raw("b", 1, Some(true), "left"),
            raw("c", 1, Some(true), "ready"),
        ]);
        assert_eq!(v.members.len(), 2);
        assert_eq!(v.member(&NodeId::new("a").unwrap()).unwrap().generation, 2);
        assert_eq!(v.coordinator.unwrap().as_str(), "c");
    }

    #[test]
    fn term_is_confirmed_only_when_the_coordinator_claimed_the_highest() {
        let mut a = raw("a", 1, Some(true), "ready");
        let mut b = raw("b", 1, Some(false), "ready");
        a.leader_term = Some(4);
        b.leader_term = Some(5);
        let v = view(vec![a.clone(), b.clone()]);
        assert_eq!(v.coordinator.as_ref().unwrap().as_str(), "a");
        assert_eq!(v.term, None, "a claimed 4 but 5 exists");
        assert_eq!(v.max_term, 5);
        a.leader_term = Some(6);
        let v = view(vec![a, b]);
        assert_eq!(v.term, Some(6));
    }

    #[test]
    fn unheard_nodes_are_joining_not_eligible() {
        let v = view(vec![
            raw("a", 1, None, "ready"),
            raw("b", 1, Some(true), "ready"),
        ]);
        assert_eq!(v.members[0].state, MemberState::Joining);
        assert_eq!(v.coordinator.unwrap().as_str(), "b");
    }
}
