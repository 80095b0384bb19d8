//! The system database: rows and statements, nothing of the engine.
//!
//! Every operation the engine performs is a small struct in [`ops`] (`RecordStep`,
//! `GetWorkflow`, …) whose `Output` says what it returns. Each backend implements it once —
//! [`sqlite::OnSqlite`] over a connection, [`postgres::OnPostgres`] over the pool — and
//! [`Store::run`] dispatches to the backend the URL chose, retrying failures that a database
//! outage causes (see [`retry`]). Adding an operation is one struct and one impl per backend.
//! Values arrive here already serialized (portable JSON text); the store never decodes them.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::status::WorkflowState;

pub(crate) mod bulk;
#[cfg(test)]
mod conformance;
pub(crate) mod list;
pub(crate) mod manage;
pub(crate) mod ops;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod retry;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
pub(crate) mod stats;
pub(crate) mod takeover;

pub(crate) use bulk::SendMessages;
pub(crate) use list::{ListSteps, ListWorkflows, MsRange};
pub(crate) use manage::*;
pub(crate) use ops::*;
pub(crate) use takeover::{PendingExecutors, TakeOverPending};

/// The `serialization` column value for everything Cairn writes.
pub(crate) const PORTABLE_JSON: &str = "portable_json";

/// The schema version Cairn reads and writes (DBOS 3.4).
pub(crate) const SCHEMA_VERSION: i64 = 125;

/// A workflow about to be inserted (status row and input row, in one statement or transaction).
#[derive(Debug, Clone)]
pub(crate) struct NewWorkflow {
    pub id: String,
    pub name: String,
    /// `Pending` for a direct start (runs at once), `Enqueued` for a queued one.
    pub status: WorkflowState,
    pub queue_name: Option<String>,
    pub executor_id: String,
    /// `None` (NULL): any process serving the queue may run it (a client's enqueue).
    pub app_version: Option<String>,
    pub application_name: Option<String>,
    /// The portable JSON of `{"positionalArgs":[…],"namedArgs":{}}`.
    pub inputs: String,
    /// The inserter's token. Written to `creator_xid`, and to `owner_xid` for a `PENDING` start.
    pub creator_xid: String,
    pub parent_workflow_id: Option<String>,
    pub timeout_ms: Option<i64>,
    pub deadline_epoch_ms: Option<i64>,
    /// The instance the workflow runs as (`config_name`, DBOS's configured class instance).
    pub config_name: Option<String>,
    /// Epoch milliseconds, used for `created_at`, `updated_at` and (for `PENDING`) `started_at_epoch_ms`.
    pub now_ms: i64,
    /// The user's attributes, the JSON text of an object (`attributes`); `None` writes NULL.
    pub attributes: Option<String>,
}

/// What [`InsertWorkflow`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InsertOutcome {
    /// The row is new: the caller owns the execution.
    Inserted,
    /// A row with this id already existed (an idempotent re-start); it was left unchanged.
    Existing {
        name: Option<String>,
        status: Option<WorkflowState>,
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

/// What [`RecordStep`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordOutcome {
    /// The checkpoint was written.
    Recorded,
    /// A checkpoint with this `function_id` was already there; it is returned unchanged.
    Duplicate(Checkpoint),
    /// The workflow is no longer ours to write: another owner, not `PENDING`, or gone.
    /// `status` is the workflow's current status, if it exists.
    NotOwner { status: Option<WorkflowState> },
}

/// A workflow's terminal outcome, written only by its current owner.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub workflow_id: String,
    pub owner_xid: String,
    /// `Success` or `Error`.
    pub status: WorkflowState,
    pub output: Option<String>,
    pub error: Option<String>,
    pub now_ms: i64,
}

/// A workflow's row as read back: the status row joined with its input and output rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WorkflowRow {
    pub workflow_id: String,
    pub status: Option<WorkflowState>,
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
    pub deduplication_id: Option<String>,
    pub priority: i32,
    pub queue_partition_key: Option<String>,
    pub forked_from: Option<String>,
    pub was_forked_from: bool,
    /// The JSON text of `attributes` (JSONB on Postgres, read as text).
    pub attributes: Option<String>,
    pub delay_until_epoch_ms: Option<i64>,
    pub authenticated_user: Option<String>,
    pub assumed_role: Option<String>,
    /// The JSON text of the roles list.
    pub authenticated_roles: Option<String>,
    pub schedule_name: Option<String>,
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
    /// `<idempotency key>::<destination>`, or a new time-ordered UUID (v7).
    pub message_uuid: String,
}

