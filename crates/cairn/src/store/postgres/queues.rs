//! Queues on Postgres: enqueueing a workflow (alone or as a parent's step) in one short
//! transaction, and the `queues` table of definitions.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::batch::{Grouped, answer_is_written};
use super::sql::{CHECKPOINT_COLUMNS, Sql, checkpoint_insert};
use super::{ATTEMPTS, OnPostgres, Param, PostgresStore, anomaly, checkpoint_at, col, step_params};
use crate::engine::queue::{QUEUE_COLUMNS, Queue, QueueRow, owned_elsewhere};
use crate::error::{Error, Result};
use crate::status::WorkflowState;
use crate::store::{
    DeleteQueue, EnqueueOutcome, EnqueueWorkflow, GetQueue, ListQueues, PORTABLE_JSON, QueueUpdate,
    RecordOutcome, UpdateQueue, UpsertQueue,
};

/// `$1` workflow: `(status, owner_xid)`.
static OWNER_OF: Sql =
    Sql(|q| format!("SELECT status, owner_xid FROM {q}.workflow_status WHERE workflow_uuid = $1"));

/// `$1` workflow, `$2` function id: the checkpoint there.
static CHECKPOINT: Sql = Sql(|q| {
    format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM {q}.operation_outputs \
         WHERE workflow_uuid = $1 AND function_id = $2"
    )
});

/// `$1` workflow: `(name, status, creator_xid)`.
static EXISTING: Sql = Sql(|q| {
    format!("SELECT name, status, creator_xid FROM {q}.workflow_status WHERE workflow_uuid = $1")
});

/// `$1` queue, `$2` deduplication id: the workflow holding it.
static DEDUP_HOLDER: Sql = Sql(|q| {
    format!(
        "SELECT workflow_uuid FROM {q}.workflow_status \
         WHERE queue_name = $1 AND deduplication_id = $2"
    )
});

/// The queued status row. No conflict target: an existing id and a held deduplication id
/// (unique index on `(queue_name, deduplication_id)`) both insert nothing.
static INSERT_QUEUED: Sql = Sql(|q| {
    format!(
        "INSERT INTO {q}.workflow_status (workflow_uuid, status, name, queue_name, executor_id, \
             application_version, application_name, created_at, updated_at, recovery_attempts, \
             workflow_timeout_ms, workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, \
             owner_xid, started_at_epoch_ms, serialization, priority, config_name, \
             deduplication_id, queue_partition_key, delay_until_epoch_ms, attributes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 0, $9, $10, $11, $12, NULL, NULL, $13, $14, \
             $15, $16, $17, $18, $19::text::jsonb) \
         ON CONFLICT DO NOTHING RETURNING 1"
    )
});

/// `$1` workflow, `$2` inputs, `$3` now.
static INSERT_INPUT: Sql = Sql(|q| {
    format!(
        "INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
         VALUES ($1, $2, $3) ON CONFLICT (workflow_uuid) DO UPDATE SET \
         inputs = excluded.inputs, retention_timestamp = excluded.retention_timestamp"
    )
});

/// The parent's ownership-guarded checkpoint (see `step_params`).
static PARENT_CHECKPOINT: Sql = Sql(|q| checkpoint_insert(q, "$5::text"));

/// What went wrong inside the transaction: the driver, or a row Cairn cannot read.
enum Fail {
    Pg(tokio_postgres::Error),
    Engine(Error),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Engine(e)
    }
}

/// One attempt's verdict: an outcome (to commit if it wrote), or a race to run again.
enum Attempt {
    Done(EnqueueOutcome),
    Again,
}

