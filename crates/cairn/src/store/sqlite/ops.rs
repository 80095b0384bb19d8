//! Workflow and step operations on SQLite: inserting and starting workflows, checkpoints,
//! completion, recovery and queue claims. Each `impl OnSqlite` is the operation's definition;
//! the private functions below them are what several operations share.
//!
//! Writes run on the writer thread inside its group transaction, so an operation that issues
//! several statements is atomic; reads run on a reader connection.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{OnSqlite, failed};
use crate::error::{Error, Result};
use crate::status::WorkflowState;
use crate::store::{
    Checkpoint, ClaimEnqueued, CompleteWorkflow, DeadLetter, GetCheckpoint, GetWorkflow,
    InsertOutcome, InsertWorkflow, ListCheckpoints, NewWorkflow, Operation, PORTABLE_JSON,
    QueuePartitions, ReclaimPending, Reclaimed, RecordOutcome, RecordStep, RegisterAppVersion,
    StartChild, StepRecord, WorkflowRow,
};

impl OnSqlite for InsertWorkflow {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<InsertOutcome> {
        insert_workflow(conn, &self.0).map_err(failed(self))
    }
}

impl OnSqlite for StartChild {
    const WRITES: bool = true;

    /// The parent's ownership and checkpoint slot are checked first, so a refused start
    /// writes nothing.
    fn on_sqlite(&self, conn: &Connection) -> Result<(RecordOutcome, InsertOutcome)> {
        let (parent, child) = (&self.parent, &self.child);
        let fail = failed(self);
        if let Some(lost) =
            ownership_lost(conn, &parent.workflow_id, &parent.owner_xid).map_err(&fail)?
        {
            let child_row = existing_row(conn, &child.id).map_err(&fail)?;
            return Ok((lost, existing(child_row)));
        }
        if let Some(recorded) =
            get_checkpoint(conn, &parent.workflow_id, parent.function_id).map_err(&fail)?
        {
            let child_row = existing_row(conn, &child.id).map_err(&fail)?;
            // This very start, committed unseen: the slot names this child, still held by its creator.
            if recorded.child_workflow_id.as_deref() == Some(child.id.as_str())
                && held_by(child_row.as_ref(), &child.creator_xid)
            {
                return Ok((RecordOutcome::Recorded, InsertOutcome::Inserted));
            }
            return Ok((RecordOutcome::Duplicate(recorded), existing(child_row)));
        }
        let child_outcome = insert_workflow(conn, child).map_err(&fail)?;
        let outcome = record_step(conn, parent).map_err(&fail)?;
        Ok((outcome, child_outcome))
    }
}

impl OnSqlite for RecordStep {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<RecordOutcome> {
        record_step(conn, &self.0).map_err(failed(self))
    }
}

impl OnSqlite for GetCheckpoint {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Option<Checkpoint>> {
        get_checkpoint(conn, &self.workflow_id, self.function_id).map_err(failed(self))
    }
}

impl OnSqlite for ListCheckpoints {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<Checkpoint>> {
        list_checkpoints(conn, &self.workflow_id).map_err(failed(self))
    }
}

impl OnSqlite for CompleteWorkflow {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        let c = &self.0;
        let fail = failed(self);
        let updated = conn
            .prepare_cached(
                "UPDATE workflow_status SET status = ?1, owner_xid = NULL, deduplication_id = NULL, \
                 updated_at = ?2, completed_at = ?2 \
                 WHERE workflow_uuid = ?3 AND status = 'PENDING' AND owner_xid = ?4",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    c.status.as_str(),
                    c.now_ms,
                    c.workflow_id,
                    c.owner_xid
                ])
            })
            .map_err(&fail)?;
        if updated == 0 {
            return Ok(false);
        }
        conn.prepare_cached(
            "INSERT INTO workflow_output (workflow_uuid, output, error, retention_timestamp) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (workflow_uuid) DO UPDATE SET output = excluded.output, error = excluded.error",
        )
        .and_then(|mut stmt| stmt.execute(params![c.workflow_id, c.output, c.error, c.now_ms]))
        .map_err(&fail)?;
        Ok(true)
    }
}

impl OnSqlite for GetWorkflow {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Option<WorkflowRow>> {
        get_workflow(conn, &self.workflow_id).map_err(failed(self))
    }
}

