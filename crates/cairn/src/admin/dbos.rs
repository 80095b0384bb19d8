//! DBOS's admin endpoints, with the paths and shapes of DBOS Python's admin server, served
//! by a launched application's admin server (see the [module docs](super)).

// A handler's error is a ready response (axum's idiom); its size costs nothing next to a
// request.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::api::{WorkflowFilter, failure, raw_value};
use super::{AdminState, AppHooks};
use crate::ForkOptions;
use crate::engine::recovery::execute_claimed;
use crate::engine::runtime::{Runtime, now_ms};
use crate::engine::workflow::Origin;
use crate::error::Result;
use crate::status::{
    ListStepsOptions, ListWorkflowsOptions, SortOrder, WorkflowState, WorkflowStatus,
};
use crate::store::ReclaimPending;

/// DBOS's admin routes.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/dbos-healthz", get(healthz))
        .route("/dbos-workflow-recovery", post(recover))
        .route("/deactivate", get(deactivate).post(deactivate))
        .route("/dbos-deactivate", get(deactivate).post(deactivate))
        .route("/dbos-workflow-queues-metadata", get(queues_metadata))
        .route("/workflows", post(list_workflows))
        .route("/queues", post(list_queued))
        .route("/workflows/{id}", get(get_workflow))
        .route("/workflows/{id}/steps", get(steps))
        .route("/workflows/{id}/cancel", post(cancel))
        .route("/workflows/{id}/resume", post(resume))
        .route("/workflows/{id}/restart", post(restart))
        .route("/workflows/{id}/fork", post(fork))
}

/// A JSON error as DBOS's admin server writes one.
fn dbos_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