/// [`INSERT_QUEUED`]'s and [`ENQUEUE_AT_ONCE`]'s shared `$1`…`$18`: id, `status` (the
/// caller's, so it outlives the array), name, queue, executor, version, application, now,
/// timeout, deadline, parent, creator, serialization, priority, instance, deduplication id,
/// partition key, delay.
fn queued_params<'a>(op: &'a EnqueueWorkflow, status: &'a &'a str) -> [Param<'a>; 18] {
    let (wf, q) = (&op.workflow, &op.queued);
    [
        &wf.id,
        status,
        &wf.name,
        &wf.queue_name,
        &wf.executor_id,
        &wf.app_version,
        &wf.application_name,
        &wf.now_ms,
        &wf.timeout_ms,
        &wf.deadline_epoch_ms,
        &wf.parent_workflow_id,
        &wf.creator_xid,
        &PORTABLE_JSON,
        &q.priority,
        &wf.config_name,
        &q.deduplication_id,
        &q.partition_key,
        &q.delay_until_epoch_ms,
    ]
}

async fn query(
    tx: &Transaction<'_>,
    db: &PostgresStore,
    sql: &'static Sql,
    params: &[Param<'_>],
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(&db.sql.text(sql)).await?;
    tx.query(&statement, params).await
}

async fn attempt(
    tx: &Transaction<'_>,
    db: &PostgresStore,
    op: &EnqueueWorkflow,
) -> std::result::Result<Attempt, Fail> {
    let wf = &op.workflow;
    if let Some(parent) = &op.parent {
        let rows = query(tx, db, &OWNER_OF, &[&parent.workflow_id]).await?;
        let Some(row) = rows.first() else {
            return Ok(Attempt::Done(EnqueueOutcome::Refused(
                RecordOutcome::NotOwner { status: None },
            )));
        };
        let status = col::<Option<&str>>(row, 0)?.map(WorkflowState::parse);
        let owner: Option<String> = col(row, 1)?;
        if status != Some(WorkflowState::Pending) || owner.as_deref() != Some(&parent.owner_xid) {
            return Ok(Attempt::Done(EnqueueOutcome::Refused(
                RecordOutcome::NotOwner { status },
            )));
        }
        let rows = query(
            tx,
            db,
            &CHECKPOINT,
            &[&parent.workflow_id, &parent.function_id],
        )
        .await?;
        if let Some(row) = rows.first() {
            let recorded = checkpoint_at(row, 0)?;
            let creator = query(tx, db, &EXISTING, &[&wf.id]).await?;
            let creator: Option<String> = match creator.first() {
                Some(row) => col(row, 2)?,
                None => None,
            };
            // This very enqueue, committed unseen: the slot names the child we created.
            if recorded.child_workflow_id.as_deref() == Some(wf.id.as_str())
                && creator.as_deref() == Some(wf.creator_xid.as_str())
            {
                return Ok(Attempt::Done(EnqueueOutcome::Enqueued));
            }
            return Ok(Attempt::Done(EnqueueOutcome::Refused(
                RecordOutcome::Duplicate(recorded),
            )));
        }
    }
    let q = &op.queued;
    let status = wf.status.as_str();
    let mut params: Vec<Param<'_>> = queued_params(op, &status).to_vec();
    params.push(&wf.attributes);
    let inserted = query(tx, db, &INSERT_QUEUED, &params).await?;
    if inserted.is_empty() {
        let rows = query(tx, db, &EXISTING, &[&wf.id]).await?;
        if let Some(row) = rows.first() {
            let creator: Option<String> = col(row, 2)?;
            if creator.as_deref() == Some(wf.creator_xid.as_str()) {
                return Ok(Attempt::Done(EnqueueOutcome::Enqueued));
            }
            return Ok(Attempt::Done(EnqueueOutcome::Existing {
                name: col(row, 0)?,
                status: col::<Option<&str>>(row, 1)?.map(WorkflowState::parse),
            }));
        }
        let rows = query(
            tx,
            db,
            &DEDUP_HOLDER,
            &[&wf.queue_name, &q.deduplication_id],
        )
        .await?;
        return match rows.first() {
            Some(row) => Ok(Attempt::Done(EnqueueOutcome::Deduplicated {
                existing_workflow_id: col(row, 0)?,
            })),
            // The conflicting row finished (or went) between the insert and these reads.
            None => Ok(Attempt::Again),
        };
    }
    query(tx, db, &INSERT_INPUT, &[&wf.id, &wf.inputs, &wf.now_ms]).await?;
    if let Some(parent) = &op.parent {
        let statement = tx.prepare_cached(&db.sql.text(&PARENT_CHECKPOINT)).await?;
        if tx.execute(&statement, &step_params(parent)).await? == 0 {
            // The parent was cancelled, taken over or its slot filled since the check above:
            // roll back, and the next attempt's check says which.
            return Ok(Attempt::Again);
        }
    }
    Ok(Attempt::Done(EnqueueOutcome::Enqueued))
}

/// `$1` queue: announce an enqueue on the channel dispatchers listen on
/// (`engine::dispatch::QUEUE_CHANNEL`).
const NOTIFY_QUEUE: &str = "SELECT pg_notify('cairn_queue_channel', $1::text)";

/// [`INSERT_QUEUED`]'s `$1`…`$18`, then `$19` inputs and `$20` attributes: the status row and its input row, in
/// one autocommitted statement. A row iff it inserted. Nothing is written when the insert
/// conflicts: the transaction of [`attempt`] then says why.
static ENQUEUE_AT_ONCE: Sql = Sql(|q| {
    format!(
        "WITH ins AS ( \
             INSERT INTO {q}.workflow_status (workflow_uuid, status, name, queue_name, executor_id, \
                 application_version, application_name, created_at, updated_at, recovery_attempts, \
                 workflow_timeout_ms, workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, \
                 owner_xid, started_at_epoch_ms, serialization, priority, config_name, \
                 deduplication_id, queue_partition_key, delay_until_epoch_ms, attributes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 0, $9, $10, $11, $12, NULL, NULL, $13, $14, \
                 $15, $16, $17, $18, $20::text::jsonb) \
             ON CONFLICT DO NOTHING RETURNING workflow_uuid), \
         inp AS ( \
             INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
             SELECT workflow_uuid, $19::text, $8::int8 FROM ins \
             ON CONFLICT (workflow_uuid) DO UPDATE SET \
                 inputs = excluded.inputs, retention_timestamp = excluded.retention_timestamp) \
         SELECT workflow_uuid FROM ins"
    )
});