impl OnSqlite for ReclaimPending {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<Reclaimed>> {
        let fail = failed(self);
        // Without a batch, every row (a limit of -1 is none in SQLite) and no pass to skip.
        let (limit, pattern) = match &self.batch {
            Some(batch) => (batch.limit, Some(batch.owners_pattern())),
            None => (-1, None),
        };
        // A re-run after a commit that succeeded unseen (the writer retries a failed commit)
        // finds nothing new: the transaction is the writer's group, all or nothing.
        let ids: Vec<String> = conn
            .prepare_cached(
                "UPDATE workflow_status SET owner_xid = ?1, recovery_attempts = recovery_attempts + 1, updated_at = ?2 \
                 WHERE workflow_uuid IN (SELECT workflow_uuid FROM workflow_status \
                     WHERE status = 'PENDING' AND executor_id = ?3 AND application_version = ?4 \
                     AND (?5 IS NULL OR application_name = ?5 OR application_name IS NULL) \
                     AND (?6 IS NULL OR owner_xid IS NULL OR owner_xid NOT LIKE ?6) \
                     ORDER BY created_at, workflow_uuid LIMIT ?7) \
                 RETURNING workflow_uuid",
            )
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![
                        self.new_owner,
                        self.now_ms,
                        self.executor_id,
                        self.app_version,
                        self.application_name,
                        pattern,
                        limit
                    ],
                    |row| row.get(0),
                )?
                .collect()
            })
            .map_err(&fail)?;
        load_all_reclaimed(conn, ids).map_err(&fail)
    }
}

impl OnSqlite for ClaimEnqueued {
    const WRITES: bool = true;

