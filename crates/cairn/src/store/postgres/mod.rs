//! The Postgres system database: DBOS 3.4's schema, one round trip per operation.
//!
//! Every operation of [`ops`](super::ops) implements [`OnPostgres`] once, next to its SQL:
//! workflows and checkpoints in `workflows`, recovery, queues and control in `recovery`,
//! messages, events and streams in `comm`. A statement is a `static` [`Sql`] whose text is
//! built from the schema name once per store ([`Statements`]) and prepared once per
//! pooled connection (`prepare_cached`).
//!
//! Statements run in autocommit; the ownership guard, the existence check and the write share
//! one statement (a CTE or `INSERT … SELECT … WHERE EXISTS`). A second query runs only on the
//! rare path that must explain why nothing was written. The one exception is a stream write:
//! a short transaction that takes the stream's advisory lock before computing the next offset.
//! Checkpoints and workflow completions go through group-commit batchers (`batch`); `watch_changes` listens on a
//! dedicated connection of its own (`listen`). Failures are classified transient or permanent
//! and carry the server's own message (`error`).

mod batch;
mod bulk;
mod comm;
pub(crate) mod connect;
pub(crate) mod error;
mod list;
mod listen;
pub(crate) mod liveness;
mod manage;
mod queues;
mod recovery;
mod schedules;
mod sql;
mod stats;
mod takeover;
mod tls;
mod workflows;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use self::connect::{Target, quote_ident};
use self::sql::{Sql, Statements};
use super::{
    ChangeSink, Checkpoint, NewWorkflow, Operation, Reclaimed, RecordOutcome, StepRecord,
    StoreOptions, WorkflowRow,
};
use crate::error::{Error, Result};
use crate::status::WorkflowState;

/// An operation as Postgres runs it.
pub(crate) trait OnPostgres: Operation {
    /// Run it on the store's pool.
    fn on_postgres(&self, db: &PostgresStore) -> impl Future<Output = Result<Self::Output>> + Send;
}

/// How long creating one pooled connection may take before the checkout fails (transiently).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a write whose outcome is invisible to its own snapshot is re-run (a concurrent
/// transaction inserted the same key and committed after the statement began).
const ATTEMPTS: usize = 3;

/// A statement parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

/// What a failed statement was doing, for its error: the operation's own description, built
/// only when something fails.
pub(super) trait Describe: Sync {
    /// E.g. `recording step 3 of workflow abc`.
    fn what(&self) -> String;
}

impl<O: Operation> Describe for O {
    fn what(&self) -> String {
        self.describe()
    }
}

/// The Postgres backend: a connection pool, the schema's statements and the checkpoint batcher.
pub(crate) struct PostgresStore {
    pool: Pool,
    /// The statement texts for this store's schema.
    sql: Statements,
    /// Group commit for checkpoints.
    steps: batch::GroupCommit<super::RecordStep>,
    /// Group commit for workflow completions.
    completions: batch::GroupCommit<super::CompleteWorkflow>,
    /// Group commit for top-level enqueues.
    enqueues: batch::GroupCommit<super::EnqueueWorkflow>,
    /// Group commit for `recv`'s consumes.
    consumes: batch::GroupCommit<super::ConsumeMessage>,
    /// Batched looks for `recv`'s messages.
    peeks: batch::GroupCommit<super::PeekMessage>,
    /// The `LISTEN` connections of `watch_changes`, stopped by `close`. Boxed: the driver's
    /// configuration it holds would make the store (and `store::Backend`) large.
    listeners: Box<listen::Listeners>,
    /// Where executor lock sessions connect (boxed for the same reason).
    liveness: Box<liveness::Liveness>,
    /// Which database this is ([`DATABASE_IDENTITY`]), read once when first asked.
    identity: tokio::sync::OnceCell<String>,
}

/// One text naming a database on a running server: the database's name and oid, and when
/// the server started (to the microsecond). Two pools whose connections give the same text
/// reach the same database, whatever host names their URLs use; so a data source can tell
/// that it is the system database itself. Needs no privileges.
pub(crate) const DATABASE_IDENTITY: &str = "SELECT current_database() || '/' || d.oid::text \
     || '@' || pg_postmaster_start_time()::text FROM pg_database d WHERE d.datname = current_database()";

