//! The statements for communication and control: messages, events, streams, cancellation,
//! descendants and resume. Synchronous functions over one connection, like [`super::ops`].
//!
//! Every write that carries a [`StepRecord`] first applies the ownership guard of
//! [`ops::record_step`] and looks for an existing checkpoint at the same `function_id`: a
//! refused or replayed operation returns `NotOwner` / `Duplicate` without applying its
//! effect again, so each effect happens exactly once across replays.

use rusqlite::{Connection, OptionalExtension, params};

use super::ops::{self, db};
use crate::error::{Error, Result};
use crate::store::{NewMessage, PORTABLE_JSON, Reclaimed, RecordOutcome, StepRecord, Stored};

/// `Some(outcome)` if `rec` must not be applied: its owner lost the workflow (`NotOwner`) or
/// its checkpoint is already recorded (`Duplicate`). `None` if the caller may go ahead.
fn refused(conn: &Connection, rec: &StepRecord) -> Result<Option<RecordOutcome>> {
    if let Some(lost) = ops::ownership_lost(conn, &rec.workflow_id, &rec.owner_xid)? {
        return Ok(Some(lost));
    }
    Ok(ops::get_checkpoint(conn, &rec.workflow_id, rec.function_id)?.map(RecordOutcome::Duplicate))
}

/// Insert a message (idempotent by `message_uuid`) and, with `sender`, the sender's
/// checkpoint. A missing destination is [`Error::NotFound`]; the writer then rolls back this
/// request's savepoint, so nothing of it remains.
pub(super) fn send_message(
    conn: &Connection,
    msg: &NewMessage,
    sender: Option<&StepRecord>,
    now_ms: i64,
) -> Result<RecordOutcome> {
    if let Some(rec) = sender {
        if let Some(outcome) = refused(conn, rec)? {
            return Ok(outcome);
        }
    }
    let destination_exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM workflow_status WHERE workflow_uuid = ?1)")
        .and_then(|mut stmt| stmt.query_row([&msg.destination_id], |row| row.get(0)))
        .map_err(db("checking a message's destination"))?;
    if !destination_exists {
        return Err(Error::NotFound(msg.destination_id.clone()));
    }
    conn.prepare_cached(
        "INSERT INTO notifications (destination_uuid, topic, message, message_uuid, serialization, \
         created_at_epoch_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (message_uuid) DO NOTHING",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            msg.destination_id,
            msg.topic,
            msg.message,
            msg.message_uuid,
            PORTABLE_JSON,
            now_ms,
        ])
    })
    .map_err(db("sending a message"))?;
    match sender {
        Some(rec) => ops::record_step(conn, rec),
        None => Ok(RecordOutcome::Recorded),
    }
}

/// Consume the oldest unconsumed message of `rec.workflow_id` on `topic` and record `rec`
/// with the message text (or `null`) as its output; `rec.output` is ignored. A refused or
/// replayed receive consumes nothing and returns no text.
pub(super) fn consume_message(
    conn: &Connection,
    rec: &StepRecord,
    topic: &str,
) -> Result<(RecordOutcome, Option<Stored>)> {
    if let Some(outcome) = refused(conn, rec)? {
        return Ok((outcome, None));
    }
    let message: Option<Stored> = conn
        .prepare_cached(
            "UPDATE notifications SET consumed = TRUE, consumed_by_function_id = ?3 \
             WHERE rowid = (SELECT rowid FROM notifications \
             WHERE destination_uuid = ?1 AND topic = ?2 AND NOT consumed \
             ORDER BY created_at_epoch_ms, rowid LIMIT 1) \
             RETURNING message, serialization",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![rec.workflow_id, topic, rec.function_id], stored)
                .optional()
        })
        .map_err(db("receiving a message"))?;
    let mut record = rec.clone();
    record.output = Some(
        message
            .as_ref()
            .map_or_else(|| "null".to_owned(), |m| m.text.clone()),
    );
    let outcome = ops::record_step(conn, &record)?;
    // The checkpoint holds the message as stored, so it says the message's format.
    if let Some(Stored {
        serialization: Some(format),
        ..
    }) = &message
    {
        if format != PORTABLE_JSON && outcome == RecordOutcome::Recorded {
            conn.prepare_cached(
                "UPDATE operation_outputs SET serialization = ?3 WHERE workflow_uuid = ?1 AND function_id = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![rec.workflow_id, rec.function_id, format]))
            .map_err(db("recording a received message's format"))?;
        }
    }
    Ok((outcome, message))
}

