//! A node's side of a graph algorithm task: the messages a driver and the other workers send it
//! ([`AlgoRequest`]), and the parts it holds for each task (one per shard it was given). A part
//! is read from this node's in-sync copy of its shard when the task loads; values between parts
//! travel directly between the workers; the driver only orders the supersteps.
//!
//! Memory is bounded: all tasks on a node together hold at most [`MAX_NODE_EDGES`] edges, and a
//! task nobody has touched for [`IDLE_FOR`] (its driver died) is dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::part::{Part, StepReport, Values};
use super::Algorithm;
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::node::wire::Serve;
use crate::peer;
use crate::query::scatter::join_in_order;

/// Edges all algorithm tasks on one node may hold together (about 4 bytes each, plus the
/// vertices' values).
pub const MAX_NODE_EDGES: usize = 40_000_000;
/// A task idle this long on a worker (no step, no message) is dropped: its driver is gone.
pub const IDLE_FOR: Duration = Duration::from_secs(300);
/// The longest wait for another worker to take a channel or a step's values.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Shards a worker reads at once when a task loads.
const LOAD_AT_ONCE: usize = 2;
/// Entities per logged write of results.
const WRITE_PIECE: usize = 50_000;
/// Values per message: a channel's values are sent in pieces of at most this many.
const VALUES_PER_MESSAGE: usize = 500_000;
/// Bytes of channel ids per message (well under the transport's 16 MiB).
const ID_BYTES_PER_MESSAGE: usize = 4 * 1024 * 1024;

/// A message of a graph algorithm task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AlgoRequest {
    /// Read `shards` (of `shard_count`) from this node's in-sync copies into parts for `task`.
    Load {
        task: String,
        algorithm: Algorithm,
        shards: Vec<u32>,
        shard_count: u32,
    },
    /// Send each part's channel ids to the node that works on the far shard (`workers`).
    Connect {
        task: String,
        workers: Vec<(u32, String)>,
    },
    /// The ids of the channel from shard `from` to shard `to`, in slot order (answered for
    /// peers that send one message per channel; this node sends [`AlgoRequest::Channels`]).
    Channel {
        task: String,
        from: u32,
        to: u32,
        ids: Vec<String>,
    },
    /// Superstep `step` over a graph of `total` vertices, on every part of `task` here.
    Step { task: String, step: u32, total: u64 },
    /// What shard `from` sends shard `to` in superstep `step` (answered for peers that send
    /// one message per pair of shards; this node sends [`AlgoRequest::Batch`]).
    Values {
        task: String,
        step: u32,
        from: u32,
        to: u32,
        values: Values,
    },
    /// The `k` highest values over this node's parts, highest first.
    Top { task: String, k: u32 },
    /// How many vertices each component label has here.
    Sizes { task: String },
    /// For each label: its name when a part here owns the vertex it names, and up to `max` of
    /// its members here.
    Members {
        task: String,
        labels: Vec<u64>,
        max: u32,
    },
    /// Write the parts' results back to their shards as entity properties (`names`: the name
    /// of every component or community label).
    Write {
        task: String,
        /// The write-back's name (`publish::write_id`), under which the results are staged.
        write: String,
        timeout_ms: u64,
        names: Vec<(u64, String)>,
    },
    /// Forget the task.
    Drop { task: String },
    /// The state of a task this node drives, as JSON (`super::task::TaskView`), once it ended
    /// or after `wait_ms` (at most a minute).
    Status { id: String, wait_ms: u64 },
    /// Cancels a task this node drives.
    Cancel { id: String },
    /// A step of Louvain's first level on every part of `task` here.
    Louvain { task: String, op: LouvainOp },
    /// What shards of one node send shards of this node in step `step`: `(from, to, values)`,
    /// in one message (a step costs a request per pair of nodes, not per pair of shards).
    Batch {
        task: String,
        step: u32,
        values: Vec<(u32, u32, Values)>,
    },
    /// Pieces of the channels from shards of one node to shards of this node, in one message:
    /// `(from, to, first slot, ids)`.
    Channels {
        task: String,
        pieces: Vec<(u32, u32, u32, Vec<String>)>,
    },
}

