//! Running a graph algorithm as a task: the driver (the node the request came to) and the
//! registry of the tasks it drives, which `GET /tasks/{id}` reads and cancellation marks.
//!
//! The driver picks one live in-sync copy of every shard (spreading the shards over their
//! nodes), has each chosen node load its parts, connects the parts' channels, then runs
//! supersteps: each is one request to every worker, and a worker answers only once its values
//! reached the other workers, so the next step starts with every message delivered. A failed
//! request (a node lost mid-run) fails the task with the node's error; nothing is written before
//! every superstep finished, and the workers' state is dropped either way. Results are written
//! back all or nothing ([`super::publish`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::part::StepReport;
use super::worker::{keep_top, AlgoRequest, AlgoResponse, LouvainOp};
use super::{publish, Algorithm, Next};
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::peer;
use crate::query::scatter::join_in_order;

/// Longest wait for a task to end that a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Tasks one node may drive at once.
pub const MAX_RUNNING: usize = 2;
/// Finished tasks kept for `GET /tasks/{id}`.
const KEEP_FINISHED: usize = 100;
/// Longest wait for a worker to load its parts.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for a worker's superstep (its values delivered) or answer.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Most results and component members an answer carries.
pub const MAX_TOP: u32 = 100_000;

/// What a caller asks: the algorithm, how many results to return, whether to write them back.
#[derive(Debug, Clone, PartialEq)]
pub struct AlgorithmRequest {
    pub algorithm: Algorithm,
    /// Results returned: the highest values (PageRank, degree) or the largest components.
    pub top_k: u32,
    /// Components: also list up to `top_k` members of each component returned.
    pub members: bool,
    /// Write the results back as entity properties (`pagerank`, `component`, `community`,
    /// `degree`).
    pub write: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// Where a run is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// loading, connecting, superstep, gathering, writing (results staged in every shard),
    /// publishing (decided, made visible shard by shard), done.
    pub phase: String,
    /// Supersteps run so far.
    pub supersteps: u32,
    pub vertices: u64,
    pub edges: u64,
    /// Nodes working on the task.
    pub workers: u32,
    /// PageRank: the sum of rank changes in the last superstep.
    pub delta: Option<f64>,
    /// Components: vertices whose label changed in the last superstep.
    pub changed: Option<u64>,
}

/// An entity and its value (rank or degree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Scored {
    pub id: String,
    pub value: f64,
}

/// A weakly connected component: named by one of its entities (the same on every run over the
/// same data), with its size and, when asked, members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Component {
    pub component: String,
    pub size: u64,
    pub members: Option<Vec<String>>,
}

/// A finished run's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskResult {
    /// PageRank and degree: the `top_k` highest values, highest first (ties by id).
    pub top: Option<Vec<Scored>>,
    /// Components: how many there are, and the `top_k` largest (ties by name).
    pub components: Option<u64>,
    pub largest: Option<Vec<Component>>,
    /// PageRank: whether it stopped on `tolerance` before `iterations`.
    pub converged: Option<bool>,
    /// Entities whose property was written (with `write`).
    pub written: Option<u64>,
    /// Louvain: the modularity of the communities found.
    pub modularity: Option<f64>,
}

/// A task as `GET /tasks/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    /// `<node>:<number>`: the node that drives it.
    pub id: String,
    pub algorithm: String,
    pub state: TaskState,
    pub started_at_ms: u64,
    pub running_ms: u64,
    pub cancel_requested: bool,
    pub progress: Progress,
    pub result: Option<TaskResult>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One task this node drives.
pub struct Task {
    id: String,
    algorithm: &'static str,
    started_at_ms: u64,
    started: Instant,
    cancel: AtomicBool,
    run: Mutex<Run>,
    /// Turns true when the task ends (what waiting requests watch).
    ended: tokio::sync::watch::Sender<bool>,
}

/// What changes as a task runs.
#[derive(Clone)]
struct Run {
    state: TaskState,
    progress: Progress,
    result: Option<TaskResult>,
    error: Option<String>,
    /// How long it ran, once it ended.
    ran_ms: Option<u64>,
}