/// A stored value and its `serialization` column (NULL for rows written before it existed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub text: String,
    pub serialization: Option<String>,
}

/// What [`ClaimEnqueued`] claims, and for whom.
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
    /// The most rows this claim takes (its batch).
    pub limit: i64,
    /// The queue's limits, each counted from the rows themselves.
    pub limits: ClaimLimits,
    /// Claim only rows of this partition (`queue_partition_key`); `None`: any row.
    pub partition_key: Option<String>,
    /// Whether to check with a plain read that anything waits before claiming (so an idle
    /// queue costs no locking statement); a dispatcher whose last claim found work skips it.
    pub probe: bool,
}

/// A queue's limits as a claim applies them (see [`ClaimEnqueued`]). `None`: no limit.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClaimLimits {
    /// Whether rows are taken by `priority` before age (else by age only).
    pub priority_enabled: bool,
    /// `PENDING` rows of the queue, across executors.
    pub concurrency: Option<i64>,
    /// `PENDING` rows of the queue of this executor.
    pub worker_concurrency: Option<i64>,
    /// `(limit, period_ms)`: rows of the queue started within the last period.
    pub rate_limit: Option<(i64, i64)>,
    /// As `concurrency`, within the claimed partition.
    pub partition_concurrency: Option<i64>,
    /// As `worker_concurrency`, within the claimed partition.
    pub partition_worker_concurrency: Option<i64>,
    /// As `rate_limit`, within the claimed partition.
    pub partition_rate_limit: Option<(i64, i64)>,
}

/// The topic DBOS stores for a message sent without one.
pub(crate) const NULL_TOPIC: &str = "__null__topic__";

/// Where a backend delivers change announcements: `(channel, payload)`.
pub(crate) type ChangeSink = std::sync::Arc<dyn Fn(&str, &str) + Send + Sync>;

/// What trying to take an executor id's liveness lock found (see [`Store::lock_executor`]).
#[derive(Debug)]
pub(crate) enum LockAttempt<G> {
    /// This store holds it now.
    Taken(G),
    /// A live process (or another application of this one) holds it; `holder` says which,
    /// when the backend can tell.
    InUse { holder: Option<String> },
}

impl<G> LockAttempt<G> {
    fn map<H>(self, f: impl FnOnce(G) -> H) -> LockAttempt<H> {
        match self {
            LockAttempt::Taken(held) => LockAttempt::Taken(f(held)),
            LockAttempt::InUse { holder } => LockAttempt::InUse { holder },
        }
    }
}

/// A held executor lock, released when the store closes (or, less politely, dropped).
#[derive(Debug)]
enum HeldLock {
    #[cfg(feature = "postgres")]
    Session(postgres::liveness::LockSession),
    #[cfg(feature = "sqlite")]
    File(sqlite::liveness::LockFile),
}

impl HeldLock {
    async fn release(self) {
        match self {
            #[cfg(feature = "postgres")]
            HeldLock::Session(session) => session.release().await,
            #[cfg(feature = "sqlite")]
            HeldLock::File(file) => drop(file),
        }
    }
}

/// How often a lock in use is tried again during [`Store::lock_executor`]'s grace period.
const LOCK_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// An operation as the engine runs it: available on every backend compiled in.
#[cfg(all(feature = "sqlite", feature = "postgres"))]
pub(crate) trait Op: Operation + sqlite::OnSqlite + postgres::OnPostgres {}
#[cfg(all(feature = "sqlite", feature = "postgres"))]
impl<T: Operation + sqlite::OnSqlite + postgres::OnPostgres> Op for T {}
/// An operation as the engine runs it: available on every backend compiled in.
#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
pub(crate) trait Op: Operation + sqlite::OnSqlite {}
#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
impl<T: Operation + sqlite::OnSqlite> Op for T {}
/// An operation as the engine runs it: available on every backend compiled in.
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
pub(crate) trait Op: Operation + postgres::OnPostgres {}
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
impl<T: Operation + postgres::OnPostgres> Op for T {}

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "cairn needs at least one system database backend: enable the `sqlite` or `postgres` feature"
);

