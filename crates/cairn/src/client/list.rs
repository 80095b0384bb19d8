//! Listing and searching workflows and their steps (DBOS's `list_workflows`,
//! `list_queued_workflows`, `list_workflow_steps`).

use std::sync::Arc;

use super::Client;
use crate::engine::step::StepCall;
use crate::error::Result;
use crate::status::{
    ListStepsOptions, ListWorkflowsOptions, StepInfo, WorkflowState, WorkflowStatus,
};

/// The states of a queued workflow that has not finished (DBOS's `list_queued_workflows`).
const QUEUED_STATES: [WorkflowState; 3] = [
    WorkflowState::Delayed,
    WorkflowState::Enqueued,
    WorkflowState::Pending,
];

impl Client {
    /// The workflows matching `options` (see [`ListWorkflowsOptions`]: DBOS's filters, order
    /// and paging), as status rows. A row whose values Cairn cannot decode (another
    /// serialization format) is listed all the same, its values kept raw. Inside a workflow
    /// the call is a step (`DBOS.listWorkflows`), so a replay sees the same list.
    pub fn list_workflows(
        &self,
        options: ListWorkflowsOptions,
    ) -> impl Future<Output = Result<Vec<WorkflowStatus>>> + Send + use<> {
        self.list("DBOS.listWorkflows", options, false)
    }

    /// The workflows on a queue that have not finished (`DELAYED`, `ENQUEUED` or `PENDING`),
    /// matching `options`, as DBOS's `list_queued_workflows`: a status filter in `options`
    /// replaces that default (still only workflows on a queue). Inside a workflow the call is
    /// a step (`DBOS.listQueuedWorkflows`).
    pub fn list_queued_workflows(
        &self,
        options: ListWorkflowsOptions,
    ) -> impl Future<Output = Result<Vec<WorkflowStatus>>> + Send + use<> {
        let options = if options.has_status() {
            options
        } else {
            options.statuses(QUEUED_STATES)
        };
        self.list("DBOS.listQueuedWorkflows", options, true)
    }

    /// The operations workflow `workflow_id` has recorded (steps, child starts, sleeps,
    /// messages…), in order, paged by `options`. A workflow with none, or no such workflow,
    /// gives an empty list (as DBOS). Inside a workflow the call is a step
    /// (`DBOS.listWorkflowSteps`).
    pub fn list_workflow_steps(
        &self,
        workflow_id: &str,
        options: ListStepsOptions,
    ) -> impl Future<Output = Result<Vec<StepInfo>>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let op = options.into_op(workflow_id);
        let call = StepCall::begin("DBOS.listWorkflowSteps");
        async move {
            call.run(Some(std::convert::identity), async move {
                let steps = rt.store.run(op).await?;
                Ok(steps.into_iter().map(StepInfo::from_checkpoint).collect())
            })
            .await
        }
    }

    /// One listing, as the step `step` inside a workflow.
    fn list(
        &self,
        step: &'static str,
        options: ListWorkflowsOptions,
        queued_only: bool,
    ) -> impl Future<Output = Result<Vec<WorkflowStatus>>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let op = options.into_op(&rt.app_name, queued_only);
        let call = StepCall::begin(step);
        async move {
            call.run(Some(std::convert::identity), async move {
                let rows = rt.store.run(op).await?;
                Ok(rows.into_iter().map(WorkflowStatus::from_row).collect())
            })
            .await
        }
    }
}
