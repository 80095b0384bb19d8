//! The Postgres system database: DBOS 3.4's schema, one round trip per operation.
//!
//! Every statement is prepared once per pooled connection (`prepare_cached`) and runs in
//! autocommit; the ownership guard, the existence check and the write share one statement
//! (a CTE or `INSERT … SELECT … WHERE EXISTS`). A second query runs only on the rare path
//! that must explain why nothing was written. The one exception is a stream write: a short
//! transaction that takes the stream's advisory lock before computing the next offset (see
//! `comm`). `watch_changes` listens on a dedicated connection of its own (see `listen`).

mod batch;
mod comm;
mod connect;
mod listen;
mod sql;
mod tls;

#[cfg(test)]
mod comm_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use self::connect::{Target, quote_ident};
use self::sql::Statements;
use super::{
    ChangeSink, Checkpoint, Completion, InsertOutcome, NewMessage, NewWorkflow, Reclaimed,
    RecordOutcome, StepRecord, StoreOptions, SystemDatabase, WorkflowRow, status,
};
use crate::error::{Error, Result};

/// How long opening one pooled connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a write whose outcome is invisible to its own snapshot is re-run (a concurrent
/// transaction inserted the same key and committed after the statement began).
const ATTEMPTS: usize = 3;

/// A statement parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

/// What a failed operation was doing, built only when it fails.
type Context<'a> = &'a (dyn Fn() -> String + Sync);

/// The Postgres backend: a connection pool and the schema's statements.
pub(crate) struct PostgresStore {
    pool: Pool,
    /// Boxed: some thirty strings would make the store, and the `Store` enum, large.
    sql: Box<Statements>,
    /// Group commit for checkpoints.
    steps: batch::StepBatcher,
    /// The `LISTEN` connections of `watch_changes`, stopped by `close`.
    listeners: listen::Listeners,
}

