//! Queues on SQLite: enqueueing a workflow (alone or as a parent's step) and the `queues`
//! table of definitions.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::ops::{get_checkpoint, ownership_lost, record_step};
use super::{OnSqlite, failed};
use crate::engine::queue::{QUEUE_COLUMNS, Queue, QueueRow, owned_elsewhere};
use crate::error::{Error, Result};
use crate::status::WorkflowState;
use crate::store::{
    DeleteQueue, EnqueueOutcome, EnqueueWorkflow, GetQueue, ListQueues, Operation, PORTABLE_JSON,
    QueueUpdate, RecordOutcome, UpdateQueue, UpsertQueue,
};

impl OnSqlite for EnqueueWorkflow {
    const WRITES: bool = true;

    /// The parent's ownership and checkpoint slot are checked first, so a refused enqueue
    /// writes nothing; the writer's transaction makes the rest atomic.
    fn on_sqlite(&self, conn: &Connection) -> Result<EnqueueOutcome> {
        let fail = failed(self);
        let wf = &self.workflow;
        if let Some(parent) = &self.parent {
            if let Some(lost) =
                ownership_lost(conn, &parent.workflow_id, &parent.owner_xid).map_err(&fail)?
            {
                return Ok(EnqueueOutcome::Refused(lost));
            }
            if let Some(recorded) =
                get_checkpoint(conn, &parent.workflow_id, parent.function_id).map_err(&fail)?
            {
                // This very enqueue, committed unseen: the slot names the child we created.
                let ours = recorded.child_workflow_id.as_deref() == Some(wf.id.as_str())
                    && creator_of(conn, &wf.id).map_err(&fail)?.as_deref()
                        == Some(wf.creator_xid.as_str());
                if ours {
                    return Ok(EnqueueOutcome::Enqueued);
                }
                return Ok(EnqueueOutcome::Refused(RecordOutcome::Duplicate(recorded)));
            }
        }
        let q = &self.queued;
        // No conflict target: an existing id and a held deduplication id both insert nothing.
        let inserted = conn
            .prepare_cached(
                "INSERT INTO workflow_status (workflow_uuid, status, name, queue_name, executor_id, \
                 application_version, application_name, created_at, updated_at, recovery_attempts, \
                 workflow_timeout_ms, workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, \
                 owner_xid, started_at_epoch_ms, serialization, priority, config_name, \
                 deduplication_id, queue_partition_key, delay_until_epoch_ms, attributes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 0, ?9, ?10, ?11, ?12, NULL, NULL, ?13, \
                 ?14, ?15, ?16, ?17, ?18, ?19) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    wf.id,
                    wf.status.as_str(),
                    wf.name,
                    wf.queue_name,
                    wf.executor_id,
                    wf.app_version,
                    wf.application_name,
                    wf.now_ms,
                    wf.timeout_ms,
                    wf.deadline_epoch_ms,
                    wf.parent_workflow_id,
                    wf.creator_xid,
                    PORTABLE_JSON,
                    q.priority,
                    wf.config_name,
                    q.deduplication_id,
                    q.partition_key,
                    q.delay_until_epoch_ms,
                    wf.attributes,
                ])
            })
            .map_err(&fail)?;
        if inserted == 0 {
            return not_inserted(conn, self).map_err(&fail);
        }
        conn.prepare_cached(
            "INSERT INTO workflow_input (workflow_uuid, inputs, retention_timestamp) \
             VALUES (?1, ?2, ?3) ON CONFLICT (workflow_uuid) DO UPDATE SET \
             inputs = excluded.inputs, retention_timestamp = excluded.retention_timestamp",
        )
        .and_then(|mut s| s.execute(params![wf.id, wf.inputs, wf.now_ms]))
        .map_err(&fail)?;
        if let Some(parent) = &self.parent {
            // Checked above in this transaction: the write lands.
            let outcome = record_step(conn, parent).map_err(&fail)?;
            if outcome != RecordOutcome::Recorded {
                return Err(Error::database(
                    self.describe(),
                    std::io::Error::other("the parent's checkpoint was refused after its check"),
                ));
            }
        }
        Ok(EnqueueOutcome::Enqueued)
    }
}