impl Task {
    fn view(&self) -> TaskView {
        let Run {
            state,
            progress,
            result,
            error,
            ran_ms,
        } = self.run.lock().expect("task state lock").clone();
        TaskView {
            id: self.id.clone(),
            algorithm: self.algorithm.to_string(),
            state,
            started_at_ms: self.started_at_ms,
            running_ms: ran_ms.unwrap_or(self.started.elapsed().as_millis() as u64),
            cancel_requested: self.cancel.load(Ordering::SeqCst),
            progress,
            result,
            error,
        }
    }

    fn progress(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.run.lock().expect("task state lock").progress);
    }

    fn cancelled(&self) -> Result<(), Error> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("cancelled".into()));
        }
        Ok(())
    }

    fn finish(&self, outcome: Result<TaskResult, Error>) {
        let mut run = self.run.lock().expect("task state lock");
        run.ran_ms = Some(self.started.elapsed().as_millis() as u64);
        run.progress.phase = "done".into();
        match outcome {
            Ok(result) => {
                run.state = TaskState::Completed;
                run.result = Some(result);
            }
            Err(_) if self.cancel.load(Ordering::SeqCst) => run.state = TaskState::Cancelled,
            Err(e) => {
                run.state = TaskState::Failed;
                run.error = Some(e.to_string());
            }
        }
        drop(run);
        self.ended.send_replace(true);
    }

    pub fn is_running(&self) -> bool {
        self.run.lock().expect("task state lock").state == TaskState::Running
    }
}

/// The tasks this node drives.
#[derive(Default)]
pub struct Tasks {
    next: AtomicU64,
    tasks: Mutex<BTreeMap<u64, Arc<Task>>>,
}

impl Tasks {
    fn find(&self, id: &str) -> Result<Arc<Task>, Error> {
        let tasks = self.tasks.lock().expect("tasks lock");
        tasks.values().find(|t| t.id == id).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "no task {id} on its node (only the last {KEEP_FINISHED} finished tasks are \
                     kept, and none survive a restart)"
            ))
        })
    }

    pub fn view(&self, id: &str) -> Result<TaskView, Error> {
        Ok(self.find(id)?.view())
    }

    /// Every task kept here, newest first.
    pub fn list(&self) -> Vec<TaskView> {
        let tasks = self.tasks.lock().expect("tasks lock");
        tasks.values().rev().map(|t| t.view()).collect()
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        let tasks = self.tasks.lock().expect("tasks lock");
        tasks.values().filter(|t| t.is_running()).count()
    }

    pub fn cancel(&self, id: &str) -> Result<(), Error> {
        self.find(id)?.cancel.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn start(&self, node: &str, algorithm: &'static str) -> Result<Arc<Task>, Error> {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        let running = tasks.values().filter(|t| t.is_running()).count();
        if running >= MAX_RUNNING {
            return Err(Error::Busy(format!(
                "this node already drives {running} graph algorithm tasks (at most {MAX_RUNNING}); \
                 wait for one to end, or send the request to another node"
            )));
        }
        let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let task = Arc::new(Task {
            id: format!("{node}:{n}"),
            algorithm,
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            started: Instant::now(),
            cancel: AtomicBool::new(false),
            run: Mutex::new(Run {
                state: TaskState::Running,
                progress: Progress {
                    phase: "loading".into(),
                    ..Progress::default()
                },
                result: None,
                error: None,
                ran_ms: None,
            }),
            ended: tokio::sync::watch::Sender::new(false),
        });
        tasks.insert(n, task.clone());
        let finished: Vec<u64> = tasks
            .iter()
            .filter(|(_, t)| !t.is_running())
            .map(|(n, _)| *n)
            .collect();
        for n in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            tasks.remove(n);
        }
        Ok(task)
    }
}

/// The node `id` (`<node>:<n>`) names as its driver.
pub fn driver_of(id: &str) -> Result<&str, Error> {
    match id.rsplit_once(':') {
        Some((node, n)) if !node.is_empty() && n.parse::<u64>().is_ok() => Ok(node),
        _ => Err(Error::Invalid(format!(
            "{id:?} is not a task id (<node>:<number>, as POST /graph/algorithms answered)"
        ))),
    }
}

/// The driver `id` names, when this node's membership view knows it.
fn known_driver<'a>(ctx: &NodeContext, id: &'a str) -> Result<&'a str, Error> {
    let node = driver_of(id)?;
    if node != ctx.node_id().as_str() && ctx.cluster.view().member_by_str(node).is_none() {
        return Err(Error::NotFound(format!(
            "no task {id}: no node {node} in this cluster"
        )));
    }
    Ok(node)
}

