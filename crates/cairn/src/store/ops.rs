//! The operations of the system database: one struct each, the contract both backends keep.
//!
//! An operation is data (what to do) and an [`Operation::Output`] (what it answers). Each
//! backend implements it once (`sqlite::OnSqlite`, `postgres::OnPostgres`); the engine runs it
//! with [`Store::run`](super::Store::run). Unless its doc says otherwise an operation is one
//! round trip (one statement or one short transaction). Times are epoch milliseconds.
//!
//! **Retry safety.** `Store::run` re-runs an operation after a transient failure, including
//! a connection lost at `COMMIT`, when the first attempt may have committed unseen. Every
//! operation here gives the same answer when re-run after such a commit; where that needs
//! care, its doc says how.

use super::{
    Checkpoint, Completion, InsertOutcome, NewMessage, NewWorkflow, QueueClaim, Reclaimed,
    RecordOutcome, StepRecord, Stored, WorkflowRow,
};

/// An operation on the system database.
pub(crate) trait Operation: Send + Sync + 'static {
    /// What the operation answers.
    type Output: Send + 'static;

    /// What it does, for error messages and logs, e.g. `recording step 3 of workflow abc`.
    /// Ids in it are already bounded in length by the engine.
    fn describe(&self) -> String;
}

/// Insert a workflow's status and input rows (one statement or transaction). An existing id
/// is left untouched and reported as [`InsertOutcome::Existing`] with its name and status.
///
/// Retry safety: an existing row that is `PENDING` with `owner_xid` equal to this insert's
/// `creator_xid` is this very insert, committed unseen: it is reported as
/// [`InsertOutcome::Inserted`].
#[derive(Debug, Clone)]
pub(crate) struct InsertWorkflow(pub NewWorkflow);

impl Operation for InsertWorkflow {
    type Output = InsertOutcome;
    fn describe(&self) -> String {
        format!("inserting workflow {}", self.0.id)
    }
}

/// Start a child workflow and record it as the parent's step, atomically: the child's rows and
/// the parent's checkpoint (`child_workflow_id` set) commit together, and only while the
/// parent is `PENDING` and owned by `parent.owner_xid`. When the parent's checkpoint is
/// refused (`NotOwner`, `Duplicate`) nothing is written and the second value describes the
/// child row as it is (`Existing`, with `None`s if there is none).
///
/// Retry safety: a `Duplicate` parent checkpoint whose `child_workflow_id` is `child.id`, with
/// the child `PENDING` and owned by `child.creator_xid`, is this very start committed unseen:
/// it is reported as `(Recorded, Inserted)`.
#[derive(Debug, Clone)]
pub(crate) struct StartChild {
    pub parent: StepRecord,
    pub child: NewWorkflow,
}

impl Operation for StartChild {
    type Output = (RecordOutcome, InsertOutcome);
    fn describe(&self) -> String {
        format!(
            "starting child workflow {} as step {} of workflow {}",
            self.child.id, self.parent.function_id, self.parent.workflow_id
        )
    }
}

/// Write a checkpoint, guarded by ownership (see [`StepRecord::owner_xid`]): `Recorded`,
/// `Duplicate` (the existing checkpoint, unchanged) or `NotOwner`. A step that began before
/// its workflow was cancelled (`CANCELLED`, `owner_xid` cleared, `updated_at` — the cancel's
/// time — at or after the record's `started_at_epoch_ms`) is recorded too: its body ran, so a
/// resume must not run it again. One that began after the cancel is `NotOwner`.
///
/// Retry safety: a re-run after an unseen commit finds its own checkpoint: `Duplicate` with
/// the same name, which the engine accepts.
#[derive(Debug, Clone)]
pub(crate) struct RecordStep(pub StepRecord);

impl Operation for RecordStep {
    type Output = RecordOutcome;
    fn describe(&self) -> String {
        format!(
            "recording step {} of workflow {}",
            self.0.function_id, self.0.workflow_id
        )
    }
}

/// Read the checkpoint at one `function_id`, if any.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone)]
pub(crate) struct GetCheckpoint {
    pub workflow_id: String,
    pub function_id: i32,
}