/// [`ENQUEUE_AT_ONCE`] for many workflows: its parameters (but the serialization) as arrays,
/// in the same order; returns the `workflow_uuid`s inserted.
static ENQUEUE_MANY: Sql = Sql(|q| {
    format!(
        "WITH input AS ( \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::text[], \
                 $12::text[], $13::int4[], $14::text[], $15::text[], $16::text[], $17::int8[], \
                 $18::text[], $19::text[]) WITH ORDINALITY \
             AS t(workflow_uuid, status, name, queue_name, executor_id, application_version, \
                 application_name, now_ms, timeout_ms, deadline, parent, creator, priority, \
                 config_name, dedup, partition_key, delay_until, inputs, attributes, ord)), \
         ins AS ( \
             INSERT INTO {q}.workflow_status (workflow_uuid, status, name, queue_name, executor_id, \
                 application_version, application_name, created_at, updated_at, recovery_attempts, \
                 workflow_timeout_ms, workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, \
                 owner_xid, started_at_epoch_ms, serialization, priority, config_name, \
                 deduplication_id, queue_partition_key, delay_until_epoch_ms, attributes) \
             SELECT workflow_uuid, status, name, queue_name, executor_id, application_version, \
                 application_name, now_ms, now_ms, 0, timeout_ms, deadline, parent, creator, \
                 NULL, NULL, '{PORTABLE_JSON}', priority, config_name, dedup, partition_key, \
                 delay_until, attributes::jsonb \
             FROM input ORDER BY ord \
             ON CONFLICT DO NOTHING RETURNING workflow_uuid), \
         inp AS ( \
             INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
             SELECT i.workflow_uuid, i.inputs, i.now_ms FROM input i \
                 JOIN ins ON ins.workflow_uuid = i.workflow_uuid \
             ON CONFLICT (workflow_uuid) DO UPDATE SET \
                 inputs = excluded.inputs, retention_timestamp = excluded.retention_timestamp) \
         SELECT workflow_uuid FROM ins"
    )
});