/// Starts `request` as a task driven by this node; returns at once with its view.
pub fn start(ctx: &Arc<NodeContext>, request: AlgorithmRequest) -> Result<TaskView, Error> {
    if request.write {
        ctx.quorum()?;
    }
    let task = ctx
        .algorithms
        .tasks
        .start(ctx.node_id().as_str(), request.algorithm.name())?;
    let view = task.view();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let outcome = drive(&ctx, &task, &request).await;
        if let Err(e) = &outcome {
            tracing::warn!(task = %task.id, "graph algorithm task ended without a result: {e}");
        }
        task.finish(outcome);
    });
    Ok(view)
}

/// The task's view once it ends, or as it is after `wait`.
pub async fn wait(ctx: &Arc<NodeContext>, id: &str, wait: Duration) -> Result<TaskView, Error> {
    let task = ctx.algorithms.tasks.find(id)?;
    let mut ended = task.ended.subscribe();
    // Past `wait` the task is shown as it is (still running).
    let _ = tokio::time::timeout(wait, ended.wait_for(|ended| *ended)).await;
    Ok(task.view())
}

/// A task's view from whichever node drives it.
pub async fn view_anywhere(
    ctx: &Arc<NodeContext>,
    id: &str,
    wait: Duration,
) -> Result<TaskView, Error> {
    let node = known_driver(ctx, id)?;
    let request = AlgoRequest::Status {
        id: id.to_string(),
        wait_ms: wait.as_millis() as u64,
    };
    match peer::call(ctx, node, request, STEP_TIMEOUT + wait).await? {
        AlgoResponse::Status { view_json } => {
            serde_json::from_str(&view_json).map_err(|e| Error::Internal(e.to_string()))
        }
        other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
    }
}

/// Cancels a task on whichever node drives it.
pub async fn cancel_anywhere(ctx: &Arc<NodeContext>, id: &str) -> Result<(), Error> {
    let node = known_driver(ctx, id)?;
    let request = AlgoRequest::Cancel { id: id.to_string() };
    peer::call(ctx, node, request, STEP_TIMEOUT).await?;
    Ok(())
}

/// The copy of each shard to work on: a live in-sync copy, on the node given fewest shards so
/// far (ties: the primary).
fn assign(ctx: &Arc<NodeContext>) -> Result<(u32, BTreeMap<String, Vec<u32>>), Error> {
    let map = ctx
        .shard_map
        .get()
        .ok_or_else(|| Error::Unavailable("no shard map yet: the cluster is forming".into()))?;
    let mut nodes: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for shard in 0..map.shards {
        let copies =
            crate::query::scatter::copies(ctx, &map, shard, crate::query::scatter::Prefer::Primary)
                .map_err(|e| e.context(format!("shard {shard}")))?;
        let node = copies
            .iter()
            .min_by_key(|n| nodes.get(*n).map_or(0, Vec::len))
            .expect("copies is never empty");
        nodes.entry(node.clone()).or_default().push(shard);
    }
    Ok((map.shards, nodes))
}

/// Sends `request(node)` to every worker at once; the first error fails them all.
async fn all<F>(
    ctx: &Arc<NodeContext>,
    nodes: &BTreeMap<String, Vec<u32>>,
    timeout: Duration,
    request: F,
) -> Result<Vec<AlgoResponse>, Error>
where
    F: Fn(&str, &[u32]) -> AlgoRequest,
{
    let calls = nodes.iter().map(|(node, shards)| {
        let r = request(node, shards);
        let (ctx, node) = (ctx.clone(), node.clone());
        async move {
            peer::call(&ctx, &node, r, timeout)
                .await
                .map_err(|e| e.context(format!("worker {node}")))
        }
    });
    let answers = join_in_order(calls).await;
    if answers.len() != nodes.len() {
        return Err(Error::Internal("a call to a worker panicked".into()));
    }
    answers.into_iter().collect()
}