/// A `(text, serialization)` row as a [`Stored`] value.
fn stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        text: row.get(0)?,
        serialization: row.get(1)?,
    })
}

/// Whether `workflow_id` has an unconsumed message on `topic`.
pub(super) fn has_message(conn: &Connection, workflow_id: &str, topic: &str) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM notifications \
         WHERE destination_uuid = ?1 AND topic = ?2 AND NOT consumed)",
    )
    .and_then(|mut stmt| stmt.query_row(params![workflow_id, topic], |row| row.get(0)))
    .map_err(db("looking for a message"))
}

/// Set an event's latest value, append it to the history, and record `rec`.
pub(super) fn set_event(
    conn: &Connection,
    rec: &StepRecord,
    key: &str,
    value: &str,
) -> Result<RecordOutcome> {
    if let Some(outcome) = refused(conn, rec)? {
        return Ok(outcome);
    }
    conn.prepare_cached(
        "INSERT INTO workflow_events (workflow_uuid, key, value, serialization) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (workflow_uuid, key) DO UPDATE SET value = excluded.value, \
         serialization = excluded.serialization",
    )
    .and_then(|mut stmt| stmt.execute(params![rec.workflow_id, key, value, PORTABLE_JSON]))
    .map_err(db("setting an event"))?;
    conn.prepare_cached(
        "INSERT INTO workflow_events_history (workflow_uuid, function_id, key, value, serialization) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (workflow_uuid, function_id, key) \
         DO UPDATE SET value = excluded.value, serialization = excluded.serialization",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            rec.workflow_id,
            rec.function_id,
            key,
            value,
            PORTABLE_JSON
        ])
    })
    .map_err(db("recording an event's history"))?;
    ops::record_step(conn, rec)
}

/// The latest value of an event, if set.
pub(super) fn get_event(conn: &Connection, workflow_id: &str, key: &str) -> Result<Option<Stored>> {
    conn.prepare_cached(
        "SELECT value, serialization FROM workflow_events WHERE workflow_uuid = ?1 AND key = ?2",
    )
    .and_then(|mut stmt| stmt.query_row(params![workflow_id, key], stored).optional())
    .map_err(db("reading an event"))
}

/// Every event of a workflow with its latest value, ordered by key.
pub(super) fn list_events(conn: &Connection, workflow_id: &str) -> Result<Vec<(String, Stored)>> {
    conn.prepare_cached(
        "SELECT key, value, serialization FROM workflow_events WHERE workflow_uuid = ?1 ORDER BY key",
    )
    .and_then(|mut stmt| {
        stmt.query_map([workflow_id], |row| {
            Ok((row.get(0)?, Stored { text: row.get(1)?, serialization: row.get(2)? }))
        })?
        .collect()
    })
    .map_err(db("listing events"))
}

/// Append `value` to a stream at the next dense offset and record `rec`.
pub(super) fn write_stream(
    conn: &Connection,
    rec: &StepRecord,
    key: &str,
    value: &str,
) -> Result<RecordOutcome> {
    if let Some(outcome) = refused(conn, rec)? {
        return Ok(outcome);
    }
    conn.prepare_cached(
        "INSERT INTO streams (workflow_uuid, key, value, \"offset\", function_id, serialization) \
         SELECT ?1, ?2, ?3, COALESCE(MAX(\"offset\") + 1, 0), ?4, ?5 FROM streams \
         WHERE workflow_uuid = ?1 AND key = ?2",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            rec.workflow_id,
            key,
            value,
            rec.function_id,
            PORTABLE_JSON
        ])
    })
    .map_err(db("writing to a stream"))?;
    ops::record_step(conn, rec)
}