/// Why an enqueue inserted nothing: the id exists (ours after an unseen commit, or another's),
/// or the queue's deduplication id is held.
fn not_inserted(conn: &Connection, op: &EnqueueWorkflow) -> rusqlite::Result<EnqueueOutcome> {
    let wf = &op.workflow;
    let existing = conn
        .prepare_cached(
            "SELECT name, status, creator_xid FROM workflow_status WHERE workflow_uuid = ?1",
        )?
        .query_row([&wf.id], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })
        .optional()?;
    if let Some((name, status, creator)) = existing {
        if creator.as_deref() == Some(wf.creator_xid.as_str()) {
            return Ok(EnqueueOutcome::Enqueued);
        }
        return Ok(EnqueueOutcome::Existing {
            name,
            status: status.map(|s| WorkflowState::parse(&s)),
        });
    }
    let holder: Option<String> = conn
        .prepare_cached(
            "SELECT workflow_uuid FROM workflow_status WHERE queue_name = ?1 AND deduplication_id = ?2",
        )?
        .query_row(
            params![wf.queue_name, op.queued.deduplication_id],
            |row| row.get(0),
        )
        .optional()?;
    // Inside the writer's transaction the conflicting row is there to read.
    holder
        .map(|existing_workflow_id| EnqueueOutcome::Deduplicated {
            existing_workflow_id,
        })
        .ok_or(rusqlite::Error::QueryReturnedNoRows)
}

/// The `creator_xid` of a workflow, if it exists.
fn creator_of(conn: &Connection, workflow_id: &str) -> rusqlite::Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT creator_xid FROM workflow_status WHERE workflow_uuid = ?1")?
        .query_row([workflow_id], |row| row.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

impl OnSqlite for UpsertQueue {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        let fail = failed(self);
        let owner: Option<Option<String>> = conn
            .prepare_cached("SELECT application_name FROM queues WHERE name = ?1")
            .and_then(|mut s| s.query_row([&self.queue.name], |row| row.get(0)).optional())
            .map_err(&fail)?;
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
                let latest: Option<String> = conn
                    .prepare_cached(
                        "SELECT version_name FROM application_versions \
                         WHERE application_name = ?1 OR application_name IS NULL \
                         ORDER BY version_timestamp DESC LIMIT 1",
                    )
                    .and_then(|mut s| {
                        s.query_row([&self.application_name], |row| row.get(0))
                            .optional()
                    })
                    .map_err(&fail)?;
                latest.as_deref() == Some(version.as_str())
            }
        };
        let row = QueueRow::of(&self.queue);
        let sql = if update {
            "INSERT INTO queues (name, concurrency, worker_concurrency, rate_limit_max, \
             rate_limit_period_sec, priority_enabled, partition_queue, polling_interval_sec, \
             partition_concurrency, partition_worker_concurrency, partition_rate_limit_max, \
             partition_rate_limit_period_sec, application_name, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14) \
             ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, \
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
             application_name = COALESCE(queues.application_name, excluded.application_name), \
             updated_at = excluded.updated_at"
        } else {
            "INSERT INTO queues (name, concurrency, worker_concurrency, rate_limit_max, \
             rate_limit_period_sec, priority_enabled, partition_queue, polling_interval_sec, \
             partition_concurrency, partition_worker_concurrency, partition_rate_limit_max, \
             partition_rate_limit_period_sec, application_name, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14) \
             ON CONFLICT (name) DO NOTHING"
        };
        conn.prepare_cached(sql)
            .and_then(|mut s| {
                s.execute(params![
                    row.name,
                    row.concurrency,
                    row.worker_concurrency,
                    row.rate_limit_max,
                    row.rate_limit_period_sec,
                    row.priority_enabled,
                    row.partition_queue,
                    row.polling_interval_sec,
                    row.partition_concurrency,
                    row.partition_worker_concurrency,
                    row.partition_rate_limit_max,
                    row.partition_rate_limit_period_sec,
                    self.application_name,
                    self.now_ms,
                ])
            })
            .map_err(&fail)?;
        Ok(owner.is_none())
    }
}