impl PostgresStore {
    /// Connect to the database a `postgres://` / `postgresql://` URL names, creating the
    /// database if it does not exist and migrating `options.schema` (see [`connect::migrate`]).
    /// A server that refuses connections or is starting up is a transient error (the caller
    /// retries); a failed authentication or a bad URL is permanent.
    pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let mut target = Target::parse(url)?;
        let mut client = target.bootstrap(options.create).await?;
        connect::migrate(&mut client, &options.schema, options.create).await?;
        drop(client);
        // `Fast` recycling checks only that the connection is still open: a connection the
        // server ended (a restart) is noticed by its driver task and never handed out again,
        // and no extra round trip is paid per checkout.
        let manager = Manager::from_connect(
            target.config.clone(),
            connect::PoolConnector {
                tls: target.tls.clone(),
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CREATE_TIMEOUT))
            // The same check `Fast` recycling makes, but silent: after a restart every idle
            // connection is closed, and deadpool would warn once for each.
            .pre_recycle(Hook::sync_fn(|client, _| {
                if client.is_closed() {
                    Err(HookError::message("the connection is closed"))
                } else {
                    Ok(())
                }
            }))
            .build()
            .map_err(|e| {
                Error::database(
                    format!("creating the connection pool for {}", target.redacted),
                    e,
                )
            })?;
        let sql = Statements::new(quote_ident(&options.schema));
        Ok(Self {
            steps: batch::GroupCommit::new(pool.clone(), &sql),
            completions: batch::GroupCommit::new(pool.clone(), &sql),
            enqueues: batch::GroupCommit::new(pool.clone(), &sql),
            consumes: batch::GroupCommit::new(pool.clone(), &sql),
            peeks: batch::GroupCommit::new(pool.clone(), &sql),
            pool,
            sql,
            listeners: Box::new(listen::Listeners::new(&target)),
            liveness: Box::new(liveness::Liveness::new(&target, &options.schema)),
            identity: tokio::sync::OnceCell::new(),
        })
    }

    /// Which database this is (see [`DATABASE_IDENTITY`]).
    pub(crate) async fn identity(&self) -> Result<&str> {
        let identity = self
            .identity
            .get_or_try_init(|| async {
                let context = || "reading which database the system database is".to_owned();
                let client = self
                    .pool
                    .get()
                    .await
                    .map_err(|e| error::pool_failure(e, context))?;
                let row = client
                    .query_one(DATABASE_IDENTITY, &[])
                    .await
                    .map_err(|e| error::failure(e, context()))?;
                col::<String>(&row, 0)
            })
            .await?;
        Ok(identity)
    }

    /// The ownership-guarded checkpoint insert a step's record is written with (parameters:
    /// [`step_params`]); one row when written. A data source on this database runs it in
    /// its own transaction, so a step's writes and its checkpoint commit together.
    pub(crate) fn record_step_statement(&self) -> std::sync::Arc<str> {
        self.sql.text(&workflows::RECORD_STEP)
    }

    /// Start delivering change announcements to `sink`: a dedicated `LISTEN` connection on a
    /// task of its own, reconnecting after a loss; returns once it listens.
    pub(crate) async fn watch_changes(&self, sink: ChangeSink) -> Result<()> {
        self.listeners.start(sink).await
    }

    /// Stop the listeners, then close the pool: idle connections go now, busy ones when
    /// returned, and later checkouts fail with [`Error::Shutdown`].
    pub(crate) async fn close(&self) {
        self.listeners.close().await;
        self.pool.close();
    }

    /// A pooled connection, skipping connections whose server end is already gone.
    async fn checkout(&self, op: &dyn Describe) -> Result<Object> {
        checkout(&self.pool, op).await
    }

    /// Run a statement on a pooled connection; returns its rows.
    async fn query(
        &self,
        sql: &'static Sql,
        params: &[Param<'_>],
        op: &dyn Describe,
    ) -> Result<Vec<Row>> {
        let text = self.sql.text(sql);
        let client = self.checkout(op).await?;
        let result = match client.prepare_cached(&text).await {
            Ok(statement) => client.query(&statement, params).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| failed(&self.pool, client, e, op))
    }

    /// A statement that always returns exactly one row.
    async fn query_row(
        &self,
        sql: &'static Sql,
        params: &[Param<'_>],
        op: &dyn Describe,
    ) -> Result<Row> {
        self.query(sql, params, op)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anomaly(op, "the statement returned no row"))
    }

    /// Run a statement on a pooled connection; returns the number of rows it changed.
    async fn execute(
        &self,
        sql: &'static Sql,
        params: &[Param<'_>],
        op: &dyn Describe,
    ) -> Result<u64> {
        let text = self.sql.text(sql);
        let client = self.checkout(op).await?;
        let result = match client.prepare_cached(&text).await {
            Ok(statement) => client.execute(&statement, params).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| failed(&self.pool, client, e, op))
    }

    /// Claimed workflow rows with their checkpoints, loaded in one query.
    async fn with_checkpoints(&self, rows: &[Row], op: &dyn Describe) -> Result<Vec<Reclaimed>> {
        let rows = rows.iter().map(workflow_row).collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = rows.iter().map(|r| r.workflow_id.as_str()).collect();
        let mut checkpoints: HashMap<String, Vec<Checkpoint>> = HashMap::new();
        for row in self.query(&sql::CHECKPOINTS_OF, &[&ids], op).await? {
            checkpoints
                .entry(col(&row, 0)?)
                .or_default()
                .push(checkpoint_at(&row, 1)?);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let checkpoints = checkpoints.remove(&row.workflow_id).unwrap_or_default();
                Reclaimed { row, checkpoints }
            })
            .collect())
    }

    /// Why a checkpoint was not written (see [`refusal`]), read with `sql::STEP_STATE`.
    async fn step_state(
        &self,
        rec: &StepRecord,
        op: &dyn Describe,
    ) -> Result<Option<RecordOutcome>> {
        let row = self
            .query_row(
                &sql::STEP_STATE,
                &[&rec.workflow_id, &rec.owner_xid, &rec.function_id],
                op,
            )
            .await?;
        refusal(&row)
    }
}

