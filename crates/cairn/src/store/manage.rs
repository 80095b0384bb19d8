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

// ── Application versions ────────────────────────────────────────────────────────────────

/// One row of `application_versions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppVersionRow {
    pub name: String,
    pub timestamp_ms: i64,
    pub created_at_ms: i64,
    pub application_name: Option<String>,
}

/// The application versions `application_name` sees (DBOS's `list_application_versions`):
/// its own and unclaimed ones (`application_name` NULL), or every one for `None`; newest
/// `version_timestamp` first (ties by name), at most `limit` of them (`None`: all).
/// Read-only.
#[derive(Debug, Clone)]
pub(crate) struct ListAppVersions {
    pub application_name: Option<String>,
    pub limit: Option<i64>,
}

impl Operation for ListAppVersions {
    type Output = Vec<AppVersionRow>;
    fn describe(&self) -> String {
        "listing application versions".to_owned()
    }
}

/// Make `version` the latest (DBOS's `update_application_version_timestamp`): its
/// `version_timestamp` becomes `now_ms`, and an unclaimed row is claimed by
/// `application_name` (a `None` caller leaves the owner as it is). A row another application
/// owns is left alone; a missing one is not an error (DBOS writes nothing either).
///
/// Retry safety: a re-run sets the same values.
#[derive(Debug, Clone)]
pub(crate) struct PromoteAppVersion {
    pub version: String,
    pub application_name: Option<String>,
    pub now_ms: i64,
}

/// What [`PromoteAppVersion`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Promotion {
    /// The version is now the latest.
    Promoted,
    /// No version has this name; nothing was written.
    Missing,
    /// Another application owns the version (named here); nothing was written.
    OwnedBy(String),
}

impl Operation for PromoteAppVersion {
    type Output = Promotion;
    fn describe(&self) -> String {
        format!("promoting application version {}", self.version)
    }
}

// ── Retention ───────────────────────────────────────────────────────────────────────────

/// The finished statuses, which retention may delete (an SQL list).
pub(crate) const FINISHED: &str =
    "('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')";

/// Delete at most `limit` finished workflows (`SUCCESS`, `ERROR`, `CANCELLED`,
/// `MAX_RECOVERY_ATTEMPTS_EXCEEDED`) created before `cutoff_ms`, oldest first, with every row
/// they own (as [`DeleteWorkflows`]); answers how many. `PENDING`, `ENQUEUED` and `DELAYED`
/// workflows are never touched, and each workflow is judged by itself (a finished child of
/// a running parent goes; a running child of a finished parent stays). Postgres skips rows
/// another transaction holds locked (`FOR UPDATE SKIP LOCKED`), so concurrent runs share the
/// work instead of waiting on each other.
///
/// Retry safety: a re-run after an unseen commit deletes the next batch, which a caller
/// looping until a short batch would have deleted anyway.
#[derive(Debug, Clone)]
pub(crate) struct DeleteFinishedBefore {
    pub cutoff_ms: i64,
    pub limit: i64,
}

impl Operation for DeleteFinishedBefore {
    type Output = u64;
    fn describe(&self) -> String {
        format!(
            "deleting up to {} finished workflows created before {}",
            self.limit, self.cutoff_ms
        )
    }
}

impl super::Store {
    /// Run [`DeleteFinishedBefore`] with `batch` per transaction until a batch comes back
    /// short (each transaction holds few locks, briefly); answers how many were deleted.
    pub(crate) async fn delete_finished_in_batches(
        &self,
        cutoff_ms: i64,
        batch: i64,
    ) -> crate::error::Result<u64> {
        let mut total = 0;
        loop {
            let limit = batch.max(1);
            let deleted = self.run(DeleteFinishedBefore { cutoff_ms, limit }).await?;
            total += deleted;
            if deleted < limit.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

/// The `created_at` of the `rank`-th newest finished workflow (1: the newest), if there are
/// that many. Read-only.
#[derive(Debug, Clone)]
pub(crate) struct FinishedCreatedAt {
    pub rank: i64,
}

impl Operation for FinishedCreatedAt {
    type Output = Option<i64>;
    fn describe(&self) -> String {
        format!("finding the {}th newest finished workflow", self.rank)
    }
}

// ---- Workflow attributes -----------------------------------------------------------------

/// Set a workflow's `attributes` (DBOS's `update_workflow_attributes`; `updated_at =
/// now_ms`): `attributes` (the JSON text of an object) replaces them, or with `merge` its
/// top-level keys are set over the existing object (a non-object existing value counts as
/// `{}`); `None` clears them (NULL; never with `merge`). Answers whether the workflow exists.
///
/// Retry safety: idempotent (a merge sets the same keys to the same values again).
#[derive(Debug, Clone)]
pub(crate) struct UpdateWorkflowAttributes {
    pub workflow_id: String,
    pub attributes: Option<String>,
    pub merge: bool,
    pub now_ms: i64,
}

impl Operation for UpdateWorkflowAttributes {
    type Output = bool;
    fn describe(&self) -> String {
        format!("updating the attributes of workflow {}", self.workflow_id)
    }
}

// ---- Event history -----------------------------------------------------------------------

/// One value a workflow set for an event (a `workflow_events_history` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventHistoryRow {
    pub key: String,
    pub function_id: i32,
    pub value: super::Stored,
}

/// Every value a workflow set for its events (or only for event `key`), in the order it set
/// them (by `function_id`, then key). Read-only.
#[derive(Debug, Clone)]
pub(crate) struct EventHistory {
    pub workflow_id: String,
    pub key: Option<String>,
}

impl Operation for EventHistory {
    type Output = Vec<EventHistoryRow>;
    fn describe(&self) -> String {
        match &self.key {
            Some(key) => format!(
                "reading the history of event {key} of workflow {}",
                self.workflow_id
            ),
            None => format!("reading the event history of workflow {}", self.workflow_id),
        }
    }
}
