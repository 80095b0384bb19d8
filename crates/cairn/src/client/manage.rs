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