impl PostgresStore {
    /// Connect to the database a `postgres://` / `postgresql://` URL names, creating the
    /// database if it does not exist and migrating `options.schema` (see [`connect::migrate`]).
    pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let mut target = Target::parse(url)?;
        let mut client = target.bootstrap().await?;
        connect::migrate(&mut client, &options.schema).await?;
        drop(client);
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| {
                Error::database(
                    format!("creating the connection pool for {}", target.redacted),
                    e,
                )
            })?;
        let sql = Box::new(Statements::new(&quote_ident(&options.schema)));
        let steps = batch::StepBatcher::new(
            pool.clone(),
            sql.record_step.clone(),
            sql.record_steps.clone(),
        );
        let listeners = listen::Listeners::new(&target);
        Ok(Self {
            pool,
            sql,
            steps,
            listeners,
        })
    }

    /// A pooled connection, skipping connections whose server end is already gone.
    async fn checkout(&self, context: Context<'_>) -> Result<Object> {
        for _ in 0..ATTEMPTS {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| Error::database(context(), e))?;
            if !client.is_closed() {
                return Ok(client);
            }
            drop(Object::take(client));
        }
        self.pool
            .get()
            .await
            .map_err(|e| Error::database(context(), e))
    }

    /// Run a prepared query on a pooled connection.
    async fn query(
        &self,
        sql: &str,
        params: &[Param<'_>],
        context: Context<'_>,
    ) -> Result<Vec<Row>> {
        let client = self.checkout(context).await?;
        let result = match client.prepare_cached(sql).await {
            Ok(statement) => client.query(&statement, params).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| failed(client, e, context))
    }

    /// Run a prepared statement on a pooled connection; returns the number of rows it changed.
    async fn execute(&self, sql: &str, params: &[Param<'_>], context: Context<'_>) -> Result<u64> {
        let client = self.checkout(context).await?;
        let result = match client.prepare_cached(sql).await {
            Ok(statement) => client.execute(&statement, params).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| failed(client, e, context))
    }

    /// Claimed workflow rows with their checkpoints, loaded in one query.
    async fn with_checkpoints(&self, rows: &[Row], context: Context<'_>) -> Result<Vec<Reclaimed>> {
        let rows = rows.iter().map(workflow_row).collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = rows.iter().map(|r| r.workflow_id.as_str()).collect();
        let mut checkpoints: HashMap<String, Vec<Checkpoint>> = HashMap::new();
        for row in self
            .query(&self.sql.checkpoints_of, &[&ids], context)
            .await?
        {
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

    /// A query that always returns exactly one row.
    async fn query_row(
        &self,
        sql: &str,
        params: &[Param<'_>],
        context: Context<'_>,
    ) -> Result<Row> {
        self.query(sql, params, context)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::database(context(), anomaly("the statement returned no row")))
    }
}

/// The values `insert_workflow` derives from a new workflow's status.
struct Derived<'a> {
    recovery_attempts: i64,
    owner_xid: Option<&'a str>,
    started_at_epoch_ms: Option<i64>,
}

impl<'a> Derived<'a> {
    /// A `PENDING` start runs at once: one attempt, owned by its creator, started now.
    fn of(wf: &'a NewWorkflow) -> Self {
        let pending = wf.status == status::PENDING;
        Self {
            recovery_attempts: i64::from(pending),
            owner_xid: pending.then_some(wf.creator_xid.as_str()),
            started_at_epoch_ms: pending.then_some(wf.now_ms),
        }
    }
}

/// The sixteen parameters of a new workflow, in the order of `Statements::insert_workflow`.
fn workflow_params<'a>(wf: &'a NewWorkflow, d: &'a Derived<'a>) -> [Param<'a>; 16] {
    [
        &wf.id,
        &wf.status,
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
    ]
}

/// The ten parameters of a checkpoint, in the order of `Statements::record_step`.
fn step_params(rec: &StepRecord) -> [Param<'_>; 10] {
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

/// The error of a failed operation. A connection that failed at the connection level (closed,
/// I/O, terminated by the server) leaves the pool instead of going back to it.
fn failed(client: Object, e: tokio_postgres::Error, context: Context<'_>) -> Error {
    let broken = match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
    };
    if broken {
        drop(Object::take(client));
    }
    Error::database(context(), e)
}

/// A state the statements rule out (a row deleted under us, a missing result row).
fn anomaly(message: &str) -> std::io::Error {
    std::io::Error::other(message.to_owned())
}

/// One column, with its name in the error if its type is not what Cairn expects.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx).map_err(|e| {
        let name = row.columns().get(idx).map_or("?", |c| c.name());
        Error::database(
            format!("reading column `{name}` of a system database row"),
            e,
        )
    })
}

/// The checkpoint whose columns start at `at`.
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

/// A workflow row in the column order of `WORKFLOW_COLUMNS`.
fn workflow_row(row: &Row) -> Result<WorkflowRow> {
    Ok(WorkflowRow {
        workflow_id: col(row, 0)?,
        status: col(row, 1)?,
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
        serialization: col(row, 18)?,
        inputs: col(row, 19)?,
        output: col(row, 20)?,
        error: col(row, 21)?,
    })
}

/// Why a checkpoint was not written, from a `step_state` row: `None` if the caller still owns
/// the workflow and no checkpoint is there (the write should be retried).
fn refusal(row: &Row) -> Result<Option<RecordOutcome>> {
    let owned: Option<bool> = col(row, 1)?;
    if owned != Some(true) {
        return Ok(Some(RecordOutcome::NotOwner {
            status: col(row, 0)?,
        }));
    }
    let function_id: Option<i32> = col(row, 2)?;
    match function_id {
        Some(_) => Ok(Some(RecordOutcome::Duplicate(checkpoint_at(row, 2)?))),
        None => Ok(None),
    }
}