fn queue_from_row(row: &Row<'_>) -> rusqlite::Result<Queue> {
    Ok(QueueRow {
        name: row.get(0)?,
        concurrency: row.get(1)?,
        worker_concurrency: row.get(2)?,
        rate_limit_max: row.get(3)?,
        rate_limit_period_sec: row.get(4)?,
        priority_enabled: row.get(5)?,
        partition_queue: row.get(6)?,
        polling_interval_sec: row.get(7)?,
        partition_concurrency: row.get(8)?,
        partition_worker_concurrency: row.get(9)?,
        partition_rate_limit_max: row.get(10)?,
        partition_rate_limit_period_sec: row.get(11)?,
    }
    .into_queue())
}

impl OnSqlite for GetQueue {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Option<Queue>> {
        conn.prepare_cached(&format!(
            "SELECT {QUEUE_COLUMNS} FROM queues WHERE name = ?1"
        ))
        .and_then(|mut s| s.query_row([&self.name], queue_from_row).optional())
        .map_err(failed(self))
    }
}

impl OnSqlite for ListQueues {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<Queue>> {
        conn.prepare_cached(&format!(
            "SELECT {QUEUE_COLUMNS} FROM queues \
             WHERE ?1 IS NULL OR application_name = ?1 OR application_name IS NULL ORDER BY name"
        ))
        .and_then(|mut s| {
            s.query_map([&self.application_name], queue_from_row)?
                .collect()
        })
        .map_err(failed(self))
    }
}

impl OnSqlite for UpdateQueue {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        let row = QueueRow::of(&self.queue);
        conn.prepare_cached(
            "UPDATE queues SET concurrency = ?2, worker_concurrency = ?3, rate_limit_max = ?4, \
             rate_limit_period_sec = ?5, priority_enabled = ?6, partition_queue = ?7, \
             polling_interval_sec = ?8, partition_concurrency = ?9, \
             partition_worker_concurrency = ?10, partition_rate_limit_max = ?11, \
             partition_rate_limit_period_sec = ?12, updated_at = ?13 WHERE name = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                row.name,
                row.concurrency,
                row.worker_concurrency,
                row.rate_limit_max,
                row.rate_limit_period_sec,
                row.priority_enabled,
                row.partition_queue,
                row.polling_interval_sec,
                row.partition_concurrency,
                row.partition_worker_concurrency,
                row.partition_rate_limit_max,
                row.partition_rate_limit_period_sec,
                self.now_ms,
            ])
        })
        .map(|changed| changed > 0)
        .map_err(failed(self))
    }
}

impl OnSqlite for DeleteQueue {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        conn.prepare_cached("DELETE FROM queues WHERE name = ?1")
            .and_then(|mut s| s.execute([&self.name]))
            .map(|changed| changed > 0)
            .map_err(failed(self))
    }
}

impl OnSqlite for crate::store::UpdateDelayed {
    const WRITES: bool = true;

    /// The writer's transaction makes the status update and the inputs one write.
    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        let fail = failed(self);
        // Right-hand sides read the row as it was: the kept deadline, else the new one, caps
        // the delay.
        let changed = conn
            .prepare_cached(
                "UPDATE workflow_status SET is_debounced = TRUE, \
                 debounce_deadline_epoch_ms = COALESCE(debounce_deadline_epoch_ms, ?4), \
                 delay_until_epoch_ms = CASE \
                   WHEN COALESCE(debounce_deadline_epoch_ms, ?4) IS NOT NULL \
                    AND COALESCE(debounce_deadline_epoch_ms, ?4) \
                      < COALESCE(?3, delay_until_epoch_ms) \
                   THEN COALESCE(debounce_deadline_epoch_ms, ?4) \
                   ELSE COALESCE(?3, delay_until_epoch_ms) END, \
                 updated_at = ?5 \
                 WHERE workflow_uuid = ?1 AND name = ?2 AND status = 'DELAYED'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    self.workflow_id,
                    self.workflow_name,
                    self.delay_until_epoch_ms,
                    self.debounce_deadline_epoch_ms,
                    self.now_ms,
                ])
            })
            .map_err(&fail)?;
        if changed == 0 {
            return Ok(false);
        }
        if let Some(inputs) = &self.inputs {
            conn.prepare_cached(
                "INSERT INTO workflow_input (workflow_uuid, inputs, retention_timestamp) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (workflow_uuid) DO UPDATE SET \
                 inputs = excluded.inputs",
            )
            .and_then(|mut s| s.execute(params![self.workflow_id, inputs, self.now_ms]))
            .map_err(&fail)?;
        }
        Ok(true)
    }
}
