//! One shard's share of a graph algorithm: its vertices and edges in compact form, the value of
//! each vertex, and one superstep at a time (apply the messages of the last step, send along the
//! edges). Pure computation: no I/O, so the whole exchange can be run in one process by tests.
//!
//! Vertices are the entities the shard owns, numbered in id order. An edge's far end is either
//! one of them (a local index) or a *slot*: a position in the channel to the far end's shard.
//! Each channel's ids are sent once, when the task connects; after that a message to a shard is
//! just values in slot order (PageRank) or `(slot, label)` pairs (components), so the ids never
//! travel again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::storage::{EntityProperty, GraphPart, PropertyValue};

use super::Algorithm;

/// No label yet (components) / a slot whose id the receiving shard does not own.
const NONE: u32 = u32::MAX;

/// The ids a shard's edges reach in another shard, in slot order.
#[derive(Debug, Clone)]
pub struct Channel {
    pub to: u32,
    /// First slot of this channel in the part's slot space, and how many it has.
    start: usize,
    len: usize,
    /// The ids of the slots, until they are sent ([`Part::take_channels`]).
    ids: Vec<String>,
}

/// What one shard sends another in a superstep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Values {
    /// One value per slot of the channel (PageRank's sums).
    Sums(Vec<f64>),
    /// Some slots' sums (a long channel's, in pieces).
    SparseSums(Vec<(u32, f64)>),
    /// The slots whose vertex should take a smaller label (components).
    Labels(Vec<(u32, u64)>),
    /// Louvain: the community of every slot of the receiver's channel to the sender, in slot
    /// order (sent back along the channel by the shard that owns the slots' vertices).
    Communities(Vec<u64>),
}