/// The system database the engine uses: one of the backends, and the retry policy around it.
pub(crate) struct Store {
    backend: Backend,
    retry: retry::Retry,
    /// The executor id this store holds for its process, if any (see [`Store::lock_executor`]).
    executor_lock: std::sync::Mutex<Option<HeldLock>>,
}

/// The backend a URL selected.
enum Backend {
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresStore),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// The Postgres backend, if this store is one (a data source on the same database
    /// writes its checkpoints itself).
    #[cfg(feature = "postgres")]
    pub(crate) fn as_postgres(&self) -> Option<&postgres::PostgresStore> {
        match &self.backend {
            Backend::Postgres(pg) => Some(pg),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => None,
        }
    }

    /// The SQLite backend, if this store is one.
    #[cfg(feature = "sqlite")]
    pub(crate) fn as_sqlite(&self) -> Option<&sqlite::SqliteStore> {
        match &self.backend {
            Backend::Sqlite(lite) => Some(lite),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => None,
        }
    }

    /// The backend's name, as the benchmark harness and logs print it.
    pub(crate) fn backend(&self) -> &'static str {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Run an operation, retrying it while the failure is transient (the database is
    /// unreachable, restarting, or busy) until it succeeds or the store stops retrying
    /// ([`Store::stop_retrying`], at shutdown: then [`Error::Shutdown`]). Permanent failures
    /// return at once. Operations are written so that re-running one whose first commit
    /// succeeded unseen gives the same answer (see each operation's doc).
    ///
    /// Boxed: every workflow awaits several of these nested inside its own future (a step
    /// inside a step in a debug build overflowed the stack), and while a workflow waits for a
    /// commit this box is most of what it holds; the operation itself lives in the box only.
    pub(crate) fn run<O: Op>(
        &self,
        op: O,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<O::Output>> + Send + '_>> {
        Box::pin(async move {
            let op = Arc::new(op);
            self.retry
                .run(&*op, || self.run_once(Arc::clone(&op)))
                .await
        })
    }

    /// One attempt of an operation, without retrying. Each backend's future is boxed on its
    /// own, so an operation waiting on SQLite holds SQLite's small future rather than room
    /// for Postgres's large one (a match over both is as large as the larger).
    pub(crate) fn run_once<O: Op>(
        &self,
        op: Arc<O>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<O::Output>> + Send + '_>> {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => {
                Box::pin(async move { postgres::OnPostgres::on_postgres(&*op, db).await })
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => Box::pin(db.run(op)),
        }
    }

    /// From now on, a transient failure ends its operation with [`Error::Shutdown`] instead
    /// of being retried (called when the application shuts down).
    pub(crate) fn stop_retrying(&self) {
        self.retry.stop();
    }

    /// Start delivering change announcements to `sink` as `(channel, payload)`. Postgres:
    /// LISTEN on `dbos_notifications_channel`, `dbos_workflow_events_channel` and
    /// `dbos_streams_channel` on a dedicated connection, reconnecting after a loss (and then
    /// delivering `("*", "")` so waiters re-check). SQLite: watch `PRAGMA data_version` on a
    /// dedicated connection every `poll` and deliver `("*", "")` when another connection or
    /// process committed. The task stops at `close`.
    #[cfg_attr(not(feature = "sqlite"), allow(unused_variables))]
    pub(crate) async fn watch_changes(
        &self,
        sink: ChangeSink,
        poll: std::time::Duration,
    ) -> Result<()> {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.watch_changes(sink).await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => db.watch_changes(sink, poll).await,
        }
    }

    /// Take the liveness lock of `executor_id` of application `app_name`, and hold it until
    /// the store closes (one lock per store: taking another releases the first). Postgres: a
    /// session-level advisory lock on a connection of its own, re-taken after the connection
    /// is lost; SQLite: an OS lock on a file beside the database (none for an in-memory one).
    /// Either is released by the server or the kernel when the holding process dies, so an
    /// id [`LockAttempt::InUse`] has a live holder. A holder that has just died can still
    /// show for a moment (a server notices a closed socket promptly, not at once): an id in
    /// use is tried again for `grace` before it is reported. Transient failures are retried
    /// for `limit`.
    pub(crate) async fn lock_executor(
        &self,
        app_name: &str,
        executor_id: &str,
        grace: std::time::Duration,
        limit: std::time::Duration,
    ) -> Result<LockAttempt<()>> {
        let what = format!("taking the lock of executor id {executor_id}");
        let started = std::time::Instant::now();
        loop {
            let attempt = self
                .retry
                .run_for(limit, &what, || {
                    self.try_lock_executor(app_name, executor_id)
                })
                .await?;
            match attempt {
                LockAttempt::Taken(held) => {
                    let previous = std::mem::replace(
                        &mut *self.executor_lock.lock().unwrap_or_else(|p| p.into_inner()),
                        held,
                    );
                    if let Some(previous) = previous {
                        previous.release().await;
                    }
                    return Ok(LockAttempt::Taken(()));
                }
                LockAttempt::InUse { holder } if started.elapsed() >= grace => {
                    return Ok(LockAttempt::InUse { holder });
                }
                LockAttempt::InUse { .. } => tokio::time::sleep(LOCK_RECHECK).await,
            }
        }
    }

    /// One attempt at an executor lock, on the backend the URL chose.
    async fn try_lock_executor(
        &self,
        app_name: &str,
        executor_id: &str,
    ) -> Result<LockAttempt<Option<HeldLock>>> {
        Ok(match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db
                .try_lock_executor(app_name, executor_id)
                .await?
                .map(|session| Some(HeldLock::Session(session))),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => db
                .try_lock_executor(app_name, executor_id)
                .await?
                .map(|file| file.map(HeldLock::File)),
        })
    }

    /// Release connections and background threads, and the executor lock last (after every
    /// write of this process has ended).
    pub(crate) async fn close(&self) {
        self.retry.stop();
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.close().await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => db.close().await,
        }
        let held = self
            .executor_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(held) = held {
            held.release().await;
        }
    }
}