/// Louvain's steps on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LouvainOp {
    /// Send each vertex's community to the shards with edges to it; answer the communities'
    /// degrees here.
    Publish,
    /// Move this round's half of the vertices, given every community's degree and their sum.
    Move {
        round: u32,
        totals: Vec<(u64, f64)>,
        m2: f64,
    },
    /// Answer the edges between communities here.
    Contract,
    /// Rename communities (first level → final).
    Relabel(Vec<(u64, u64)>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AlgoResponse {
    Loaded {
        vertices: u64,
        edges: u64,
    },
    Done,
    Stepped(StepReport),
    Top(Vec<(String, f64)>),
    Sizes(Vec<(u64, u64)>),
    /// `(label, name, members)`.
    Members(Vec<(u64, Option<String>, Vec<String>)>),
    Written {
        entities: u64,
    },
    Status {
        view_json: String,
    },
    Totals {
        totals: Vec<(u64, f64)>,
        m2: f64,
    },
    Moved {
        moves: u64,
    },
    Contracted(Vec<(u64, u64, f64)>),
}

/// One task's parts on this node.
struct WorkerTask {
    parts: BTreeMap<u32, Part>,
    /// The node working on each shard of the task.
    workers: HashMap<u32, String>,
    edges: usize,
    touched: Instant,
}

/// The tasks this node works on.
#[derive(Default)]
pub struct Workers {
    tasks: Mutex<HashMap<String, Arc<Mutex<WorkerTask>>>>,
}

impl Workers {
    fn get(&self, task: &str) -> Result<Arc<Mutex<WorkerTask>>, Error> {
        let tasks = self.tasks.lock().expect("workers lock");
        let t = tasks.get(task).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "this node holds nothing of algorithm task {task} (it ended, was dropped after \
                 {} s idle, or this node restarted)",
                IDLE_FOR.as_secs()
            ))
        })?;
        t.lock().expect("task lock").touched = Instant::now();
        Ok(t)
    }

    /// Drops the tasks idle for [`IDLE_FOR`]: their drivers are gone.
    fn drop_idle(&self) {
        let mut tasks = self.tasks.lock().expect("workers lock");
        tasks.retain(|id, t| {
            let idle = t.lock().expect("task lock").touched.elapsed() > IDLE_FOR;
            if idle {
                tracing::warn!(task = %id, "dropping an idle graph algorithm task: its driver is gone");
            }
            !idle
        });
    }

    /// Edges held by every task here, after dropping the idle ones.
    fn held_edges(&self) -> usize {
        self.drop_idle();
        let tasks = self.tasks.lock().expect("workers lock");
        tasks
            .values()
            .map(|t| t.lock().expect("task lock").edges)
            .sum()
    }

    /// Tasks held here (for metrics and tests).
    pub fn count(&self) -> usize {
        self.tasks.lock().expect("workers lock").len()
    }
}

fn with_task<T>(
    ctx: &NodeContext,
    task: &str,
    f: impl FnOnce(&mut WorkerTask) -> Result<T, Error>,
) -> Result<T, Error> {
    let t = ctx.algorithms.workers.get(task)?;
    let mut t = t.lock().expect("task lock");
    f(&mut t)
}

impl Serve for AlgoRequest {
    type Reply = AlgoResponse;