impl Values {
    /// How many values (or pairs) it holds.
    pub fn len(&self) -> usize {
        match self {
            Values::Sums(v) => v.len(),
            Values::SparseSums(v) => v.len(),
            Values::Labels(v) => v.len(),
            Values::Communities(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a superstep reports to the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// PageRank: the sum of |new − old| over the part's vertices.
    pub delta: f64,
    /// Components: vertices whose label changed.
    pub changed: u64,
}

/// Vertex values per algorithm, with the two message buffers a superstep alternates between:
/// messages sent in step `n` land in buffer `n % 2` and are applied in step `n + 1`.
#[derive(Debug)]
enum State {
    Rank {
        damping: f64,
        rank: Vec<f64>,
        inbox: [Vec<f64>; 2],
        out: Vec<f64>,
    },
    Label {
        label: Vec<u64>,
        changed: Vec<bool>,
        inbox: [Vec<u64>; 2],
        out: Vec<u64>,
    },
    Degree,
    Louvain {
        community: Vec<u64>,
        /// The community of each slot's vertex, as its shard last published it.
        remote: Vec<u64>,
    },
}

/// One shard's vertices, edges and values for one task.
#[derive(Debug)]
pub struct Part {
    pub shard: u32,
    ids: Vec<String>,
    index: HashMap<String, u32>,
    /// Neighbours of vertex `v`: `targets[offsets[v]..offsets[v + 1]]`; a target below
    /// `ids.len()` is a local vertex, any other is slot `target - ids.len()`.
    offsets: Vec<usize>,
    targets: Vec<u32>,
    /// PageRank: out-degree; degree: relations at the vertex (a self-loop counts twice).
    degree: Vec<u32>,
    pub channels: Vec<Channel>,
    /// For each shard that sends here: its slot → local vertex (`NONE` when not owned here).
    incoming: HashMap<u32, Vec<u32>>,
    state: State,
}

impl Part {
    /// Builds the part of `shard` (of `shards`) from what its copy holds. Refuses a part with
    /// more than `max_edges` edges.
    pub fn build(
        shard: u32,
        shards: u32,
        algorithm: &Algorithm,
        graph: GraphPart,
        max_edges: usize,
    ) -> Result<Part, Error> {
        let GraphPart {
            entities,
            relations,
        } = graph;
        // Where each row lives: here when stored here, else by its id and routing key.
        let homes: Vec<u32> = (entities.iter())
            .map(|e| if e.stub { e.home(shards) } else { shard })
            .collect();
        // The vertices: the rows this shard owns (stored here, or stubs whose home is here).
        let mut owned: Vec<usize> = (0..entities.len()).filter(|&r| homes[r] == shard).collect();
        owned.sort_unstable_by(|&a, &b| entities[a].id.cmp(&entities[b].id));
        owned.dedup_by(|a, b| entities[*a].id == entities[*b].id);
        let n = owned.len();
        if n >= NONE as usize {
            return Err(Error::Invalid(format!(
                "shard {shard} holds {n} entities; a graph algorithm handles fewer than {NONE} per shard"
            )));
        }
        // Each row's vertex, when it is one.
        let mut local = vec![NONE; entities.len()];
        for (v, &r) in owned.iter().enumerate() {
            local[r] = v as u32;
        }
        let ids: Vec<String> = owned.iter().map(|&r| entities[r].id.clone()).collect();
        let index: HashMap<String, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let mut degree = vec![0u32; n];
        let mut edges: Vec<(u32, u32)> = Vec::new();
        let mut channels: Vec<Channel> = Vec::new();
        // Per channel, the first-seen slot number of each of its ids.
        let mut first_slots: Vec<Vec<u32>> = Vec::new();
        let mut by_shard: HashMap<u32, usize> = HashMap::new();
        // Each row's slot, once it is a far end.
        let mut slot_of = vec![NONE; entities.len()];
        let mut slots = 0usize;
        // The far end of an edge: a local vertex, or a slot of the channel to its shard.
        let mut target = |r: u32| {
            let r = r as usize;
            let to = homes[r];
            if to == shard {
                return (local[r] != NONE).then_some(local[r]);
            }
            if slot_of[r] == NONE {
                let c = *by_shard.entry(to).or_insert_with(|| {
                    channels.push(Channel {
                        to,
                        start: 0,
                        len: 0,
                        ids: Vec::new(),
                    });
                    first_slots.push(Vec::new());
                    channels.len() - 1
                });
                channels[c].ids.push(entities[r].id.clone());
                first_slots[c].push(slots as u32);
                slot_of[r] = slots as u32;
                slots += 1;
            }
            Some(n as u32 + slot_of[r])
        };
        // A row is a vertex here only if it lives here.
        let own = |r: u32| (local[r as usize] != NONE).then_some(local[r as usize]);
        for &(source, dest) in &relations {
            let (from, to) = (own(source), own(dest));
            match algorithm {
                Algorithm::Degree => {
                    for v in [from, to].into_iter().flatten() {
                        degree[v as usize] += 1;
                    }
                }
                Algorithm::PageRank { .. } => {
                    if let Some(v) = from {
                        if let Some(t) = target(dest) {
                            degree[v as usize] += 1;
                            edges.push((v, t));
                        }
                    }
                }
                Algorithm::Components | Algorithm::Louvain { .. } => {
                    if let Some(v) = from {
                        if let Some(t) = target(dest) {
                            edges.push((v, t));
                        }
                    }
                    if let Some(v) = to {
                        if let Some(t) = target(source) {
                            edges.push((v, t));
                        }
                    }
                }
            }
            if edges.len() > max_edges {
                return Err(Error::Busy(format!(
                    "shard {shard} would pass this node's limit of {max_edges} edges held for \
                     graph algorithms; wait for other algorithm tasks to end, or add nodes"
                )));
            }
        }
        // Slots were numbered in first-seen order across channels; renumber them so each
        // channel's slots are contiguous, in the order of its ids.
        let mut renumber = vec![0u32; slots];
        let mut start = 0usize;
        for (c, first) in channels.iter_mut().zip(&first_slots) {
            c.start = start;
            c.len = c.ids.len();
            for (i, &old) in first.iter().enumerate() {
                renumber[old as usize] = (start + i) as u32;
            }
            start += c.ids.len();
        }
        edges.sort_unstable();
        let mut offsets = vec![0usize; n + 1];
        let mut targets = Vec::with_capacity(edges.len());
        for (v, t) in edges {
            offsets[v as usize + 1] += 1;
            targets.push(if (t as usize) < n {
                t
            } else {
                n as u32 + renumber[t as usize - n]
            });
        }
        for v in 0..n {
            offsets[v + 1] += offsets[v];
        }
        let state = match algorithm {
            Algorithm::PageRank { damping, .. } => State::Rank {
                damping: *damping,
                rank: vec![0.0; n],
                inbox: [vec![0.0; n], vec![0.0; n]],
                out: vec![0.0; slots],
            },
            Algorithm::Components => State::Label {
                label: vec![u64::MAX; n],
                changed: vec![false; n],
                inbox: [vec![u64::MAX; n], vec![u64::MAX; n]],
                out: vec![u64::MAX; slots],
            },
            Algorithm::Degree => State::Degree,
            Algorithm::Louvain { .. } => State::Louvain {
                community: (0..n as u64)
                    .map(|v| (u64::from(shard) << 32) | v)
                    .collect(),
                remote: vec![u64::MAX; slots],
            },
        };
        Ok(Part {
            shard,
            ids,
            index,
            offsets,
            targets,
            degree,
            channels,
            incoming: HashMap::new(),
            state,
        })
    }

    pub fn vertices(&self) -> usize {
        self.ids.len()
    }

    pub fn edges(&self) -> usize {
        self.targets.len()
    }

    /// The ids of each channel, by destination shard, to send once; the part keeps only their
    /// number.
    pub fn take_channels(&mut self) -> Vec<(u32, Vec<String>)> {
        self.channels
            .iter_mut()
            .map(|c| (c.to, std::mem::take(&mut c.ids)))
            .collect()
    }

    /// Takes the ids of a shard's channel to this part: its slots, in order.
    pub fn connect(&mut self, from: u32, ids: &[String]) {
        self.connect_piece(from, 0, ids);
    }

    /// Takes the ids of slots `start..` of a shard's channel to this part.
    pub fn connect_piece(&mut self, from: u32, start: usize, ids: &[String]) {
        let map = self.incoming.entry(from).or_default();
        if map.len() < start + ids.len() {
            map.resize(start + ids.len(), NONE);
        }
        for (slot, id) in map[start..].iter_mut().zip(ids) {
            *slot = self.index.get(id).copied().unwrap_or(NONE);
        }
    }

    /// Takes what shard `from` sent in step `step`.
    pub fn receive(&mut self, from: u32, step: u32, values: &Values) -> Result<(), Error> {
        if let (State::Louvain { remote, .. }, Values::Communities(list)) =
            (&mut self.state, values)
        {
            let c = self.channels.iter().find(|c| c.to == from);
            match c {
                Some(c) if list.len() == c.len => {
                    remote[c.start..c.start + c.len].copy_from_slice(list);
                    return Ok(());
                }
                _ => {
                    return Err(Error::Invalid(format!(
                    "shard {from} published communities that do not fit shard {}'s channel to it",
                    self.shard
                )))
                }
            }
        }
        let map = self.incoming.get(&from).ok_or_else(|| {
            Error::Invalid(format!(
                "shard {} got values from shard {from}, which never connected",
                self.shard
            ))
        })?;
        let bad = || {
            Error::Invalid(format!(
                "shard {from} sent shard {} a value past its channel",
                self.shard
            ))
        };
        let b = (step % 2) as usize;
        match (&mut self.state, values) {
            (State::Rank { inbox, .. }, Values::Sums(sums)) => {
                if sums.len() > map.len() {
                    return Err(bad());
                }
                for (slot, v) in sums.iter().enumerate() {
                    let local = map[slot];
                    if local != NONE {
                        inbox[b][local as usize] += v;
                    }
                }
            }
            (State::Rank { inbox, .. }, Values::SparseSums(sums)) => {
                for (slot, v) in sums {
                    let local = *map.get(*slot as usize).ok_or_else(bad)?;
                    if local != NONE {
                        inbox[b][local as usize] += v;
                    }
                }
            }
            (State::Label { inbox, .. }, Values::Labels(labels)) => {
                for (slot, label) in labels {
                    let local = *map.get(*slot as usize).ok_or_else(bad)?;
                    if local != NONE {
                        let best = &mut inbox[b][local as usize];
                        *best = (*best).min(*label);
                    }
                }
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "shard {from} sent shard {} values of another algorithm",
                    self.shard
                )))
            }
        }
        Ok(())
    }