async fn drive(
    ctx: &Arc<NodeContext>,
    task: &Arc<Task>,
    request: &AlgorithmRequest,
) -> Result<TaskResult, Error> {
    let (shard_count, nodes) = assign(ctx)?;
    let outcome = run(ctx, task, request, shard_count, &nodes).await;
    // Workers forget the task whatever happened (one that cannot be reached drops it when idle).
    let id = task.id.clone();
    let _ = all(ctx, &nodes, Duration::from_secs(5), |_, _| {
        AlgoRequest::Drop { task: id.clone() }
    })
    .await;
    outcome
}

async fn run(
    ctx: &Arc<NodeContext>,
    task: &Arc<Task>,
    request: &AlgorithmRequest,
    shard_count: u32,
    nodes: &BTreeMap<String, Vec<u32>>,
) -> Result<TaskResult, Error> {
    let id = task.id.clone();
    task.progress(|p| p.workers = nodes.len() as u32);
    let loaded = all(ctx, nodes, LOAD_TIMEOUT, |_, shards| AlgoRequest::Load {
        task: id.clone(),
        algorithm: request.algorithm.clone(),
        shards: shards.to_vec(),
        shard_count,
    })
    .await?;
    let (mut total, mut edges) = (0u64, 0u64);
    for answer in loaded {
        let AlgoResponse::Loaded { vertices, edges: e } = answer else {
            return Err(unexpected(answer));
        };
        total += vertices;
        edges += e;
    }
    task.progress(|p| {
        p.vertices = total;
        p.edges = edges;
        p.phase = "connecting".into();
    });
    task.cancelled()?;
    let workers: Vec<(u32, String)> = nodes
        .iter()
        .flat_map(|(node, shards)| shards.iter().map(move |s| (*s, node.clone())))
        .collect();
    all(ctx, nodes, STEP_TIMEOUT, |_, _| AlgoRequest::Connect {
        task: id.clone(),
        workers: workers.clone(),
    })
    .await?;
    task.progress(|p| p.phase = "superstep".into());
    let mut result = TaskResult::default();
    let mut step = 0u32;
    while request.algorithm.has_supersteps() {
        task.cancelled()?;
        let reports = all(ctx, nodes, STEP_TIMEOUT, |_, _| AlgoRequest::Step {
            task: id.clone(),
            step,
            total,
        })
        .await?;
        let mut sum = StepReport::default();
        for answer in reports {
            let AlgoResponse::Stepped(r) = answer else {
                return Err(unexpected(answer));
            };
            sum.delta += r.delta;
            sum.changed += r.changed;
        }
        task.progress(|p| {
            p.supersteps = step + 1;
            match request.algorithm {
                Algorithm::PageRank { .. } if step > 0 => p.delta = Some(sum.delta),
                Algorithm::Components if step > 0 => p.changed = Some(sum.changed),
                _ => {}
            }
        });
        if let Next::Done { converged } = request.algorithm.after(step, &sum) {
            result.converged = converged;
            break;
        }
        step += 1;
    }
    if let Algorithm::Louvain { rounds } = request.algorithm {
        result.modularity = Some(louvain(ctx, task, nodes, rounds).await?);
    }
    task.progress(|p| p.phase = "gathering".into());
    task.cancelled()?;
    let k = request.top_k.min(MAX_TOP);
    let mut sizes: HashMap<u64, u64> = HashMap::new();
    match request.algorithm {
        Algorithm::PageRank { .. } | Algorithm::Degree => {
            let answers = all(ctx, nodes, STEP_TIMEOUT, |_, _| AlgoRequest::Top {
                task: id.clone(),
                k,
            })
            .await?;
            let mut top = Vec::new();
            for answer in answers {
                let AlgoResponse::Top(t) = answer else {
                    return Err(unexpected(answer));
                };
                top.extend(t);
            }
            keep_top(&mut top, k as usize);
            result.top = Some(
                top.into_iter()
                    .map(|(id, value)| Scored { id, value })
                    .collect(),
            );
        }
        Algorithm::Components | Algorithm::Louvain { .. } => {
            sizes = component_sizes(ctx, &id, nodes).await?;
            result.components = Some(sizes.len() as u64);
            result.largest = Some(largest(ctx, &id, nodes, &sizes, k, request.members).await?);
        }
    }
    if request.write {
        task.progress(|p| p.phase = "writing".into());
        task.cancelled()?;
        let write = publish::write_id(&id);
        let staged = stage(ctx, task, &id, &write, nodes, &sizes).await;
        let written = match staged {
            Ok(written) => written,
            Err(e) => {
                // Nothing is published; the staged rows go (or, failing that, the sweep's).
                if let Err(d) = discard(ctx, &write, shard_count).await {
                    tracing::warn!(write, error = %d, "discarding staged results failed; the sweep will");
                }
                return Err(e);
            }
        };
        task.progress(|p| p.phase = "publishing".into());
        crate::node::failpoints::pause(crate::node::failpoints::ALGORITHM_DECIDE).await;
        if !publish::decide(ctx, &write, true).await? {
            return Err(Error::Unavailable(format!(
                "the results staged as {write} were discarded before they could be published \
                 (this node was taken for gone); run the task again"
            )));
        }
        publish::finish(ctx, &write, true, 0..shard_count)
            .await
            .map_err(|e| {
                e.context(format!(
                    "the results are decided and staged in every shard; the shards' primaries \
                     publish the rest within {}s",
                    publish::SWEEP_EVERY.as_secs()
                ))
            })?;
        result.written = Some(written);
    }
    Ok(result)
}