    async fn serve(self, ctx: &Arc<NodeContext>, _from: &str) -> Result<AlgoResponse, Error> {
        match self {
            AlgoRequest::Load {
                task,
                algorithm,
                shards,
                shard_count,
            } => load(ctx, task, algorithm, shards, shard_count).await,
            AlgoRequest::Connect { task, workers } => connect(ctx, &task, workers).await,
            AlgoRequest::Channel {
                task,
                from,
                to,
                ids,
            } => with_task(ctx, &task, |t| {
                part_of(t, to)?.connect(from, &ids);
                Ok(AlgoResponse::Done)
            }),
            AlgoRequest::Step { task, step, total } => superstep(ctx, &task, step, total).await,
            AlgoRequest::Values {
                task,
                step,
                from,
                to,
                values,
            } => with_task(ctx, &task, |t| {
                part_of(t, to)?.receive(from, step, &values)?;
                Ok(AlgoResponse::Done)
            }),
            AlgoRequest::Top { task, k } => with_task(ctx, &task, |t| {
                let mut all: Vec<(&str, f64)> = t.parts.values().flat_map(Part::values).collect();
                keep_top(&mut all, k as usize);
                let top = all.into_iter().map(|(id, v)| (id.to_string(), v));
                Ok(AlgoResponse::Top(top.collect()))
            }),
            AlgoRequest::Sizes { task } => with_task(ctx, &task, |t| {
                let mut sizes: HashMap<u64, u64> = HashMap::new();
                for part in t.parts.values() {
                    for (_, label) in part.values() {
                        *sizes.entry(label as u64).or_default() += 1;
                    }
                }
                Ok(AlgoResponse::Sizes(sizes.into_iter().collect()))
            }),
            AlgoRequest::Members { task, labels, max } => with_task(ctx, &task, |t| {
                Ok(AlgoResponse::Members(members(t, &labels, max as usize)))
            }),
            AlgoRequest::Write {
                task,
                write: name,
                timeout_ms,
                names,
            } => write(ctx, &task, &name, timeout_ms, names).await,
            AlgoRequest::Drop { task } => {
                ctx.algorithms
                    .workers
                    .tasks
                    .lock()
                    .expect("workers lock")
                    .remove(&task);
                Ok(AlgoResponse::Done)
            }
            AlgoRequest::Status { id, wait_ms } => {
                let wait = Duration::from_millis(wait_ms).min(super::task::MAX_WAIT);
                let view = super::task::wait(ctx, &id, wait).await?;
                Ok(AlgoResponse::Status {
                    view_json: serde_json::to_string(&view)
                        .map_err(|e| Error::Internal(e.to_string()))?,
                })
            }
            AlgoRequest::Cancel { id } => {
                ctx.algorithms.tasks.cancel(&id)?;
                Ok(AlgoResponse::Done)
            }
            AlgoRequest::Louvain { task, op } => louvain(ctx, &task, op).await,
            AlgoRequest::Channels { task, pieces } => with_task(ctx, &task, |t| {
                for (from, to, start, ids) in &pieces {
                    part_of(t, *to)?.connect_piece(*from, *start as usize, ids);
                }
                Ok(AlgoResponse::Done)
            }),
            AlgoRequest::Batch { task, step, values } => with_task(ctx, &task, |t| {
                for (from, to, values) in &values {
                    part_of(t, *to)?.receive(*from, step, values)?;
                }
                Ok(AlgoResponse::Done)
            }),
        }
    }
}

fn part_of(t: &mut WorkerTask, shard: u32) -> Result<&mut Part, Error> {
    t.parts.get_mut(&shard).ok_or_else(|| {
        Error::Invalid(format!(
            "this node does not work on shard {shard} in this task"
        ))
    })
}

/// Keeps the `k` highest values of `all` (ties: smaller id first), highest first.
pub fn keep_top<S: Ord>(all: &mut Vec<(S, f64)>, k: usize) {
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(k);
}

async fn load(
    ctx: &Arc<NodeContext>,
    task: String,
    algorithm: Algorithm,
    shards: Vec<u32>,
    shard_count: u32,
) -> Result<AlgoResponse, Error> {
    let mut parts = BTreeMap::new();
    let mut edges = 0usize;
    // Two shards at a time: a node has two cores to read and build with.
    for pair in shards.chunks(LOAD_AT_ONCE) {
        let reads = pair.iter().map(|&shard| {
            let ctx = ctx.clone();
            async move {
                ctx.holds_copy(shard)?;
                let copy = ctx.storage.open(shard).await?;
                copy.graph_part()
                    .await
                    .map_err(|e| Error::from(e).context(format!("reading shard {shard}")))
            }
        });
        let graphs = join_in_order(reads).await;
        if graphs.len() != pair.len() {
            return Err(Error::Internal("reading a shard's graph panicked".into()));
        }
        for (&shard, graph) in pair.iter().zip(graphs) {
            let graph = graph?;
            let budget = MAX_NODE_EDGES.saturating_sub(ctx.algorithms.workers.held_edges() + edges);
            let algorithm = algorithm.clone();
            let part = tokio::task::spawn_blocking(move || {
                Part::build(shard, shard_count, &algorithm, graph, budget)
            })
            .await
            .map_err(|e| Error::Internal(format!("building shard {shard}'s part failed: {e}")))??;
            edges += part.edges();
            parts.insert(shard, part);
        }
    }
    let vertices = parts.values().map(|p| p.vertices() as u64).sum();
    ctx.algorithms
        .workers
        .tasks
        .lock()
        .expect("workers lock")
        .insert(
            task,
            Arc::new(Mutex::new(WorkerTask {
                parts,
                workers: HashMap::new(),
                edges,
                touched: Instant::now(),
            })),
        );
    Ok(AlgoResponse::Loaded {
        vertices,
        edges: edges as u64,
    })
}