impl Operation for GetCheckpoint {
    type Output = Option<Checkpoint>;
    fn describe(&self) -> String {
        format!(
            "reading step {} of workflow {}",
            self.function_id, self.workflow_id
        )
    }
}

/// All checkpoints of a workflow, in `function_id` order.
#[derive(Debug, Clone)]
pub(crate) struct ListCheckpoints {
    pub workflow_id: String,
}

impl Operation for ListCheckpoints {
    type Output = Vec<Checkpoint>;
    fn describe(&self) -> String {
        format!("listing the steps of workflow {}", self.workflow_id)
    }
}

/// Write the terminal status and the output row if `owner_xid` still owns the `PENDING`
/// workflow; clears `owner_xid` and `deduplication_id`, sets `completed_at` and `updated_at`.
/// Answers whether the write landed (`false` after an unseen commit too: the caller then reads
/// the outcome from the row).
#[derive(Debug, Clone)]
pub(crate) struct CompleteWorkflow(pub Completion);

impl Operation for CompleteWorkflow {
    type Output = bool;
    fn describe(&self) -> String {
        format!(
            "completing workflow {} as {}",
            self.0.workflow_id, self.0.status
        )
    }
}

/// One workflow's row (status joined with input and output), or `None`.
#[derive(Debug, Clone)]
pub(crate) struct GetWorkflow {
    pub workflow_id: String,
}

impl GetWorkflow {
    /// Read the workflow `workflow_id`.
    pub(crate) fn of(workflow_id: &str) -> Self {
        Self {
            workflow_id: workflow_id.to_owned(),
        }
    }
}

impl Operation for GetWorkflow {
    type Output = Option<WorkflowRow>;
    fn describe(&self) -> String {
        format!("reading workflow {}", self.workflow_id)
    }
}

/// Claim this executor's `PENDING` workflows of this application version (rows whose
/// `application_name` is ours or NULL) for recovery: each gets `owner_xid = new_owner`,
/// `recovery_attempts + 1` and `updated_at = now_ms`, and comes back with its checkpoints,
/// ordered by `created_at` then id.
#[derive(Debug, Clone)]
pub(crate) struct ReclaimPending {
    pub executor_id: String,
    pub app_version: String,
    pub application_name: Option<String>,
    pub new_owner: String,
    pub now_ms: i64,
    /// Claim at most this many, oldest first, leaving the rest for the next batch of the same
    /// recovery pass; `None`: all at once.
    pub batch: Option<ReclaimBatch>,
}

/// One batch of a recovery pass that claims in batches.
#[derive(Debug, Clone)]
pub(crate) struct ReclaimBatch {
    /// The most rows this batch claims.
    pub limit: i64,
    /// The pass's prefix: every batch's `new_owner` is `{pass}:{n}`, so a batch skips the rows
    /// earlier batches of the pass claimed — but not its own (a re-run after a commit that
    /// succeeded unseen returns them again, and they count toward `limit`).
    pub pass: String,
}

impl ReclaimBatch {
    /// The `LIKE` pattern of the owners of this pass's batches.
    pub(crate) fn owners_pattern(&self) -> String {
        format!("{}:%", self.pass)
    }
}

impl Operation for ReclaimPending {
    type Output = Vec<Reclaimed>;
    fn describe(&self) -> String {
        format!(
            "reclaiming the pending workflows of executor {} version {}",
            self.executor_id, self.app_version
        )
    }
}

/// Move a workflow this owner holds to `MAX_RECOVERY_ATTEMPTS_EXCEEDED` (`owner_xid`,
/// `deduplication_id`, `started_at_epoch_ms`, `queue_name` cleared; `completed_at` set).
/// Answers whether it landed.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub workflow_id: String,
    pub owner_xid: String,
    pub now_ms: i64,
}

impl Operation for DeadLetter {
    type Output = bool;
    fn describe(&self) -> String {
        format!(
            "moving workflow {} to the dead-letter status",
            self.workflow_id
        )
    }
}

/// Record an application version in `application_versions` (idempotent: an existing version,
/// under any application, is left as it is).
#[derive(Debug, Clone)]
pub(crate) struct RegisterAppVersion {
    pub version: String,
    pub application_name: Option<String>,
    pub now_ms: i64,
}