/// Has every worker stage its parts' results under `write` (components and communities by
/// name: `sizes` holds their labels, empty for the others); returns the entities staged.
async fn stage(
    ctx: &Arc<NodeContext>,
    task: &Arc<Task>,
    id: &str,
    write: &str,
    nodes: &BTreeMap<String, Vec<u32>>,
    sizes: &HashMap<u64, u64>,
) -> Result<u64, Error> {
    let mut names: Vec<(u64, String)> = Vec::new();
    if !sizes.is_empty() {
        let labels = sizes.keys().copied().collect();
        let named = members(ctx, id, nodes, labels, 0).await?;
        names.extend(
            named
                .into_iter()
                .filter_map(|(label, (name, _))| Some((label, name?))),
        );
    }
    let answers = all(ctx, nodes, LOAD_TIMEOUT, |_, _| AlgoRequest::Write {
        task: id.to_string(),
        write: write.to_string(),
        timeout_ms: LOAD_TIMEOUT.as_millis() as u64,
        names: names.clone(),
    })
    .await?;
    let mut written = 0;
    for answer in answers {
        let AlgoResponse::Written { entities } = answer else {
            return Err(unexpected(answer));
        };
        written += entities;
    }
    task.cancelled()?;
    Ok(written)
}

/// Records that `write` is not published and drops what it staged (as the decision says: one
/// recorded earlier stands).
async fn discard(ctx: &Arc<NodeContext>, write: &str, shards: u32) -> Result<(), Error> {
    let publish = publish::decide(ctx, write, false).await?;
    publish::finish(ctx, write, publish, 0..shards).await
}

/// Louvain across the workers: rounds of moves on the first level (each: the shards publish
/// their vertices' communities along their channels and report the communities' degrees; then
/// every shard moves its round's half of the vertices), until two rounds in a row move none or
/// `rounds` ran; then the contracted graph is finished here and the workers rename their
/// communities. Returns the modularity.
async fn louvain(
    ctx: &Arc<NodeContext>,
    task: &Arc<Task>,
    nodes: &BTreeMap<String, Vec<u32>>,
    rounds: u32,
) -> Result<f64, Error> {
    let id = task.id.clone();
    let op = |op: LouvainOp| {
        let id = id.clone();
        move |_: &str, _: &[u32]| AlgoRequest::Louvain {
            task: id.clone(),
            op: op.clone(),
        }
    };
    let mut still = 0;
    for round in 0..rounds {
        task.cancelled()?;
        let mut totals: HashMap<u64, f64> = HashMap::new();
        let mut m2 = 0.0;
        for answer in all(ctx, nodes, STEP_TIMEOUT, op(LouvainOp::Publish)).await? {
            let AlgoResponse::Totals { totals: t, m2: m } = answer else {
                return Err(unexpected(answer));
            };
            for (c, k) in t {
                *totals.entry(c).or_default() += k;
            }
            m2 += m;
        }
        let totals: Vec<(u64, f64)> = totals.into_iter().collect();
        let mut moved = 0;
        let request = op(LouvainOp::Move { round, totals, m2 });
        for answer in all(ctx, nodes, STEP_TIMEOUT, request).await? {
            let AlgoResponse::Moved { moves } = answer else {
                return Err(unexpected(answer));
            };
            moved += moves;
        }
        task.progress(|p| {
            p.supersteps = 2 * (round + 1);
            p.changed = Some(moved);
        });
        still = if moved == 0 { still + 1 } else { 0 };
        if still == 2 {
            break;
        }
    }
    task.cancelled()?;
    all(ctx, nodes, STEP_TIMEOUT, op(LouvainOp::Publish)).await?;
    let mut entries = Vec::new();
    for answer in all(ctx, nodes, STEP_TIMEOUT, op(LouvainOp::Contract)).await? {
        let AlgoResponse::Contracted(e) = answer else {
            return Err(unexpected(answer));
        };
        entries.extend(e);
    }
    let (map, modularity) = tokio::task::spawn_blocking(move || super::louvain::finish(entries))
        .await
        .map_err(|e| Error::Internal(format!("finishing louvain failed: {e}")))?;
    let map: Vec<(u64, u64)> = map.into_iter().filter(|(a, b)| a != b).collect();
    all(ctx, nodes, STEP_TIMEOUT, op(LouvainOp::Relabel(map))).await?;
    Ok(modularity)
}