impl SystemDatabase for PostgresStore {
    /// One statement: the message, and the sender's checkpoint if any.
    async fn send_message(
        &self,
        msg: &NewMessage,
        sender: Option<&StepRecord>,
    ) -> Result<RecordOutcome> {
        comm::send_message(self, msg, sender).await
    }

    /// One statement: pick, checkpoint and mark the oldest message.
    async fn consume_message(
        &self,
        rec: &StepRecord,
        topic: &str,
    ) -> Result<(RecordOutcome, Option<super::Stored>)> {
        comm::consume_message(self, rec, topic).await
    }

    /// One statement.
    async fn has_message(&self, workflow_id: &str, topic: &str) -> Result<bool> {
        comm::has_message(self, workflow_id, topic).await
    }

    /// One statement: value, history, checkpoint and announcement.
    async fn set_event(&self, rec: &StepRecord, key: &str, value: &str) -> Result<RecordOutcome> {
        comm::set_event(self, rec, key, value).await
    }

    /// One statement.
    async fn get_event(&self, workflow_id: &str, key: &str) -> Result<Option<super::Stored>> {
        comm::get_event(self, workflow_id, key).await
    }

    /// One statement.
    async fn list_events(&self, workflow_id: &str) -> Result<Vec<(String, super::Stored)>> {
        comm::list_events(self, workflow_id).await
    }

    /// One short transaction under the stream's advisory lock.
    async fn write_stream(
        &self,
        rec: &StepRecord,
        key: &str,
        value: &str,
    ) -> Result<RecordOutcome> {
        comm::write_stream(self, rec, key, value).await
    }

    /// One statement.
    async fn read_stream(
        &self,
        workflow_id: &str,
        key: &str,
        from_offset: i32,
    ) -> Result<Vec<(i32, super::Stored)>> {
        comm::read_stream(self, workflow_id, key, from_offset).await
    }

    /// One statement.
    async fn cancel_workflows(&self, workflow_ids: &[String], now_ms: i64) -> Result<Vec<String>> {
        comm::cancel_workflows(self, workflow_ids, now_ms).await
    }

    /// One recursive statement.
    async fn descendants(&self, workflow_id: &str) -> Result<Vec<String>> {
        comm::descendants(self, workflow_id).await
    }

    /// Two round trips: the update returning the row, then its checkpoints.
    async fn resume_workflow(
        &self,
        workflow_id: &str,
        executor_id: &str,
        app_version: &str,
        new_owner: &str,
        now_ms: i64,
    ) -> Result<Option<Reclaimed>> {
        comm::resume_workflow(
            self,
            workflow_id,
            executor_id,
            app_version,
            new_owner,
            now_ms,
        )
        .await
    }

    /// A dedicated `LISTEN` connection on a task of its own; returns once it listens.
    /// `poll` is for SQLite only.
    async fn watch_changes(&self, sink: ChangeSink, _poll: std::time::Duration) -> Result<()> {
        self.listeners.start(sink).await
    }

    /// One statement: insert status and input, or read the existing row's name and status.
    async fn insert_workflow(&self, wf: &NewWorkflow) -> Result<InsertOutcome> {
        let context = || format!("inserting workflow {}", wf.id);
        let derived = Derived::of(wf);
        let params = workflow_params(wf, &derived);
        for _ in 0..ATTEMPTS {
            let rows = self
                .query(&self.sql.insert_workflow, &params, &context)
                .await?;
            if let Some(row) = rows.first() {
                return if col(row, 0)? {
                    Ok(InsertOutcome::Inserted)
                } else {
                    Ok(InsertOutcome::Existing {
                        name: col(row, 1)?,
                        status: col(row, 2)?,
                    })
                };
            }
            // Nothing inserted and nothing visible: a concurrent insert committed after this
            // statement's snapshot was taken. The next statement sees it.
        }
        Err(Error::database(
            context(),
            anomaly("the workflow row was neither inserted nor found"),
        ))
    }