/// Announce enqueues on `queues` to other processes' dispatchers, as a transaction of its
/// own committed without waiting for its WAL flush: Postgres serializes the commits of
/// transactions that notify (a global lock held through the commit), so a NOTIFY inside each
/// enqueue would let only one enqueue commit per disk flush, whereas alone and asynchronous
/// it holds that lock only briefly, and the enqueues group-commit. (A notification is not
/// durable anyway.) A failed announcement is only logged: the enqueue is committed, and
/// dispatchers also poll.
async fn announce<'q>(
    client: &deadpool_postgres::Object,
    queues: impl IntoIterator<Item = &'q str>,
) {
    // Simple-query protocol: the statements run as one implicit transaction, which `SET LOCAL`
    // scopes; the queues' names are therefore quoted literals.
    let mut text = String::from("SET LOCAL synchronous_commit = off;");
    for queue in queues {
        text.push_str(&format!(
            " SELECT pg_notify('cairn_queue_channel', '{}');",
            queue.replace('\'', "''")
        ));
    }
    if let Err(error) = client.batch_execute(&text).await {
        tracing::warn!(%error, "could not announce an enqueue to other processes");
    }
}

/// Top-level enqueues go through group commit: alone, [`ENQUEUE_AT_ONCE`] with its
/// announcement pipelined behind it (one round trip for both); under load, many as one
/// [`ENQUEUE_MANY`] and one announcement per queue. The announcement is sent whatever the
/// insert did (a spare wake-up costs a claim that finds nothing).
impl Grouped for EnqueueWorkflow {
    type Key = String;
    const SINGLE: &'static Sql = &ENQUEUE_AT_ONCE;
    const MULTI: &'static Sql = &ENQUEUE_MANY;
    answer_is_written!(|row| col(row, 0)?);

    fn key(&self) -> String {
        self.workflow.id.clone()
    }

