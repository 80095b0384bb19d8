//! Managing workflows: delete, cancel and resume many, fork, delay, attributes, application
//! versions, event history, retention.
//!
//! Each call is one implementation for a standalone [`Client`] and a launched application
//! alike. Called inside a workflow, a call that changes something is a durable step under
//! DBOS's name for it (`DBOS.deleteWorkflow`, `DBOS.forkWorkflow`, …), so a replay returns
//! the recorded answer instead of acting again.

use std::sync::Arc;
use std::time::Duration;

use super::Client;
use crate::engine::control;
use crate::engine::recovery::INTERNAL_QUEUE;
use crate::engine::runtime::{Interruption, Runtime, now_ms};
use crate::engine::step::StepCall;
use crate::engine::workflow::{WorkflowHandle, check_key};
use crate::error::{Error, Result};
use crate::store::{self, Descendants};

/// Options for [`Client::fork_workflow`]. Every option has a default.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
#[must_use = "options do nothing until passed to Client::fork_workflow"]
pub struct ForkOptions {
    /// The fork's id. Default: a random UUID.
    pub workflow_id: Option<String>,
    /// The application version that may run the fork. Default: none recorded, so a worker
    /// of any version (DBOS: of the latest one) runs it; set it to replay recorded steps on
    /// the code that wrote them.
    pub app_version: Option<String>,
    /// The queue the fork waits on. Default: DBOS's internal queue (`_dbos_internal_queue`),
    /// which every application serves.
    pub queue: Option<String>,
    /// The fork's partition on a partitioned queue. Default: none.
    pub partition_key: Option<String>,
    /// Cancel the fork if it has not finished this long after it is dequeued. Default: none.
    pub timeout: Option<Duration>,
}

impl ForkOptions {
    /// Set [`ForkOptions::workflow_id`].
    pub fn with_id(mut self, workflow_id: impl Into<String>) -> Self {
        self.workflow_id = Some(workflow_id.into());
        self
    }