    /// Superstep `step` over a graph of `total` vertices: applies what step `step − 1` sent
    /// (none at step 0, which sets the first values instead), then sends along the edges.
    /// Returns the report and the messages per destination shard (empty ones left out).
    pub fn step(&mut self, step: u32, total: u64) -> (StepReport, Vec<(u32, Values)>) {
        let n = self.ids.len();
        let mut report = StepReport::default();
        let (shard, offsets, targets, degree) =
            (self.shard, &self.offsets, &self.targets, &self.degree);
        let (now, last) = ((step % 2) as usize, ((step + 1) % 2) as usize);
        let messages = match &mut self.state {
            State::Rank {
                damping,
                rank,
                inbox,
                out,
            } => {
                let base = 1.0 / total.max(1) as f64;
                if step == 0 {
                    rank.fill(base);
                } else {
                    let constant = (1.0 - *damping) * base;
                    for v in 0..n {
                        let next = inbox[last][v] * *damping + constant;
                        report.delta += (next - rank[v]).abs();
                        rank[v] = next;
                        inbox[last][v] = 0.0;
                    }
                }
                out.fill(0.0);
                for v in 0..n {
                    if degree[v] == 0 {
                        continue;
                    }
                    let share = rank[v] / f64::from(degree[v]);
                    for &t in &targets[offsets[v]..offsets[v + 1]] {
                        if (t as usize) < n {
                            inbox[now][t as usize] += share;
                        } else {
                            out[t as usize - n] += share;
                        }
                    }
                }
                self.channels
                    .iter()
                    .map(|c| {
                        let sums = out[c.start..c.start + c.len].to_vec();
                        (c.to, Values::Sums(sums))
                    })
                    .collect::<Vec<_>>()
            }
            State::Label {
                label,
                changed,
                inbox,
                out,
            } => {
                if step == 0 {
                    for (v, l) in label.iter_mut().enumerate() {
                        *l = (u64::from(shard) << 32) | v as u64;
                    }
                    changed.fill(true);
                } else {
                    for v in 0..n {
                        let best = std::mem::replace(&mut inbox[last][v], u64::MAX);
                        changed[v] = best < label[v];
                        if changed[v] {
                            label[v] = best;
                            report.changed += 1;
                        }
                    }
                }
                out.fill(u64::MAX);
                for v in (0..n).filter(|v| changed[*v]) {
                    for &t in &targets[offsets[v]..offsets[v + 1]] {
                        let best = if (t as usize) < n {
                            &mut inbox[now][t as usize]
                        } else {
                            &mut out[t as usize - n]
                        };
                        *best = (*best).min(label[v]);
                    }
                }
                self.channels
                    .iter()
                    .map(|c| {
                        let labels = (c.start..c.start + c.len)
                            .filter(|s| out[*s] != u64::MAX)
                            .map(|s| ((s - c.start) as u32, out[s]))
                            .collect();
                        (c.to, Values::Labels(labels))
                    })
                    .collect()
            }
            State::Degree | State::Louvain { .. } => Vec::new(),
        };
        let messages = messages
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        (report, messages)
    }