impl Operation for RegisterAppVersion {
    type Output = ();
    fn describe(&self) -> String {
        format!("registering application version {}", self.version)
    }
}

/// Insert a message for `message.destination_id`. With `sender`, the sender's checkpoint
/// (`DBOS.send`) is written in the same transaction, guarded by the sender's ownership, and the
/// message only with it. A message whose `message_uuid` exists is not inserted again
/// (idempotent, hence retry-safe). A missing destination is [`crate::Error::NotFound`] and
/// writes nothing. Postgres's trigger announces the insert on `dbos_notifications_channel`.
#[derive(Debug, Clone)]
pub(crate) struct SendMessage {
    pub message: NewMessage,
    pub sender: Option<StepRecord>,
}

impl Operation for SendMessage {
    type Output = RecordOutcome;
    fn describe(&self) -> String {
        format!(
            "sending a message to workflow {} on topic {}",
            self.message.destination_id, self.message.topic
        )
    }
}

/// In one transaction, guarded by `record`'s ownership: consume the oldest unconsumed message
/// of `record.workflow_id` on `topic` (by `created_at_epoch_ms`, then insertion order), mark it
/// `consumed` with `consumed_by_function_id = record.function_id`, and write `record` as the
/// `DBOS.recv` checkpoint whose output is the message text (`null` if there was none) and
/// whose `serialization` is the message's. Answers the outcome and the message consumed
/// (`None` unless `Recorded`). `record.output` is ignored.
///
/// Retry safety: a re-run after an unseen commit is `Duplicate` with the checkpoint holding
/// the message; the engine replays it from there.
#[derive(Debug, Clone)]
pub(crate) struct ConsumeMessage {
    pub record: StepRecord,
    pub topic: String,
}

impl Operation for ConsumeMessage {
    type Output = (RecordOutcome, Option<Stored>);
    fn describe(&self) -> String {
        format!(
            "receiving a message on topic {} as step {} of workflow {}",
            self.topic, self.record.function_id, self.record.workflow_id
        )
    }
}

/// The message [`ConsumeMessage`] would consume now, without consuming it: the oldest
/// unconsumed message of `workflow_id` on `topic`, if any. `recv` looks with it while it
/// waits, so it can refuse a message it cannot decode before consuming anything (one read,
/// the one it makes anyway to learn whether a message is there).
#[derive(Debug, Clone)]
pub(crate) struct PeekMessage {
    pub workflow_id: String,
    pub topic: String,
}

impl Operation for PeekMessage {
    type Output = Option<Stored>;
    fn describe(&self) -> String {
        format!(
            "looking for a message to workflow {} on topic {}",
            self.workflow_id, self.topic
        )
    }
}

/// In one transaction, guarded by `record`'s ownership: upsert `workflow_events(key) = value`,
/// upsert `workflow_events_history(function_id, key, value)`, and write `record` (the
/// `DBOS.setEvent` checkpoint). Postgres announces it on `dbos_workflow_events_channel` with
/// payload `workflow_id::key`.
#[derive(Debug, Clone)]
pub(crate) struct SetEvent {
    pub record: StepRecord,
    pub key: String,
    pub value: String,
}

impl Operation for SetEvent {
    type Output = RecordOutcome;
    fn describe(&self) -> String {
        format!(
            "setting event {} as step {} of workflow {}",
            self.key, self.record.function_id, self.record.workflow_id
        )
    }
}

/// The latest value of an event, if set.
#[derive(Debug, Clone)]
pub(crate) struct GetEvent {
    pub workflow_id: String,
    pub key: String,
}

impl Operation for GetEvent {
    type Output = Option<Stored>;
    fn describe(&self) -> String {
        format!(
            "reading event {} of workflow {}",
            self.key, self.workflow_id
        )
    }
}

/// Every event of a workflow, `(key, latest value)`, ordered by key.
#[derive(Debug, Clone)]
pub(crate) struct ListEvents {
    pub workflow_id: String,
}

impl Operation for ListEvents {
    type Output = Vec<(String, Stored)>;
    fn describe(&self) -> String {
        format!("listing the events of workflow {}", self.workflow_id)
    }
}