/// Options for opening a system database.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    /// Postgres schema holding the tables. Default: `dbos`.
    pub schema: String,
    /// Maximum connections (Postgres pool size; SQLite reader connections). Default: 16.
    pub pool_size: usize,
    /// How long opening the database keeps retrying while it is unreachable. Default: 30 s.
    pub connect_timeout: std::time::Duration,
    /// Create the database and its schema when missing (an application's launch). `false`
    /// (a client): a missing database or schema is [`Error::SchemaVersion`] with `found: 0`,
    /// and nothing is written.
    pub create: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            schema: "dbos".to_owned(),
            pool_size: 16,
            connect_timeout: std::time::Duration::from_secs(30),
            create: true,
        }
    }
}

/// Open (creating and migrating if needed) the system database a URL names:
/// `postgres://` / `postgresql://` select Postgres, `sqlite:` URLs select SQLite. While the
/// database is unreachable, opening is retried for `options.connect_timeout`.
pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Store> {
    let retry = retry::Retry::default();
    let backend = retry
        .run_for(
            options.connect_timeout,
            &format!("opening {}", redact(url)),
            || open_backend(url, options),
        )
        .await?;
    Ok(Store {
        backend,
        retry,
        executor_lock: std::sync::Mutex::new(None),
    })
}

/// One attempt at opening the backend a URL names.
async fn open_backend(url: &str, options: &StoreOptions) -> Result<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Backend::Postgres(
            postgres::PostgresStore::connect(url, options).await?,
        ));
        #[cfg(not(feature = "postgres"))]
        return Err(Error::Config(format!(
            "system database URL `{}` needs Postgres, but cairn was built without its `postgres` feature",
            redact(url)
        )));
    }
    if url.starts_with("sqlite:") {
        #[cfg(feature = "sqlite")]
        return Ok(Backend::Sqlite(
            sqlite::SqliteStore::open(url, options).await?,
        ));
        #[cfg(not(feature = "sqlite"))]
        return Err(Error::Config(format!(
            "system database URL `{}` needs SQLite, but cairn was built without its `sqlite` feature",
            redact(url)
        )));
    }
    Err(Error::Config(format!(
        "system database URL `{}` is neither postgres:// nor sqlite:",
        redact(url)
    )))
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