    /// Set [`ForkOptions::app_version`].
    pub fn with_app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }

    /// Set [`ForkOptions::queue`].
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Set [`ForkOptions::partition_key`].
    pub fn with_partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Set [`ForkOptions::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl Client {
    /// Fork a workflow from step `start_step` (DBOS's `fork_workflow`): a new workflow with
    /// the original's inputs, enqueued (on DBOS's internal queue unless
    /// [`ForkOptions::queue`] says otherwise) so that a worker runs it. The original's
    /// checkpoints before `start_step` are copied to it — with the events and stream values
    /// those steps wrote — so the worker replays them and runs the original's code from
    /// `start_step` on; `start_step` 1 (or 0) runs everything again. The fork records the
    /// original in `forked_from`, and the original is marked `was_forked_from`. The original
    /// may be in any state. A missing original is [`Error::NotFound`]; a fork id another
    /// workflow holds is [`Error::InvalidArgument`]. Answers a handle to the fork. Inside a
    /// workflow the call is a step (`DBOS.forkWorkflow`) recording the fork's id.
    pub fn fork_workflow<T>(
        &self,
        workflow_id: &str,
        start_step: u32,
        options: ForkOptions,
    ) -> impl Future<Output = Result<WorkflowHandle<T>>> + Send + use<T>
    where
        T: serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
    {
        let rt = Arc::clone(&self.rt);
        let original = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.forkWorkflow");
        async move {
            let forked = call
                .run(
                    Some(std::convert::identity),
                    fork(&rt, original, start_step, options),
                )
                .await?;
            Ok(WorkflowHandle::new(rt, forked))
        }
    }
    /// Delete a workflow and everything recorded for it — its status, inputs, output, steps,
    /// the messages sent to it, its events and their history, its streams — and, with
    /// `delete_children`, every workflow it started, transitively. As DBOS's
    /// `delete_workflow`, whatever its status: a workflow still running stops at its next
    /// durable operation (at once if it runs in this process). Answers whether the workflow
    /// existed; a missing id is not an error (deleting twice is harmless). Inside a workflow
    /// the call is a step (`DBOS.deleteWorkflow`).
    pub fn delete_workflow(
        &self,
        workflow_id: &str,
        delete_children: bool,
    ) -> impl Future<Output = Result<bool>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.deleteWorkflow");
        async move {
            call.run(Some(std::convert::identity), async move {
                let deleted = delete(&rt, vec![workflow_id.clone()], delete_children).await?;
                Ok(deleted.contains(&workflow_id))
            })
            .await
        }
    }

    /// Delete several workflows (see [`Client::delete_workflow`]), and with `delete_children`
    /// their descendants, in one transaction. Answers the ids deleted, in the order asked
    /// (each workflow before its descendants), each once; missing ids are skipped. Inside a
    /// workflow the call is a step (`DBOS.deleteWorkflow`).
    pub fn delete_workflows<I, S>(
        &self,
        workflow_ids: I,
        delete_children: bool,
    ) -> impl Future<Output = Result<Vec<String>>> + Send + use<I, S>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let rt = Arc::clone(&self.rt);
        let workflow_ids: Vec<String> = workflow_ids.into_iter().map(Into::into).collect();
        let call = StepCall::begin("DBOS.deleteWorkflow");
        async move {
            call.run(Some(std::convert::identity), async move {
                delete(&rt, workflow_ids, delete_children).await
            })
            .await
        }
    }

    /// Cancel several workflows (see [`Client::cancel`]), and with `cancel_children` every
    /// workflow they started, transitively, in one write. Every id must exist: a missing one
    /// is [`Error::NotFound`](crate::Error::NotFound) naming it, and nothing is cancelled.
    /// Answers the ids cancelled (finished workflows are left as they are), in the order
    /// asked, each once. Inside a workflow the call is a step (`DBOS.cancelWorkflow`).
    pub fn cancel_workflows<I, S>(
        &self,
        workflow_ids: I,
        cancel_children: bool,
    ) -> impl Future<Output = Result<Vec<String>>> + Send + use<I, S>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let rt = Arc::clone(&self.rt);
        let workflow_ids: Vec<String> = workflow_ids.into_iter().map(Into::into).collect();
        let call = StepCall::begin("DBOS.cancelWorkflow");
        async move {
            call.run(Some(std::convert::identity), async move {
                control::cancel_many(&rt, &workflow_ids, cancel_children).await
            })
            .await
        }
    }

    /// Resume several workflows (see [`Client::resume`]). Every id must exist: a missing one
    /// is [`Error::NotFound`](crate::Error::NotFound) naming it, and nothing is resumed (as
    /// DBOS's `resume_workflows`). Answers a handle to each, in the order asked. Inside a
    /// workflow the call is a step (`DBOS.resumeWorkflow`).
    pub fn resume_workflows<T, I, S>(
        &self,
        workflow_ids: I,
    ) -> impl Future<Output = Result<Vec<WorkflowHandle<T>>>> + Send + use<T, I, S>
    where
        T: serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let rt = Arc::clone(&self.rt);
        let workflow_ids: Vec<String> = workflow_ids.into_iter().map(Into::into).collect();
        let call = StepCall::begin("DBOS.resumeWorkflow");
        async move {
            let ids = workflow_ids.clone();
            call.run(Some(std::convert::identity), async {
                control::resume_many(&rt, &ids).await.map(drop)
            })
            .await?;
            Ok(workflow_ids
                .into_iter()
                .map(|id| WorkflowHandle::new(Arc::clone(&rt), id))
                .collect())
        }
    }
}

/// Delete `workflow_ids` (and their descendants), then stop their executions in this process.
async fn delete(
    rt: &Runtime,
    workflow_ids: Vec<String>,
    delete_children: bool,
) -> Result<Vec<String>> {
    let mut all = Vec::with_capacity(workflow_ids.len());
    for workflow_id in workflow_ids {
        let children = if delete_children {
            let of = Descendants {
                workflow_id: workflow_id.clone(),
            };
            rt.store.run(of).await?
        } else {
            Vec::new()
        };
        all.push(workflow_id);
        all.extend(children);
    }
    let deleted = rt
        .store
        .run(store::DeleteWorkflows { workflow_ids: all })
        .await?;
    stop_here(rt, &deleted);
    Ok(deleted)
}

/// Interrupt the executions in this process of workflows whose rows are gone: each stops
/// now rather than at its next write (which the store would refuse).
fn stop_here(rt: &Runtime, workflow_ids: &[String]) {
    if workflow_ids.is_empty() {
        return;
    }
    let gone: std::collections::HashSet<&str> = workflow_ids.iter().map(String::as_str).collect();
    for (workflow_id, owner) in rt.uninterrupted_executions() {
        if gone.contains(workflow_id.as_str()) {
            rt.interrupt_execution(&workflow_id, &owner, Interruption::OwnershipLost);
        }
    }
}

/// Write a fork of `original` (see [`Client::fork_workflow`]) and wake this process's
/// dispatcher; answers the fork's id.
async fn fork(
    rt: &Runtime,
    original: String,
    start_step: u32,
    options: ForkOptions,
) -> Result<String> {
    let start_step = i32::try_from(start_step).map_err(|_| Error::InvalidArgument {
        argument: "start_step",
        reason: format!("{start_step} is beyond the largest step id, {}", i32::MAX),
    })?;
    if options.timeout.is_some_and(|t| t.is_zero()) {
        return Err(Error::InvalidArgument {
            argument: "timeout",
            reason: "must be positive".to_owned(),
        });
    }
    let forked_id = match options.workflow_id {
        Some(id) => {
            check_key("workflow_id", &id)?;
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let queue_name = options.queue.unwrap_or_else(|| INTERNAL_QUEUE.to_owned());
    check_key("queue", &queue_name)?;
    let op = store::ForkWorkflow {
        original_id: original.clone(),
        forked_id: forked_id.clone(),
        start_step,
        application_version: options.app_version,
        queue_name,
        queue_partition_key: options.partition_key,
        timeout_ms: options
            .timeout
            .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
        application_name: (!rt.app_name.is_empty()).then(|| rt.app_name.clone()),
        creator_xid: uuid::Uuid::new_v4().to_string(),
        now_ms: now_ms(),
    };
    match rt.store.run(op).await? {
        store::ForkOutcome::Forked => {
            rt.wake_dispatcher();
            Ok(forked_id)
        }
        store::ForkOutcome::OriginalMissing => Err(Error::NotFound(original)),
        store::ForkOutcome::IdTaken => Err(Error::InvalidArgument {
            argument: "workflow_id",
            reason: format!("a workflow with id `{forked_id}` already exists"),
        }),
    }
}

impl Client {
    /// Change when a `DELAYED` workflow (one enqueued with a delay) may be dequeued: `delay`
    /// from now (DBOS's `set_workflow_delay`). Answers whether it was `DELAYED` (a workflow in
    /// any other status is left as it is); a missing id is [`Error::NotFound`]. Inside a
    /// workflow the call is a step (`DBOS.setWorkflowDelay`).
    pub fn set_workflow_delay(
        &self,
        workflow_id: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<bool>> + Send + use<> {
        let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        self.set_delay(workflow_id, Box::new(move |now| now.saturating_add(millis)))
    }

    /// [`Client::set_workflow_delay`] to an instant: the workflow may be dequeued from `until`
    /// on (at once if it has passed).
    pub fn set_workflow_delay_until(
        &self,
        workflow_id: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<bool>> + Send + use<> {
        let until = until.timestamp_millis().max(0);
        self.set_delay(workflow_id, Box::new(move |_| until))
    }

    /// Set a delay computed from the time of the call (`until` maps now to the new instant).
    fn set_delay(
        &self,
        workflow_id: &str,
        until: Box<dyn FnOnce(i64) -> i64 + Send>,
    ) -> impl Future<Output = Result<bool>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.setWorkflowDelay");
        async move {
            call.run(Some(std::convert::identity), async move {
                let now = now_ms();
                let op = store::SetWorkflowDelay {
                    workflow_id: workflow_id.clone(),
                    delay_until_epoch_ms: until(now),
                    now_ms: now,
                };
                match rt.store.run(op).await? {
                    None => Err(Error::NotFound(workflow_id)),
                    Some(changed) => {
                        // The dispatcher promotes due workflows when it next polls.
                        rt.wake_dispatcher();
                        Ok(changed)
                    }
                }
            })
            .await
        }
    }
}

// ── Application versions ────────────────────────────────────────────────────────────────

/// An application version recorded in the system database (`application_versions`): every
/// launched application registers its version there, and the newest one (by
/// [`timestamp_ms`](ApplicationVersion::timestamp_ms)) is the application's latest: DBOS
/// lets only processes of the latest version take work enqueued without a version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ApplicationVersion {
    /// The version's name (`version_name`), as set by [`crate::APP_VERSION_ENV`] or computed
    /// by DBOS from the code.
    pub name: String,
    /// When it last became the latest (`version_timestamp`, epoch milliseconds): at
    /// registration, or at [`Client::promote_application_version`].
    pub timestamp_ms: i64,
    /// When it was first registered (epoch milliseconds).
    pub created_at_ms: i64,
    /// The application owning it; `None` for an unclaimed version, which every application
    /// sees as its own.
    pub application_name: Option<String>,
}

impl From<store::AppVersionRow> for ApplicationVersion {
    fn from(row: store::AppVersionRow) -> Self {
        ApplicationVersion {
            name: row.name,
            timestamp_ms: row.timestamp_ms,
            created_at_ms: row.created_at_ms,
            application_name: row.application_name,
        }
    }
}

impl Client {
    /// The application versions this client's application sees — its own and unclaimed ones;
    /// every application's for a client without an application name — newest first (DBOS's
    /// `list_application_versions`). Inside a workflow the call is a step
    /// (`DBOS.listApplicationVersions`), so a replay sees the list the first run saw.
    pub fn list_application_versions(
        &self,
    ) -> impl Future<Output = Result<Vec<ApplicationVersion>>> + Send + use<> {
        let (rt, application_name) = (Arc::clone(&self.rt), self.application_name());
        let call = StepCall::begin("DBOS.listApplicationVersions");
        async move {
            call.run(Some(std::convert::identity), async move {
                let list = store::ListAppVersions {
                    application_name,
                    limit: None,
                };
                let rows = rt.store.run(list).await?;
                Ok(rows.into_iter().map(ApplicationVersion::from).collect())
            })
            .await
        }
    }

    /// The newest of the versions [`Client::list_application_versions`] lists: the version
    /// DBOS treats as this application's latest. `None` when none is recorded (where DBOS's
    /// `get_latest_application_version` raises). Inside a workflow the call is a step
    /// (`DBOS.getLatestApplicationVersion`).
    pub fn latest_application_version(
        &self,
    ) -> impl Future<Output = Result<Option<ApplicationVersion>>> + Send + use<> {
        let (rt, application_name) = (Arc::clone(&self.rt), self.application_name());
        let call = StepCall::begin("DBOS.getLatestApplicationVersion");
        async move {
            call.run(Some(std::convert::identity), async move {
                let list = store::ListAppVersions {
                    application_name,
                    limit: Some(1),
                };
                let rows = rt.store.run(list).await?;
                Ok(rows.into_iter().next().map(ApplicationVersion::from))
            })
            .await
        }
    }

    /// Make version `name` the latest (DBOS's `set_latest_application_version`), e.g. to roll
    /// back to it: its timestamp becomes now, and an unclaimed version is claimed by this
    /// client's application. A version another application owns is
    /// [`Error::InvalidArgument`] (version names are unique across the applications sharing
    /// a database). Answers whether the version exists; a missing one is not an error (as in
    /// DBOS, nothing is written). Inside a workflow the call is a step
    /// (`DBOS.setLatestApplicationVersion`).
    pub fn promote_application_version(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool>> + Send + use<> {
        let (rt, application_name) = (Arc::clone(&self.rt), self.application_name());
        let version = name.to_owned();
        let call = StepCall::begin("DBOS.setLatestApplicationVersion");
        async move {
            call.run(Some(std::convert::identity), async move {
                let promote = store::PromoteAppVersion {
                    version: version.clone(),
                    application_name: application_name.clone(),
                    now_ms: now_ms(),
                };
                match rt.store.run(promote).await? {
                    store::Promotion::Promoted => Ok(true),
                    store::Promotion::Missing => Ok(false),
                    store::Promotion::OwnedBy(owner) => Err(Error::InvalidArgument {
                        argument: "version",
                        reason: format!(
                            "application version `{version}` is registered by application \
                             `{owner}`, not by `{}`; version names are unique across the \
                             applications sharing a system database",
                            application_name.as_deref().unwrap_or("")
                        ),
                    }),
                }
            })
            .await
        }
    }
}

// ── Retention ───────────────────────────────────────────────────────────────────────────

/// How many workflows one retention transaction deletes: small enough to hold few locks
/// briefly, large enough to make progress.
const RETENTION_BATCH: i64 = 1_000;

/// What to delete periodically so the system database does not grow forever (see
/// [`Client::delete_finished_before`] and [`Client::trim_finished_to`]). Only finished
/// workflows are ever deleted. Every option has a default; the default policy deletes
/// nothing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Delete finished workflows created longer ago than this. Default: none (kept).
    pub older_than: Option<Duration>,
    /// Keep at most about this many finished workflows, the newest (see
    /// [`Client::trim_finished_to`] for ties). Default: none (no limit).
    pub max_finished: Option<u64>,
    /// How often the policy is applied. Default: 1 hour.
    pub interval: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            older_than: None,
            max_finished: None,
            interval: Duration::from_secs(3600),
        }
    }
}

impl RetentionPolicy {
    /// Set [`RetentionPolicy::older_than`].
    #[must_use]
    pub fn with_older_than(mut self, age: Duration) -> Self {
        self.older_than = Some(age);
        self
    }

    /// Set [`RetentionPolicy::max_finished`].
    #[must_use]
    pub fn with_max_finished(mut self, rows: u64) -> Self {
        self.max_finished = Some(rows);
        self
    }

    /// Set [`RetentionPolicy::interval`].
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

/// Apply `policy` once: the age limit, then the count limit. Answers how many workflows were
/// deleted.
pub(crate) async fn run_retention(client: &Client, policy: &RetentionPolicy) -> Result<u64> {
    let mut deleted = 0;
    if let Some(age) = policy.older_than {
        let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        deleted += delete_finished_before(&client.rt, now_ms().saturating_sub(age)).await?;
    }
    if let Some(rows) = policy.max_finished {
        deleted += trim_finished_to(&client.rt, rows).await?;
    }
    Ok(deleted)
}

impl Client {
    /// Delete every finished workflow (`SUCCESS`, `ERROR`, `CANCELLED`,
    /// `MAX_RECOVERY_ATTEMPTS_EXCEEDED`) created before `cutoff`, with everything recorded
    /// for it (as [`Client::delete_workflow`]), oldest first, in transactions of 1,000 so
    /// that a large backlog never holds many locks at once. `PENDING`, `ENQUEUED` and
    /// `DELAYED` workflows are never deleted, and each workflow is judged by itself: a
    /// finished child of a workflow still running goes, a running child of a finished one
    /// stays. Every application's workflows in the database are considered. Answers how many
    /// were deleted. Not a step inside a workflow (DBOS has no such call): a replay deletes
    /// again, which only finds less to delete.
    pub async fn delete_finished_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64> {
        delete_finished_before(&self.rt, cutoff.timestamp_millis()).await
    }

    /// Delete finished workflows (see [`Client::delete_finished_before`]) except the newest
    /// `max_rows` of them, by creation time. Ties are kept: every workflow created in the
    /// same millisecond as the `max_rows`-th newest stays, so slightly more than `max_rows`
    /// may remain. With `max_rows` 0 every finished workflow goes. Answers how many were
    /// deleted. Not a step inside a workflow.
    pub async fn trim_finished_to(&self, max_rows: u64) -> Result<u64> {
        trim_finished_to(&self.rt, max_rows).await
    }
}

/// Delete finished workflows created before `cutoff_ms`, in batches.
async fn delete_finished_before(rt: &Runtime, cutoff_ms: i64) -> Result<u64> {
    rt.store
        .delete_finished_in_batches(cutoff_ms, RETENTION_BATCH)
        .await
}

/// Keep the newest `max_rows` finished workflows (ties with the last one kept too).
async fn trim_finished_to(rt: &Runtime, max_rows: u64) -> Result<u64> {
    let cutoff_ms = if max_rows == 0 {
        i64::MAX
    } else {
        let rank = i64::try_from(max_rows).unwrap_or(i64::MAX);
        match rt.store.run(store::FinishedCreatedAt { rank }).await? {
            Some(created_at) => created_at,
            None => return Ok(0),
        }
    };
    delete_finished_before(rt, cutoff_ms).await
}

// ---- Workflow attributes -----------------------------------------------------------------

impl Client {
    /// Change a workflow's custom attributes (DBOS's `update_workflow_attributes`), whatever
    /// its status. By default `attributes` replaces them; with `merge` its top-level keys are
    /// set over the existing ones (other keys stay; a matching key's value, nested objects
    /// included, is replaced). `None` (or JSON `null`) clears them, which cannot be merged.
    /// Attributes must be a JSON object, else [`Error::InvalidArgument`]; a missing workflow
    /// is [`Error::NotFound`]. Inside a workflow the call is a step
    /// (`DBOS.updateWorkflowAttributes`).
    pub fn update_workflow_attributes(
        &self,
        workflow_id: &str,
        attributes: Option<serde_json::Value>,
        merge: bool,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let workflow_id = workflow_id.to_owned();
        let call = StepCall::begin("DBOS.updateWorkflowAttributes");
        async move {
            call.run(Some(std::convert::identity), async move {
                let attributes = attributes.filter(|value| !value.is_null());
                if merge && attributes.is_none() {
                    return Err(Error::InvalidArgument {
                        argument: "attributes",
                        reason: "cannot merge none into a workflow's attributes; pass `merge: \
                                 false` to clear them"
                            .to_owned(),
                    });
                }
                let op = store::UpdateWorkflowAttributes {
                    workflow_id: workflow_id.clone(),
                    attributes: crate::engine::workflow::encode_attributes(attributes.as_ref())?,
                    merge,
                    now_ms: now_ms(),
                };
                if rt.store.run(op).await? {
                    Ok(())
                } else {
                    Err(Error::NotFound(workflow_id))
                }
            })
            .await
        }
    }
}

// ---- Event history -----------------------------------------------------------------------

/// One value a workflow set for one of its events, from [`Client::get_event_history`].
/// Serializable: inside a workflow the history is the checkpointed output of a step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct EventHistoryEntry {
    /// The event's key.
    pub key: String,
    /// The id of the workflow's operation that set it: later values have larger ids.
    pub function_id: i32,
    /// The value, decoded from whichever serialization wrote it.
    pub value: serde_json::Value,
    /// The value as stored, for a value written in a format `value` cannot show faithfully.
    pub raw: String,
}

impl Client {
    /// Every value a workflow set for its events, or with `key` only for that event, in the
    /// order it set them — where [`Client::get_event`] sees only the latest. A workflow that
    /// does not exist (or set no events) has an empty history. DBOS has no such call: it keeps
    /// the history (`workflow_events_history`) only to restore events when a workflow is
    /// forked; Cairn shows it for debugging. Inside a workflow the call is a step
    /// (`DBOS.getEventHistory`).
    pub fn get_event_history(
        &self,
        workflow_id: &str,
        key: Option<&str>,
    ) -> impl Future<Output = Result<Vec<EventHistoryEntry>>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let op = store::EventHistory {
            workflow_id: workflow_id.to_owned(),
            key: key.map(str::to_owned),
        };
        let call = StepCall::begin("DBOS.getEventHistory");
        async move {
            call.run(Some(std::convert::identity), async move {
                let workflow_id = op.workflow_id.clone();
                rt.store
                    .run(op)
                    .await?
                    .into_iter()
                    .map(|row| {
                        let value = crate::serialization::decode(
                            &row.value.text,
                            row.value.serialization.as_deref(),
                            &workflow_id,
                            "workflow_events_history.value",
                        )?;
                        Ok(EventHistoryEntry {
                            key: row.key,
                            function_id: row.function_id,
                            value,
                            raw: row.value.text,
                        })
                    })
                    .collect()
            })
            .await
        }
    }
}
