//! The statements: synchronous functions over one connection.
//!
//! Writes run on the writer thread inside its group transaction (so a function that issues
//! several statements is atomic); reads run on a reader connection.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{Error, Result};
use crate::store::{
    Checkpoint, Completion, InsertOutcome, NewWorkflow, PORTABLE_JSON, QueueClaim, Reclaimed,
    RecordOutcome, StepRecord, WorkflowRow, status,
};

/// A closure turning a driver error into an [`Error`] that says what Cairn was doing.
pub(super) fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::database(context, e)
}

/// The columns of a [`Checkpoint`], in the order [`checkpoint_from_row`] reads them (a macro,
/// so that statements stay `&'static str` literals for the statement cache).
macro_rules! checkpoint_columns {
    () => {
        "function_id, function_name, output, error, child_workflow_id, serialization, \
         started_at_epoch_ms, completed_at_epoch_ms"
    };
}

/// Decode a row selected with `checkpoint_columns!()`.
fn checkpoint_from_row(row: &Row<'_>) -> rusqlite::Result<Checkpoint> {
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

/// Insert a workflow's status and input rows, or report the row already there.
pub(super) fn insert_workflow(conn: &Connection, wf: &NewWorkflow) -> Result<InsertOutcome> {
    let pending = wf.status == status::PENDING;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO workflow_status (workflow_uuid, status, name, queue_name, executor_id, \
             application_version, application_name, created_at, updated_at, recovery_attempts, \
             workflow_timeout_ms, workflow_deadline_epoch_ms, parent_workflow_id, creator_xid, owner_xid, \
             started_at_epoch_ms, serialization, priority) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 0) \
             ON CONFLICT (workflow_uuid) DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                wf.id,
                wf.status,
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
            ])
        })
        .map_err(db("inserting a workflow"))?;
    if inserted == 0 {
        return existing(conn, &wf.id);
    }
    // The status row is new, so any input row under this id is a leftover: replace it.
    conn.prepare_cached(
        "INSERT INTO workflow_input (workflow_uuid, inputs, retention_timestamp) VALUES (?1, ?2, ?3) \
         ON CONFLICT (workflow_uuid) DO UPDATE SET inputs = excluded.inputs, \
         retention_timestamp = excluded.retention_timestamp",
    )
    .and_then(|mut stmt| stmt.execute(params![wf.id, wf.inputs, wf.now_ms]))
    .map_err(db("inserting a workflow's input"))?;
    Ok(InsertOutcome::Inserted)
}

/// The name and status of an existing workflow, as an [`InsertOutcome::Existing`] (both
/// `None` if there is no such row).
fn existing(conn: &Connection, workflow_id: &str) -> Result<InsertOutcome> {
    let found = conn
        .prepare_cached("SELECT name, status FROM workflow_status WHERE workflow_uuid = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([workflow_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(db("reading an existing workflow"))?;
    let (name, status) = found.unwrap_or((None, None));
    Ok(InsertOutcome::Existing { name, status })
}

/// `None` if `owner_xid` holds the `PENDING` workflow, else why not (its status, if it exists).
pub(super) fn ownership_lost(
    conn: &Connection,
    workflow_id: &str,
    owner_xid: &str,
) -> Result<Option<RecordOutcome>> {
    let row: Option<(Option<String>, Option<String>)> = conn
        .prepare_cached("SELECT status, owner_xid FROM workflow_status WHERE workflow_uuid = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([workflow_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(db("checking a workflow's owner"))?;
    Ok(match row {
        None => Some(RecordOutcome::NotOwner { status: None }),
        Some((status, owner))
            if status.as_deref() == Some(status::PENDING)
                && owner.as_deref() == Some(owner_xid) =>
        {
            None
        }
        Some((status, _)) => Some(RecordOutcome::NotOwner { status }),
    })
}

/// Write a checkpoint if its owner still holds the workflow and the slot is free.
pub(super) fn record_step(conn: &Connection, rec: &StepRecord) -> Result<RecordOutcome> {
    // The common case in one statement: owned and fresh.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO operation_outputs (workflow_uuid, function_id, function_name, output, error, \
             child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name, \
             retention_timestamp) \
             SELECT ?1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?9 WHERE EXISTS (SELECT 1 FROM workflow_status \
             WHERE workflow_uuid = ?1 AND status = 'PENDING' AND owner_xid = ?2) \
             ON CONFLICT (workflow_uuid, function_id) DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                rec.workflow_id,
                rec.owner_xid,
                rec.function_id,
                rec.function_name,
                rec.output,
                rec.error,
                rec.child_workflow_id,
                rec.started_at_epoch_ms,
                rec.completed_at_epoch_ms,
                PORTABLE_JSON,
                rec.application_name,
            ])
        })
        .map_err(db("recording a step"))?;
    if inserted == 1 {
        return Ok(RecordOutcome::Recorded);
    }
    if let Some(lost) = ownership_lost(conn, &rec.workflow_id, &rec.owner_xid)? {
        return Ok(lost);
    }
    match get_checkpoint(conn, &rec.workflow_id, rec.function_id)? {
        Some(existing) => Ok(RecordOutcome::Duplicate(existing)),
        // Neither inserted nor there: impossible inside one transaction, but say so plainly.
        None => Err(Error::database(
            "recording a step",
            std::io::Error::other(format!(
                "checkpoint {} of workflow {} was neither written nor found",
                rec.function_id, rec.workflow_id
            )),
        )),
    }
}

