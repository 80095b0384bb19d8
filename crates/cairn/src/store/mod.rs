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