/// In one transaction, guarded by `record`'s ownership: append `value` to the stream `key` of
/// `record.workflow_id` at the next dense offset (0, 1, …; concurrent writers of one stream get
/// distinct offsets) with `function_id = record.function_id`, and write `record`
/// (`DBOS.writeStream` / `DBOS.closeStream`). Postgres announces it on `dbos_streams_channel`
/// with payload `workflow_id::key`.
#[derive(Debug, Clone)]
pub(crate) struct WriteStream {
    pub record: StepRecord,
    pub key: String,
    pub value: String,
}

impl Operation for WriteStream {
    type Output = RecordOutcome;
    fn describe(&self) -> String {
        format!(
            "writing to stream {} as step {} of workflow {}",
            self.key, self.record.function_id, self.record.workflow_id
        )
    }
}

/// Values of a stream from `from_offset` on, `(offset, value)` in offset order.
#[derive(Debug, Clone)]
pub(crate) struct ReadStream {
    pub workflow_id: String,
    pub key: String,
    pub from_offset: i32,
}

impl Operation for ReadStream {
    type Output = Vec<(i32, Stored)>;
    fn describe(&self) -> String {
        format!(
            "reading stream {} of workflow {} from offset {}",
            self.key, self.workflow_id, self.from_offset
        )
    }
}

/// Cancel these workflows where they are not finished (`PENDING`, `ENQUEUED`, `DELAYED`):
/// status `CANCELLED`, `owner_xid`, `queue_name`, `deduplication_id`, `started_at_epoch_ms`
/// cleared, `updated_at = now_ms`. Answers the ids it cancelled, in the order asked, each
/// once (none for an empty list, without a round trip).
#[derive(Debug, Clone)]
pub(crate) struct CancelWorkflows {
    pub workflow_ids: Vec<String>,
    pub now_ms: i64,
}

impl Operation for CancelWorkflows {
    type Output = Vec<String>;
    fn describe(&self) -> String {
        match self.workflow_ids.as_slice() {
            [one] => format!("cancelling workflow {one}"),
            many => format!("cancelling {} workflows", many.len()),
        }
    }
}

/// Every descendant of a workflow (children, their children, …) by `parent_workflow_id`,
/// each once, never the workflow itself.
#[derive(Debug, Clone)]
pub(crate) struct Descendants {
    pub workflow_id: String,
}

impl Operation for Descendants {
    type Output = Vec<String>;
    fn describe(&self) -> String {
        format!("listing the descendants of workflow {}", self.workflow_id)
    }
}

/// Resume a workflow as DBOS 3.4 does: unless it finished (`SUCCESS` or `ERROR`), it goes
/// back to `ENQUEUED` on `queue_name` (DBOS's `_dbos_internal_queue` by default) with
/// `owner_xid`, `deduplication_id`, `started_at_epoch_ms`, `workflow_deadline_epoch_ms` and
/// `completed_at` cleared, `recovery_attempts = 0` and `updated_at = now_ms`, keeping its
/// executor and application version; whichever process dequeues it continues it from its
/// checkpoints. Answers `None` if it does not exist, `Some(true)` if it was put back,
/// `Some(false)` if it had finished. Retry-safe: a re-run finds it `ENQUEUED` and puts it back
/// again, the same row.
#[derive(Debug, Clone)]
pub(crate) struct ResumeWorkflow {
    pub workflow_id: String,
    pub queue_name: String,
    pub now_ms: i64,
}

impl Operation for ResumeWorkflow {
    type Output = Option<bool>;
    fn describe(&self) -> String {
        format!("resuming workflow {}", self.workflow_id)
    }
}

