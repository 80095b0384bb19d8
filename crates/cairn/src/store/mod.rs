//! The system database: rows and statements, nothing of the engine.
//!
//! Both backends implement [`SystemDatabase`] and pass the same behaviour tests. The engine
//! talks to a [`Store`], which dispatches to the backend chosen by the database URL.
//! Values arrive here already serialized (portable JSON text); the store never decodes them.

use std::future::Future;

use crate::error::Result;

pub(crate) mod postgres;
pub(crate) mod sqlite;

/// Status strings, as DBOS writes them.
pub(crate) mod status {
    pub const PENDING: &str = "PENDING";
    pub const ENQUEUED: &str = "ENQUEUED";
    pub const SUCCESS: &str = "SUCCESS";
    pub const ERROR: &str = "ERROR";
    pub const CANCELLED: &str = "CANCELLED";
    pub const MAX_RECOVERY_ATTEMPTS_EXCEEDED: &str = "MAX_RECOVERY_ATTEMPTS_EXCEEDED";
}

/// The `serialization` column value for everything Cairn writes.
pub(crate) const PORTABLE_JSON: &str = "portable_json";

/// The schema version Cairn reads and writes (DBOS 3.4).
pub(crate) const SCHEMA_VERSION: i64 = 125;

/// A workflow about to be inserted (status row and input row, in one statement or transaction).
#[derive(Debug, Clone)]
pub(crate) struct NewWorkflow {
    pub id: String,
    pub name: String,
    /// `PENDING` for a direct start (runs at once), `ENQUEUED` for a queued one.
    pub status: &'static str,
    pub queue_name: Option<String>,
    pub executor_id: String,
    pub app_version: String,
    pub application_name: Option<String>,
    /// The portable JSON of `{"positionalArgs":[…],"namedArgs":{}}`.
    pub inputs: String,
    /// The inserter's token. Written to `creator_xid`, and to `owner_xid` for a `PENDING` start.
    pub creator_xid: String,
    pub parent_workflow_id: Option<String>,
    pub timeout_ms: Option<i64>,
    pub deadline_epoch_ms: Option<i64>,
    /// Epoch milliseconds, used for `created_at`, `updated_at` and (for `PENDING`) `started_at_epoch_ms`.
    pub now_ms: i64,
}

/// What [`SystemDatabase::insert_workflow`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InsertOutcome {
    /// The row is new: the caller owns the execution.
    Inserted,
    /// A row with this id already existed (an idempotent re-start); it was left unchanged.
    Existing {
        name: Option<String>,
        status: Option<String>,
    },
}

/// One recorded operation of a workflow (`operation_outputs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub function_id: i32,
    pub function_name: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub child_workflow_id: Option<String>,
    pub serialization: Option<String>,
    pub started_at_epoch_ms: Option<i64>,
    pub completed_at_epoch_ms: Option<i64>,
}

/// A checkpoint to write for a workflow, guarded by its ownership token.
#[derive(Debug, Clone)]
pub(crate) struct StepRecord {
    pub workflow_id: String,
    /// The write lands only while the workflow is `PENDING` and `owner_xid` equals this.
    pub owner_xid: String,
    pub function_id: i32,
    pub function_name: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub child_workflow_id: Option<String>,
    pub started_at_epoch_ms: i64,
    pub completed_at_epoch_ms: i64,
    pub application_name: Option<String>,
}

/// What [`SystemDatabase::record_step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordOutcome {
    /// The checkpoint was written.
    Recorded,
    /// A checkpoint with this `function_id` was already there; it is returned unchanged.
    Duplicate(Checkpoint),
    /// The workflow is no longer ours to write: another owner, not `PENDING`, or gone.
    /// `status` is the workflow's current status, if it exists.
    NotOwner { status: Option<String> },
}

/// A workflow's terminal outcome, written only by its current owner.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub workflow_id: String,
    pub owner_xid: String,
    /// `SUCCESS` or `ERROR`.
    pub status: &'static str,
    pub output: Option<String>,
    pub error: Option<String>,
    pub now_ms: i64,
}