    /// The value of every vertex: its rank, its component's label, or its degree.
    pub fn values(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        (0..self.ids.len()).map(move |v| {
            let value = match &self.state {
                State::Rank { rank, .. } => rank[v],
                State::Label { label, .. } => label[v] as f64,
                State::Degree => f64::from(self.degree[v]),
                State::Louvain { community, .. } => community[v] as f64,
            };
            (self.ids[v].as_str(), value)
        })
    }

    /// Louvain: the community of each vertex here that each shard with edges to it needs, to
    /// send back along its channel.
    pub fn publish(&self) -> Vec<(u32, Values)> {
        let State::Louvain { community, .. } = &self.state else {
            return Vec::new();
        };
        self.incoming
            .iter()
            .map(|(from, map)| {
                let list = map
                    .iter()
                    .map(|l| community.get(*l as usize).copied().unwrap_or(u64::MAX))
                    .collect();
                (*from, Values::Communities(list))
            })
            .collect()
    }

    /// Louvain: the summed degree of the vertices here in each community, and of all of them.
    pub fn totals(&self) -> (HashMap<u64, f64>, f64) {
        let mut totals: HashMap<u64, f64> = HashMap::new();
        let mut all = 0.0;
        if let State::Louvain { community, .. } = &self.state {
            for (v, c) in community.iter().enumerate() {
                let k = (self.offsets[v + 1] - self.offsets[v]) as f64;
                *totals.entry(*c).or_default() += k;
                all += k;
            }
        }
        (totals, all)
    }