/// Claim `ENQUEUED` workflows of `queue_name` whose function is one of `names` (rows of this
/// application or unclaimed, of this version or none; of `partition_key` when given), by
/// priority then age when `limits.priority_enabled` (else by age), skipping rows another
/// claimer holds. First (always with `probe`; a backend may skip it without), the queue's
/// `DELAYED` rows whose `delay_until_epoch_ms <= now_ms` become `ENQUEUED`. It takes at most the least of: `limit`; `concurrency` minus the queue's
/// `PENDING` rows (every executor); `worker_concurrency` minus the queue's `PENDING` rows of
/// `executor_id`; the rate limit minus the queue's rows neither `ENQUEUED` nor `DELAYED`
/// whose `started_at_epoch_ms` is within the last period (DBOS 3.4's accounting); and the
/// same three within the partition. Each claimed row becomes `PENDING` with
/// `owner_xid = new_owner`, this executor and version, `started_at_epoch_ms = now_ms`,
/// `recovery_attempts + 1`, and a deadline from its timeout if it has none. Answers them with
/// their checkpoints. Claimers sharing a budget (global or partition concurrency, a rate
/// limit) take turns, so that processes together never exceed it; with `probe`, an idle queue
/// should cost no locking statement.
///
/// Retry safety: rows already `PENDING` with `owner_xid = new_owner` were claimed by this very
/// claim, committed unseen: they are answered again (and count against every limit, as any
/// `PENDING` row does).
#[derive(Debug, Clone)]
pub(crate) struct ClaimEnqueued(pub QueueClaim);

impl Operation for ClaimEnqueued {
    type Output = Vec<Reclaimed>;
    fn describe(&self) -> String {
        format!("claiming workflows of queue {}", self.0.queue_name)
    }
}

/// The partition keys (`queue_partition_key`, not NULL) of `queue_name`'s `ENQUEUED` rows and
/// of its `DELAYED` rows due at `now_ms`, each once, in no particular order: the partitions a
/// dispatcher claims from. A read: retry-safe.
#[derive(Debug, Clone)]
pub(crate) struct QueuePartitions {
    pub queue_name: String,
    pub now_ms: i64,
}

impl Operation for QueuePartitions {
    type Output = Vec<String>;
    fn describe(&self) -> String {
        format!("listing the partitions of queue {}", self.queue_name)
    }
}

/// The status and owner of each of these workflows, in one round trip (one statement, however
/// many ids): what the engine checks, about once a second, for the workflows executing in this
/// process, to stop those cancelled, finished, resumed or taken over elsewhere. A workflow
/// that does not exist is absent from the answer; the order is unspecified. An empty list
/// answers nothing without a round trip.
#[derive(Debug, Clone)]
pub(crate) struct ExecutionStates {
    pub workflow_ids: Vec<String>,
}

/// One workflow's row as [`ExecutionStates`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecutionState {
    pub workflow_id: String,
    pub status: Option<crate::status::WorkflowState>,
    pub owner_xid: Option<String>,
}

impl Operation for ExecutionStates {
    type Output = Vec<ExecutionState>;
    fn describe(&self) -> String {
        match self.workflow_ids.as_slice() {
            [one] => format!("reading the status of workflow {one}"),
            many => format!("reading the status of {} workflows", many.len()),
        }
    }
}

/// Count this executor's `PENDING` workflows of *other* application versions (a NULL version
/// included), rows of this application or of none, as [`ReclaimPending`] selects them: the
/// ones recovery leaves alone. Answers `(application_version, count)` per version, most
/// first. A read: retry-safe.
#[derive(Debug, Clone)]
pub(crate) struct CountPendingElsewhere {
    pub executor_id: String,
    pub app_version: String,
    pub application_name: Option<String>,
}

impl Operation for CountPendingElsewhere {
    type Output = Vec<(Option<String>, i64)>;
    fn describe(&self) -> String {
        format!(
            "counting the pending workflows of executor {} under versions other than {}",
            self.executor_id, self.app_version
        )
    }
}

/// From inside the body of step `function_id`, in one transaction guarded by the workflow's
/// ownership (`PENDING` with `owner_xid`): upsert `workflow_events(key) = value` and
/// `workflow_events_history(function_id, key, value)`. No checkpoint of its own: the step's
/// checkpoint records the step. Answers `Recorded`, or `NotOwner` (with the status found) and
/// writes nothing. Never `Duplicate`. Postgres announces it on `dbos_workflow_events_channel`
/// with payload `workflow_id::key`.
///
/// Retry safety: a re-run (after an unseen commit, or a re-run of the step) writes the same
/// value again: idempotent.
#[derive(Debug, Clone)]
pub(crate) struct SetEventFromStep {
    pub workflow_id: String,
    pub owner_xid: String,
    pub function_id: i32,
    pub key: String,
    pub value: String,
}