/// A workflow's row as read back: the status row joined with its input and output rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WorkflowRow {
    pub workflow_id: String,
    pub status: Option<String>,
    pub name: Option<String>,
    pub class_name: Option<String>,
    pub config_name: Option<String>,
    pub queue_name: Option<String>,
    pub executor_id: Option<String>,
    pub application_version: Option<String>,
    pub application_name: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at_epoch_ms: Option<i64>,
    pub completed_at: Option<i64>,
    pub recovery_attempts: Option<i64>,
    pub workflow_timeout_ms: Option<i64>,
    pub workflow_deadline_epoch_ms: Option<i64>,
    pub parent_workflow_id: Option<String>,
    pub owner_xid: Option<String>,
    pub serialization: Option<String>,
    /// From `workflow_input.inputs`.
    pub inputs: Option<String>,
    /// From `workflow_output.output`.
    pub output: Option<String>,
    /// From `workflow_output.error`.
    pub error: Option<String>,
}

/// A `PENDING` workflow this executor has just re-claimed for recovery, with a fresh owner.
#[derive(Debug, Clone)]
pub(crate) struct Reclaimed {
    pub row: WorkflowRow,
    /// The checkpoints recorded so far, in `function_id` order (loaded once per recovery).
    pub checkpoints: Vec<Checkpoint>,
}

/// A message to insert into `notifications`.
#[derive(Debug, Clone)]
pub(crate) struct NewMessage {
    pub destination_id: String,
    /// Already normalized: a missing topic is [`NULL_TOPIC`].
    pub topic: String,
    /// Portable JSON text.
    pub message: String,
    /// `<idempotency key>::<destination>`, or a random UUID.
    pub message_uuid: String,
}

/// A stored value and its `serialization` column (NULL for rows written before it existed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub text: String,
    pub serialization: Option<String>,
}

/// What [`SystemDatabase::claim_enqueued`] claims, and for whom.
#[derive(Debug, Clone)]
pub(crate) struct QueueClaim {
    pub queue_name: String,
    /// The workflow functions this process can run.
    pub names: Vec<String>,
    pub executor_id: String,
    pub app_version: String,
    pub application_name: Option<String>,
    pub new_owner: String,
    pub now_ms: i64,
    pub limit: i64,
}

/// The topic DBOS stores for a message sent without one.
pub(crate) const NULL_TOPIC: &str = "__null__topic__";

