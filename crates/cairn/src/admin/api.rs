//! The dashboard's JSON API (`/api/…`): thin handlers over the [`Client`] management calls.
//! Times are epoch milliseconds (or null); errors are `{"error": "…"}`.

// A handler's error is a ready response (axum's idiom); its size costs nothing next to a
// request.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::AdminState;
use crate::engine::schedule::{self, Schedule, ScheduleStatus};
use crate::error::Error;
use crate::status::{
    ListStepsOptions, ListWorkflowsOptions, SortOrder, StepInfo, WorkflowState, WorkflowStatus,
};
use crate::{Client, ForkOptions};

/// The page size when none is asked.
const DEFAULT_LIMIT: usize = 50;
/// The largest page.
const MAX_LIMIT: usize = 1000;

/// The statuses a `status` filter may name.
const STATES: [WorkflowState; 7] = [
    WorkflowState::Pending,
    WorkflowState::Enqueued,
    WorkflowState::Delayed,
    WorkflowState::Success,
    WorkflowState::Error,
    WorkflowState::Cancelled,
    WorkflowState::MaxRecoveryAttemptsExceeded,
];

/// The `/api` routes.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/workflows", get(list_workflows))
        .route("/api/workflows/{id}", get(get_workflow))
        .route("/api/workflows/{id}/steps", get(list_steps))
        .route("/api/workflows/{id}/cancel", post(cancel))
        .route("/api/workflows/{id}/resume", post(resume))
        .route("/api/workflows/{id}/fork", post(fork))
        .route("/api/queues", get(queues))
        .route("/api/schedules", get(schedules))
        .route("/api/schedules/{name}/{action}", post(schedule_action))
}

/// An answer or an error response.
type Answer = std::result::Result<Response, Response>;

/// `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// A bad request.
fn bad(message: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, &message.to_string())
}

/// The response for a failed call: 404 for a missing workflow or schedule, 400 for a
/// rejected argument, 500 otherwise.
pub(super) fn failure(e: &Error) -> Response {
    let status = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

/// `value` as a JSON response.
fn ok(value: Value) -> Answer {
    Ok(axum::Json(value).into_response())
}

async fn health(State(state): State<AdminState>) -> Answer {
    let mut body = json!({ "ok": true, "backend": state.client.backend() });
    if let Some(app) = &state.app {
        body["app_name"] = json!(app.rt.app_name);
        body["executor_id"] = json!(app.rt.executor_id);
        body["app_version"] = json!(app.rt.app_version);
    }
    ok(body)
}

/// The query string's pairs, decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// An epoch-milliseconds parameter.
fn millis(name: &str, text: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, Response> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .ok_or_else(|| bad(format!("`{name}` must be epoch milliseconds, not `{text}`")))
}

/// A count parameter within `0..=max`.
fn count(name: &str, text: &str, max: usize) -> std::result::Result<usize, Response> {
    match text.trim().parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad(format!(
            "`{name}` must be a whole number from 0 to {max}, not `{text}`"
        ))),
    }
}

/// A status name, as the API accepts it (any case).
fn state_named(text: &str) -> std::result::Result<WorkflowState, Response> {
    let upper = text.trim().to_ascii_uppercase();
    STATES
        .iter()
        .find(|s| s.as_str() == upper)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = STATES.iter().map(WorkflowState::as_str).collect();
            bad(format!(
                "unknown status `{text}`; expected any of {}",
                known.join(", ")
            ))
        })
}

/// A listing's filters as a request gives them (this API's query string, or the JSON body of
/// DBOS's `/workflows` and `/queues`), made [`ListWorkflowsOptions`] by [`Self::options`].
pub(super) struct WorkflowFilter {
    /// Only these ids. Default: any id.
    pub(super) ids: Vec<String>,
    /// Only workflows of these function names. Default: any.
    pub(super) names: Vec<String>,
    /// Only workflows in these states. Default: any.
    pub(super) statuses: Vec<WorkflowState>,
    /// Only workflows on these queues. Default: any.
    pub(super) queues: Vec<String>,
    /// Only workflows run by these executors. Default: any.
    pub(super) executors: Vec<String>,
    /// Only workflows of these application versions. Default: any.
    pub(super) versions: Vec<String>,
    /// Only ids starting with one of these. Default: any.
    pub(super) id_prefixes: Vec<String>,
    /// Only children of these workflows. Default: any.
    pub(super) parents: Vec<String>,
    /// Only workflows started by these users. Default: any.
    pub(super) users: Vec<String>,
    /// Only workflows created at or after this. Default: any time.
    pub(super) created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only workflows created at or before this. Default: any time.
    pub(super) created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many workflows. Default: no limit.
    pub(super) limit: Option<usize>,
    /// Skip this many. Default: none.
    pub(super) offset: Option<usize>,
    /// The order. Default: [`SortOrder::OldestFirst`].
    pub(super) order: SortOrder,
    /// Whether to read inputs. Default: `true`.
    pub(super) load_input: bool,
    /// Whether to read outputs and errors. Default: `true`.
    pub(super) load_output: bool,
}