    async fn write_one(
        &self,
        client: &deadpool_postgres::Object,
        text: &str,
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let wf = &self.workflow;
        let status = wf.status.as_str();
        let mut params: Vec<Param<'_>> = queued_params(self, &status).to_vec();
        params.extend([&wf.inputs as Param<'_>, &wf.attributes]);
        let enqueue = client.prepare_cached(text).await?;
        let queue = wf.queue_name.as_deref().unwrap_or_default();
        let (inserted, ()) =
            futures::join!(client.query(&enqueue, &params), announce(client, [queue]));
        inserted
    }

    async fn write_many(
        client: &deadpool_postgres::Object,
        text: &str,
        batch: &[&Self],
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        fn column<'a, T>(
            batch: &[&'a EnqueueWorkflow],
            f: impl Fn(&'a EnqueueWorkflow) -> T,
        ) -> Vec<T> {
            batch.iter().map(|op| f(op)).collect()
        }
        let ids = column(batch, |op| op.workflow.id.as_str());
        let statuses = column(batch, |op| op.workflow.status.as_str());
        let names = column(batch, |op| op.workflow.name.as_str());
        let queues = column(batch, |op| op.workflow.queue_name.as_deref());
        let executors = column(batch, |op| op.workflow.executor_id.as_str());
        let versions = column(batch, |op| op.workflow.app_version.as_deref());
        let applications = column(batch, |op| op.workflow.application_name.as_deref());
        let now = column(batch, |op| op.workflow.now_ms);
        let timeouts = column(batch, |op| op.workflow.timeout_ms);
        let deadlines = column(batch, |op| op.workflow.deadline_epoch_ms);
        let parents = column(batch, |op| op.workflow.parent_workflow_id.as_deref());
        let creators = column(batch, |op| op.workflow.creator_xid.as_str());
        let priorities = column(batch, |op| op.queued.priority);
        let configs = column(batch, |op| op.workflow.config_name.as_deref());
        let dedups = column(batch, |op| op.queued.deduplication_id.as_deref());
        let partitions = column(batch, |op| op.queued.partition_key.as_deref());
        let delays = column(batch, |op| op.queued.delay_until_epoch_ms);
        let inputs = column(batch, |op| op.workflow.inputs.as_str());
        let attributes = column(batch, |op| op.workflow.attributes.as_deref());
        let params: [Param<'_>; 19] = [
            &ids,
            &statuses,
            &names,
            &queues,
            &executors,
            &versions,
            &applications,
            &now,
            &timeouts,
            &deadlines,
            &parents,
            &creators,
            &priorities,
            &configs,
            &dedups,
            &partitions,
            &delays,
            &inputs,
            &attributes,
        ];
        let mut distinct: Vec<&str> = queues.iter().map(|q| q.unwrap_or_default()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let enqueue = client.prepare_cached(text).await?;
        let (inserted, ()) = futures::join!(
            client.query(&enqueue, &params),
            announce(client, distinct.iter().copied())
        );
        inserted
    }
}

impl OnPostgres for EnqueueWorkflow {
    /// A top-level enqueue is first tried as one statement (status, input, announcement),
    /// the common case. A child's enqueue, or one whose insert conflicted, is one short
    /// transaction: check the parent, insert the child, write the parent's checkpoint (or
    /// read why nothing was inserted). An outcome that wrote nothing rolls back.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<EnqueueOutcome> {
        if self.parent.is_none() && db.enqueues.write(self).await? {
            return Ok(EnqueueOutcome::Enqueued);
        }
        for _ in 0..ATTEMPTS {
            let mut client = db.checkout(self).await?;
            let result = async {
                let tx = client.transaction().await?;
                let verdict = attempt(&tx, db, self).await?;
                if matches!(verdict, Attempt::Done(EnqueueOutcome::Enqueued)) {
                    // Wakes the dispatchers of other processes (delivered at commit).
                    let queue = self.workflow.queue_name.as_deref().unwrap_or_default();
                    let notify = tx.prepare_cached(NOTIFY_QUEUE).await?;
                    tx.execute(&notify, &[&queue]).await?;
                    tx.commit().await?;
                }
                Ok::<_, Fail>(verdict)
            }
            .await;
            match result {
                Ok(Attempt::Done(outcome)) => return Ok(outcome),
                Ok(Attempt::Again) => {}
                Err(Fail::Engine(error)) => return Err(error),
                Err(Fail::Pg(e)) => return Err(super::failed(&db.pool, client, e, self)),
            }
        }
        Err(anomaly(
            self,
            "the enqueue neither inserted nor found a row",
        ))
    }
}

/// `$1` name: the owning application of a queue row.
static QUEUE_OWNER: Sql =
    Sql(|q| format!("SELECT application_name FROM {q}.queues WHERE name = $1"));

/// `$1` application: the newest version it can see (its own and unowned ones).
static LATEST_VERSION: Sql = Sql(|q| {
    format!(
        "SELECT version_name FROM {q}.application_versions \
         WHERE application_name = $1 OR application_name IS NULL \
         ORDER BY version_timestamp DESC LIMIT 1"
    )
});

/// The columns a definition writes, `$1`…`$12` in [`QueueRow`]'s order, `$13` application,
/// `$14` now.
fn queue_insert(q: &str) -> String {
    format!(
        "INSERT INTO {q}.queues (name, concurrency, worker_concurrency, rate_limit_max, \
             rate_limit_period_sec, priority_enabled, partition_queue, polling_interval_sec, \
             partition_concurrency, partition_worker_concurrency, partition_rate_limit_max, \
             partition_rate_limit_period_sec, application_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)"
    )
}

static UPSERT_QUEUE: Sql = Sql(|q| {
    format!(
        "{} ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, \
             worker_concurrency = excluded.worker_concurrency, \
             rate_limit_max = excluded.rate_limit_max, \
             rate_limit_period_sec = excluded.rate_limit_period_sec, \
             priority_enabled = excluded.priority_enabled, \
             partition_queue = excluded.partition_queue, \
             polling_interval_sec = excluded.polling_interval_sec, \
             partition_concurrency = excluded.partition_concurrency, \
             partition_worker_concurrency = excluded.partition_worker_concurrency, \
             partition_rate_limit_max = excluded.partition_rate_limit_max, \
             partition_rate_limit_period_sec = excluded.partition_rate_limit_period_sec, \
             application_name = COALESCE({q}.queues.application_name, excluded.application_name), \
             updated_at = excluded.updated_at",
        queue_insert(q)
    )
});

static INSERT_QUEUE: Sql = Sql(|q| format!("{} ON CONFLICT (name) DO NOTHING", queue_insert(q)));

static UPDATE_QUEUE: Sql = Sql(|q| {
    format!(
        "UPDATE {q}.queues SET concurrency = $2, worker_concurrency = $3, rate_limit_max = $4, \
             rate_limit_period_sec = $5, priority_enabled = $6, partition_queue = $7, \
             polling_interval_sec = $8, partition_concurrency = $9, \
             partition_worker_concurrency = $10, partition_rate_limit_max = $11, \
             partition_rate_limit_period_sec = $12, updated_at = $13 WHERE name = $1"
    )
});

static GET_QUEUE: Sql = Sql(|q| format!("SELECT {QUEUE_COLUMNS} FROM {q}.queues WHERE name = $1"));

static LIST_QUEUES: Sql = Sql(|q| {
    format!(
        "SELECT {QUEUE_COLUMNS} FROM {q}.queues \
         WHERE $1::text IS NULL OR application_name = $1 OR application_name IS NULL ORDER BY name"
    )
});

static DELETE_QUEUE: Sql = Sql(|q| format!("DELETE FROM {q}.queues WHERE name = $1"));

fn queue_from_row(row: &Row) -> Result<Queue> {
    Ok(QueueRow {
        name: col(row, 0)?,
        concurrency: col(row, 1)?,
        worker_concurrency: col(row, 2)?,
        rate_limit_max: col(row, 3)?,
        rate_limit_period_sec: col(row, 4)?,
        priority_enabled: col(row, 5)?,
        partition_queue: col(row, 6)?,
        polling_interval_sec: col(row, 7)?,
        partition_concurrency: col(row, 8)?,
        partition_worker_concurrency: col(row, 9)?,
        partition_rate_limit_max: col(row, 10)?,
        partition_rate_limit_period_sec: col(row, 11)?,
    }
    .into_queue())
}

impl OnPostgres for UpsertQueue {
    /// A read of the owner (and of the latest version), then one upsert.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        let rows = db.query(&QUEUE_OWNER, &[&self.queue.name], self).await?;
        let owner: Option<Option<String>> = match rows.first() {
            Some(row) => Some(col(row, 0)?),
            None => None,
        };
        if let Some(Some(owner)) = &owner
            && owner != &self.application_name
        {
            return Err(owned_elsewhere(
                &self.queue.name,
                owner,
                &self.application_name,
            ));
        }
        let update = match &self.update {
            QueueUpdate::Always => true,
            QueueUpdate::Never => false,
            QueueUpdate::IfLatestVersion(version) => {
                let rows = db
                    .query(&LATEST_VERSION, &[&self.application_name], self)
                    .await?;
                match rows.first() {
                    Some(row) => col::<String>(row, 0)? == *version,
                    None => false,
                }
            }
        };
        let row = QueueRow::of(&self.queue);
        let sql = if update { &UPSERT_QUEUE } else { &INSERT_QUEUE };
        db.execute(
            sql,
            &[
                &row.name,
                &row.concurrency,
                &row.worker_concurrency,
                &row.rate_limit_max,
                &row.rate_limit_period_sec,
                &row.priority_enabled,
                &row.partition_queue,
                &row.polling_interval_sec,
                &row.partition_concurrency,
                &row.partition_worker_concurrency,
                &row.partition_rate_limit_max,
                &row.partition_rate_limit_period_sec,
                &self.application_name,
                &self.now_ms,
            ],
            self,
        )
        .await?;
        Ok(owner.is_none())
    }
}

impl OnPostgres for GetQueue {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<Queue>> {
        let rows = db.query(&GET_QUEUE, &[&self.name], self).await?;
        rows.first().map(queue_from_row).transpose()
    }
}

impl OnPostgres for ListQueues {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<Queue>> {
        let rows = db
            .query(&LIST_QUEUES, &[&self.application_name], self)
            .await?;
        rows.iter().map(queue_from_row).collect()
    }
}

impl OnPostgres for UpdateQueue {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        let row = QueueRow::of(&self.queue);
        let changed = db
            .execute(
                &UPDATE_QUEUE,
                &[
                    &row.name,
                    &row.concurrency,
                    &row.worker_concurrency,
                    &row.rate_limit_max,
                    &row.rate_limit_period_sec,
                    &row.priority_enabled,
                    &row.partition_queue,
                    &row.polling_interval_sec,
                    &row.partition_concurrency,
                    &row.partition_worker_concurrency,
                    &row.partition_rate_limit_max,
                    &row.partition_rate_limit_period_sec,
                    &self.now_ms,
                ],
                self,
            )
            .await?;
        Ok(changed > 0)
    }
}

impl OnPostgres for DeleteQueue {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        Ok(db.execute(&DELETE_QUEUE, &[&self.name], self).await? > 0)
    }
}