impl Operation for SetEventFromStep {
    type Output = RecordOutcome;
    fn describe(&self) -> String {
        format!(
            "setting event {} from step {} of workflow {}",
            self.key, self.function_id, self.workflow_id
        )
    }
}

/// From inside the body of step `function_id`, in one transaction guarded by the workflow's
/// ownership (`PENDING` with `owner_xid`): append `value` to the stream `key` at the next dense
/// offset with `function_id`. No checkpoint of its own. Answers `Recorded`, or `NotOwner` (with
/// the status found) and writes nothing. Never `Duplicate`. Postgres announces it on
/// `dbos_streams_channel` with payload `workflow_id::key`.
///
/// Retry safety: none beyond the step's own: a re-run after an unseen commit (or a re-run of
/// the step) appends the value again, so a stream written from a step is at-least-once, as
/// in DBOS.
#[derive(Debug, Clone)]
pub(crate) struct WriteStreamFromStep {
    pub workflow_id: String,
    pub owner_xid: String,
    pub function_id: i32,
    pub key: String,
    pub value: String,
}

impl Operation for WriteStreamFromStep {
    type Output = RecordOutcome;
    fn describe(&self) -> String {
        format!(
            "writing to stream {} from step {} of workflow {}",
            self.key, self.function_id, self.workflow_id
        )
    }
}

/// The queue columns of a workflow being enqueued (see [`EnqueueWorkflow`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct QueuedFields {
    /// `deduplication_id`: unique per queue among unfinished workflows.
    pub deduplication_id: Option<String>,
    /// `priority`: 0 (none) or 1 ..= 2^31-1, lower first.
    pub priority: i32,
    /// `queue_partition_key`.
    pub partition_key: Option<String>,
    /// `delay_until_epoch_ms`, set with status `DELAYED`.
    pub delay_until_epoch_ms: Option<i64>,
}

/// What [`EnqueueWorkflow`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnqueueOutcome {
    /// The workflow's rows were written (with the parent's checkpoint, if any).
    Enqueued,
    /// A row with this id already existed; nothing was written (the parent's checkpoint too).
    Existing {
        name: Option<String>,
        status: Option<crate::status::WorkflowState>,
    },
    /// Another unfinished workflow of the queue holds the deduplication id; nothing written.
    Deduplicated { existing_workflow_id: String },
    /// The parent's checkpoint was refused (`NotOwner`, `Duplicate`); nothing written.
    Refused(RecordOutcome),
}

/// Insert a queued workflow (`workflow.status` `ENQUEUED` or `DELAYED`, `queue_name` set,
/// `owner_xid` NULL, `recovery_attempts` 0, no `started_at_epoch_ms`), with its queue columns,
/// as DBOS's `enqueue_workflow` writes it. With `parent`, the parent's checkpoint
/// (`child_workflow_id` set) commits in the same transaction, guarded by its ownership, and
/// the child only with it. An existing id is `Existing`; a deduplication id another row of
/// the queue holds is `Deduplicated`.
///
/// Retry safety: an existing row whose `creator_xid` is this insert's is this very insert,
/// committed unseen: `Enqueued`.
#[derive(Debug, Clone)]
pub(crate) struct EnqueueWorkflow {
    pub workflow: NewWorkflow,
    pub queued: QueuedFields,
    pub parent: Option<StepRecord>,
}

impl Operation for EnqueueWorkflow {
    type Output = EnqueueOutcome;
    fn describe(&self) -> String {
        format!(
            "enqueueing workflow {} on queue {}",
            self.workflow.id,
            self.workflow.queue_name.as_deref().unwrap_or("")
        )
    }
}

/// When [`UpsertQueue`] overwrites an existing definition (DBOS 3.4's `on_conflict`).
/// Launch uses `IfLatestVersion` (DBOS's default); the others are DBOS's other policies.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueueUpdate {
    /// Overwrite only when this version is the application's latest registered one (by
    /// `version_timestamp`): an older version in a rolling deploy keeps the newer config.
    IfLatestVersion(String),
    /// Always overwrite.
    Always,
    /// Leave an existing row as it is.
    Never,
}