/// Every component or community label and its size, summed over the workers.
async fn component_sizes(
    ctx: &Arc<NodeContext>,
    id: &str,
    nodes: &BTreeMap<String, Vec<u32>>,
) -> Result<HashMap<u64, u64>, Error> {
    let answers = all(ctx, nodes, STEP_TIMEOUT, |_, _| AlgoRequest::Sizes {
        task: id.to_string(),
    })
    .await?;
    let mut sizes: HashMap<u64, u64> = HashMap::new();
    for answer in answers {
        let AlgoResponse::Sizes(s) = answer else {
            return Err(unexpected(answer));
        };
        for (label, n) in s {
            *sizes.entry(label).or_default() += n;
        }
    }
    Ok(sizes)
}

/// For each of `labels`, over the workers: its name (the id of the entity it is named after,
/// from the worker that holds it) and up to `max` members from each worker.
async fn members(
    ctx: &Arc<NodeContext>,
    id: &str,
    nodes: &BTreeMap<String, Vec<u32>>,
    labels: Vec<u64>,
    max: u32,
) -> Result<HashMap<u64, (Option<String>, Vec<String>)>, Error> {
    let answers = all(ctx, nodes, STEP_TIMEOUT, |_, _| AlgoRequest::Members {
        task: id.to_string(),
        labels: labels.clone(),
        max,
    })
    .await?;
    let mut named: HashMap<u64, (Option<String>, Vec<String>)> = HashMap::new();
    for answer in answers {
        let AlgoResponse::Members(m) = answer else {
            return Err(unexpected(answer));
        };
        for (label, name, ids) in m {
            let e = named.entry(label).or_default();
            if name.is_some() {
                e.0 = name;
            }
            e.1.extend(ids);
        }
    }
    Ok(named)
}

/// The `k` largest of the components `sizes` counts, named, with members when asked.
async fn largest(
    ctx: &Arc<NodeContext>,
    id: &str,
    nodes: &BTreeMap<String, Vec<u32>>,
    sizes: &HashMap<u64, u64>,
    k: u32,
    with_members: bool,
) -> Result<Vec<Component>, Error> {
    let mut largest: Vec<(u64, u64)> = sizes.iter().map(|(l, n)| (*l, *n)).collect();
    // A label is the smallest (shard, index) in its component: a stable tie-break.
    largest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    largest.truncate(k as usize);
    let labels: Vec<u64> = largest.iter().map(|(l, _)| *l).collect();
    let max = if with_members { k } else { 0 };
    let mut named = members(ctx, id, nodes, labels, max).await?;
    Ok(largest
        .into_iter()
        .map(|(label, size)| {
            let (name, mut ids) = named.remove(&label).unwrap_or_default();
            ids.sort();
            ids.truncate(max as usize);
            Component {
                component: name.unwrap_or_else(|| format!("#{label}")),
                size,
                members: with_members.then_some(ids),
            }
        })
        .collect())
}

fn unexpected(answer: AlgoResponse) -> Error {
    Error::Internal(format!("unexpected answer {answer:?}"))
}