impl Default for WorkflowFilter {
    fn default() -> Self {
        Self {
            ids: Vec::new(),
            names: Vec::new(),
            statuses: Vec::new(),
            queues: Vec::new(),
            executors: Vec::new(),
            versions: Vec::new(),
            id_prefixes: Vec::new(),
            parents: Vec::new(),
            users: Vec::new(),
            created_after: None,
            created_before: None,
            limit: None,
            offset: None,
            order: SortOrder::OldestFirst,
            load_input: true,
            load_output: true,
        }
    }
}

impl WorkflowFilter {
    /// These filters as listing options.
    pub(super) fn options(self) -> ListWorkflowsOptions {
        let mut options = ListWorkflowsOptions::new()
            .statuses(self.statuses)
            .order(self.order)
            .load_input(self.load_input)
            .load_output(self.load_output);
        // An empty id list would match nothing: no ids means any id.
        if !self.ids.is_empty() {
            options = options.workflow_ids(self.ids);
        }
        type Add = fn(ListWorkflowsOptions, String) -> ListWorkflowsOptions;
        let lists: [(Vec<String>, Add); 7] = [
            (self.names, ListWorkflowsOptions::name),
            (self.queues, ListWorkflowsOptions::queue_name),
            (self.executors, ListWorkflowsOptions::executor_id),
            (self.versions, ListWorkflowsOptions::app_version),
            (self.id_prefixes, ListWorkflowsOptions::workflow_id_prefix),
            (self.parents, ListWorkflowsOptions::parent_workflow_id),
            (self.users, ListWorkflowsOptions::authenticated_user),
        ];
        for (values, add) in lists {
            options = values.into_iter().fold(options, add);
        }
        options = match (self.created_after, self.created_before) {
            (Some(a), Some(b)) => options.created_in(a..=b),
            (Some(a), None) => options.created_in(a..),
            (None, Some(b)) => options.created_in(..=b),
            (None, None) => options,
        };
        if let Some(limit) = self.limit {
            options = options.limit(limit);
        }
        if let Some(offset) = self.offset {
            options = options.offset(offset);
        }
        options
    }
}

async fn list_workflows(State(state): State<AdminState>, RawQuery(query): RawQuery) -> Answer {
    let mut filter = WorkflowFilter {
        order: SortOrder::NewestFirst,
        load_input: false,
        load_output: false,
        ..WorkflowFilter::default()
    };
    let (mut limit, mut offset) = (DEFAULT_LIMIT, 0);
    for (key, value) in query_pairs(query.as_deref()) {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "status" => {
                for status in value.split(',').filter(|s| !s.trim().is_empty()) {
                    filter.statuses.push(state_named(status)?);
                }
            }
            "name" => filter.names.push(value),
            "queue" => filter.queues.push(value),
            "executor" => filter.executors.push(value),
            "version" => filter.versions.push(value),
            "id_prefix" => filter.id_prefixes.push(value),
            "parent" => filter.parents.push(value),
            "created_after" => filter.created_after = Some(millis(&key, &value)?),
            "created_before" => filter.created_before = Some(millis(&key, &value)?),
            "limit" => limit = count(&key, &value, MAX_LIMIT)?,
            "offset" => offset = count(&key, &value, usize::MAX / 2)?,
            "order" => {
                filter.order = match value.as_str() {
                    "desc" => SortOrder::NewestFirst,
                    "asc" => SortOrder::OldestFirst,
                    _ => {
                        return Err(bad(format!(
                            "`order` must be `asc` or `desc`, not `{value}`"
                        )));
                    }
                };
            }
            _ => {}
        }
    }
    // One more than a page, to tell whether another follows.
    filter.limit = Some(limit + 1);
    filter.offset = Some(offset);
    let options = filter.options();
    let mut rows = state
        .client
        .list_workflows(options)
        .await
        .map_err(|e| failure(&e))?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let workflows: Vec<Value> = rows.iter().map(|w| Value::Object(row(w))).collect();
    ok(json!({
        "workflows": workflows,
        "limit": limit,
        "offset": offset,
        "has_more": has_more,
    }))
}