/// Start a child workflow and record it as the parent's step, in the caller's transaction.
///
/// When the parent's checkpoint is refused (`NotOwner`, `Duplicate`), nothing is written and
/// the second value describes the child row as it is ([`InsertOutcome::Existing`], `None`s
/// if there is none).
pub(super) fn insert_child_workflow(
    conn: &Connection,
    parent: &StepRecord,
    child: &NewWorkflow,
) -> Result<(RecordOutcome, InsertOutcome)> {
    if let Some(lost) = ownership_lost(conn, &parent.workflow_id, &parent.owner_xid)? {
        return Ok((lost, existing(conn, &child.id)?));
    }
    if let Some(recorded) = get_checkpoint(conn, &parent.workflow_id, parent.function_id)? {
        return Ok((
            RecordOutcome::Duplicate(recorded),
            existing(conn, &child.id)?,
        ));
    }
    let child_outcome = insert_workflow(conn, child)?;
    let outcome = record_step(conn, parent)?;
    Ok((outcome, child_outcome))
}

/// One checkpoint, if recorded.
pub(super) fn get_checkpoint(
    conn: &Connection,
    workflow_id: &str,
    function_id: i32,
) -> Result<Option<Checkpoint>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        checkpoint_columns!(),
        " FROM operation_outputs WHERE workflow_uuid = ?1 AND function_id = ?2"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![workflow_id, function_id], checkpoint_from_row)
            .optional()
    })
    .map_err(db("reading a checkpoint"))
}

/// All checkpoints of a workflow, in `function_id` order.
pub(super) fn list_checkpoints(conn: &Connection, workflow_id: &str) -> Result<Vec<Checkpoint>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        checkpoint_columns!(),
        " FROM operation_outputs WHERE workflow_uuid = ?1 ORDER BY function_id"
    ))
    .and_then(|mut stmt| {
        stmt.query_map([workflow_id], checkpoint_from_row)?
            .collect()
    })
    .map_err(db("listing checkpoints"))
}

/// Write a workflow's terminal status and output if its owner still holds it.
pub(super) fn complete_workflow(conn: &Connection, c: &Completion) -> Result<bool> {
    let updated = conn
        .prepare_cached(
            "UPDATE workflow_status SET status = ?1, owner_xid = NULL, deduplication_id = NULL, \
             updated_at = ?2, completed_at = ?2 \
             WHERE workflow_uuid = ?3 AND status = 'PENDING' AND owner_xid = ?4",
        )
        .and_then(|mut stmt| stmt.execute(params![c.status, c.now_ms, c.workflow_id, c.owner_xid]))
        .map_err(db("completing a workflow"))?;
    if updated == 0 {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO workflow_output (workflow_uuid, output, error, retention_timestamp) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (workflow_uuid) DO UPDATE SET output = excluded.output, error = excluded.error",
    )
    .and_then(|mut stmt| stmt.execute(params![c.workflow_id, c.output, c.error, c.now_ms]))
    .map_err(db("writing a workflow's output"))?;
    Ok(true)
}

/// One workflow's status row joined with its input and output.
pub(super) fn get_workflow(conn: &Connection, workflow_id: &str) -> Result<Option<WorkflowRow>> {
    conn.prepare_cached(
        "SELECT s.workflow_uuid, s.status, s.name, s.class_name, s.config_name, s.queue_name, s.executor_id, \
         s.application_version, s.application_name, s.created_at, s.updated_at, s.started_at_epoch_ms, \
         s.completed_at, s.recovery_attempts, s.workflow_timeout_ms, s.workflow_deadline_epoch_ms, \
         s.parent_workflow_id, s.owner_xid, s.serialization, i.inputs, o.output, o.error \
         FROM workflow_status s \
         LEFT JOIN workflow_input i ON i.workflow_uuid = s.workflow_uuid \
         LEFT JOIN workflow_output o ON o.workflow_uuid = s.workflow_uuid \
         WHERE s.workflow_uuid = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([workflow_id], |row| {
            Ok(WorkflowRow {
                workflow_id: row.get(0)?,
                status: row.get(1)?,
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
                serialization: row.get(18)?,
                inputs: row.get(19)?,
                output: row.get(20)?,
                error: row.get(21)?,
            })
        })
        .optional()
    })
    .map_err(db("reading a workflow"))
}