/// Sends every channel's ids to the worker of its far shard.
async fn connect(
    ctx: &Arc<NodeContext>,
    task: &str,
    workers: Vec<(u32, String)>,
) -> Result<AlgoResponse, Error> {
    let workers: HashMap<u32, String> = workers.into_iter().collect();
    let workers = &workers;
    let channels = with_task(ctx, task, |t| {
        Ok(t.parts
            .iter_mut()
            .flat_map(|(from, p)| {
                p.take_channels()
                    .into_iter()
                    .map(move |(to, ids)| (*from, to, ids))
            })
            .collect::<Vec<_>>())
    })?;
    let mut pieces = Vec::new();
    for (from, to, ids) in channels {
        let node = (workers.get(&to).cloned())
            .ok_or_else(|| Error::Internal(format!("no worker named for shard {to}")))?;
        for (start, ids, bytes) in id_pieces(ids) {
            pieces.push((node.clone(), (from, to, start, ids), bytes));
        }
    }
    let sends = pack(pieces, ID_BYTES_PER_MESSAGE)
        .into_iter()
        .map(|(node, pieces)| {
            let request = AlgoRequest::Channels {
                task: task.to_string(),
                pieces,
            };
            send_to(ctx, node, request)
        });
    all_sent(sends).await?;
    with_task(ctx, task, |t| {
        t.workers = workers.clone();
        Ok(AlgoResponse::Done)
    })
}

async fn superstep(
    ctx: &Arc<NodeContext>,
    task: &str,
    step: u32,
    total: u64,
) -> Result<AlgoResponse, Error> {
    let t = ctx.algorithms.workers.get(task)?;
    let work = tokio::task::spawn_blocking(move || {
        let mut t = t.lock().expect("task lock");
        let t = &mut *t;
        let mut report = StepReport::default();
        let mut sends = Vec::new();
        for part in t.parts.values_mut() {
            let (r, messages) = part.step(step, total);
            report.delta += r.delta;
            report.changed += r.changed;
            for (to, values) in messages {
                let node = t.workers.get(&to).cloned();
                sends.push((part.shard, to, node, values));
            }
        }
        (report, sends)
    });
    let (report, sends) = work
        .await
        .map_err(|e| Error::Internal(format!("superstep {step} failed: {e}")))?;
    // Every value is delivered before this step reports done: the driver's barrier.
    deliver(ctx, task, step, sends).await?;
    Ok(AlgoResponse::Stepped(report))
}

/// Sends each `(from, to, worker of to, values)` of step `step`: one message per worker (more
/// when they would pass [`VALUES_PER_MESSAGE`]); returns once all were taken.
async fn deliver(
    ctx: &Arc<NodeContext>,
    task: &str,
    step: u32,
    sends: Vec<(u32, u32, Option<String>, Values)>,
) -> Result<(), Error> {
    let mut items = Vec::new();
    for (from, to, node, values) in sends {
        let node =
            node.ok_or_else(|| Error::Internal(format!("no worker named for shard {to}")))?;
        for piece in pieces(values) {
            let len = piece.len();
            items.push((node.clone(), (from, to, piece), len));
        }
    }
    let sends = pack(items, VALUES_PER_MESSAGE)
        .into_iter()
        .map(|(node, values)| {
            let request = AlgoRequest::Batch {
                task: task.to_string(),
                step,
                values,
            };
            send_to(ctx, node, request)
        });
    all_sent(sends).await
}

