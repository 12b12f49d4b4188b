//! The JSON API.
//!
//! Errors are `{"error": "..."}`: 404 for unknown tasks and paths, 400 for
//! malformed input (naming the parameter), 401/403 for the token, 409 for a
//! disabled task, 413 for a body over the limit.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rota::{DefaultTask, ExecutionQuery, ExecutionStatus, Schedule, Scheduler, Task};
use serde_json::{json, Map, Value};

use super::{ApiError, AppState, LocalAddr};

/// The default `limit` of `GET /api/tasks/{id}/executions`.
pub const EXECUTIONS_DEFAULT: usize = 50;
/// The largest `limit` of `GET /api/tasks/{id}/executions`.
pub const EXECUTIONS_MAX: usize = 1000;
/// The largest `history` of `GET /api/tasks`.
pub const HISTORY_MAX: usize = 100;

type ApiResult<T> = Result<T, ApiError>;

/// The `{id}` path segment, with a JSON 400 when it cannot be read.
#[derive(Debug)]
pub(crate) struct TaskId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await.map_err(|e| {
            ApiError::bad_request(format!("task ID in the path: {}", e.body_text()))
        })?;
        if id.is_empty() {
            return Err(ApiError::bad_request("task ID in the path is empty"));
        }
        Ok(TaskId(id))
    }
}

/// Query parameters, checked against the names an endpoint accepts.
fn params(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> ApiResult<HashMap<String, String>> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        let expected = allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {k:?} (expected: {expected})"
        )));
    }
    Ok(q)
}

/// A whole-number query parameter within `min..=max`.
fn number(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
) -> ApiResult<usize> {
    let Some(raw) = q.get(name) else { return Ok(default) };
    match raw.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "invalid query parameter {name:?}: {raw:?} is not a whole number from {min} to {max}"
        ))),
    }
}

/// Checks a mutating call's body: nothing, or a JSON object (its fields are
/// not used yet). Too long a body is a 413.
fn check_body(body: Result<Bytes, BytesRejection>) -> ApiResult<()> {
    let body =
        body.map_err(|e| ApiError::new(e.status(), format!("request body: {}", e.body_text())))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err(ApiError::bad_request("request body: expected nothing or a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "request body: expected nothing or a JSON object: {e}"
        ))),
    }
}

/// A schedule in plain words (`explain`), with the task's zone if it has one
/// and the expression does not name its own.
pub(crate) fn explain(task: &DefaultTask) -> String {
    let schedule = match Schedule::parse(task.schedule()) {
        Ok(s) => s,
        Err(e) => return format!("invalid schedule: {e}"),
    };
    let expr = task.schedule().trim_start();
    let own_zone = expr.starts_with("CRON_TZ=") || expr.starts_with("TZ=");
    match task.time_zone() {
        Some(z) if !own_zone && schedule.cron().is_some() => {
            format!("{} ({z} time)", schedule.explain())
        }
        _ => schedule.explain(),
    }
}