    /// With `probe`, one `UPDATE` promotes the due `DELAYED` rows; one claims what waits (its `LIMIT` the
    /// room every limit leaves, counted in the same statement: the writer thread serializes
    /// claimers, so no two count the same room), then one `SELECT` reads back every row this
    /// claim's owner holds on the queue: the rows just claimed and, after a commit that
    /// succeeded unseen, the rows the first attempt claimed (which the `LIMIT` counts, so a
    /// re-run never claims more than `limit` in all).
    ///
    /// The claim's look for waiting rows repeats the partial index's own condition
    /// (`status IN ('ENQUEUED', 'PENDING')`): SQLite uses a partial index only for a query
    /// that states its condition, and without it each claim scanned the whole table — 70 ms
    /// on the writer thread per claim over a million finished workflows.
    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<Reclaimed>> {
        let claim = &self.0;
        let limits = &claim.limits;
        let fail = failed(self);
        let names =
            serde_json::to_string(&claim.names).map_err(|e| Error::database(self.describe(), e))?;
        if claim.probe {
            conn.prepare_cached(
                // A debounce key is held only while DELAYED (as DBOS): a later debounce
                // starts a fresh workflow instead of bouncing this one.
                "UPDATE workflow_status SET status = 'ENQUEUED', updated_at = ?2, \
                 deduplication_id = CASE WHEN is_debounced THEN NULL ELSE deduplication_id END \
                 WHERE status = 'DELAYED' AND queue_name = ?1 AND delay_until_epoch_ms <= ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![claim.queue_name, claim.now_ms]))
            .map_err(&fail)?;
        }
        let (rate, period) = limits.rate_limit.unzip();
        let (partition_rate, partition_period) = limits.partition_rate_limit.unzip();
        conn.prepare_cached(
            "UPDATE workflow_status SET status = 'PENDING', owner_xid = ?1, executor_id = ?2, \
                 application_version = ?3, application_name = COALESCE(?4, application_name), \
                 started_at_epoch_ms = ?5, recovery_attempts = recovery_attempts + 1, updated_at = ?5, \
                 workflow_deadline_epoch_ms = CASE \
                     WHEN workflow_timeout_ms IS NOT NULL AND workflow_deadline_epoch_ms IS NULL \
                     THEN ?5 + workflow_timeout_ms ELSE workflow_deadline_epoch_ms END \
             WHERE workflow_uuid IN ( \
                 SELECT workflow_uuid FROM workflow_status \
                 WHERE status = 'ENQUEUED' AND status IN ('ENQUEUED', 'PENDING') AND queue_name = ?6 \
                     AND name IN (SELECT value FROM json_each(?7)) \
                     AND (?4 IS NULL OR application_name = ?4 OR application_name IS NULL) \
                     AND (application_version IS NULL OR application_version = ?3) \
                     AND (?14 IS NULL OR queue_partition_key = ?14) \
                 ORDER BY CASE WHEN ?9 THEN priority ELSE 0 END, created_at \
                 LIMIT max(min( \
                     ?8 - (SELECT COUNT(*) FROM workflow_status \
                         WHERE queue_name = ?6 AND status = 'PENDING' AND owner_xid = ?1), \
                     CASE WHEN ?10 IS NULL THEN ?8 ELSE ?10 - (SELECT COUNT(*) FROM workflow_status \
                         WHERE queue_name = ?6 AND status = 'PENDING') END, \
                     CASE WHEN ?11 IS NULL THEN ?8 ELSE ?11 - (SELECT COUNT(*) FROM workflow_status \
                         WHERE queue_name = ?6 AND status = 'PENDING' AND executor_id = ?2) END, \
                     CASE WHEN ?12 IS NULL THEN ?8 ELSE ?12 - (SELECT COUNT(*) FROM workflow_status \
                         WHERE queue_name = ?6 AND status NOT IN ('ENQUEUED', 'DELAYED') \
                             AND started_at_epoch_ms > ?5 - ?13) END, \
                     CASE WHEN ?15 IS NULL THEN ?8 ELSE ?15 - (SELECT COUNT(*) FROM workflow_status \
                         WHERE queue_name = ?6 AND status = 'PENDING' AND queue_partition_key = ?14) END, \
                     CASE WHEN ?16 IS NULL THEN ?8 ELSE ?16 - (SELECT COUNT(*) FROM workflow_status \
                         WHERE queue_name = ?6 AND status = 'PENDING' AND executor_id = ?2 \
                             AND queue_partition_key = ?14) END, \
                     CASE WHEN ?17 IS NULL THEN ?8 ELSE ?17 - (SELECT COUNT(*) FROM workflow_status \
                         WHERE queue_name = ?6 AND status NOT IN ('ENQUEUED', 'DELAYED') \
                             AND started_at_epoch_ms > ?5 - ?18 AND queue_partition_key = ?14) END \
                 ), 0))",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                claim.new_owner,
                claim.executor_id,
                claim.app_version,
                claim.application_name,
                claim.now_ms,
                claim.queue_name,
                names,
                claim.limit,
                limits.priority_enabled,
                limits.concurrency,
                limits.worker_concurrency,
                rate,
                period,
                claim.partition_key,
                limits.partition_concurrency,
                limits.partition_worker_concurrency,
                partition_rate,
                partition_period,
            ])
        })
        .map_err(&fail)?;
        let ids: Vec<String> = conn
            .prepare_cached(
                "SELECT workflow_uuid FROM workflow_status \
                 WHERE queue_name = ?1 AND status = 'PENDING' AND owner_xid = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![claim.queue_name, claim.new_owner], |row| row.get(0))?
                    .collect()
            })
            .map_err(&fail)?;
        load_all_reclaimed(conn, ids).map_err(&fail)
    }
}

impl OnSqlite for QueuePartitions {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<String>> {
        conn.prepare_cached(
            "SELECT DISTINCT queue_partition_key FROM workflow_status \
             WHERE queue_name = ?1 AND queue_partition_key IS NOT NULL \
                 AND (status = 'ENQUEUED' OR (status = 'DELAYED' AND delay_until_epoch_ms <= ?2))",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![self.queue_name, self.now_ms], |row| row.get(0))?
                .collect()
        })
        .map_err(failed(self))
    }
}

impl OnSqlite for DeadLetter {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        conn.prepare_cached(
            "UPDATE workflow_status SET status = ?1, owner_xid = NULL, deduplication_id = NULL, \
             started_at_epoch_ms = NULL, queue_name = NULL, updated_at = ?2, completed_at = ?2 \
             WHERE workflow_uuid = ?3 AND status = 'PENDING' AND owner_xid = ?4",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                WorkflowState::MaxRecoveryAttemptsExceeded.as_str(),
                self.now_ms,
                self.workflow_id,
                self.owner_xid
            ])
        })
        .map(|changed| changed == 1)
        .map_err(failed(self))
    }
}

impl OnSqlite for RegisterAppVersion {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<()> {
        conn.prepare_cached(
            "INSERT INTO application_versions (version_id, version_name, version_timestamp, created_at, application_name) \
             VALUES (?1, ?2, ?3, ?3, ?4) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                uuid::Uuid::new_v4().to_string(),
                self.version,
                self.now_ms,
                self.application_name
            ])
        })
        .map(drop)
        .map_err(failed(self))
    }
}