/// Store a queue definition in `queues` for `application_name` (DBOS's `upsert_queue`): a new
/// name is inserted; an existing one is overwritten per `update` (its owner kept if set). A
/// name another application owns is [`crate::Error::InvalidArgument`] and writes nothing.
/// `priority_enabled` is written `true` and `partition_queue` is derived from the partition
/// limits, as DBOS 3.4 writes these legacy columns. Answers whether the row is new.
/// Retry-safe: a re-run writes the same values (answering `false` after an unseen insert).
#[derive(Debug, Clone)]
pub(crate) struct UpsertQueue {
    pub queue: crate::engine::queue::Queue,
    pub application_name: String,
    pub update: QueueUpdate,
    pub now_ms: i64,
}

impl Operation for UpsertQueue {
    type Output = bool;
    fn describe(&self) -> String {
        format!("registering queue {}", self.queue.name)
    }
}

/// One stored queue definition, or `None`.
#[derive(Debug, Clone)]
pub(crate) struct GetQueue {
    pub name: String,
}

impl Operation for GetQueue {
    type Output = Option<crate::engine::queue::Queue>;
    fn describe(&self) -> String {
        format!("reading queue {}", self.name)
    }
}

/// The stored queue definitions of `application_name` and the unowned ones, by name.
#[derive(Debug, Clone)]
pub(crate) struct ListQueues {
    /// `None`: every application's.
    pub application_name: Option<String>,
}

impl Operation for ListQueues {
    type Output = Vec<crate::engine::queue::Queue>;
    fn describe(&self) -> String {
        match &self.application_name {
            Some(name) => format!("listing the queues of application {name}"),
            None => "listing the queues".to_owned(),
        }
    }
}

/// Overwrite an existing queue's limits and polling interval with `queue`'s (DBOS's
/// `update_queue`; `updated_at = now_ms`, owner unchanged). Answers whether the queue
/// exists. Retry-safe: idempotent.
#[derive(Debug, Clone)]
pub(crate) struct UpdateQueue {
    pub queue: crate::engine::queue::Queue,
    pub now_ms: i64,
}

impl Operation for UpdateQueue {
    type Output = bool;
    fn describe(&self) -> String {
        format!("updating queue {}", self.queue.name)
    }
}

/// Delete a queue's definition row (its workflows are untouched). Answers whether it existed
/// (`false` on a re-run after an unseen commit).
#[derive(Debug, Clone)]
pub(crate) struct DeleteQueue {
    pub name: String,
}

impl Operation for DeleteQueue {
    type Output = bool;
    fn describe(&self) -> String {
        format!("deleting queue {}", self.name)
    }
}

/// A row of `workflow_schedules`, as DBOS 3.4 stores it (times as DBOS writes them: ISO 8601
/// text with an offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScheduleRow {
    pub schedule_id: String,
    pub schedule_name: String,
    pub workflow_name: String,
    pub workflow_class_name: Option<String>,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub schedule: String,
    /// `ACTIVE` or `PAUSED`.
    pub status: String,
    /// The serialized context passed to every tick.
    pub context: String,
    /// The scheduled time of the latest tick fired, ISO 8601 (`2026-01-01T00:00:00+00:00`).
    pub last_fired_at: Option<String>,
    pub automatic_backfill: bool,
    /// An IANA time zone; `None` is UTC.
    pub cron_timezone: Option<String>,
    pub queue_name: Option<String>,
    pub application_name: Option<String>,
}

/// Insert a schedule. A schedule of that name that exists is left as it is and the answer is
/// `false` — unless `replace_definition`, when its definition (workflow, cron, context, time
/// zone, queue, backfill) is replaced, keeping its id, status and `last_fired_at` and its
/// owner (an unowned row takes `row.application_name`), as DBOS's `upsert_schedule`; the
/// answer is then `true`.
///
/// Retry safety: a re-run after an unseen commit finds a row with its own `schedule_id`, and
/// answers `true`.
#[derive(Debug, Clone)]
pub(crate) struct CreateSchedule {
    pub row: ScheduleRow,
    pub replace_definition: bool,
}