    /// One statement in the common case: the parent's checkpoint (guarded by ownership) and
    /// the child's rows, the latter only if the former was written.
    async fn insert_child_workflow(
        &self,
        parent: &StepRecord,
        child: &NewWorkflow,
    ) -> Result<(RecordOutcome, InsertOutcome)> {
        let context = || {
            format!(
                "starting child workflow {} as step {} of workflow {}",
                child.id, parent.function_id, parent.workflow_id
            )
        };
        let derived = Derived::of(child);
        let mut params: Vec<Param<'_>> = Vec::with_capacity(26);
        params.extend(step_params(parent));
        params.extend(workflow_params(child, &derived));
        for _ in 0..ATTEMPTS {
            let row = self
                .query_row(&self.sql.insert_child, &params, &context)
                .await?;
            let (recorded, inserted): (bool, bool) = (col(&row, 0)?, col(&row, 1)?);
            if recorded && inserted {
                return Ok((RecordOutcome::Recorded, InsertOutcome::Inserted));
            }
            if recorded {
                let (mut name, mut status): (Option<String>, Option<String>) =
                    (col(&row, 2)?, col(&row, 3)?);
                if name.is_none() && status.is_none() {
                    // The child was inserted by a transaction that committed after our snapshot.
                    let rows = self
                        .query(&self.sql.workflow_name_status, &[&child.id], &context)
                        .await?;
                    if let Some(row) = rows.first() {
                        (name, status) = (col(row, 0)?, col(row, 1)?);
                    }
                }
                return Ok((
                    RecordOutcome::Recorded,
                    InsertOutcome::Existing { name, status },
                ));
            }
            let row = self
                .query_row(
                    &self.sql.child_state,
                    &[
                        &parent.workflow_id,
                        &parent.owner_xid,
                        &parent.function_id,
                        &child.id,
                    ],
                    &context,
                )
                .await?;
            if let Some(outcome) = refusal(&row)? {
                let existing = InsertOutcome::Existing {
                    name: col(&row, 10)?,
                    status: col(&row, 11)?,
                };
                return Ok((outcome, existing));
            }
        }
        Err(Error::database(
            context(),
            anomaly("the parent's checkpoint was neither written nor found"),
        ))
    }

    /// One statement when the checkpoint is written; a second only to say why it was not.
    async fn record_step(&self, rec: &StepRecord) -> Result<RecordOutcome> {
        let context = || {
            format!(
                "recording step {} of workflow {}",
                rec.function_id, rec.workflow_id
            )
        };
        let params = step_params(rec);
        for attempt in 0..ATTEMPTS {
            let written = if attempt == 0 {
                self.steps.write(rec).await?
            } else {
                !self
                    .query(&self.sql.record_step, &params, &context)
                    .await?
                    .is_empty()
            };
            if written {
                return Ok(RecordOutcome::Recorded);
            }
            let row = self
                .query_row(
                    &self.sql.step_state,
                    &[&rec.workflow_id, &rec.owner_xid, &rec.function_id],
                    &context,
                )
                .await?;
            if let Some(outcome) = refusal(&row)? {
                return Ok(outcome);
            }
        }
        Err(Error::database(
            context(),
            anomaly("the checkpoint was neither written nor found"),
        ))
    }

    /// One statement, by primary key.
    async fn get_checkpoint(
        &self,
        workflow_id: &str,
        function_id: i32,
    ) -> Result<Option<Checkpoint>> {
        let context = || format!("reading step {function_id} of workflow {workflow_id}");
        let rows = self
            .query(
                &self.sql.get_checkpoint,
                &[&workflow_id, &function_id],
                &context,
            )
            .await?;
        rows.first().map(|row| checkpoint_at(row, 0)).transpose()
    }