/// A plain body labelled JSON, as DBOS's admin server answers its health and deactivation.
fn text(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The launched application's hooks (the routes exist only with one).
fn hooks(state: &AdminState) -> std::result::Result<&Arc<AppHooks>, Response> {
    state
        .app
        .as_ref()
        .ok_or_else(|| dbos_error(StatusCode::NOT_FOUND, "not a launched application"))
}

async fn healthz() -> Response {
    text("healthy")
}

/// Recover the `PENDING` workflows of `executor_ids` (of this application and version) in
/// this process, as this executor's own are at launch. Answers their ids.
pub(crate) async fn recover_executors(
    rt: &Arc<Runtime>,
    executor_ids: &[String],
) -> Result<Vec<String>> {
    let mut recovered = Vec::new();
    for executor_id in executor_ids {
        let owner = uuid::Uuid::new_v4().to_string();
        let claimed = rt
            .store
            .run(ReclaimPending {
                executor_id: executor_id.clone(),
                app_version: rt.app_version.clone(),
                application_name: Some(rt.app_name.clone()),
                new_owner: owner.clone(),
                now_ms: now_ms(),
                batch: None,
            })
            .await?;
        tracing::info!(
            executor_id = %executor_id,
            count = claimed.len(),
            app_version = %rt.app_version,
            "recovering the pending workflows of an executor (admin request)"
        );
        for workflow in claimed {
            if let Some(id) = execute_claimed(rt, &owner, workflow, Origin::Recovered).await? {
                recovered.push(id);
            }
        }
    }
    Ok(recovered)
}

async fn recover(State(state): State<AdminState>, body: Bytes) -> Response {
    let app = match hooks(&state) {
        Ok(app) => Arc::clone(app),
        Err(response) => return response,
    };
    let executor_ids: Vec<String> = match serde_json::from_slice(&body) {
        Ok(ids) => ids,
        Err(e) => {
            return dbos_error(
                StatusCode::BAD_REQUEST,
                format!("the body must be a JSON list of executor ids: {e}"),
            );
        }
    };
    match recover_executors(&app.rt, &executor_ids).await {
        Ok(ids) => axum::Json(ids).into_response(),
        Err(e) => failure(&e),
    }
}

async fn deactivate(State(state): State<AdminState>) -> Response {
    if let Ok(app) = hooks(&state) {
        if !app.scheduler.is_finished() {
            tracing::info!(
                executor_id = %app.rt.executor_id,
                app_version = %app.rt.app_version,
                "deactivating: this process fires no more schedules; it finishes and claims workflows as before"
            );
        }
        app.scheduler.abort();
    }
    text("deactivated")
}

/// A rate limit as DBOS's queue metadata shows it: `{"limit": n, "period": seconds}`.
fn limiter(limit: crate::RateLimit) -> Value {
    json!({ "limit": limit.limit, "period": limit.period.as_secs_f64() })
}

async fn queues_metadata(State(state): State<AdminState>) -> Response {
    let app = match hooks(&state) {
        Ok(app) => app,
        Err(response) => return response,
    };
    let queues: Vec<Value> = app
        .rt
        .queues()
        .iter()
        .map(|q| {
            let mut meta = Map::new();
            meta.insert("name".into(), json!(q.name));
            if let Some(n) = q.concurrency {
                meta.insert("concurrency".into(), json!(n));
            }
            if let Some(n) = q.worker_concurrency {
                meta.insert("workerConcurrency".into(), json!(n));
            }
            if let Some(limit) = q.rate_limit {
                meta.insert("rateLimit".into(), limiter(limit));
            }
            if q.priority_enabled {
                meta.insert("priorityEnabled".into(), json!(true));
            }
            if q.partition_queue {
                meta.insert("partitionQueue".into(), json!(true));
            }
            Value::Object(meta)
        })
        .collect();
    axum::Json(queues).into_response()
}

/// A workflow as DBOS's admin server lists it (the fields of DBOS's `WorkflowStatus`).
fn dbos_workflow(w: &WorkflowStatus) -> Value {
    let input = match w.input() {
        Ok(args) => json!({ "args": args, "kwargs": {} }),
        Err(_) => raw_value(w.raw_input.as_deref()),
    };
    let output = w
        .output::<Value>()
        .unwrap_or_else(|_| Some(raw_value(w.raw_output.as_deref())));
    let error = match w.error() {
        Ok(Some(e)) => Some(format!("{}: {}", e.name, e.message)),
        Ok(None) => None,
        Err(_) => w.raw_error.clone(),
    };
    json!({
        "workflow_id": w.workflow_id,
        "status": w.state.as_str(),
        "name": w.name,
        "class_name": w.class_name,
        "config_name": w.instance,
        "authenticated_user": w.authenticated_user,
        "assumed_role": w.assumed_role,
        "authenticated_roles": w.authenticated_roles,
        "input": input,
        "output": output,
        "error": error,
        "created_at": w.created_at_ms,
        "updated_at": w.updated_at_ms,
        "queue_name": w.queue_name,
        "executor_id": w.executor_id,
        "app_version": w.app_version,
        "workflow_timeout_ms": w.timeout_ms,
        "workflow_deadline_epoch_ms": w.deadline_ms,
        "deduplication_id": w.deduplication_id,
        "priority": w.priority,
        "queue_partition_key": w.queue_partition_key,
        "forked_from": w.forked_from,
        "was_forked_from": w.was_forked_from,
        "parent_workflow_id": w.parent_workflow_id,
        "dequeued_at": w.started_at_ms,
        "delay_until_epoch_ms": w.delay_until_ms,
        "completed_at": w.completed_at_ms,
        "attributes": w.attributes,
        "schedule_name": w.schedule_name,
        "application_name": w.application_name,
        "app_id": Value::Null,
        "recovery_attempts": w.recovery_attempts,
    })
}

/// One value or a list of values of a DBOS filter (`"status": "SUCCESS"` or `["SUCCESS", …]`).
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// An RFC 3339 time of a DBOS filter (`start_time`, `end_time`).
fn time(
    filters: &Map<String, Value>,
    key: &str,
) -> std::result::Result<Option<chrono::DateTime<chrono::Utc>>, Response> {
    match filters.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|e| dbos_error(StatusCode::BAD_REQUEST, format!("`{key}`: {e}"))),
        Some(Value::Number(n)) => Ok(n.as_i64().and_then(chrono::DateTime::from_timestamp_millis)),
        Some(other) => Err(dbos_error(
            StatusCode::BAD_REQUEST,
            format!("`{key}` must be an RFC 3339 time, not {other}"),
        )),
    }
}