async fn louvain(ctx: &Arc<NodeContext>, task: &str, op: LouvainOp) -> Result<AlgoResponse, Error> {
    match op {
        LouvainOp::Publish => {
            let (sends, totals, m2) = with_task(ctx, task, |t| {
                let mut sends = Vec::new();
                let mut totals: HashMap<u64, f64> = HashMap::new();
                let mut m2 = 0.0;
                for part in t.parts.values() {
                    for (to, values) in part.publish() {
                        sends.push((part.shard, to, t.workers.get(&to).cloned(), values));
                    }
                    let (part_totals, part_m2) = part.totals();
                    for (c, k) in part_totals {
                        *totals.entry(c).or_default() += k;
                    }
                    m2 += part_m2;
                }
                Ok((sends, totals, m2))
            })?;
            deliver(ctx, task, 0, sends).await?;
            Ok(AlgoResponse::Totals {
                totals: totals.into_iter().collect(),
                m2,
            })
        }
        LouvainOp::Move { round, totals, m2 } => {
            let t = ctx.algorithms.workers.get(task)?;
            let moves = tokio::task::spawn_blocking(move || {
                let totals: HashMap<u64, f64> = totals.into_iter().collect();
                let mut t = t.lock().expect("task lock");
                t.parts
                    .values_mut()
                    .map(|p| p.moves(round, &totals, m2))
                    .sum()
            })
            .await
            .map_err(|e| Error::Internal(format!("louvain round {round} failed: {e}")))?;
            Ok(AlgoResponse::Moved { moves })
        }
        LouvainOp::Contract => with_task(ctx, task, |t| {
            let mut sums: HashMap<(u64, u64), f64> = HashMap::new();
            for part in t.parts.values() {
                for (a, b, w) in part.contracted() {
                    *sums.entry((a, b)).or_default() += w;
                }
            }
            Ok(AlgoResponse::Contracted(
                sums.into_iter().map(|((a, b), w)| (a, b, w)).collect(),
            ))
        }),
        LouvainOp::Relabel(map) => with_task(ctx, task, |t| {
            let map: HashMap<u64, u64> = map.into_iter().collect();
            for part in t.parts.values_mut() {
                part.relabel(&map);
            }
            Ok(AlgoResponse::Done)
        }),
    }
}

/// Drops idle tasks every minute until `stop` (a node's background duty).
pub async fn drop_idle(ctx: Arc<NodeContext>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        ctx.algorithms.workers.drop_idle();
    }
}

/// Sends `request` to worker `node`.
fn send_to(
    ctx: &Arc<NodeContext>,
    node: String,
    request: AlgoRequest,
) -> impl std::future::Future<Output = Result<AlgoResponse, Error>> + Send + 'static {
    let ctx = ctx.clone();
    async move {
        peer::call(&ctx, &node, request, SEND_TIMEOUT)
            .await
            .map_err(|e| e.context(format!("sending to worker {node}")))
    }
}

/// Waits for every send; the first failure is the answer.
async fn all_sent<F>(sends: impl IntoIterator<Item = F>) -> Result<(), Error>
where
    F: std::future::Future<Output = Result<AlgoResponse, Error>> + Send + 'static,
{
    let sends: Vec<F> = sends.into_iter().collect();
    let n = sends.len();
    let answers = join_in_order(sends).await;
    if answers.len() != n {
        return Err(Error::Internal("a send to a worker panicked".into()));
    }
    answers.into_iter().try_for_each(|a| a.map(|_| ()))
}

/// `values` cut into messages of at most [`VALUES_PER_MESSAGE`] entries, within the transport's
/// message limit: long dense sums travel as `(slot, sum)` pairs, zeros left out.
/// Cuts `items` (each with its weight), in order, into runs of at most `cap` weight each (an
/// item heavier than `cap` alone).
fn runs<T>(items: impl IntoIterator<Item = (T, usize)>, cap: usize) -> Vec<Vec<T>> {
    let mut out: Vec<(Vec<T>, usize)> = Vec::new();
    for (item, weight) in items {
        match out.last_mut() {
            Some((run, held)) if *held + weight <= cap => {
                run.push(item);
                *held += weight;
            }
            _ => out.push((vec![item], weight)),
        }
    }
    out.into_iter().map(|(run, _)| run).collect()
}

