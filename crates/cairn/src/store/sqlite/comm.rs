//! Communication and control operations on SQLite: messages, events, streams, cancellation,
//! descendants and resume. Each `impl OnSqlite` is the operation's definition, like those in
//! [`super::ops`].
//!
//! Every write that carries a [`StepRecord`] first applies the ownership guard of
//! [`ops::record_step`] and looks for an existing checkpoint at the same `function_id`: a
//! refused or replayed operation returns `NotOwner` / `Duplicate` without applying its
//! effect again, so each effect happens exactly once across replays (and re-running one after
//! a commit that succeeded unseen answers `Duplicate`).

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::ops;
use super::{OnSqlite, failed};
use crate::error::{Error, Result};
use crate::store::{
    CancelWorkflows, ConsumeMessage, Descendants, GetEvent, ListEvents, Operation, PORTABLE_JSON,
    PeekMessage, ReadStream, RecordOutcome, ResumeWorkflow, SendMessage, SetEvent,
    SetEventFromStep, StepRecord, Stored, WriteStream, WriteStreamFromStep,
};

impl OnSqlite for SendMessage {
    const WRITES: bool = true;

    /// A missing destination is [`Error::NotFound`]; the writer then rolls back this request's
    /// savepoint, so the sender's checkpoint is not written either.
    fn on_sqlite(&self, conn: &Connection) -> Result<RecordOutcome> {
        let (msg, fail) = (&self.message, failed(self));
        if let Some(rec) = &self.sender
            && let Some(outcome) = refused(conn, rec).map_err(&fail)?
        {
            return Ok(outcome);
        }
        let destination_exists: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM workflow_status WHERE workflow_uuid = ?1)",
            )
            .and_then(|mut stmt| stmt.query_row([&msg.destination_id], |row| row.get(0)))
            .map_err(&fail)?;
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
                epoch_ms(),
            ])
        })
        .map_err(&fail)?;
        match &self.sender {
            Some(rec) => ops::record_step(conn, rec).map_err(&fail),
            None => Ok(RecordOutcome::Recorded),
        }
    }
}

impl OnSqlite for ConsumeMessage {
    const WRITES: bool = true;

    /// A refused or replayed receive consumes nothing and returns no text. The checkpoint
    /// holds the message as stored, so its `serialization` is the message's.
    fn on_sqlite(&self, conn: &Connection) -> Result<(RecordOutcome, Option<Stored>)> {
        let (rec, fail) = (&self.record, failed(self));
        if let Some(outcome) = refused(conn, rec).map_err(&fail)? {
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
                stmt.query_row(
                    params![rec.workflow_id, self.topic, rec.function_id],
                    stored,
                )
                .optional()
            })
            .map_err(&fail)?;
        let (output, serialization) = match &message {
            Some(m) => (
                m.text.as_str(),
                m.serialization.as_deref().unwrap_or(PORTABLE_JSON),
            ),
            None => ("null", PORTABLE_JSON),
        };
        let outcome = ops::record_step_as(conn, rec, Some(output), serialization).map_err(&fail)?;
        Ok((outcome, message))
    }
}

impl OnSqlite for PeekMessage {
    const WRITES: bool = false;

    /// The same order as [`ConsumeMessage`]'s.
    fn on_sqlite(&self, conn: &Connection) -> Result<Option<Stored>> {
        conn.prepare_cached(
            "SELECT message, serialization FROM notifications \
             WHERE destination_uuid = ?1 AND topic = ?2 AND NOT consumed \
             ORDER BY created_at_epoch_ms, rowid LIMIT 1",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![self.workflow_id, self.topic], stored)
                .optional()
        })
        .map_err(failed(self))
    }
}

impl OnSqlite for SetEvent {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<RecordOutcome> {
        let (rec, fail) = (&self.record, failed(self));
        if let Some(outcome) = refused(conn, rec).map_err(&fail)? {
            return Ok(outcome);
        }
        put_event(
            conn,
            &rec.workflow_id,
            rec.function_id,
            &self.key,
            &self.value,
        )
        .map_err(&fail)?;
        ops::record_step(conn, rec).map_err(&fail)
    }
}

