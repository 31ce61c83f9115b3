//! `POST /graph/algorithms/{name}` (PageRank, weakly connected components, degree over the
//! whole graph, as a task), `GET /tasks`, `GET /tasks/{id}`, `POST /tasks/{id}/_cancel`.
//! The runs are [`crate::query::algorithms`]'.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::query::algorithms::task::{self, MAX_TOP};
use crate::query::algorithms::{Algorithm, AlgorithmRequest, TaskView};

/// Longest `timeout` a `wait_for_completion` request may ask for.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Most PageRank iterations a request may ask for.
const MAX_ITERATIONS: u32 = 1_000;

/// The algorithms, by the name in the path.
pub const NAMES: &[&str] = &["pagerank", "wcc", "degree", "louvain"];

/// The body of `POST /graph/algorithms/{name}`; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmBody {
    /// PageRank: damping factor in [0, 1] (default 0.85).
    damping: Option<f64>,
    /// PageRank: most iterations; louvain: most rounds of moves across the shards (the first
    /// level; later levels run on the contracted graph). 1 to 1000 (default 20).
    iterations: Option<u32>,
    /// PageRank: stop once the sum of rank changes in an iteration is below this (default 1e-7).
    tolerance: Option<f64>,
    /// Results returned: the highest values, or the largest components (default 10, at most
    /// 100000).
    top_k: Option<u32>,
    /// wcc, louvain: list up to `top_k` members of each component or community returned
    /// (default false).
    members: Option<bool>,
    /// Write each entity's result to its property (default false): `pagerank`, `component`
    /// (wcc: the name of its component), `community` (louvain) or `degree`.
    write: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer when the task ends (or at `timeout`) instead of at once (default false).
    wait_for_completion: Option<bool>,
    /// How long to wait with `wait_for_completion`, e.g. `30s` (default 30s, at most 60s).
    timeout: Option<String>,
}

impl WaitQuery {
    /// How long the request waits for the task to end: `timeout` with `wait_for_completion`,
    /// else not at all.
    fn wait(&self) -> Result<Duration, ApiError> {
        let timeout = super::duration_param(
            "timeout",
            self.timeout.as_deref(),
            DEFAULT_WAIT,
            Duration::ZERO..=task::MAX_WAIT,
        )?;
        Ok(if self.wait_for_completion.unwrap_or(false) {
            timeout
        } else {
            Duration::ZERO
        })
    }
}

/// This node's tasks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskList {
    tasks: Vec<TaskView>,
}

/// The task whose cancellation was asked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cancelled {
    cancel_requested: String,
}

/// `iterations` within its range (default 20).
fn iterations(asked: Option<u32>) -> Result<u32, ApiError> {
    let iterations = asked.unwrap_or(20);
    if !(1..=MAX_ITERATIONS).contains(&iterations) {
        return Err(ApiError::bad_request(format!(
            "iterations {iterations} must be between 1 and {MAX_ITERATIONS}"
        )));
    }
    Ok(iterations)
}

fn request(name: &str, body: AlgorithmBody) -> Result<AlgorithmRequest, ApiError> {
    let only = |field: &str, set: bool, names: &[&str]| {
        if set && !names.contains(&name) {
            Err(ApiError::bad_request(format!(
                "{field} applies to {} only, not to {name}",
                names.join(" and ")
            )))
        } else {
            Ok(())
        }
    };
    let pagerank_field = body.damping.is_some() || body.tolerance.is_some();
    only("damping/tolerance", pagerank_field, &["pagerank"])?;
    only(
        "iterations",
        body.iterations.is_some(),
        &["pagerank", "louvain"],
    )?;
    only("members", body.members.is_some(), &["wcc", "louvain"])?;
    let algorithm = match name {
        "pagerank" => {
            let damping = body.damping.unwrap_or(0.85);
            if !(0.0..=1.0).contains(&damping) {
                return Err(ApiError::bad_request(format!(
                    "damping {damping} must be between 0 and 1"
                )));
            }
            let iterations = iterations(body.iterations)?;
            let tolerance = body.tolerance.unwrap_or(1e-7);
            if !tolerance.is_finite() || tolerance < 0.0 {
                return Err(ApiError::bad_request(format!(
                    "tolerance {tolerance} must be a number of at least 0"
                )));
            }
            Algorithm::PageRank {
                damping,
                iterations,
                tolerance,
            }
        }
        "wcc" => Algorithm::Components,
        "degree" => Algorithm::Degree,
        "louvain" => Algorithm::Louvain {
            rounds: iterations(body.iterations)?,
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no algorithm {name:?}; the algorithms are {}",
                    NAMES.join(", ")
                ),
            ))
        }
    };
    let top_k = body.top_k.unwrap_or(10);
    if !(1..=MAX_TOP).contains(&top_k) {
        return Err(ApiError::bad_request(format!(
            "top_k {top_k} must be between 1 and {MAX_TOP}"
        )));
    }
    Ok(AlgorithmRequest {
        algorithm,
        top_k,
        members: body.members.unwrap_or(false),
        write: body.write.unwrap_or(false),
    })
}

/// Starts an algorithm over the whole graph as a task. Answers `202` with the task at once, or
/// with `wait_for_completion=true`, `200` once it ended (`202` if still running at `timeout`).
pub async fn run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    super::Params(q): super::Params<WaitQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: AlgorithmBody = if body.iter().all(u8::is_ascii_whitespace) {
        AlgorithmBody::default()
    } else {
        serde_json::from_slice::<Option<AlgorithmBody>>(&body)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "malformed body: {e}; expected {{\"top_k\": 10, ...}} (see /openapi.json)"
                ))
            })?
            .unwrap_or_default()
    };
    let wait = q.wait()?;
    let view = task::start(&state, request(&name, body)?)?;
    Ok(answer(task::wait(&state, &view.id, wait).await?))
}

/// `200` for an ended task, `202` (with `Location`) for one still running.
fn answer(view: TaskView) -> Response {
    let status = if view.state == task::TaskState::Running {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let location = format!("/tasks/{}", view.id);
    (status, [(header::LOCATION, location)], Json(view)).into_response()
}

/// `GET /tasks`: the tasks this node drives (running, and the last finished ones).
pub async fn list(State(state): State<AppState>) -> Json<TaskList> {
    Json(TaskList {
        tasks: state.algorithms.tasks.list(),
    })
}

/// `GET /tasks/{id}`: a task's state, progress and result, from any node.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    super::Params(q): super::Params<WaitQuery>,
) -> Result<Response, ApiError> {
    let wait = q.wait()?;
    let view = task::view_anywhere(&state, &id, wait).await?;
    Ok(answer(view))
}

/// `POST /tasks/{id}/_cancel`: asks a running task to stop (it stops before its next superstep
/// and writes nothing).
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>, ApiError> {
    task::cancel_anywhere(&state, &id).await?;
    Ok(Json(Cancelled {
        cancel_requested: id,
    }))
}