/// DBOS's listing filters as options.
fn options(body: &[u8], queued: bool) -> std::result::Result<ListWorkflowsOptions, Response> {
    let filters: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| dbos_error(StatusCode::BAD_REQUEST, format!("Invalid JSON input: {e}")))?
    };
    let number = |key: &str| {
        filters
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
    };
    let flag = |key: &str| filters.get(key).and_then(Value::as_bool);
    let filter = WorkflowFilter {
        ids: strings(
            filters
                .get("workflow_ids")
                .or(filters.get("workflow_uuids")),
        ),
        names: strings(filters.get("name").or(filters.get("workflow_name"))),
        statuses: strings(filters.get("status"))
            .iter()
            .map(|status| WorkflowState::parse(status))
            .collect(),
        versions: strings(filters.get("application_version")),
        id_prefixes: strings(filters.get("workflow_id_prefix")),
        users: strings(filters.get("authenticated_user")),
        queues: if queued {
            strings(filters.get("queue_name"))
        } else {
            Vec::new()
        },
        created_after: time(&filters, "start_time")?,
        created_before: time(&filters, "end_time")?,
        limit: number("limit"),
        offset: number("offset"),
        order: if flag("sort_desc") == Some(true) {
            SortOrder::NewestFirst
        } else {
            SortOrder::OldestFirst
        },
        load_input: flag("load_input") != Some(false),
        load_output: flag("load_output") != Some(false),
        ..WorkflowFilter::default()
    };
    Ok(filter.options())
}

async fn list_workflows(State(state): State<AdminState>, body: Bytes) -> Response {
    let options = match options(&body, false) {
        Ok(options) => options,
        Err(response) => return response,
    };
    match state.client.list_workflows(options).await {
        Ok(rows) => axum::Json(rows.iter().map(dbos_workflow).collect::<Vec<_>>()).into_response(),
        Err(e) => failure(&e),
    }
}

async fn list_queued(State(state): State<AdminState>, body: Bytes) -> Response {
    let options = match options(&body, true) {
        Ok(options) => options,
        Err(response) => return response,
    };
    match state.client.list_queued_workflows(options).await {
        Ok(rows) => axum::Json(rows.iter().map(dbos_workflow).collect::<Vec<_>>()).into_response(),
        Err(e) => failure(&e),
    }
}

async fn get_workflow(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let options = ListWorkflowsOptions::new().workflow_ids([id]);
    match state.client.list_workflows(options).await {
        Ok(rows) => match rows.first() {
            Some(w) => axum::Json(dbos_workflow(w)).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
            )
                .into_response(),
        },
        Err(e) => failure(&e),
    }
}

/// A stored value as DBOS's admin server shows a step's output: the text of the value.
fn as_text(raw: Option<&str>) -> Value {
    match raw_value(raw) {
        Value::Null => Value::Null,
        Value::String(s) => Value::String(s),
        other => Value::String(other.to_string()),
    }
}

async fn steps(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state
        .client
        .list_workflow_steps(&id, ListStepsOptions::new())
        .await
    {
        Ok(steps) => {
            let steps: Vec<Value> = steps
                .iter()
                .map(|s| {
                    json!({
                        "function_id": s.function_id,
                        "function_name": s.name,
                        "output": as_text(s.raw_output.as_deref()),
                        "error": as_text(s.raw_error.as_deref()),
                        "child_workflow_id": s.child_workflow_id,
                        "started_at_epoch_ms": s.started_at_ms,
                        "completed_at_epoch_ms": s.completed_at_ms,
                    })
                })
                .collect();
            axum::Json(steps).into_response()
        }
        Err(e) => failure(&e),
    }
}

async fn cancel(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.client.cancel(&id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failure(&e),
    }
}

async fn resume(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.client.resume::<Value>(&id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failure(&e),
    }
}

/// Fork `id` from `step` and answer `{"workflow_id": fork}` (500 with the error, as DBOS).
async fn fork_from(state: &AdminState, id: &str, step: u32, options: ForkOptions) -> Response {
    match state.client.fork_workflow::<Value>(id, step, options).await {
        Ok(handle) => axum::Json(json!({ "workflow_id": handle.id() })).into_response(),
        Err(e) => dbos_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn restart(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    fork_from(&state, &id, 1, ForkOptions::default()).await
}

async fn fork(State(state): State<AdminState>, Path(id): Path<String>, body: Bytes) -> Response {
    let data: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(data) => data,
        Err(e) => {
            return dbos_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Invalid JSON input: {e}"),
            );
        }
    };
    let step = data
        .get("start_step")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1);
    let mut options = ForkOptions::default();
    if let Some(new_id) = data.get("new_workflow_id").and_then(Value::as_str) {
        options = options.with_id(new_id);
    }
    if let Some(version) = data.get("application_version").and_then(Value::as_str) {
        options = options.with_app_version(version);
    }
    fork_from(&state, &id, step, options).await
}