/// The columns of a [`Checkpoint`], in the order [`checkpoint_from_row`] reads them (a macro,
/// so that statements stay `&'static str` literals for the statement cache).
macro_rules! checkpoint_columns {
    () => {
        "function_id, function_name, output, error, child_workflow_id, serialization, \
         started_at_epoch_ms, completed_at_epoch_ms"
    };
}

pub(super) use checkpoint_columns;

/// Decode a row selected with `checkpoint_columns!()`.
pub(super) fn checkpoint_from_row(row: &Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        function_id: row.get(0)?,
        function_name: row.get(1)?,
        output: row.get(2)?,
        error: row.get(3)?,
        child_workflow_id: row.get(4)?,
        serialization: row.get(5)?,
        started_at_epoch_ms: row.get(6)?,
        completed_at_epoch_ms: row.get(7)?,
    })
}

/// A status column, read as text and parsed (NULL stays `None`).
fn state_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<WorkflowState>> {
    Ok(row
        .get::<_, Option<String>>(index)?
        .map(|text| WorkflowState::parse(&text)))
}

/// Insert a workflow's status and input rows, or report the row already there (shared by
/// [`InsertWorkflow`] and [`StartChild`]).
fn insert_workflow(conn: &Connection, wf: &NewWorkflow) -> rusqlite::Result<InsertOutcome> {
    let pending = wf.status == WorkflowState::Pending;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO workflow_status (workflow_uuid, status, name, queue_name, executor_id, \
             application_version, application_name, created_at, updated_at, recovery_attempts, \
             workflow_timeout_ms, workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, owner_xid, \
             started_at_epoch_ms, serialization, priority, config_name, attributes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 0, ?17, \
             ?18) \
             ON CONFLICT (workflow_uuid) DO NOTHING",
        )?
        .execute(params![
            wf.id,
            wf.status.as_str(),
            wf.name,
            wf.queue_name,
            wf.executor_id,
            wf.app_version,
            wf.application_name,
            wf.now_ms,
            i64::from(pending),
            wf.timeout_ms,
            wf.deadline_epoch_ms,
            wf.parent_workflow_id,
            wf.creator_xid,
            pending.then_some(&wf.creator_xid),
            pending.then_some(wf.now_ms),
            PORTABLE_JSON,
            wf.config_name,
            wf.attributes,
        ])?;
    if inserted == 0 {
        let row = existing_row(conn, &wf.id)?;
        // This very insert, committed unseen: still PENDING under the token it wrote.
        if held_by(row.as_ref(), &wf.creator_xid) {
            return Ok(InsertOutcome::Inserted);
        }
        return Ok(existing(row));
    }
    // The status row is new, so any input row under this id is a leftover: replace it.
    conn.prepare_cached(
        "INSERT INTO workflow_input (workflow_uuid, inputs, retention_timestamp) VALUES (?1, ?2, ?3) \
         ON CONFLICT (workflow_uuid) DO UPDATE SET inputs = excluded.inputs, \
         retention_timestamp = excluded.retention_timestamp",
    )?
    .execute(params![wf.id, wf.inputs, wf.now_ms])?;
    Ok(InsertOutcome::Inserted)
}

/// An existing workflow's name, status and owner, as [`existing_row`] reads them.
struct ExistingRow {
    name: Option<String>,
    status: Option<WorkflowState>,
    owner_xid: Option<String>,
}

/// The name, status and owner of a workflow, if it exists.
fn existing_row(conn: &Connection, workflow_id: &str) -> rusqlite::Result<Option<ExistingRow>> {
    conn.prepare_cached(
        "SELECT name, status, owner_xid FROM workflow_status WHERE workflow_uuid = ?1",
    )?
    .query_row([workflow_id], |row| {
        Ok(ExistingRow {
            name: row.get(0)?,
            status: state_at(row, 1)?,
            owner_xid: row.get(2)?,
        })
    })
    .optional()
}

/// Whether the workflow is `PENDING` and owned by `owner_xid`.
fn held_by(row: Option<&ExistingRow>, owner_xid: &str) -> bool {
    row.is_some_and(|row| {
        row.status == Some(WorkflowState::Pending) && row.owner_xid.as_deref() == Some(owner_xid)
    })
}