impl OnSqlite for GetEvent {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Option<Stored>> {
        conn.prepare_cached(
            "SELECT value, serialization FROM workflow_events WHERE workflow_uuid = ?1 AND key = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![self.workflow_id, self.key], stored)
                .optional()
        })
        .map_err(failed(self))
    }
}

impl OnSqlite for ListEvents {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<(String, Stored)>> {
        conn.prepare_cached(
            "SELECT key, value, serialization FROM workflow_events WHERE workflow_uuid = ?1 ORDER BY key",
        )
        .and_then(|mut stmt| {
            stmt.query_map([&self.workflow_id], |row| {
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
        .map_err(failed(self))
    }
}

impl OnSqlite for WriteStream {
    const WRITES: bool = true;

    /// The writer serializes writes, so the next offset read inside the `INSERT` is unique.
    fn on_sqlite(&self, conn: &Connection) -> Result<RecordOutcome> {
        let (rec, fail) = (&self.record, failed(self));
        if let Some(outcome) = refused(conn, rec).map_err(&fail)? {
            return Ok(outcome);
        }
        append_to_stream(
            conn,
            &rec.workflow_id,
            rec.function_id,
            &self.key,
            &self.value,
        )
        .map_err(&fail)?;
        ops::record_step(conn, rec).map_err(&fail)
    }
}

impl OnSqlite for ReadStream {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<(i32, Stored)>> {
        conn.prepare_cached(
            "SELECT \"offset\", value, serialization FROM streams \
             WHERE workflow_uuid = ?1 AND key = ?2 AND \"offset\" >= ?3 ORDER BY \"offset\"",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![self.workflow_id, self.key, self.from_offset],
                |row| {
                    Ok((
                        row.get(0)?,
                        Stored {
                            text: row.get(1)?,
                            serialization: row.get(2)?,
                        },
                    ))
                },
            )?
            .collect()
        })
        .map_err(failed(self))
    }
}

impl OnSqlite for CancelWorkflows {
    const WRITES: bool = true;

    /// One statement for all ids, passed as a JSON array.
    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<String>> {
        if self.workflow_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(&self.workflow_ids)
            .map_err(|e| Error::database(self.describe(), e))?;
        let cancelled: HashSet<String> = conn
            .prepare_cached(
                "UPDATE workflow_status SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL, \
                 deduplication_id = NULL, started_at_epoch_ms = NULL, updated_at = ?2 \
                 WHERE workflow_uuid IN (SELECT value FROM json_each(?1)) \
                 AND status IN ('PENDING', 'ENQUEUED', 'DELAYED') \
                 RETURNING workflow_uuid",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![ids, self.now_ms], |row| row.get(0))?
                    .collect()
            })
            .map_err(failed(self))?;
        let mut seen = HashSet::with_capacity(cancelled.len());
        Ok(self
            .workflow_ids
            .iter()
            .filter(|id| cancelled.contains(*id) && seen.insert(id.as_str()))
            .cloned()
            .collect())
    }
}

impl OnSqlite for Descendants {
    const WRITES: bool = false;

    /// Breadth first; `UNION` (not `UNION ALL`) visits a cycle once.
    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<String>> {
        conn.prepare_cached(
            "WITH RECURSIVE tree(id) AS ( \
             SELECT workflow_uuid FROM workflow_status WHERE parent_workflow_id = ?1 \
             UNION SELECT s.workflow_uuid FROM workflow_status s JOIN tree ON s.parent_workflow_id = tree.id) \
             SELECT id FROM tree WHERE id <> ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_map([&self.workflow_id], |row| row.get(0))?
                .collect()
        })
        .map_err(failed(self))
    }
}

impl OnSqlite for ResumeWorkflow {
    const WRITES: bool = true;

    /// The guarded update, then (only when it changed nothing) whether the row exists.
    fn on_sqlite(&self, conn: &Connection) -> Result<Option<bool>> {
        let fail = failed(self);
        let resumed = conn
            .prepare_cached(
                "UPDATE workflow_status SET status = 'ENQUEUED', owner_xid = NULL, queue_name = ?2, \
                 recovery_attempts = 0, workflow_deadline_epoch_ms = NULL, deduplication_id = NULL, \
                 started_at_epoch_ms = NULL, completed_at = NULL, updated_at = ?3 \
                 WHERE workflow_uuid = ?1 AND status NOT IN ('SUCCESS', 'ERROR')",
            )
            .and_then(|mut stmt| stmt.execute(params![self.workflow_id, self.queue_name, self.now_ms]))
            .map_err(&fail)?;
        if resumed > 0 {
            return Ok(Some(true));
        }
        let exists: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM workflow_status WHERE workflow_uuid = ?1)",
            )
            .and_then(|mut stmt| stmt.query_row([&self.workflow_id], |row| row.get(0)))
            .map_err(&fail)?;
        Ok(exists.then_some(false))
    }
}