/// A pooled connection from `pool`, skipping connections whose server end is already gone
/// (the pool's own check can race with the driver noticing).
async fn checkout(pool: &Pool, op: &dyn Describe) -> Result<Object> {
    for _ in 0..ATTEMPTS {
        let client = pool
            .get()
            .await
            .map_err(|e| error::pool_failure(e, || op.what()))?;
        if !client.is_closed() {
            return Ok(client);
        }
        drop(Object::take(client));
        evict_closed(pool);
    }
    pool.get()
        .await
        .map_err(|e| error::pool_failure(e, || op.what()))
}

/// The error of a statement that failed on `client`. A connection that failed at the
/// connection level leaves the pool instead of going back to it, and so do the idle
/// connections that died with it (a server restart ends them all), so the retry that follows
/// gets a fresh connection at once.
fn failed(pool: &Pool, client: Object, e: tokio_postgres::Error, op: &dyn Describe) -> Error {
    if error::connection_lost(&e) || client.is_closed() {
        drop(Object::take(client));
        evict_closed(pool);
    }
    error::failure(e, op.what())
}

/// Drop the idle connections whose server end is gone.
fn evict_closed(pool: &Pool) {
    pool.retain(|client, _| !client.is_closed());
}

/// A state the statements rule out (a row deleted under us, a missing result row): permanent.
fn anomaly(op: &dyn Describe, message: &str) -> Error {
    Error::database(op.what(), std::io::Error::other(message.to_owned()))
}

/// The values [`workflow_params`] derives from a new workflow's status.
struct Derived<'a> {
    status: &'a str,
    recovery_attempts: i64,
    owner_xid: Option<&'a str>,
    started_at_epoch_ms: Option<i64>,
}

impl<'a> Derived<'a> {
    /// A `PENDING` start runs at once: one attempt, owned by its creator, started now.
    fn of(wf: &'a NewWorkflow) -> Self {
        let pending = wf.status == WorkflowState::Pending;
        Self {
            status: wf.status.as_str(),
            recovery_attempts: i64::from(pending),
            owner_xid: pending.then_some(wf.creator_xid.as_str()),
            started_at_epoch_ms: pending.then_some(wf.now_ms),
        }
    }
}