    /// One statement, in `function_id` order.
    async fn list_checkpoints(&self, workflow_id: &str) -> Result<Vec<Checkpoint>> {
        let context = || format!("listing the steps of workflow {workflow_id}");
        let rows = self
            .query(&self.sql.list_checkpoints, &[&workflow_id], &context)
            .await?;
        rows.iter().map(|row| checkpoint_at(row, 0)).collect()
    }

    /// One statement: the guarded status update and the output upsert.
    async fn complete_workflow(&self, c: &Completion) -> Result<bool> {
        let context = || format!("completing workflow {} as {}", c.workflow_id, c.status);
        let row = self
            .query_row(
                &self.sql.complete_workflow,
                &[
                    &c.workflow_id,
                    &c.owner_xid,
                    &c.status,
                    &c.output,
                    &c.error,
                    &c.now_ms,
                ],
                &context,
            )
            .await?;
        Ok(col::<i64>(&row, 0)? > 0)
    }

    /// One statement: the status row joined with its input and output rows.
    async fn get_workflow(&self, workflow_id: &str) -> Result<Option<WorkflowRow>> {
        let context = || format!("reading workflow {workflow_id}");
        let rows = self
            .query(&self.sql.get_workflow, &[&workflow_id], &context)
            .await?;
        rows.first().map(workflow_row).transpose()
    }

    /// Two round trips: the claiming update (returning the rows), then all their checkpoints.
    async fn reclaim_pending(
        &self,
        executor_id: &str,
        app_version: &str,
        application_name: Option<&str>,
        new_owner: &str,
        now_ms: i64,
    ) -> Result<Vec<Reclaimed>> {
        let context = || {
            format!(
                "reclaiming the pending workflows of executor {executor_id} version {app_version}"
            )
        };
        let rows = self
            .query(
                &self.sql.reclaim_pending,
                &[
                    &executor_id,
                    &app_version,
                    &application_name,
                    &new_owner,
                    &now_ms,
                ],
                &context,
            )
            .await?;
        self.with_checkpoints(&rows, &context).await
    }

    /// One statement (`FOR UPDATE SKIP LOCKED`), then the claimed workflows' checkpoints.
    async fn claim_enqueued(&self, claim: &super::QueueClaim) -> Result<Vec<Reclaimed>> {
        let context = || format!("claiming workflows of queue {}", claim.queue_name);
        // A plain read first: an idle queue costs no locking statement.
        let waiting = self
            .query_row(&self.sql.any_enqueued, &[&claim.queue_name], &context)
            .await?;
        if !col::<bool>(&waiting, 0)? {
            return Ok(Vec::new());
        }
        let rows = self
            .query(
                &self.sql.claim_enqueued,
                &[
                    &claim.queue_name,
                    &claim.names,
                    &claim.application_name,
                    &claim.app_version,
                    &claim.new_owner,
                    &claim.now_ms,
                    &claim.limit,
                    &claim.executor_id,
                ],
                &context,
            )
            .await?;
        self.with_checkpoints(&rows, &context).await
    }

    /// One owner-guarded update.
    async fn dead_letter(&self, workflow_id: &str, owner_xid: &str, now_ms: i64) -> Result<bool> {
        let context = || format!("moving workflow {workflow_id} to the dead-letter status");
        let changed = self
            .execute(
                &self.sql.dead_letter,
                &[&workflow_id, &owner_xid, &now_ms],
                &context,
            )
            .await?;
        Ok(changed > 0)
    }

    /// One insert; an existing version (under any application) is left as it is.
    async fn register_app_version(
        &self,
        version: &str,
        application_name: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let context = || format!("registering application version {version}");
        self.execute(
            &self.sql.register_app_version,
            &[&version, &now_ms, &application_name],
            &context,
        )
        .await?;
        Ok(())
    }

    /// Stop the listeners, then close the pool: idle connections go now, busy ones when
    /// returned.
    async fn close(&self) {
        self.listeners.close().await;
        self.pool.close();
    }
}