/// `Some(outcome)` if `rec` must not be applied: its owner lost the workflow (`NotOwner`) or
/// its checkpoint is already recorded (`Duplicate`). `None` if the caller may go ahead.
fn refused(conn: &Connection, rec: &StepRecord) -> rusqlite::Result<Option<RecordOutcome>> {
    if let Some(lost) = ops::ownership_lost(conn, &rec.workflow_id, &rec.owner_xid)? {
        return Ok(Some(lost));
    }
    Ok(ops::get_checkpoint(conn, &rec.workflow_id, rec.function_id)?.map(RecordOutcome::Duplicate))
}

/// A `(text, serialization)` row as a [`Stored`] value.
fn stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        text: row.get(0)?,
        serialization: row.get(1)?,
    })
}

/// The current time in epoch milliseconds (0 if the clock is before 1970), for a message's
/// `created_at_epoch_ms`.
fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl OnSqlite for SetEventFromStep {
    const WRITES: bool = true;

    /// The ownership check, then the event: the writer serializes, so nothing takes the
    /// workflow over in between.
    fn on_sqlite(&self, conn: &Connection) -> Result<RecordOutcome> {
        let fail = failed(self);
        if let Some(lost) =
            ops::ownership_lost(conn, &self.workflow_id, &self.owner_xid).map_err(&fail)?
        {
            return Ok(lost);
        }
        put_event(
            conn,
            &self.workflow_id,
            self.function_id,
            &self.key,
            &self.value,
        )
        .map_err(&fail)?;
        Ok(RecordOutcome::Recorded)
    }
}

impl OnSqlite for WriteStreamFromStep {
    const WRITES: bool = true;

    /// The ownership check, then the value at the next offset (unique: the writer serializes).
    fn on_sqlite(&self, conn: &Connection) -> Result<RecordOutcome> {
        let fail = failed(self);
        if let Some(lost) =
            ops::ownership_lost(conn, &self.workflow_id, &self.owner_xid).map_err(&fail)?
        {
            return Ok(lost);
        }
        append_to_stream(
            conn,
            &self.workflow_id,
            self.function_id,
            &self.key,
            &self.value,
        )
        .map_err(&fail)?;
        Ok(RecordOutcome::Recorded)
    }
}

/// Upsert event `key` of `workflow_id` and its history entry at `function_id`.
fn put_event(
    conn: &Connection,
    workflow_id: &str,
    function_id: i32,
    key: &str,
    value: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO workflow_events (workflow_uuid, key, value, serialization) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (workflow_uuid, key) DO UPDATE SET value = excluded.value, \
         serialization = excluded.serialization",
    )?
    .execute(params![workflow_id, key, value, PORTABLE_JSON])?;
    conn.prepare_cached(
        "INSERT INTO workflow_events_history (workflow_uuid, function_id, key, value, serialization) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (workflow_uuid, function_id, key) \
         DO UPDATE SET value = excluded.value, serialization = excluded.serialization",
    )?
    .execute(params![workflow_id, function_id, key, value, PORTABLE_JSON])?;
    Ok(())
}

/// Append `value` to stream `key` of `workflow_id` at the next offset. The writer serializes
/// writes, so the offset read inside the `INSERT` is unique.
fn append_to_stream(
    conn: &Connection,
    workflow_id: &str,
    function_id: i32,
    key: &str,
    value: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO streams (workflow_uuid, key, value, \"offset\", function_id, serialization) \
         SELECT ?1, ?2, ?3, COALESCE(MAX(\"offset\") + 1, 0), ?4, ?5 FROM streams \
         WHERE workflow_uuid = ?1 AND key = ?2",
    )?
    .execute(params![workflow_id, key, value, function_id, PORTABLE_JSON])?;
    Ok(())
}