/// A workflow's status row as the API shows it (without input or output).
pub(super) fn row(w: &WorkflowStatus) -> Map<String, Value> {
    let duration = w
        .completed_at_ms
        .map(|done| done.saturating_sub(w.created_at_ms));
    let json = json!({
        "workflow_id": w.workflow_id,
        "status": w.state.as_str(),
        "name": w.name,
        "class_name": w.class_name,
        "config_name": w.instance,
        "queue_name": w.queue_name,
        "executor_id": w.executor_id,
        "app_version": w.app_version,
        "application_name": w.application_name,
        "created_at": w.created_at_ms,
        "updated_at": w.updated_at_ms,
        "started_at": w.started_at_ms,
        "completed_at": w.completed_at_ms,
        "duration_ms": duration,
        "recovery_attempts": w.recovery_attempts,
        "parent_workflow_id": w.parent_workflow_id,
        "forked_from": w.forked_from,
        "was_forked_from": w.was_forked_from,
        "priority": w.priority,
        "deduplication_id": w.deduplication_id,
        "partition_key": w.queue_partition_key,
        "timeout_ms": w.timeout_ms,
        "deadline_at": w.deadline_ms,
        "delay_until": w.delay_until_ms,
        "schedule_name": w.schedule_name,
        "attributes": w.attributes,
        "authenticated_user": w.authenticated_user,
    });
    match json {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A stored value: its JSON, else the text itself (a format Cairn cannot decode).
pub(super) fn raw_value(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

/// 404 unless workflow `id` exists; answers its status row otherwise.
async fn existing(client: &Client, id: &str) -> std::result::Result<WorkflowStatus, Response> {
    client.status(id).await.map_err(|e| failure(&e))
}

async fn get_workflow(State(state): State<AdminState>, Path(id): Path<String>) -> Answer {
    let client = &state.client;
    let w = existing(client, &id).await?;
    let mut body = row(&w);
    match w.input() {
        Ok(args) => body.insert("input".into(), Value::Array(args)),
        Err(e) => {
            body.insert("input_error".into(), json!(e.to_string()));
            body.insert("input".into(), Value::Null)
        }
    };
    match w.output::<Value>() {
        Ok(output) => body.insert("output".into(), output.unwrap_or(Value::Null)),
        Err(e) => {
            body.insert("output_error".into(), json!(e.to_string()));
            body.insert("output".into(), raw_value(w.raw_output.as_deref()))
        }
    };
    let error = match w.error() {
        Ok(Some(e)) => {
            json!({ "name": e.name, "message": e.message, "code": e.code, "data": e.data })
        }
        Ok(None) => Value::Null,
        Err(_) => w
            .raw_error
            .as_deref()
            .map_or(Value::Null, |raw| json!({ "name": "", "message": raw })),
    };
    body.insert("error".into(), error);
    let children = ListWorkflowsOptions::new()
        .parent_workflow_id(&id)
        .any_application()
        .load_input(false)
        .load_output(false);
    let children = client
        .list_workflows(children)
        .await
        .map_err(|e| failure(&e))?;
    body.insert(
        "children".into(),
        Value::Array(children.iter().map(|c| Value::Object(row(c))).collect()),
    );
    let events = client.list_events(&id).await.map_err(|e| failure(&e))?;
    body.insert(
        "events".into(),
        Value::Array(
            events
                .into_iter()
                .map(|(key, value)| json!({ "key": key, "value": value }))
                .collect(),
        ),
    );
    let history = client
        .get_event_history(&id, None)
        .await
        .map_err(|e| failure(&e))?;
    body.insert(
        "event_history".into(),
        Value::Array(
            history
                .into_iter()
                .map(|h| json!({ "key": h.key, "value": h.value, "function_id": h.function_id }))
                .collect(),
        ),
    );
    let streams = client.list_streams(&id).await.map_err(|e| failure(&e))?;
    let streams = serde_json::to_value(streams).unwrap_or(Value::Array(Vec::new()));
    body.insert("streams".into(), streams);
    let messages = client.list_messages(&id).await.map_err(|e| failure(&e))?;
    let messages = serde_json::to_value(messages).unwrap_or(Value::Array(Vec::new()));
    body.insert("messages".into(), messages);
    ok(Value::Object(body))
}

/// A recorded operation as the API shows it.
fn step(s: &StepInfo) -> Value {
    let duration = match (s.started_at_ms, s.completed_at_ms) {
        (Some(start), Some(end)) => Some(end.saturating_sub(start)),
        _ => None,
    };
    json!({
        "function_id": s.function_id,
        "function_name": s.name,
        "output": raw_value(s.raw_output.as_deref()),
        "error": raw_value(s.raw_error.as_deref()),
        "child_workflow_id": s.child_workflow_id,
        "started_at": s.started_at_ms,
        "completed_at": s.completed_at_ms,
        "duration_ms": duration,
    })
}

async fn list_steps(State(state): State<AdminState>, Path(id): Path<String>) -> Answer {
    existing(&state.client, &id).await?;
    let steps = state
        .client
        .list_workflow_steps(&id, ListStepsOptions::new())
        .await
        .map_err(|e| failure(&e))?;
    ok(Value::Array(steps.iter().map(step).collect()))
}

async fn cancel(State(state): State<AdminState>, Path(id): Path<String>) -> Answer {
    existing(&state.client, &id).await?;
    let cancelled = state.client.cancel(&id).await.map_err(|e| failure(&e))?;
    ok(json!({ "ok": cancelled }))
}

async fn resume(State(state): State<AdminState>, Path(id): Path<String>) -> Answer {
    let handle = state
        .client
        .resume::<Value>(&id)
        .await
        .map_err(|e| failure(&e))?;
    ok(json!({ "workflow_id": handle.id() }))
}

/// The body of `POST /api/workflows/{id}/fork`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkBody {
    step: u32,
    #[serde(default)]
    new_id: Option<String>,
    #[serde(default)]
    app_version: Option<String>,
}

async fn fork(State(state): State<AdminState>, Path(id): Path<String>, body: Bytes) -> Answer {
    let body: ForkBody = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body must be {{\"step\": n, \"new_id\"?: \"…\", \"app_version\"?: \"…\"}}: {e}"
        ))
    })?;
    let mut options = ForkOptions::default();
    if let Some(new_id) = body.new_id.filter(|s| !s.is_empty()) {
        options = options.with_id(new_id);
    }
    if let Some(version) = body.app_version.filter(|s| !s.is_empty()) {
        options = options.with_app_version(version);
    }
    let handle = state
        .client
        .fork_workflow::<Value>(&id, body.step, options)
        .await
        .map_err(|e| failure(&e))?;
    ok(json!({ "workflow_id": handle.id() }))
}