/// A stream's values from `from_offset` on, in offset order.
pub(super) fn read_stream(
    conn: &Connection,
    workflow_id: &str,
    key: &str,
    from_offset: i32,
) -> Result<Vec<(i32, Stored)>> {
    conn.prepare_cached(
        "SELECT \"offset\", value, serialization FROM streams \
         WHERE workflow_uuid = ?1 AND key = ?2 AND \"offset\" >= ?3 ORDER BY \"offset\"",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![workflow_id, key, from_offset], |row| {
            Ok((
                row.get(0)?,
                Stored {
                    text: row.get(1)?,
                    serialization: row.get(2)?,
                },
            ))
        })?
        .collect()
    })
    .map_err(db("reading a stream"))
}

/// Cancel the unfinished workflows among `workflow_ids` in one statement; returns the ids it
/// cancelled, in the order they were asked for.
pub(super) fn cancel_workflows(
    conn: &Connection,
    workflow_ids: &[String],
    now_ms: i64,
) -> Result<Vec<String>> {
    if workflow_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(workflow_ids)
        .map_err(|e| Error::database("encoding the ids of workflows to cancel", e))?;
    let cancelled: std::collections::HashSet<String> = conn
        .prepare_cached(
            "UPDATE workflow_status SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL, \
             deduplication_id = NULL, started_at_epoch_ms = NULL, updated_at = ?2 \
             WHERE workflow_uuid IN (SELECT value FROM json_each(?1)) \
             AND status IN ('PENDING', 'ENQUEUED', 'DELAYED') \
             RETURNING workflow_uuid",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![ids, now_ms], |row| row.get(0))?
                .collect()
        })
        .map_err(db("cancelling workflows"))?;
    let mut seen = std::collections::HashSet::with_capacity(cancelled.len());
    Ok(workflow_ids
        .iter()
        .filter(|id| cancelled.contains(*id) && seen.insert(id.as_str()))
        .cloned()
        .collect())
}

/// Every descendant of a workflow, breadth first (a cycle is visited once).
pub(super) fn descendants(conn: &Connection, workflow_id: &str) -> Result<Vec<String>> {
    conn.prepare_cached(
        "WITH RECURSIVE tree(id) AS ( \
         SELECT workflow_uuid FROM workflow_status WHERE parent_workflow_id = ?1 \
         UNION SELECT s.workflow_uuid FROM workflow_status s JOIN tree ON s.parent_workflow_id = tree.id) \
         SELECT id FROM tree WHERE id <> ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_map([workflow_id], |row| row.get(0))?
            .collect()
    })
    .map_err(db("listing a workflow's descendants"))
}

/// Resume a finished-but-not-successful (or still enqueued) workflow here, and load it with
/// its checkpoints; `None` if it does not exist or there is nothing to resume.
pub(super) fn resume_workflow(
    conn: &Connection,
    workflow_id: &str,
    executor_id: &str,
    app_version: &str,
    new_owner: &str,
    now_ms: i64,
) -> Result<Option<Reclaimed>> {
    let resumed = conn
        .prepare_cached(
            "UPDATE workflow_status SET status = 'PENDING', owner_xid = ?2, executor_id = ?3, \
             application_version = ?4, recovery_attempts = 1, started_at_epoch_ms = ?5, queue_name = NULL, \
             workflow_deadline_epoch_ms = CASE WHEN workflow_timeout_ms IS NULL THEN NULL \
             ELSE ?5 + workflow_timeout_ms END, completed_at = NULL, updated_at = ?5 \
             WHERE workflow_uuid = ?1 \
             AND status IN ('CANCELLED', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'ENQUEUED')",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![workflow_id, new_owner, executor_id, app_version, now_ms])
        })
        .map_err(db("resuming a workflow"))?;
    if resumed == 0 {
        return Ok(None);
    }
    ops::load_reclaimed(conn, workflow_id)
}