/// A workflow row as an [`InsertOutcome::Existing`] (both `None` if there is no such row).
fn existing(row: Option<ExistingRow>) -> InsertOutcome {
    let (name, status) = row.map_or((None, None), |row| (row.name, row.status));
    InsertOutcome::Existing { name, status }
}

/// `None` if `owner_xid` holds the `PENDING` workflow, else why not (its status, if it exists).
pub(super) fn ownership_lost(
    conn: &Connection,
    workflow_id: &str,
    owner_xid: &str,
) -> rusqlite::Result<Option<RecordOutcome>> {
    let row = existing_row(conn, workflow_id)?;
    Ok(match row {
        None => Some(RecordOutcome::NotOwner { status: None }),
        Some(row) if held_by(Some(&row), owner_xid) => None,
        Some(row) => Some(RecordOutcome::NotOwner { status: row.status }),
    })
}

/// Write a checkpoint if its owner still holds the workflow and the slot is free (shared by
/// [`RecordStep`] and every operation that records its own checkpoint).
pub(crate) fn record_step(conn: &Connection, rec: &StepRecord) -> rusqlite::Result<RecordOutcome> {
    record_step_as(conn, rec, rec.output.as_deref(), PORTABLE_JSON)
}

/// [`record_step`] with this `output` and `serialization` instead of `rec.output` and
/// portable JSON (a received message is recorded as it was stored).
pub(super) fn record_step_as(
    conn: &Connection,
    rec: &StepRecord,
    output: Option<&str>,
    serialization: &str,
) -> rusqlite::Result<RecordOutcome> {
    // The common case in one statement: owned and fresh.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO operation_outputs (workflow_uuid, function_id, function_name, output, error, \
             child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name, \
             retention_timestamp) \
             SELECT ?1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?9 WHERE EXISTS (SELECT 1 FROM workflow_status \
             WHERE workflow_uuid = ?1 AND (status = 'PENDING' AND owner_xid = ?2 \
             OR status = 'CANCELLED' AND owner_xid IS NULL AND updated_at >= ?8)) \
             ON CONFLICT (workflow_uuid, function_id) DO NOTHING",
        )?
        .execute(params![
            rec.workflow_id,
            rec.owner_xid,
            rec.function_id,
            rec.function_name,
            output,
            rec.error,
            rec.child_workflow_id,
            rec.started_at_epoch_ms,
            rec.completed_at_epoch_ms,
            serialization,
            rec.application_name,
        ])?;
    if inserted == 1 {
        return Ok(RecordOutcome::Recorded);
    }
    if let Some(lost) = ownership_lost(conn, &rec.workflow_id, &rec.owner_xid)? {
        return Ok(lost);
    }
    // Owned, yet not inserted: the slot is taken, so the checkpoint in it is there to read
    // (inside one transaction a missing row here is a bug, reported as "no rows").
    get_checkpoint(conn, &rec.workflow_id, rec.function_id)?
        .map(RecordOutcome::Duplicate)
        .ok_or(rusqlite::Error::QueryReturnedNoRows)
}

/// One checkpoint, if recorded.
pub(super) fn get_checkpoint(
    conn: &Connection,
    workflow_id: &str,
    function_id: i32,
) -> rusqlite::Result<Option<Checkpoint>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        checkpoint_columns!(),
        " FROM operation_outputs WHERE workflow_uuid = ?1 AND function_id = ?2"
    ))?
    .query_row(params![workflow_id, function_id], checkpoint_from_row)
    .optional()
}

/// All checkpoints of a workflow, in `function_id` order.
fn list_checkpoints(conn: &Connection, workflow_id: &str) -> rusqlite::Result<Vec<Checkpoint>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        checkpoint_columns!(),
        " FROM operation_outputs WHERE workflow_uuid = ?1 ORDER BY function_id"
    ))?
    .query_map([workflow_id], checkpoint_from_row)?
    .collect()
}