/// The seventeen parameters of a new workflow: `$1` id, `$2` status, `$3` name, `$4` queue,
/// `$5` executor, `$6` version, `$7` application, `$8` now, `$9` recovery attempts, `$10`
/// timeout, `$11` deadline, `$12` parent, `$13` creator, `$14` owner, `$15` started at, `$16`
/// inputs, `$17` instance (`config_name`).
fn workflow_params<'a>(wf: &'a NewWorkflow, d: &'a Derived<'a>) -> [Param<'a>; 18] {
    [
        &wf.id,
        &d.status,
        &wf.name,
        &wf.queue_name,
        &wf.executor_id,
        &wf.app_version,
        &wf.application_name,
        &wf.now_ms,
        &d.recovery_attempts,
        &wf.timeout_ms,
        &wf.deadline_epoch_ms,
        &wf.parent_workflow_id,
        &wf.creator_xid,
        &d.owner_xid,
        &d.started_at_epoch_ms,
        &wf.inputs,
        &wf.config_name,
        &wf.attributes,
    ]
}

/// The ten parameters of a checkpoint, in the order of [`sql::checkpoint_insert`].
pub(crate) fn step_params(rec: &StepRecord) -> [Param<'_>; 10] {
    [
        &rec.workflow_id,
        &rec.owner_xid,
        &rec.function_id,
        &rec.function_name,
        &rec.output,
        &rec.error,
        &rec.child_workflow_id,
        &rec.started_at_epoch_ms,
        &rec.completed_at_epoch_ms,
        &rec.application_name,
    ]
}

/// One column, with its name in the error if its type is not what Cairn expects.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx).map_err(|e| {
        let name = row.columns().get(idx).map_or("?", |c| c.name());
        error::failure(
            e,
            format!("reading column `{name}` of a system database row"),
        )
    })
}

/// A status column.
fn state_at(row: &Row, idx: usize) -> Result<Option<WorkflowState>> {
    Ok(col::<Option<&str>>(row, idx)?.map(WorkflowState::parse))
}

/// The checkpoint whose columns ([`sql::CHECKPOINT_COLUMNS`]) start at `at`.
fn checkpoint_at(row: &Row, at: usize) -> Result<Checkpoint> {
    Ok(Checkpoint {
        function_id: col(row, at)?,
        function_name: col(row, at + 1)?,
        output: col(row, at + 2)?,
        error: col(row, at + 3)?,
        child_workflow_id: col(row, at + 4)?,
        serialization: col(row, at + 5)?,
        started_at_epoch_ms: col(row, at + 6)?,
        completed_at_epoch_ms: col(row, at + 7)?,
    })
}

/// A workflow row in the column order of [`sql::WORKFLOW_COLUMNS`].
fn workflow_row(row: &Row) -> Result<WorkflowRow> {
    Ok(WorkflowRow {
        workflow_id: col(row, 0)?,
        status: state_at(row, 1)?,
        name: col(row, 2)?,
        class_name: col(row, 3)?,
        config_name: col(row, 4)?,
        queue_name: col(row, 5)?,
        executor_id: col(row, 6)?,
        application_version: col(row, 7)?,
        application_name: col(row, 8)?,
        created_at: col(row, 9)?,
        updated_at: col(row, 10)?,
        started_at_epoch_ms: col(row, 11)?,
        completed_at: col(row, 12)?,
        recovery_attempts: col(row, 13)?,
        workflow_timeout_ms: col(row, 14)?,
        workflow_deadline_epoch_ms: col(row, 15)?,
        parent_workflow_id: col(row, 16)?,
        owner_xid: col(row, 17)?,
        deduplication_id: col(row, 18)?,
        priority: col(row, 19)?,
        queue_partition_key: col(row, 20)?,
        forked_from: col(row, 21)?,
        was_forked_from: col(row, 22)?,
        attributes: col(row, 23)?,
        delay_until_epoch_ms: col(row, 24)?,
        authenticated_user: col(row, 25)?,
        assumed_role: col(row, 26)?,
        authenticated_roles: col(row, 27)?,
        schedule_name: col(row, 28)?,
        serialization: col(row, 29)?,
        inputs: col(row, 30)?,
        output: col(row, 31)?,
        error: col(row, 32)?,
    })
}

/// Why a checkpoint was not written, from a [`sql::state`] row: `None` if the caller still
/// owns the workflow and no checkpoint is there (the write should be retried).
fn refusal(row: &Row) -> Result<Option<RecordOutcome>> {
    let owned: Option<bool> = col(row, 1)?;
    if owned != Some(true) {
        return Ok(Some(RecordOutcome::NotOwner {
            status: state_at(row, 0)?,
        }));
    }
    let function_id: Option<i32> = col(row, 2)?;
    match function_id {
        Some(_) => Ok(Some(RecordOutcome::Duplicate(checkpoint_at(row, 2)?))),
        None => Ok(None),
    }
}