async fn queues(State(state): State<AdminState>) -> Answer {
    let stats = state.client.queue_stats().await.map_err(|e| failure(&e))?;
    let value = serde_json::to_value(stats).map_err(|e| failure(&Error::Config(e.to_string())))?;
    ok(value)
}

/// When an active schedule fires next (epoch ms), if its cron and time zone parse.
fn next_fire_at(s: &Schedule) -> Option<i64> {
    if s.status != ScheduleStatus::Active {
        return None;
    }
    let cron = schedule::parse_cron(&s.cron).ok()?;
    let tz = schedule::parse_timezone(s.timezone.as_deref()).ok()?;
    schedule::next_tick(&cron, tz, chrono::Utc::now()).map(|t| t.timestamp_millis())
}

/// A schedule as the API shows it.
fn schedule(s: &Schedule) -> Value {
    json!({
        "name": s.name,
        "id": s.id,
        "workflow_name": s.workflow_name,
        "cron": s.cron,
        "timezone": s.timezone,
        "status": match s.status {
            ScheduleStatus::Active => "ACTIVE",
            ScheduleStatus::Paused => "PAUSED",
        },
        "queue_name": s.queue,
        "context": s.context,
        "last_fired_at": s.last_fired_at.map(|t| t.timestamp_millis()),
        "next_fire_at": next_fire_at(s),
        "automatic_backfill": s.automatic_backfill,
        "application_name": s.application_name,
    })
}

async fn schedules(State(state): State<AdminState>) -> Answer {
    let list = state
        .client
        .list_schedules()
        .await
        .map_err(|e| failure(&e))?;
    ok(Value::Array(list.iter().map(schedule).collect()))
}

async fn schedule_action(
    State(state): State<AdminState>,
    Path((name, action)): Path<(String, String)>,
) -> Answer {
    let client = &state.client;
    match action.as_str() {
        "pause" => client
            .pause_schedule(&name)
            .await
            .map_err(|e| failure(&e))?,
        "resume" => client
            .resume_schedule(&name)
            .await
            .map_err(|e| failure(&e))?,
        "trigger" => {
            let id = client
                .trigger_schedule(&name)
                .await
                .map_err(|e| failure(&e))?;
            return ok(json!({ "ok": true, "workflow_id": id }));
        }
        _ => return Err(error(StatusCode::NOT_FOUND, "no such schedule action")),
    }
    ok(json!({ "ok": true }))
}
