//! A deterministic simulation of how the shard map changes hands, run over thousands of seeds.
//!
//! It drives the real parts of the protocol — each member's [`MapHolder`] (promises, accepting
//! pushes, amnesia after a wiped disk) and the coordinator's decisions
//! ([`conclude_collect`], [`changeable_map`], [`stamp`], [`committed`]) — with a scheduler that
//! chooses, from the seed, what happens next: a node starts coordinating under the next term (or,
//! rarely, under a term another node claimed too), a message is delivered (in any order) or lost,
//! a coordinator concludes its collection or a commit, makes a change, collects a newcomer, or a
//! node's data directory is wiped. Several coordinators are active at once, as after a pause or
//! across a partition. Only the network and time are simulated.
//!
//! The invariant checked: **a committed change is never lost.** Each change records its id in the
//! map (as a write-back decision). When a commit succeeds, its map holds every change committed
//! with an older map (two commits of one coordinator may conclude in either order); when a
//! collection under term *t* succeeds, the map its coordinator adopts holds every change committed
//! under a term below *t*. (A write acknowledged on a change — a copy dropped from the in-sync
//! set — therefore stays acknowledged in every later map.)

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::coordinator::{changeable_map, committed, conclude_collect, stamp, Answer};
use super::shard_map::{MapHolder, Promise, ShardMap};

const NODES: usize = 5;

fn name(n: usize) -> String {
    format!("node-{}", n + 1)
}

enum Msg {
    Collect {
        coord: usize,
        to: usize,
    },
    Collected {
        coord: usize,
        answer: Box<Answer>,
    },
    Push {
        commit: usize,
        to: usize,
    },
    Pushed {
        commit: usize,
        from: usize,
        counts: bool,
    },
}

struct Coordinator {
    node: usize,
    generation: u64,
    term: u64,
    answers: Vec<Answer>,
    /// Concluded successfully under `term`.
    ready: bool,
    /// Gone (its node was wiped, or its collection failed).
    over: bool,
}

struct Commit {
    coord: usize,
    map: ShardMap,
    change: String,
    holders: BTreeSet<String>,
    done: bool,
}

struct World {
    rng: StdRng,
    root: tempfile::TempDir,
    holders: Vec<MapHolder>,
    /// Each node's process generation (a new one at each wipe).
    generations: Vec<u64>,
    wipes: usize,
    coords: Vec<Coordinator>,
    commits: Vec<Commit>,
    in_flight: Vec<Msg>,
    max_term: u64,
    changes: usize,
    /// Changes whose commit succeeded, with their map's (term, version), in order.
    committed: Vec<(String, (u64, u64))>,
    /// Members answer collections without promising (to show the check finds the loss).
    forget_promises: bool,
    trace: bool,
}