/// Where a backend delivers change announcements: `(channel, payload)`.
pub(crate) type ChangeSink = std::sync::Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The operations the engine needs from a system database.
///
/// Every method is one round trip (one statement or one short transaction) unless its doc
/// says otherwise. Times are epoch milliseconds.
pub(crate) trait SystemDatabase: Send + Sync + 'static {
    /// Insert a workflow's status and input rows; an existing id is left untouched.
    fn insert_workflow(
        &self,
        wf: &NewWorkflow,
    ) -> impl Future<Output = Result<InsertOutcome>> + Send;

    /// Start a child workflow and record it as the parent's step, atomically: the child's rows
    /// and the parent's checkpoint (`child_workflow_id` set) commit together, and only while
    /// the parent is `PENDING` and owned by `parent.owner_xid`.
    fn insert_child_workflow(
        &self,
        parent: &StepRecord,
        child: &NewWorkflow,
    ) -> impl Future<Output = Result<(RecordOutcome, InsertOutcome)>> + Send;

    /// Write a checkpoint, guarded by ownership (see [`StepRecord::owner_xid`]).
    fn record_step(&self, rec: &StepRecord) -> impl Future<Output = Result<RecordOutcome>> + Send;

    /// Read the checkpoint at one `function_id`, if any.
    #[cfg_attr(not(test), allow(dead_code))]
    fn get_checkpoint(
        &self,
        workflow_id: &str,
        function_id: i32,
    ) -> impl Future<Output = Result<Option<Checkpoint>>> + Send;

    /// All checkpoints of a workflow, in `function_id` order.
    fn list_checkpoints(
        &self,
        workflow_id: &str,
    ) -> impl Future<Output = Result<Vec<Checkpoint>>> + Send;

    /// Write the terminal status and the output row if `owner_xid` still owns the `PENDING`
    /// workflow; clears `owner_xid`, sets `completed_at`. Returns whether the write landed.
    fn complete_workflow(&self, c: &Completion) -> impl Future<Output = Result<bool>> + Send;

    /// One workflow's row, or `None`.
    fn get_workflow(
        &self,
        workflow_id: &str,
    ) -> impl Future<Output = Result<Option<WorkflowRow>>> + Send;

    /// Claim this executor's `PENDING` workflows of this application version (rows whose
    /// `application_name` is ours or NULL) for recovery: each gets `owner_xid = new_owner`,
    /// `recovery_attempts + 1` and `updated_at = now_ms`, and comes back with its checkpoints.
    fn reclaim_pending(
        &self,
        executor_id: &str,
        app_version: &str,
        application_name: Option<&str>,
        new_owner: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<Reclaimed>>> + Send;

    /// Move a workflow this owner holds to `MAX_RECOVERY_ATTEMPTS_EXCEEDED`.
    fn dead_letter(
        &self,
        workflow_id: &str,
        owner_xid: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Record this application version in `application_versions` (idempotent).
    fn register_app_version(
        &self,
        version: &str,
        application_name: Option<&str>,
        now_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    // ---- Messages (DBOS `send` / `recv`) ----

    /// Insert a message for `msg.destination_id`. With `sender`, the sender's checkpoint
    /// (`DBOS.send`) is written in the same transaction, guarded by the sender's ownership.
    /// A message whose `message_uuid` exists is not inserted again (idempotent). A missing
    /// destination is [`crate::Error::NotFound`] and writes nothing. Postgres's trigger
    /// announces the insert on `dbos_notifications_channel`.
    fn send_message(
        &self,
        msg: &NewMessage,
        sender: Option<&StepRecord>,
    ) -> impl Future<Output = Result<RecordOutcome>> + Send;

    /// In one transaction, guarded by `rec`'s ownership: consume the oldest unconsumed message
    /// of `rec.workflow_id` on `topic` (by `created_at_epoch_ms`, then insertion order), mark it
    /// `consumed` with `consumed_by_function_id = rec.function_id`, and write `rec` as the
    /// `DBOS.recv` checkpoint with the message text as output (`null` if there was none).
    /// The checkpoint's `serialization` is the message's. Returns the outcome and the message
    /// consumed.
    fn consume_message(
        &self,
        rec: &StepRecord,
        topic: &str,
    ) -> impl Future<Output = Result<(RecordOutcome, Option<Stored>)>> + Send;

    /// Whether `workflow_id` has an unconsumed message on `topic`.
    fn has_message(
        &self,
        workflow_id: &str,
        topic: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    // ---- Events ----

    /// In one transaction, guarded by `rec`'s ownership: upsert `workflow_events(key) = value`,
    /// insert `workflow_events_history(function_id, key, value)`, and write `rec` (the
    /// `DBOS.setEvent` checkpoint). Postgres announces it on `dbos_workflow_events_channel`
    /// with payload `workflow_id::key`.
    fn set_event(
        &self,
        rec: &StepRecord,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<RecordOutcome>> + Send;

    /// The latest value of an event, if set.
    fn get_event(
        &self,
        workflow_id: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Stored>>> + Send;

    /// Every event of a workflow, `(key, latest value)`, ordered by key.
    fn list_events(
        &self,
        workflow_id: &str,
    ) -> impl Future<Output = Result<Vec<(String, Stored)>>> + Send;

    // ---- Streams ----

    /// In one transaction, guarded by `rec`'s ownership: append `value` to the stream `key` of
    /// `rec.workflow_id` at the next dense offset (0, 1, …) with `function_id = rec.function_id`,
    /// and write `rec` (`DBOS.writeStream` / `DBOS.closeStream`). Postgres announces it on
    /// `dbos_streams_channel` with payload `workflow_id::key`.
    fn write_stream(
        &self,
        rec: &StepRecord,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<RecordOutcome>> + Send;

    /// Values of a stream from `from_offset` on, `(offset, value)` in offset order.
    fn read_stream(
        &self,
        workflow_id: &str,
        key: &str,
        from_offset: i32,
    ) -> impl Future<Output = Result<Vec<(i32, Stored)>>> + Send;

    // ---- Cancellation, resume, deadlines ----

    /// Cancel these workflows where they are not finished (`PENDING`, `ENQUEUED`, `DELAYED`):
    /// status `CANCELLED`, `owner_xid`, `queue_name`, `deduplication_id`, `started_at_epoch_ms`
    /// cleared, `updated_at = now_ms`. Returns the ids it cancelled.
    fn cancel_workflows(
        &self,
        workflow_ids: &[String],
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Every descendant of a workflow (children, their children, …) by `parent_workflow_id`.
    fn descendants(&self, workflow_id: &str) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Resume a `CANCELLED`, `ERROR`, `MAX_RECOVERY_ATTEMPTS_EXCEEDED` or `ENQUEUED` workflow
    /// here: status `PENDING`, `owner_xid = new_owner`, `executor_id`, `application_version`,
    /// `recovery_attempts = 1`, `started_at_epoch_ms = now_ms`, `queue_name` NULL,
    /// `workflow_deadline_epoch_ms = now_ms + workflow_timeout_ms` (NULL without a timeout),
    /// `completed_at` NULL, `updated_at = now_ms`. Returns it with its checkpoints, or `None`
    /// if it does not exist or is `PENDING`/`SUCCESS` (nothing to resume).
    fn resume_workflow(
        &self,
        workflow_id: &str,
        executor_id: &str,
        app_version: &str,
        new_owner: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<Reclaimed>>> + Send;

    /// Claim up to `claim.limit` `ENQUEUED` workflows of `claim.queue_name` whose function is
    /// one of `claim.names` (rows of this application or unclaimed, of this version or none),
    /// by priority then age, skipping rows another claimer holds: each becomes `PENDING` with
    /// `owner_xid = new_owner`, this executor and version, `started_at_epoch_ms = now_ms`,
    /// `recovery_attempts + 1`, and a deadline from its timeout if it has none. Returns them
    /// with their checkpoints.
    fn claim_enqueued(
        &self,
        claim: &QueueClaim,
    ) -> impl Future<Output = Result<Vec<Reclaimed>>> + Send;

    // ---- Notifications ----

    /// Start delivering change announcements to `sink` as `(channel, payload)`. Postgres:
    /// LISTEN on `dbos_notifications_channel`, `dbos_workflow_events_channel` and
    /// `dbos_streams_channel` on a dedicated connection, reconnecting after a loss (and then
    /// delivering `("*", "")` so waiters re-check). SQLite: watch `PRAGMA data_version` on a
    /// dedicated connection every `poll` and deliver `("*", "")` when another connection or
    /// process committed. The task stops at `close`.
    fn watch_changes(
        &self,
        sink: ChangeSink,
        poll: std::time::Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Release connections and background threads.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// The system database the engine uses: one of the two backends.
pub(crate) enum Store {
    Postgres(postgres::PostgresStore),
    Sqlite(sqlite::SqliteStore),
}

macro_rules! dispatch {
    ($self:ident, $db:ident => $body:expr) => {
        match $self {
            Store::Postgres($db) => $body,
            Store::Sqlite($db) => $body,
        }
    };
}

impl Store {
    /// The backend's name, as the benchmark harness and logs print it.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    pub(crate) async fn insert_workflow(&self, wf: &NewWorkflow) -> Result<InsertOutcome> {
        dispatch!(self, db => db.insert_workflow(wf).await)
    }

    pub(crate) async fn insert_child_workflow(
        &self,
        parent: &StepRecord,
        child: &NewWorkflow,
    ) -> Result<(RecordOutcome, InsertOutcome)> {
        dispatch!(self, db => db.insert_child_workflow(parent, child).await)
    }

    pub(crate) async fn record_step(&self, rec: &StepRecord) -> Result<RecordOutcome> {
        dispatch!(self, db => db.record_step(rec).await)
    }

    pub(crate) async fn list_checkpoints(&self, workflow_id: &str) -> Result<Vec<Checkpoint>> {
        dispatch!(self, db => db.list_checkpoints(workflow_id).await)
    }

    pub(crate) async fn complete_workflow(&self, c: &Completion) -> Result<bool> {
        dispatch!(self, db => db.complete_workflow(c).await)
    }

    pub(crate) async fn get_workflow(&self, workflow_id: &str) -> Result<Option<WorkflowRow>> {
        dispatch!(self, db => db.get_workflow(workflow_id).await)
    }

    pub(crate) async fn reclaim_pending(
        &self,
        executor_id: &str,
        app_version: &str,
        application_name: Option<&str>,
        new_owner: &str,
        now_ms: i64,
    ) -> Result<Vec<Reclaimed>> {
        dispatch!(self, db => db.reclaim_pending(executor_id, app_version, application_name, new_owner, now_ms).await)
    }

    pub(crate) async fn dead_letter(
        &self,
        workflow_id: &str,
        owner_xid: &str,
        now_ms: i64,
    ) -> Result<bool> {
        dispatch!(self, db => db.dead_letter(workflow_id, owner_xid, now_ms).await)
    }

    pub(crate) async fn register_app_version(
        &self,
        version: &str,
        application_name: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        dispatch!(self, db => db.register_app_version(version, application_name, now_ms).await)
    }

    pub(crate) async fn send_message(
        &self,
        msg: &NewMessage,
        sender: Option<&StepRecord>,
    ) -> Result<RecordOutcome> {
        dispatch!(self, db => db.send_message(msg, sender).await)
    }

    pub(crate) async fn consume_message(
        &self,
        rec: &StepRecord,
        topic: &str,
    ) -> Result<(RecordOutcome, Option<Stored>)> {
        dispatch!(self, db => db.consume_message(rec, topic).await)
    }

    pub(crate) async fn has_message(&self, workflow_id: &str, topic: &str) -> Result<bool> {
        dispatch!(self, db => db.has_message(workflow_id, topic).await)
    }

    pub(crate) async fn set_event(
        &self,
        rec: &StepRecord,
        key: &str,
        value: &str,
    ) -> Result<RecordOutcome> {
        dispatch!(self, db => db.set_event(rec, key, value).await)
    }

    pub(crate) async fn get_event(&self, workflow_id: &str, key: &str) -> Result<Option<Stored>> {
        dispatch!(self, db => db.get_event(workflow_id, key).await)
    }

    pub(crate) async fn list_events(&self, workflow_id: &str) -> Result<Vec<(String, Stored)>> {
        dispatch!(self, db => db.list_events(workflow_id).await)
    }

    pub(crate) async fn write_stream(
        &self,
        rec: &StepRecord,
        key: &str,
        value: &str,
    ) -> Result<RecordOutcome> {
        dispatch!(self, db => db.write_stream(rec, key, value).await)
    }

    pub(crate) async fn read_stream(
        &self,
        workflow_id: &str,
        key: &str,
        from_offset: i32,
    ) -> Result<Vec<(i32, Stored)>> {
        dispatch!(self, db => db.read_stream(workflow_id, key, from_offset).await)
    }

    pub(crate) async fn cancel_workflows(
        &self,
        workflow_ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<String>> {
        dispatch!(self, db => db.cancel_workflows(workflow_ids, now_ms).await)
    }

    pub(crate) async fn descendants(&self, workflow_id: &str) -> Result<Vec<String>> {
        dispatch!(self, db => db.descendants(workflow_id).await)
    }

    pub(crate) async fn resume_workflow(
        &self,
        workflow_id: &str,
        executor_id: &str,
        app_version: &str,
        new_owner: &str,
        now_ms: i64,
    ) -> Result<Option<Reclaimed>> {
        dispatch!(self, db => db.resume_workflow(workflow_id, executor_id, app_version, new_owner, now_ms).await)
    }

    pub(crate) async fn claim_enqueued(&self, claim: &QueueClaim) -> Result<Vec<Reclaimed>> {
        dispatch!(self, db => db.claim_enqueued(claim).await)
    }

    pub(crate) async fn watch_changes(
        &self,
        sink: ChangeSink,
        poll: std::time::Duration,
    ) -> Result<()> {
        dispatch!(self, db => db.watch_changes(sink, poll).await)
    }

    pub(crate) async fn close(&self) {
        dispatch!(self, db => db.close().await)
    }
}

/// Options for opening a system database.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    /// Postgres schema holding the tables. Default: `dbos`.
    pub schema: String,
    /// Maximum connections (Postgres pool size; SQLite reader connections). Default: 16.
    pub pool_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            schema: "dbos".to_owned(),
            pool_size: 16,
        }
    }
}

/// Open (creating and migrating if needed) the system database a URL names:
/// `postgres://` / `postgresql://` select Postgres, `sqlite:` URLs select SQLite.
pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Store> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Store::Postgres(
            postgres::PostgresStore::connect(url, options).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Store::Sqlite(
            sqlite::SqliteStore::open(url, options).await?,
        ))
    } else {
        Err(crate::Error::Config(format!(
            "system database URL `{}` is neither postgres:// nor sqlite:",
            redact(url)
        )))
    }
}

/// A URL with its password replaced by `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