impl Operation for CreateSchedule {
    type Output = bool;
    fn describe(&self) -> String {
        format!("creating schedule {}", self.row.schedule_name)
    }
}

/// The schedules of `application_name` and the unowned ones (every schedule with `None`),
/// by name. A read.
#[derive(Debug, Clone)]
pub(crate) struct ListSchedules {
    pub application_name: Option<String>,
}

impl Operation for ListSchedules {
    type Output = Vec<ScheduleRow>;
    fn describe(&self) -> String {
        "listing schedules".to_owned()
    }
}

/// One schedule by name, or `None`. A read.
#[derive(Debug, Clone)]
pub(crate) struct GetSchedule {
    pub schedule_name: String,
}

impl Operation for GetSchedule {
    type Output = Option<ScheduleRow>;
    fn describe(&self) -> String {
        format!("reading schedule {}", self.schedule_name)
    }
}

/// Set a schedule's `status` (`ACTIVE` or `PAUSED`). Answers whether the schedule exists.
/// Idempotent.
#[derive(Debug, Clone)]
pub(crate) struct SetScheduleStatus {
    pub schedule_name: String,
    pub status: String,
}

impl Operation for SetScheduleStatus {
    type Output = bool;
    fn describe(&self) -> String {
        format!("setting schedule {} to {}", self.schedule_name, self.status)
    }
}

/// Delete a schedule (its workflows stay). Answers whether it existed — `false` after an
/// unseen commit too, which the caller cannot tell from a missing schedule.
#[derive(Debug, Clone)]
pub(crate) struct DeleteSchedule {
    pub schedule_name: String,
}

impl Operation for DeleteSchedule {
    type Output = bool;
    fn describe(&self) -> String {
        format!("deleting schedule {}", self.schedule_name)
    }
}

/// Record the scheduled time of the latest tick fired (`last_fired_at`, as DBOS's
/// `update_last_fired_at`). Idempotent.
#[derive(Debug, Clone)]
pub(crate) struct SetLastFired {
    pub schedule_name: String,
    pub last_fired_at: String,
}

impl Operation for SetLastFired {
    type Output = ();
    fn describe(&self) -> String {
        format!("recording the last tick of schedule {}", self.schedule_name)
    }
}

/// Insert a schedule's tick: [`InsertWorkflow`] of `workflow` (an `ENQUEUED` row), then
/// `workflow_status.schedule_name = schedule_name` on that row where it has none, as DBOS's
/// scheduler records which schedule started a workflow. Answers the insert's outcome.
///
/// Retry safety: [`InsertWorkflow`]'s; the second write is idempotent.
#[derive(Debug, Clone)]
pub(crate) struct InsertTick {
    pub workflow: NewWorkflow,
    pub schedule_name: String,
}

impl Operation for InsertTick {
    type Output = InsertOutcome;
    fn describe(&self) -> String {
        format!(
            "starting workflow {} of schedule {}",
            self.workflow.id, self.schedule_name
        )
    }
}

/// A debounce's write on a queued workflow still `DELAYED` (DBOS's
/// `debounce_delayed_workflow`, by workflow id): where `workflow_uuid`, `name` and
/// `status = 'DELAYED'` match, set `is_debounced`, keep an existing
/// `debounce_deadline_epoch_ms` (else set `debounce_deadline_epoch_ms`), set
/// `delay_until_epoch_ms` to `delay_until_epoch_ms` (none: keep it) capped at that deadline,
/// and replace the inputs when given. Answers whether the row matched.
///
/// Retry safety: idempotent (the deadline is only ever set once, the rest is overwritten).
#[derive(Debug, Clone)]
pub(crate) struct UpdateDelayed {
    pub workflow_id: String,
    pub workflow_name: String,
    pub inputs: Option<String>,
    pub delay_until_epoch_ms: Option<i64>,
    pub debounce_deadline_epoch_ms: Option<i64>,
    pub now_ms: i64,
}

impl Operation for UpdateDelayed {
    type Output = bool;
    fn describe(&self) -> String {
        format!("debouncing delayed workflow {}", self.workflow_id)
    }
}