    /// Louvain, one round of moves: every vertex of this round's half (alternate halves keep
    /// neighbours from swapping places forever) joins the neighbouring community that raises
    /// modularity most, given the communities' degrees `totals` at the round's start and the sum
    /// of all degrees `m2`. Returns how many moved.
    pub fn moves(&mut self, round: u32, totals: &HashMap<u64, f64>, m2: f64) -> u64 {
        let n = self.ids.len();
        let (offsets, targets, shard) = (&self.offsets, &self.targets, self.shard);
        let State::Louvain { community, remote } = &mut self.state else {
            return 0;
        };
        if m2 == 0.0 {
            return 0;
        }
        // Degrees of communities as this part's own moves change them.
        let mut change: HashMap<u64, f64> = HashMap::new();
        let tot = |c: u64, change: &HashMap<u64, f64>| {
            totals.get(&c).copied().unwrap_or(0.0) + change.get(&c).copied().unwrap_or(0.0)
        };
        let mut k_in: HashMap<u64, f64> = HashMap::new();
        let mut moved = 0;
        for v in 0..n {
            if !(v as u64 + u64::from(shard) + u64::from(round)).is_multiple_of(2) {
                continue;
            }
            let k = (offsets[v + 1] - offsets[v]) as f64;
            k_in.clear();
            for &t in &targets[offsets[v]..offsets[v + 1]] {
                let c = if (t as usize) < n {
                    if t as usize == v {
                        continue;
                    }
                    community[t as usize]
                } else {
                    remote[t as usize - n]
                };
                if c != u64::MAX {
                    *k_in.entry(c).or_default() += 1.0;
                }
            }
            let own = community[v];
            let without = tot(own, &change) - k;
            let gain = |k_in: f64, tot: f64| k_in - tot * k / m2;
            let mut best = (own, gain(k_in.get(&own).copied().unwrap_or(0.0), without));
            let mut candidates: Vec<(u64, f64)> = k_in.iter().map(|(c, w)| (*c, *w)).collect();
            candidates.sort_by_key(|(c, _)| *c);
            for (c, w) in candidates {
                if c == own {
                    continue;
                }
                let g = gain(w, tot(c, &change));
                if g > best.1 + 1e-12 {
                    best = (c, g);
                }
            }
            if best.0 != own {
                *change.entry(own).or_default() -= k;
                *change.entry(best.0).or_default() += k;
                community[v] = best.0;
                moved += 1;
            }
        }
        moved
    }

    /// Louvain: the edges here between communities, summed: `(community, neighbour's, weight)`.
    pub fn contracted(&self) -> Vec<(u64, u64, f64)> {
        let n = self.ids.len();
        let State::Louvain { community, remote } = &self.state else {
            return Vec::new();
        };
        let mut sums: HashMap<(u64, u64), f64> = HashMap::new();
        for v in 0..n {
            for &t in &self.targets[self.offsets[v]..self.offsets[v + 1]] {
                let c = if (t as usize) < n {
                    community[t as usize]
                } else {
                    remote[t as usize - n]
                };
                if c != u64::MAX {
                    *sums.entry((community[v], c)).or_default() += 1.0;
                }
            }
        }
        sums.into_iter().map(|((a, b), w)| (a, b, w)).collect()
    }

    /// Louvain: renames communities by `map` (first-level community → final one).
    pub fn relabel(&mut self, map: &HashMap<u64, u64>) {
        if let State::Louvain { community, .. } = &mut self.state {
            for c in community.iter_mut() {
                if let Some(to) = map.get(c) {
                    *c = *to;
                }
            }
        }
    }

    /// The id of the vertex a component label names, when this part owns it.
    pub fn name_of(&self, label: u64) -> Option<&str> {
        if (label >> 32) as u32 != self.shard {
            return None;
        }
        self.ids
            .get((label & 0xffff_ffff) as usize)
            .map(String::as_str)
    }

    /// Every vertex's result as the entity property it is written to: rank, degree, or the
    /// name of its component or community (`names`: label → name).
    pub fn properties(
        &self,
        names: &HashMap<u64, String>,
    ) -> (EntityProperty, Vec<(String, PropertyValue)>) {
        let name = |label: u64| {
            names
                .get(&label)
                .cloned()
                .unwrap_or_else(|| format!("#{label}"))
        };
        let (property, values): (EntityProperty, Vec<PropertyValue>) = match &self.state {
            State::Rank { rank, .. } => (
                EntityProperty::PageRank,
                rank.iter().map(|r| PropertyValue::Float(*r)).collect(),
            ),
            State::Degree => (
                EntityProperty::Degree,
                self.degree
                    .iter()
                    .map(|d| PropertyValue::Int(i64::from(*d)))
                    .collect(),
            ),
            State::Label { label, .. } => (
                EntityProperty::Component,
                label
                    .iter()
                    .map(|l| PropertyValue::Text(name(*l)))
                    .collect(),
            ),
            State::Louvain { community, .. } => (
                EntityProperty::Community,
                community
                    .iter()
                    .map(|l| PropertyValue::Text(name(*l)))
                    .collect(),
            ),
        };
        (property, self.ids.iter().cloned().zip(values).collect())
    }
}
