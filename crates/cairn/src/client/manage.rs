//! Managing workflows: delete, cancel and resume many, fork, delay, attributes, application
//! versions, event history, retention.
//!
//! Each call is one implementation for a standalone [`Client`] and a launched application
//! alike. Called inside a workflow, a call that changes something is a durable step under
//! DBOS's name for it (`DBOS.deleteWorkflow`, `DBOS.forkWorkflow`, …), so a replay returns
//! the recorded answer instead of acting again.

use std::sync::Arc;

use super::Client;
use crate::engine::control;
use crate::engine::runtime::{Interruption, Runtime};
use crate::engine::step::StepCall;
use crate::engine::workflow::WorkflowHandle;
use crate::error::Result;
use crate::store::{self, Descendants};

impl Client {
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