/// The status-row columns of a [`WorkflowRow`], in its field order up to `serialization`
/// (`s` is the status row); [`workflow_from_row`] decodes them, followed by the three payload
/// columns (inputs, output, error).
macro_rules! status_columns {
    () => {
        "s.workflow_uuid, s.status, s.name, s.class_name, s.config_name, s.queue_name, \
         s.executor_id, s.application_version, s.application_name, s.created_at, s.updated_at, \
         s.started_at_epoch_ms, s.completed_at, s.recovery_attempts, s.workflow_timeout_ms, \
         s.workflow_deadline_epoch_ms, s.parent_workflow_id, s.owner_xid, s.deduplication_id, \
         s.priority, s.queue_partition_key, s.forked_from, s.was_forked_from, s.attributes, \
         s.delay_until_epoch_ms, s.authenticated_user, s.assumed_role, s.authenticated_roles, \
         s.schedule_name, s.serialization"
    };
}
pub(super) use status_columns;

/// Decode a row selected as `status_columns!()` followed by inputs, output and error.
pub(super) fn workflow_from_row(row: &Row<'_>) -> rusqlite::Result<WorkflowRow> {
    Ok(WorkflowRow {
        workflow_id: row.get(0)?,
        status: state_at(row, 1)?,
        name: row.get(2)?,
        class_name: row.get(3)?,
        config_name: row.get(4)?,
        queue_name: row.get(5)?,
        executor_id: row.get(6)?,
        application_version: row.get(7)?,
        application_name: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        started_at_epoch_ms: row.get(11)?,
        completed_at: row.get(12)?,
        recovery_attempts: row.get(13)?,
        workflow_timeout_ms: row.get(14)?,
        workflow_deadline_epoch_ms: row.get(15)?,
        parent_workflow_id: row.get(16)?,
        owner_xid: row.get(17)?,
        deduplication_id: row.get(18)?,
        priority: row.get(19)?,
        queue_partition_key: row.get(20)?,
        forked_from: row.get(21)?,
        was_forked_from: row.get(22)?,
        attributes: row.get(23)?,
        delay_until_epoch_ms: row.get(24)?,
        authenticated_user: row.get(25)?,
        assumed_role: row.get(26)?,
        authenticated_roles: row.get(27)?,
        schedule_name: row.get(28)?,
        serialization: row.get(29)?,
        inputs: row.get(30)?,
        output: row.get(31)?,
        error: row.get(32)?,
    })
}

/// One workflow's status row joined with its input and output.
pub(super) fn get_workflow(
    conn: &Connection,
    workflow_id: &str,
) -> rusqlite::Result<Option<WorkflowRow>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        status_columns!(),
        ", i.inputs, o.output, o.error \
         FROM workflow_status s \
         LEFT JOIN workflow_input i ON i.workflow_uuid = s.workflow_uuid \
         LEFT JOIN workflow_output o ON o.workflow_uuid = s.workflow_uuid \
         WHERE s.workflow_uuid = ?1"
    ))?
    .query_row([workflow_id], workflow_from_row)
    .optional()
}

/// A workflow's row with its checkpoints, as recovery, claims and resume hand it to the engine.
pub(super) fn with_checkpoints(conn: &Connection, row: WorkflowRow) -> rusqlite::Result<Reclaimed> {
    let checkpoints = list_checkpoints(conn, &row.workflow_id)?;
    Ok(Reclaimed { row, checkpoints })
}

/// The workflows `ids` names (just claimed in this transaction), each with its checkpoints,
/// ordered by `created_at` then id.
pub(super) fn load_all_reclaimed(
    conn: &Connection,
    ids: Vec<String>,
) -> rusqlite::Result<Vec<Reclaimed>> {
    let mut loaded = Vec::with_capacity(ids.len());
    for id in ids {
        // Rows the claim just updated exist in this same transaction.
        if let Some(row) = get_workflow(conn, &id)? {
            loaded.push(with_checkpoints(conn, row)?);
        }
    }
    loaded.sort_by(|a, b| {
        (a.row.created_at, &a.row.workflow_id).cmp(&(b.row.created_at, &b.row.workflow_id))
    });
    Ok(loaded)
}

impl OnSqlite for crate::store::CountPendingElsewhere {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<(Option<String>, i64)>> {
        conn.prepare_cached(
            "SELECT application_version, count(*) FROM workflow_status \
             WHERE status = 'PENDING' AND executor_id = ?1 AND application_version IS NOT ?2 \
             AND (?3 IS NULL OR application_name = ?3 OR application_name IS NULL) \
             GROUP BY application_version ORDER BY 2 DESC, 1",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![self.executor_id, self.app_version, self.application_name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?
            .collect()
        })
        .map_err(failed(self))
    }
}
