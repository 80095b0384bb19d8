//! The operations of workflow management: deleting workflows with everything that belongs to
//! them, retention, forking, delays, attributes, application versions and event history.
//! Their contracts, like those in [`super::ops`]; each backend implements them in its own
//! `manage` module.

use super::Operation;

/// Delete these workflows and every row that belongs to them, in one transaction: their
/// `workflow_status`, `workflow_input`, `workflow_output` and `operation_outputs` rows (the
/// last three carry no foreign key in DBOS's schema, so nothing cascades into them), and the
/// messages sent to them, their events, event history and streams (which DBOS's foreign keys
/// cascade, deleted here explicitly all the same). Whatever their status, as DBOS's
/// `delete_workflows`: a workflow still running loses its row, and its next write is refused.
/// Messages they sent to others stay (they are the destination's), and so do their children.
/// Answers the ids deleted, in the order asked, each once (none for an empty list, without a
/// round trip). Postgres locks the status rows first, so a checkpoint committing meanwhile
/// cannot leave a row behind.
///
/// Retry safety: a re-run after an unseen commit finds nothing and answers no ids.
#[derive(Debug, Clone)]
pub(crate) struct DeleteWorkflows {
    pub workflow_ids: Vec<String>,
}

impl Operation for DeleteWorkflows {
    type Output = Vec<String>;
    fn describe(&self) -> String {
        match self.workflow_ids.as_slice() {
            [one] => format!("deleting workflow {one}"),
            many => format!("deleting {} workflows", many.len()),
        }
    }
}

/// Keep only the ids of `workflow_ids` in the order asked, each once, that `found` holds.
pub(crate) fn in_order_asked(
    workflow_ids: &[String],
    found: &std::collections::HashSet<String>,
) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(found.len());
    workflow_ids
        .iter()
        .filter(|id| found.contains(*id) && seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// Fork a workflow (DBOS's `fork_workflow`): a new `ENQUEUED` workflow `forked_id` on
/// `queue_name` with the original's name, instance, serialization, attributes, user and
/// inputs, `forked_from` set to the original, `application_version` as given (NULL: any
/// version may run it), no executor, and the original's owner (else `application_name`);
/// the original gets `was_forked_from`. With `start_step` above 1, the fork also gets the
/// original's checkpoints before it (`function_id < start_step`), the events history they
/// wrote and each event's latest value among them, and the stream values they wrote, so a
/// worker replays those steps and runs the rest. All in one transaction.
///
/// Retry safety: an existing `forked_id` row forked from this original by this
/// `creator_xid` is this very fork, committed unseen: `Forked`.
#[derive(Debug, Clone)]
pub(crate) struct ForkWorkflow {
    pub original_id: String,
    pub forked_id: String,
    pub start_step: i32,
    pub application_version: Option<String>,
    pub queue_name: String,
    pub queue_partition_key: Option<String>,
    pub timeout_ms: Option<i64>,
    pub application_name: Option<String>,
    pub creator_xid: String,
    pub now_ms: i64,
}

/// What [`ForkWorkflow`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForkOutcome {
    /// The fork was written.
    Forked,
    /// There is no workflow `original_id`; nothing was written.
    OriginalMissing,
    /// Another workflow holds `forked_id`; nothing was written.
    IdTaken,
}

impl Operation for ForkWorkflow {
    type Output = ForkOutcome;
    fn describe(&self) -> String {
        format!(
            "forking workflow {} from step {} as {}",
            self.original_id, self.start_step, self.forked_id
        )
    }
}

/// Set a `DELAYED` workflow's `delay_until_epoch_ms` (DBOS's `set_workflow_delay`;
/// `updated_at = now_ms`); a workflow in any other status is left alone. Answers `None` if
/// the workflow does not exist, else whether it was `DELAYED` (and so changed). Idempotent.
#[derive(Debug, Clone)]
pub(crate) struct SetWorkflowDelay {
    pub workflow_id: String,
    pub delay_until_epoch_ms: i64,
    pub now_ms: i64,
}

impl Operation for SetWorkflowDelay {
    type Output = Option<bool>;
    fn describe(&self) -> String {
        format!("setting the delay of workflow {}", self.workflow_id)
    }
}
