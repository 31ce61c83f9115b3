//! Louvain community detection, second half: after the shards' supersteps have moved every
//! vertex to a community (the first level, [`super::part`]), the driver contracts each community
//! into one weighted vertex and runs sequential Louvain on that much smaller graph until no move
//! raises modularity. The communities of the contracted graph's vertices are the answer.
//!
//! Weights follow Kuzu's `louvain`: every relation is an undirected edge of weight 1, listed at
//! both ends (a self-loop twice at its one end), so a vertex's degree is the sum of its list and
//! `2m` is the sum of all degrees. Modularity is `Σ_c in(c)/2m − (tot(c)/2m)²`, where `in(c)`
//! sums the list entries inside `c` and `tot(c)` the degrees of its vertices.

use std::collections::{BTreeMap, HashMap};

/// Moves that raise modularity by less than this are not made.
const GAIN: f64 = 1e-12;
/// Most rounds of moves per level.
const MAX_ROUNDS: usize = 100;

/// A weighted undirected graph with symmetric lists: `w(a, b)` appears at `a` and at `b`.
#[derive(Debug, Default, Clone)]
pub struct Weighted {
    /// For each vertex, its neighbours and the weights to them (itself included for in-weight).
    adj: Vec<Vec<(usize, f64)>>,
}

impl Weighted {
    /// From `(a, b, w)` list entries (each pair as both ends listed it), over vertices named by
    /// labels. Returns the graph and the label of each vertex.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (u64, u64, f64)>,
    ) -> (Weighted, Vec<u64>) {
        let mut sums: BTreeMap<(u64, u64), f64> = BTreeMap::new();
        for (a, b, w) in entries {
            *sums.entry((a, b)).or_default() += w;
            sums.entry((b, a)).or_default();
        }
        let mut labels: Vec<u64> = sums.keys().map(|(a, _)| *a).collect();
        labels.dedup();
        let index: HashMap<u64, usize> = labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
        let mut adj = vec![Vec::new(); labels.len()];
        for ((a, b), w) in sums {
            if w != 0.0 {
                adj[index[&a]].push((index[&b], w));
            }
        }
        (Weighted { adj }, labels)
    }

    fn degree(&self, v: usize) -> f64 {
        self.adj[v].iter().map(|(_, w)| w).sum()
    }

    /// Modularity of `community` (one per vertex).
    pub fn modularity(&self, community: &[usize]) -> f64 {
        let m2: f64 = (0..self.adj.len()).map(|v| self.degree(v)).sum();
        if m2 == 0.0 {
            return 0.0;
        }
        let mut inside = vec![0.0; self.adj.len()];
        let mut tot = vec![0.0; self.adj.len()];
        for (v, list) in self.adj.iter().enumerate() {
            for (u, w) in list {
                if community[*u] == community[v] {
                    inside[community[v]] += w;
                }
                tot[community[v]] += w;
            }
        }
        inside
            .iter()
            .zip(&tot)
            .map(|(i, t)| i / m2 - (t / m2) * (t / m2))
            .sum()
    }

    /// One level of Louvain: moves vertices (in order) to the neighbouring community that raises
    /// modularity most, until a round moves none. Returns each vertex's community (numbered from
    /// 0) and whether any vertex moved.
    fn local_moves(&self) -> (Vec<usize>, bool) {
        let n = self.adj.len();
        let degree: Vec<f64> = (0..n).map(|v| self.degree(v)).collect();
        let m2: f64 = degree.iter().sum();
        let mut community: Vec<usize> = (0..n).collect();
        let mut tot = degree.clone();
        let mut moved_any = false;
        if m2 == 0.0 {
            return (community, false);
        }
        let mut to: HashMap<usize, f64> = HashMap::new();
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            for v in 0..n {
                let own = community[v];
                to.clear();
                for (u, w) in &self.adj[v] {
                    if *u != v {
                        *to.entry(community[*u]).or_default() += w;
                    }
                }
                tot[own] -= degree[v];
                let gain = |c: usize, k_in: f64| k_in - tot[c] * degree[v] / m2;
                let mut best = (own, gain(own, to.get(&own).copied().unwrap_or(0.0)));
                let mut candidates: Vec<(&usize, &f64)> = to.iter().collect();
                candidates.sort_by_key(|(c, _)| **c);
                for (c, k_in) in candidates {
                    let g = gain(*c, *k_in);
                    if g > best.1 + GAIN {
                        best = (*c, g);
                    }
                }
                tot[best.0] += degree[v];
                if best.0 != own {
                    community[v] = best.0;
                    moved = true;
                    moved_any = true;
                }
            }
            if !moved {
                break;
            }
        }
        (renumber(&community), moved_any)
    }

    /// The graph with each community of `community` contracted to one vertex.
    fn contract(&self, community: &[usize]) -> Weighted {
        let n = community.iter().max().map_or(0, |c| c + 1);
        let mut sums: Vec<BTreeMap<usize, f64>> = vec![BTreeMap::new(); n];
        for (v, list) in self.adj.iter().enumerate() {
            for (u, w) in list {
                *sums[community[v]].entry(community[*u]).or_default() += w;
            }
        }
        Weighted {
            adj: sums.into_iter().map(|m| m.into_iter().collect()).collect(),
        }
    }

    /// Louvain to the end: levels of local moves and contraction until a level moves nothing.
    /// Returns each vertex's final community (numbered from 0) and its modularity.
    pub fn louvain(&self) -> (Vec<usize>, f64) {
        let mut assignment: Vec<usize> = (0..self.adj.len()).collect();
        let mut level = self.clone();
        loop {
            let (community, moved) = level.local_moves();
            if !moved {
                break;
            }
            for a in &mut assignment {
                *a = community[*a];
            }
            level = level.contract(&community);
        }
        let q = self.modularity(&assignment);
        (assignment, q)
    }
}

/// Communities numbered 0.. in order of first appearance.
fn renumber(community: &[usize]) -> Vec<usize> {
    let mut new: HashMap<usize, usize> = HashMap::new();
    community
        .iter()
        .map(|c| {
            let next = new.len();
            *new.entry(*c).or_insert(next)
        })
        .collect()
}

/// The second half of a distributed run: from the first level's contracted entries
/// `(community, neighbour's community, weight)`, each first-level community's final community
/// (named by its smallest first-level label) and the partition's modularity.
pub fn finish(entries: Vec<(u64, u64, f64)>) -> (HashMap<u64, u64>, f64) {
    let (graph, labels) = Weighted::from_entries(entries);
    let (assignment, q) = graph.louvain();
    let mut name: HashMap<usize, u64> = HashMap::new();
    for (v, c) in assignment.iter().enumerate() {
        let e = name.entry(*c).or_insert(labels[v]);
        *e = (*e).min(labels[v]);
    }
    let map = labels
        .iter()
        .zip(&assignment)
        .map(|(l, c)| (*l, name[c]))
        .collect();
    (map, q)
}