/// Packs `(worker, item, weight)` into messages per worker of at most `cap` weight each.
fn pack<T>(items: Vec<(String, T, usize)>, cap: usize) -> Vec<(String, Vec<T>)> {
    let mut by_node: BTreeMap<String, Vec<(T, usize)>> = BTreeMap::new();
    for (node, item, weight) in items {
        by_node.entry(node).or_default().push((item, weight));
    }
    (by_node.into_iter())
        .flat_map(|(node, items)| runs(items, cap).into_iter().map(move |m| (node.clone(), m)))
        .collect()
}

/// A channel's ids in pieces of at most [`ID_BYTES_PER_MESSAGE`]: each piece's first slot, ids
/// and bytes.
fn id_pieces(ids: Vec<String>) -> Vec<(u32, Vec<String>, usize)> {
    let weighed = ids.into_iter().enumerate().map(|(slot, id)| {
        let bytes = id.len() + 8;
        ((slot as u32, id, bytes), bytes)
    });
    runs(weighed, ID_BYTES_PER_MESSAGE)
        .into_iter()
        .map(|piece| {
            let start = piece[0].0;
            let bytes = piece.iter().map(|(_, _, b)| b).sum();
            (
                start,
                piece.into_iter().map(|(_, id, _)| id).collect(),
                bytes,
            )
        })
        .collect()
}

fn pieces(values: Values) -> Vec<Values> {
    match values {
        Values::Sums(sums) if sums.len() > VALUES_PER_MESSAGE => {
            let pairs: Vec<(u32, f64)> = sums
                .into_iter()
                .enumerate()
                .filter(|(_, v)| *v != 0.0)
                .map(|(i, v)| (i as u32, v))
                .collect();
            pairs
                .chunks(VALUES_PER_MESSAGE)
                .map(|c| Values::SparseSums(c.to_vec()))
                .collect()
        }
        Values::Labels(labels) if labels.len() > VALUES_PER_MESSAGE => labels
            .chunks(VALUES_PER_MESSAGE)
            .map(|c| Values::Labels(c.to_vec()))
            .collect(),
        other => vec![other],
    }
}

fn members(t: &WorkerTask, labels: &[u64], max: usize) -> Vec<(u64, Option<String>, Vec<String>)> {
    let wanted: HashMap<u64, usize> = labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let mut out: Vec<(u64, Option<String>, Vec<String>)> =
        labels.iter().map(|l| (*l, None, Vec::new())).collect();
    for part in t.parts.values() {
        for (label, i) in &wanted {
            if let Some(name) = part.name_of(*label) {
                out[*i].1 = Some(name.to_string());
            }
        }
        for (id, label) in part.values() {
            if let Some(i) = wanted.get(&(label as u64)) {
                if out[*i].2.len() < max {
                    out[*i].2.push(id.to_string());
                }
            }
        }
    }
    out
}

/// Stages each part's results in its shard under `write`, through the replicated write path
/// (`super::publish` decides whether they are published).
async fn write(
    ctx: &Arc<NodeContext>,
    task: &str,
    write: &str,
    timeout_ms: u64,
    names: Vec<(u64, String)>,
) -> Result<AlgoResponse, Error> {
    let names: HashMap<u64, String> = names.into_iter().collect();
    let writes = with_task(ctx, task, |t| {
        Ok(t.parts
            .values()
            .map(|p| (p.shard, p.properties(&names)))
            .collect::<Vec<_>>())
    })?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut entities = 0u64;
    for (shard, (property, values)) in writes {
        entities += values.len() as u64;
        for piece in values.chunks(WRITE_PIECE) {
            let op = crate::storage::WriteOp::Stage {
                write: write.to_string(),
                property,
                values: piece.to_vec(),
            };
            crate::replication::write::route_write(ctx, shard, &op, deadline)
                .await
                .map_err(|e| e.context(format!("staging shard {shard}'s results")))?;
        }
    }
    Ok(AlgoResponse::Written { entities })
}