/// Claim this executor's `PENDING` workflows for recovery and load each with its checkpoints.
pub(super) fn reclaim_pending(
    conn: &Connection,
    executor_id: &str,
    app_version: &str,
    application_name: Option<&str>,
    new_owner: &str,
    now_ms: i64,
) -> Result<Vec<Reclaimed>> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "UPDATE workflow_status SET owner_xid = ?1, recovery_attempts = recovery_attempts + 1, updated_at = ?2 \
             WHERE status = 'PENDING' AND executor_id = ?3 AND application_version = ?4 \
             AND (?5 IS NULL OR application_name = ?5 OR application_name IS NULL) \
             RETURNING workflow_uuid",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![new_owner, now_ms, executor_id, app_version, application_name], |row| row.get(0))?
                .collect()
        })
        .map_err(db("reclaiming pending workflows"))?;
    let mut reclaimed = Vec::with_capacity(ids.len());
    for id in ids {
        // Rows the UPDATE just returned exist in this same transaction.
        if let Some(loaded) = load_reclaimed(conn, &id)? {
            reclaimed.push(loaded);
        }
    }
    reclaimed.sort_by(|a, b| {
        (a.row.created_at, &a.row.workflow_id).cmp(&(b.row.created_at, &b.row.workflow_id))
    });
    Ok(reclaimed)
}

/// Claim enqueued workflows (see `SystemDatabase::claim_enqueued`).
pub(super) fn claim_enqueued(conn: &Connection, claim: &QueueClaim) -> Result<Vec<Reclaimed>> {
    let names = serde_json::to_string(&claim.names)
        .map_err(|e| Error::database("encoding workflow names", e))?;
    let ids: Vec<String> = conn
        .prepare_cached(
            "UPDATE workflow_status SET status = 'PENDING', owner_xid = ?1, executor_id = ?2, \
                 application_version = ?3, application_name = COALESCE(?4, application_name), \
                 started_at_epoch_ms = ?5, recovery_attempts = recovery_attempts + 1, updated_at = ?5, \
                 workflow_deadline_epoch_ms = CASE \
                     WHEN workflow_timeout_ms IS NOT NULL AND workflow_deadline_epoch_ms IS NULL \
                     THEN ?5 + workflow_timeout_ms ELSE workflow_deadline_epoch_ms END \
             WHERE workflow_uuid IN ( \
                 SELECT workflow_uuid FROM workflow_status \
                 WHERE status = 'ENQUEUED' AND queue_name = ?6 \
                     AND name IN (SELECT value FROM json_each(?7)) \
                     AND (?4 IS NULL OR application_name = ?4 OR application_name IS NULL) \
                     AND (application_version IS NULL OR application_version = ?3) \
                 ORDER BY priority, created_at LIMIT ?8) \
             RETURNING workflow_uuid",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![
                    claim.new_owner,
                    claim.executor_id,
                    claim.app_version,
                    claim.application_name,
                    claim.now_ms,
                    claim.queue_name,
                    names,
                    claim.limit
                ],
                |row| row.get(0),
            )?
            .collect()
        })
        .map_err(db("claiming enqueued workflows"))?;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(loaded) = load_reclaimed(conn, &id)? {
            claimed.push(loaded);
        }
    }
    claimed.sort_by(|a, b| {
        (a.row.created_at, &a.row.workflow_id).cmp(&(b.row.created_at, &b.row.workflow_id))
    });
    Ok(claimed)
}

/// A workflow's row with its checkpoints, as recovery and resume hand it to the engine.
pub(super) fn load_reclaimed(conn: &Connection, workflow_id: &str) -> Result<Option<Reclaimed>> {
    let Some(row) = get_workflow(conn, workflow_id)? else {
        return Ok(None);
    };
    let checkpoints = list_checkpoints(conn, workflow_id)?;
    Ok(Some(Reclaimed { row, checkpoints }))
}

/// Move a workflow its owner holds to `MAX_RECOVERY_ATTEMPTS_EXCEEDED`.
pub(super) fn dead_letter(
    conn: &Connection,
    workflow_id: &str,
    owner_xid: &str,
    now_ms: i64,
) -> Result<bool> {
    conn.prepare_cached(
        "UPDATE workflow_status SET status = ?1, owner_xid = NULL, deduplication_id = NULL, \
         started_at_epoch_ms = NULL, queue_name = NULL, updated_at = ?2, completed_at = ?2 \
         WHERE workflow_uuid = ?3 AND status = 'PENDING' AND owner_xid = ?4",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            status::MAX_RECOVERY_ATTEMPTS_EXCEEDED,
            now_ms,
            workflow_id,
            owner_xid
        ])
    })
    .map(|changed| changed == 1)
    .map_err(db("moving a workflow to the dead letter status"))
}

/// Record an application version; an existing one is left as it is.
pub(super) fn register_app_version(
    conn: &Connection,
    version: &str,
    application_name: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO application_versions (version_id, version_name, version_timestamp, created_at, application_name) \
         VALUES (?1, ?2, ?3, ?3, ?4) ON CONFLICT DO NOTHING",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![uuid::Uuid::new_v4().to_string(), version, now_ms, application_name])
    })
    .map(drop)
    .map_err(db("registering an application version"))
}