impl World {
    fn new(seed: u64) -> World {
        // tmpfs where there is one: promises are synced to disk, which is all a simulation does.
        let root = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm").expect("tempdir"),
            false => tempfile::tempdir().expect("tempdir"),
        };
        let ids: Vec<membership::NodeId> = (0..NODES).map(|n| name(n).parse().unwrap()).collect();
        let first = ShardMap::create(&ids, BTreeMap::new(), 8, 2, 1);
        let mut w = World {
            rng: StdRng::seed_from_u64(seed),
            root,
            holders: Vec::new(),
            generations: vec![0; NODES],
            wipes: 0,
            coords: Vec::new(),
            commits: Vec::new(),
            in_flight: Vec::new(),
            max_term: 1,
            changes: 0,
            committed: Vec::new(),
            forget_promises: false,
            trace: std::env::var("TORUA_MAP_MODEL_TRACE").is_ok(),
        };
        for n in 0..NODES {
            let h = w.fresh_holder(n);
            // The bootstrap: node-1 collected everyone under term 1 and pushed the first map.
            h.promise(1, &name(0), 0);
            h.accept(first.clone(), &name(0));
            w.holders.push(h);
        }
        w.holders[0].set_collected(1);
        w.coords.push(Coordinator {
            node: 0,
            generation: 0,
            term: 1,
            answers: Vec::new(),
            ready: true,
            over: false,
        });
        w
    }

    fn fresh_holder(&mut self, n: usize) -> MapHolder {
        let dir = self.root.path().join(format!("{}-{}", name(n), self.wipes));
        self.wipes += 1;
        if let Some(g) = self.generations.get_mut(n) {
            *g = self.wipes as u64;
        }
        std::fs::create_dir_all(&dir).expect("node dir");
        MapHolder::load(&dir)
    }

    fn step(&mut self) {
        if self.trace {
            let maps: Vec<String> = self
                .holders
                .iter()
                .map(|h| {
                    let p = h.promised();
                    let m = h.get().map(|m| (m.term, m.version, m.decisions.len()));
                    format!(
                        "{m:?} p{}/{}{}",
                        p.term,
                        p.to,
                        if h.forgot() { " forgot" } else { "" }
                    )
                })
                .collect();
            eprintln!("state: {maps:?}");
        }
        match self.rng.gen_range(0..100) {
            0 => self.elect(),
            1..=4 => self.lose(),
            5..=52 => self.deliver(),
            53..=60 => self.conclude_collection(),
            61..=75 => self.change(),
            76..=85 => self.conclude_commit(),
            86..=90 => self.collect_newcomer(),
            91 => self.wipe(),
            _ => self.deliver(),
        }
    }

    /// A node claims the next term (one time in eight, the highest claimed so far: two nodes
    /// claiming one number) and asks every other node for its map.
    fn elect(&mut self) {
        let node = self.rng.gen_range(0..NODES);
        let term = if self.rng.gen_ratio(1, 8) {
            self.max_term
        } else {
            self.max_term + 1
        };
        self.max_term = self.max_term.max(term);
        let (me, generation) = (name(node), self.generations[node]);
        let mine = self.holders[node].promise(term, &me, generation);
        let coord = self.coords.len();
        if self.trace {
            eprintln!(
                "elect: coord {coord} on {me} gen {generation} term {term}: own promise {mine:?}"
            );
        }
        self.coords.push(Coordinator {
            node,
            generation,
            term,
            answers: Vec::new(),
            ready: false,
            over: !mine.is_to(term, &me, generation),
        });
        for to in (0..NODES).filter(|t| *t != node) {
            self.in_flight.push(Msg::Collect { coord, to });
        }
    }

    fn pick_coord(&mut self, ready: bool) -> Option<usize> {
        let live: Vec<usize> = (0..self.coords.len())
            .filter(|c| !self.coords[*c].over && self.coords[*c].ready == ready)
            .collect();
        (!live.is_empty()).then(|| live[self.rng.gen_range(0..live.len())])
    }

    fn deliver(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        // Mostly in order, but any of the oldest eight may overtake the others.
        let i = self.rng.gen_range(0..self.in_flight.len().min(8));
        match self.in_flight.remove(i) {
            Msg::Collect { coord, to } => {
                let c = &self.coords[coord];
                let (term, from, generation) = (c.term, name(c.node), c.generation);
                let promised = match self.forget_promises {
                    true => Promise {
                        term,
                        to: from,
                        generation,
                    },
                    false => self.holders[to].promise(term, &from, generation),
                };
                let answer = Answer {
                    node: name(to),
                    map: self.holders[to].get(),
                    promised,
                    forgot: self.holders[to].forgot(),
                };
                self.in_flight.push(Msg::Collected {
                    coord,
                    answer: Box::new(answer),
                });
            }
            Msg::Collected { coord, answer } => {
                if self.trace {
                    eprintln!(
                        "answer to coord {coord} from {}: map {:?} promised {:?} forgot {}",
                        answer.node,
                        answer.map.as_ref().map(|m| (m.term, m.version)),
                        answer.promised,
                        answer.forgot
                    );
                }
                self.coords[coord].answers.push(*answer)
            }
            Msg::Push { commit, to } => {
                let c = &self.commits[commit];
                let from = name(self.coords[c.coord].node);
                let (_, counts) = self.holders[to].accept(c.map.clone(), &from);
                self.in_flight.push(Msg::Pushed {
                    commit,
                    from: to,
                    counts,
                });
            }
            Msg::Pushed {
                commit,
                from,
                counts,
            } => {
                if counts {
                    self.commits[commit].holders.insert(name(from));
                }
            }
        }
    }

    fn lose(&mut self) {
        if !self.in_flight.is_empty() {
            let i = self.rng.gen_range(0..self.in_flight.len().min(8));
            self.in_flight.remove(i);
        }
    }

    /// Whether a conclusion of `pending` waits: while answers are in flight, nine times in ten
    /// (the tenth, it times out).
    fn waits(&mut self, pending: bool) -> bool {
        pending && !self.rng.gen_ratio(1, 10)
    }

    fn conclude_collection(&mut self) {
        let Some(c) = self.pick_coord(false) else {
            return;
        };
        let pending = self.in_flight.iter().any(|m| {
            matches!(m, Msg::Collect { coord, .. } | Msg::Collected { coord, .. } if *coord == c)
        });
        if self.waits(pending) {
            return;
        }
        let (node, term, generation) = (
            self.coords[c].node,
            self.coords[c].term,
            self.coords[c].generation,
        );
        let answers = std::mem::take(&mut self.coords[c].answers);
        let me = (name(node), generation);
        let heard = conclude_collect(&self.holders[node], (&me.0, me.1), term, answers, NODES);
        if self.trace {
            eprintln!("conclude collection of coord {c} (term {term}): {heard:?}");
        }
        match heard {
            Some(_) => {
                self.coords[c].ready = true;
                let map = self.holders[node].get().expect("a collected map");
                self.check(&map, "a collection", |c| c.0 < term);
            }
            None => self.coords[c].over = true,
        }
    }

    /// A ready coordinator changes its map and pushes the change to every other node.
    fn change(&mut self) {
        if self.changes >= 200 {
            return;
        }
        let Some(c) = self.pick_coord(true) else {
            return;
        };
        let (node, term) = (self.coords[c].node, self.coords[c].term);
        let Ok(mut map) = changeable_map(&self.holders[node], term) else {
            return;
        };
        let change = format!("c{}", self.changes);
        self.changes += 1;
        map.decisions.push((change.clone(), true));
        stamp(&self.holders[node], &mut map, term);
        let commit = self.commits.len();
        if self.trace {
            eprintln!(
                "change {change} by coord {c} on {} at ({}, {})",
                name(node),
                map.term,
                map.version
            );
        }
        self.commits.push(Commit {
            coord: c,
            map,
            change,
            holders: BTreeSet::new(),
            done: false,
        });
        for to in (0..NODES).filter(|t| *t != node) {
            self.in_flight.push(Msg::Push { commit, to });
        }
    }

    fn conclude_commit(&mut self) {
        let open: Vec<usize> = (0..self.commits.len())
            .filter(|c| !self.commits[*c].done)
            .collect();
        if open.is_empty() {
            return;
        }
        let i = open[self.rng.gen_range(0..open.len())];
        let pending = self.in_flight.iter().any(
            |m| matches!(m, Msg::Push { commit, .. } | Msg::Pushed { commit, .. } if *commit == i),
        );
        if self.waits(pending) {
            return;
        }
        self.commits[i].done = true;
        let c = &self.commits[i];
        let node = self.coords[c.coord].node;
        if self.coords[c.coord].over {
            return; // its node was wiped: nobody is left to conclude it
        }
        let ok = committed(&self.holders[node], &name(node), &c.map, c.holders.clone());
        if self.trace {
            eprintln!(
                "conclude commit {i} of {} at ({}, {}): holders {:?} -> {ok}",
                c.change, c.map.term, c.map.version, c.holders
            );
        }
        if ok {
            let (map, change) = (c.map.clone(), c.change.clone());
            let at = (map.term, map.version);
            self.check(&map, "a commit", |c| c < at);
            self.committed.push((change, (map.term, map.version)));
        }
    }

    /// A ready coordinator collects a node again (a restarted or silent member).
    fn collect_newcomer(&mut self) {
        let Some(coord) = self.pick_coord(true) else {
            return;
        };
        let to = self.rng.gen_range(0..NODES);
        if to != self.coords[coord].node {
            self.in_flight.push(Msg::Collect { coord, to });
        }
    }

    /// A node restarts with an empty data directory (while a majority remembers); a coordinator
    /// on it is gone.
    fn wipe(&mut self) {
        let n = self.rng.gen_range(0..NODES);
        // A majority that lost its disks has lost the cluster's state: the protocol assumes a
        // majority remembers (Losing more needs the operator).
        let forgot = (0..NODES)
            .filter(|m| *m == n || self.holders[*m].forgot())
            .count();
        if forgot * 2 > NODES {
            return;
        }
        if self.trace {
            eprintln!("wipe {}", name(n));
        }
        self.holders[n] = self.fresh_holder(n);
        for c in self.coords.iter_mut().filter(|c| c.node == n) {
            c.over = true;
        }
    }

    /// Every committed change whose map's (term, version) passes `before` is in `map`.
    fn check(&self, map: &ShardMap, what: &str, before: impl Fn((u64, u64)) -> bool) {
        let held: BTreeSet<&str> = map.decisions.iter().map(|(id, _)| id.as_str()).collect();
        let missing: Vec<&String> = self
            .committed
            .iter()
            .filter(|(_, at)| before(*at))
            .map(|(c, _)| c)
            .filter(|c| !held.contains(c.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{what} at term {} version {} misses committed changes {missing:?} (committed so far: {:?})",
            map.term,
            map.version,
            self.committed
        );
    }
}