/// `$1` workflow, `$2` name, `$3` delay until (NULL: keep), `$4` deadline (kept if set),
/// `$5` inputs (NULL: keep), `$6` now: the number of rows bounced (0 or 1). One statement,
/// so the status and the inputs change together.
static UPDATE_DELAYED: Sql = Sql(|q| {
    format!(
        "WITH bounced AS ( \
           UPDATE {q}.workflow_status SET is_debounced = TRUE, \
             debounce_deadline_epoch_ms = COALESCE(debounce_deadline_epoch_ms, $4::int8), \
             delay_until_epoch_ms = CASE \
               WHEN COALESCE(debounce_deadline_epoch_ms, $4::int8) IS NOT NULL \
                AND COALESCE(debounce_deadline_epoch_ms, $4::int8) \
                  < COALESCE($3::int8, delay_until_epoch_ms) \
               THEN COALESCE(debounce_deadline_epoch_ms, $4::int8) \
               ELSE COALESCE($3::int8, delay_until_epoch_ms) END, \
             updated_at = $6::int8 \
           WHERE workflow_uuid = $1::text AND name = $2::text AND status = 'DELAYED' \
           RETURNING workflow_uuid), \
         input AS ( \
           INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
           SELECT workflow_uuid, $5::text, $6::int8 FROM bounced WHERE $5::text IS NOT NULL \
           ON CONFLICT (workflow_uuid) DO UPDATE SET inputs = excluded.inputs RETURNING 1) \
         SELECT count(*) FROM bounced"
    )
});

impl OnPostgres for crate::store::UpdateDelayed {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        let rows = db
            .query(
                &UPDATE_DELAYED,
                &[
                    &self.workflow_id,
                    &self.workflow_name,
                    &self.delay_until_epoch_ms,
                    &self.debounce_deadline_epoch_ms,
                    &self.inputs,
                    &self.now_ms,
                ],
                self,
            )
            .await?;
        let bounced: i64 = match rows.first() {
            Some(row) => col(row, 0)?,
            None => 0,
        };
        Ok(bounced > 0)
    }
}