/// A task's JSON (the seed's form) plus `explain`, `stats` and `running`.
fn task_json(state: &AppState, task: &DefaultTask) -> Value {
    let mut v = serde_json::to_value(task).unwrap_or_else(|_| json!({ "id": task.id() }));
    if let Value::Object(map) = &mut v {
        map.insert("explain".into(), Value::String(explain(task)));
        let stats = state.scheduler.task_stats(task.id()).ok();
        map.insert("stats".into(), serde_json::to_value(stats).unwrap_or(Value::Null));
        map.insert("running".into(), json!(state.metrics.running(task.id())));
    }
    v
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /api/tasks[?history=N]`: every task; with `history`, each also has
/// `recent`, its last N runs (newest first, without output), or
/// `recent_error` if the store could not give them.
pub(crate) async fn list_tasks(
    State(state): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Vec<Value>>> {
    let q = params(q, &["history"])?;
    let history = number(&q, "history", 0, 0, HISTORY_MAX)?;
    let mut out = Vec::new();
    for task in state.scheduler.get_all() {
        let mut v = task_json(&state, &task);
        if history > 0 {
            let query = ExecutionQuery::task(task.id()).limit(history);
            let (key, value) = match state.scheduler.executions(&query).await {
                Ok(runs) => ("recent", Value::Array(runs.iter().map(summary).collect())),
                // The list still answers; the history's failure is told per task.
                Err(e) => ("recent_error", Value::String(e.to_string())),
            };
            if let Value::Object(map) = &mut v {
                map.insert(key.into(), value);
            }
        }
        out.push(v);
    }
    Ok(Json(out))
}

/// A run in `recent`: no output, to keep the list small.
fn summary(e: &rota::TaskExecution) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), json!(e.status));
    m.insert("scheduled_at".into(), json!(e.scheduled_at));
    m.insert("started_at".into(), json!(e.started_at));
    m.insert("duration".into(), json!(u64::try_from(e.duration.as_nanos()).unwrap_or(u64::MAX)));
    m.insert("attempts".into(), json!(e.attempts));
    if !e.error.is_empty() {
        m.insert("error".into(), json!(e.error));
    }
    Value::Object(m)
}

/// `GET /api/tasks/{id}`.
pub(crate) async fn get_task(
    State(state): State<AppState>,
    TaskId(id): TaskId,
) -> ApiResult<Json<Value>> {
    let task = state.scheduler.get(&id)?;
    Ok(Json(task_json(&state, &task)))
}

/// `GET /api/tasks/{id}/executions?limit=N&status=S`: newest first.
pub(crate) async fn executions(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Vec<rota::TaskExecution>>> {
    let q = params(q, &["limit", "status"])?;
    let limit = number(&q, "limit", EXECUTIONS_DEFAULT, 1, EXECUTIONS_MAX)?;
    state.scheduler.get(&id)?;
    let mut query = ExecutionQuery::task(&id).limit(limit);
    if let Some(s) = q.get("status") {
        let status = match s.as_str() {
            "running" => ExecutionStatus::Running,
            "completed" => ExecutionStatus::Completed,
            "failed" => ExecutionStatus::Failed,
            "missed" => ExecutionStatus::Missed,
            "skipped" => ExecutionStatus::Skipped,
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid query parameter \"status\": {other:?} is not one of \
                     running, completed, failed, missed, skipped"
                )))
            }
        };
        query = query.status(status);
    }
    Ok(Json(state.scheduler.executions(&query).await?))
}

/// `POST /api/tasks/{id}/run`: starts a run and answers 202 at once.
pub(crate) async fn run_task(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    check_body(body)?;
    let task = state.scheduler.get(&id)?;
    if !task.enabled() {
        return Err(rota::Error::TaskDisabled { id }.into());
    }
    let scheduler = state.scheduler.clone();
    let task_id = id.clone();
    tokio::spawn(async move {
        if let Err(e) = scheduler.run_now(&task_id).await {
            tracing::info!(task = %task_id, error = %e, "run requested over HTTP did not succeed");
        }
    });
    let body = json!({
        "task_id": id,
        "status": "accepted",
        "message": format!("run of task {id:?} started; see /api/tasks/{id}/executions"),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /api/tasks/{id}/enable`: the task, enabled.
pub(crate) async fn enable_task(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    check_body(body)?;
    state.scheduler.enable(&id).await?;
    Ok(Json(task_json(&state, &state.scheduler.get(&id)?)))
}

/// `POST /api/tasks/{id}/disable`: the task, disabled.
pub(crate) async fn disable_task(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    check_body(body)?;
    state.scheduler.disable(&id).await?;
    Ok(Json(task_json(&state, &state.scheduler.get(&id)?)))
}

/// `GET /api/status`: the scheduler's state, totals and performance.
pub(crate) async fn status(State(state): State<AppState>) -> Json<Value> {
    let s = state.scheduler.status();
    Json(json!({
        "node_id": state.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "status": s.status,
        "started_at": s.started_at,
        "task_count": s.task_count,
        "running_tasks": state.metrics.running_total(),
        "now": state.scheduler.clock().now(),
        "stats": state.scheduler.stats(),
        "performance": state.scheduler.monitor().performance_metrics(),
    }))
}

/// `GET /api/stats`: the scheduler's totals.
pub(crate) async fn stats(State(state): State<AppState>) -> Json<rota::SchedulerStats> {
    Json(state.scheduler.stats())
}

/// `GET /api/nodes`: the cluster's nodes as the registry shows them (cluster
/// mode, with `address` as `host:port`), or this node alone, the leader.
pub(crate) async fn nodes(
    State(state): State<AppState>,
    addr: Option<Extension<LocalAddr>>,
) -> ApiResult<Json<Value>> {
    if let Some(ds) = &state.cluster {
        let nodes = ds.cluster_nodes().await.map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("cluster registry: {e}"))
        })?;
        let stats = ds.distributed_stats();
        let out: Vec<Value> = nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "address": format!("{}:{}", n.address, n.port),
                    "status": n.status,
                    "started_at": n.started_at,
                    "last_seen": n.last_seen,
                    "metadata": n.metadata,
                    "self": n.id == stats.node_id,
                })
            })
            .collect();
        return Ok(Json(Value::Array(out)));
    }
    let status = state.scheduler.status();
    let started_at = status.started_at.unwrap_or_else(|| state.scheduler.stats().created_at);
    Ok(Json(json!([{
        "id": state.node_id,
        "address": addr.map(|Extension(LocalAddr(a))| a.to_string()),
        "status": "leader",
        "scheduler": status.status,
        "started_at": started_at,
        "last_seen": state.scheduler.clock().now(),
        "self": true,
    }])))
}

/// Unknown paths.
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {}", uri.path()))
}

/// Known paths, wrong method.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}