/// One run of `steps` steps from `seed`; returns how many changes were committed.
fn run(seed: u64, steps: usize) -> usize {
    let mut w = World::new(seed);
    for _ in 0..steps {
        w.step();
    }
    w.committed.len()
}

#[test]
fn committed_map_changes_survive_coordinator_changes_loss_reordering_and_wipes() {
    let seeds: u64 = std::env::var("TORUA_MAP_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let first: u64 = std::env::var("TORUA_MAP_MODEL_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut total = 0;
    for seed in first..first + seeds {
        let outcome = std::panic::catch_unwind(|| run(seed, 400));
        if outcome.is_err() {
            eprintln!("failing seed: {seed}");
        }
        match outcome {
            Ok(n) => total += n,
            Err(e) => std::panic::resume_unwind(Box::new(format!(
                "seed {seed} (TORUA_MAP_MODEL_FIRST_SEED={seed} TORUA_MAP_MODEL_SEEDS=1 replays it): {}",
                e.downcast_ref::<String>().cloned().unwrap_or_default()
            ))),
        }
    }
    eprintln!("map model: {total} changes committed in {seeds} runs");
    // The runs must exercise the protocol, not just refuse everything.
    assert!(
        total as u64 > seeds * 2,
        "only {total} changes committed in {seeds} runs: the simulation does not exercise commits"
    );
}

/// Without the promise (a member installing any newer push), the simulation finds a committed
/// change lost: the check is not vacuous.
#[test]
fn without_promises_a_committed_change_is_lost() {
    let lost = (0..2000u64).any(|seed| {
        std::panic::catch_unwind(|| {
            let mut w = World::new(seed);
            w.forget_promises = true;
            for _ in 0..400 {
                w.step();
            }
        })
        .is_err()
    });
    assert!(lost, "no seed lost a committed change without promises");
}
