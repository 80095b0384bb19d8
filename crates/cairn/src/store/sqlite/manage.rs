//! Workflow management on SQLite: deletion, retention, forks, delays, attributes,
//! application versions and event history. Writes run inside the writer's group transaction
//! (each in its own savepoint), so an operation of several statements is atomic.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::{OnSqlite, failed};
use crate::error::{Error, Result};
use crate::store::manage::in_order_asked;
use crate::store::{DeleteWorkflows, ForkOutcome, ForkWorkflow, Operation, SetWorkflowDelay};

/// The tables holding a workflow's rows besides `workflow_status`, with the column naming
/// the workflow. Deleted explicitly: the first three carry no foreign key, and the others
/// cascade only on a connection with `foreign_keys` on.
const OWNED_ROWS: [(&str, &str); 7] = [
    ("workflow_input", "workflow_uuid"),
    ("workflow_output", "workflow_uuid"),
    ("operation_outputs", "workflow_uuid"),
    ("notifications", "destination_uuid"),
    ("workflow_events", "workflow_uuid"),
    ("workflow_events_history", "workflow_uuid"),
    ("streams", "workflow_uuid"),
];

/// Delete every row of the workflows in the JSON array `ids`; answers the ids whose status
/// row was deleted.
pub(super) fn delete_rows(conn: &Connection, ids: &str) -> rusqlite::Result<HashSet<String>> {
    for (table, column) in OWNED_ROWS {
        let sql =
            format!("DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?1))");
        conn.prepare_cached(&sql)?.execute([ids])?;
    }
    conn.prepare_cached(
        "DELETE FROM workflow_status WHERE workflow_uuid IN (SELECT value FROM json_each(?1)) \
         RETURNING workflow_uuid",
    )?
    .query_map([ids], |row| row.get(0))?
    .collect()
}

/// `values` as a JSON array, for `json_each`.
fn json_array<O: Operation>(op: &O, values: &[String]) -> Result<String> {
    serde_json::to_string(values).map_err(|e| Error::database(op.describe(), e))
}

impl OnSqlite for DeleteWorkflows {
    const WRITES: bool = true;

    /// One `DELETE` per table, all ids at once.
    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<String>> {
        if self.workflow_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json_array(self, &self.workflow_ids)?;
        let deleted = delete_rows(conn, &ids).map_err(failed(self))?;
        Ok(in_order_asked(&self.workflow_ids, &deleted))
    }
}

/// The statements of a fork after its status row, shared by both parameter sets: `?1`
/// original, `?2` fork, `?3` start step, `?4` now, `?5` the fork's owner.
const FORK_COPIES: [&str; 4] = [
    "INSERT INTO operation_outputs (workflow_uuid, function_id, function_name, output, error, \
     child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, \
     application_name, retention_timestamp) \
     SELECT ?2, function_id, function_name, output, error, child_workflow_id, \
     started_at_epoch_ms, completed_at_epoch_ms, serialization, ?5, ?4 \
     FROM operation_outputs WHERE workflow_uuid = ?1 AND function_id < ?3",
    "INSERT INTO workflow_events_history (workflow_uuid, function_id, key, value, serialization) \
     SELECT ?2, function_id, key, value, serialization FROM workflow_events_history \
     WHERE workflow_uuid = ?1 AND function_id < ?3",
    "INSERT INTO workflow_events (workflow_uuid, key, value, serialization) \
     SELECT ?2, key, value, serialization FROM ( \
         SELECT key, value, serialization, \
             row_number() OVER (PARTITION BY key ORDER BY function_id DESC) AS rn \
         FROM workflow_events_history WHERE workflow_uuid = ?1 AND function_id < ?3) \
     WHERE rn = 1",
    "INSERT INTO streams (workflow_uuid, key, value, \"offset\", function_id, serialization) \
     SELECT ?2, key, value, \"offset\", function_id, serialization FROM streams \
     WHERE workflow_uuid = ?1 AND function_id < ?3",
];

impl OnSqlite for ForkWorkflow {
    const WRITES: bool = true;

    /// The status row (copied from the original's), then the input row, the original's
    /// mark, and the copies.
    fn on_sqlite(&self, conn: &Connection) -> Result<ForkOutcome> {
        let fail = failed(self);
        let inserted = conn
            .prepare_cached(
                "INSERT INTO workflow_status (workflow_uuid, status, name, class_name, config_name, \
                 application_version, application_id, authenticated_user, authenticated_roles, \
                 assumed_role, serialization, queue_name, queue_partition_key, forked_from, \
                 attributes, application_name, workflow_timeout_ms, created_at, updated_at, \
                 recovery_attempts, priority, creator_xid) \
                 SELECT ?2, 'ENQUEUED', name, class_name, config_name, ?3, application_id, \
                 authenticated_user, authenticated_roles, assumed_role, serialization, ?4, ?5, \
                 workflow_uuid, attributes, COALESCE(application_name, ?6), ?7, ?8, ?8, 0, 0, ?9 \
                 FROM workflow_status WHERE workflow_uuid = ?1 \
                 ON CONFLICT (workflow_uuid) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    self.original_id,
                    self.forked_id,
                    self.application_version,
                    self.queue_name,
                    self.queue_partition_key,
                    self.application_name,
                    self.timeout_ms,
                    self.now_ms,
                    self.creator_xid,
                ])
            })
            .map_err(&fail)?;
        if inserted == 0 {
            return fork_refused(conn, self).map_err(&fail);
        }
        let owner: Option<String> = conn
            .prepare_cached(
                "INSERT INTO workflow_input (workflow_uuid, inputs, retention_timestamp) \
                 SELECT ?2, COALESCE(i.inputs, s.inputs), ?3 FROM workflow_status s \
                 LEFT JOIN workflow_input i ON i.workflow_uuid = s.workflow_uuid \
                 WHERE s.workflow_uuid = ?1 \
                 ON CONFLICT (workflow_uuid) DO UPDATE SET inputs = excluded.inputs, \
                 retention_timestamp = excluded.retention_timestamp",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![self.original_id, self.forked_id, self.now_ms])
            })
            .and_then(|_| {
                conn.prepare_cached(
                    "UPDATE workflow_status SET was_forked_from = TRUE WHERE workflow_uuid = ?1",
                )?
                .execute([&self.original_id])
            })
            .and_then(|_| {
                conn.prepare_cached(
                    "SELECT application_name FROM workflow_status WHERE workflow_uuid = ?1",
                )?
                .query_row([&self.forked_id], |row| row.get(0))
            })
            .map_err(&fail)?;
        if self.start_step > 1 {
            let values: [&dyn rusqlite::ToSql; 5] = [
                &self.original_id,
                &self.forked_id,
                &self.start_step,
                &self.now_ms,
                &owner,
            ];
            for sql in FORK_COPIES {
                conn.prepare_cached(sql)
                    .and_then(|mut stmt| {
                        // Each statement binds the leading parameters it names.
                        let used = stmt.parameter_count();
                        stmt.execute(&values[..used])
                    })
                    .map_err(&fail)?;
            }
        }
        Ok(ForkOutcome::Forked)
    }
}

/// Why a fork's status row was not inserted: no original, this very fork committed unseen,
/// or another workflow holding the id.
fn fork_refused(conn: &Connection, fork: &ForkWorkflow) -> rusqlite::Result<ForkOutcome> {
    let mine: Option<bool> = conn
        .prepare_cached(
            "SELECT forked_from = ?2 AND creator_xid = ?3 FROM workflow_status \
             WHERE workflow_uuid = ?1",
        )?
        .query_row(
            params![fork.forked_id, fork.original_id, fork.creator_xid],
            |row| row.get::<_, Option<bool>>(0),
        )
        .optional()?
        .map(|mine| mine.unwrap_or(false));
    match mine {
        Some(true) => Ok(ForkOutcome::Forked),
        Some(false) => Ok(ForkOutcome::IdTaken),
        None => Ok(ForkOutcome::OriginalMissing),
    }
}

impl OnSqlite for SetWorkflowDelay {
    const WRITES: bool = true;

    /// The guarded update, then (only when it changed nothing) whether the row exists.
    fn on_sqlite(&self, conn: &Connection) -> Result<Option<bool>> {
        let fail = failed(self);
        let changed = conn
            .prepare_cached(
                "UPDATE workflow_status SET delay_until_epoch_ms = ?2, updated_at = ?3 \
                 WHERE workflow_uuid = ?1 AND status = 'DELAYED'",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    self.workflow_id,
                    self.delay_until_epoch_ms,
                    self.now_ms
                ])
            })
            .map_err(&fail)?;
        if changed > 0 {
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

// ── Application versions ────────────────────────────────────────────────────────────────

impl OnSqlite for crate::store::ListAppVersions {
    const WRITES: bool = false;

    /// One select; SQLite's `LIMIT -1` is no limit.
    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<crate::store::AppVersionRow>> {
        conn.prepare_cached(
            "SELECT version_name, version_timestamp, created_at, application_name \
             FROM application_versions \
             WHERE ?1 IS NULL OR application_name = ?1 OR application_name IS NULL \
             ORDER BY version_timestamp DESC, version_name LIMIT ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![self.application_name, self.limit.unwrap_or(-1)],
                |row| {
                    Ok(crate::store::AppVersionRow {
                        name: row.get(0)?,
                        timestamp_ms: row.get(1)?,
                        created_at_ms: row.get(2)?,
                        application_name: row.get(3)?,
                    })
                },
            )?
            .collect()
        })
        .map_err(failed(self))
    }
}

impl OnSqlite for crate::store::PromoteAppVersion {
    const WRITES: bool = true;

    /// The owner, then the update guarded by it (both in the writer's transaction).
    fn on_sqlite(&self, conn: &Connection) -> Result<crate::store::Promotion> {
        use crate::store::Promotion;
        let fail = failed(self);
        let owner: Option<Option<String>> = conn
            .prepare_cached(
                "SELECT application_name FROM application_versions WHERE version_name = ?1",
            )
            .and_then(|mut stmt| stmt.query_row([&self.version], |row| row.get(0)).optional())
            .map_err(&fail)?;
        let owner = match owner {
            None => return Ok(Promotion::Missing),
            Some(owner) => owner,
        };
        if let (Some(owner), Some(ours)) = (&owner, &self.application_name)
            && owner != ours
        {
            return Ok(Promotion::OwnedBy(owner.clone()));
        }
        conn.prepare_cached(
            "UPDATE application_versions SET version_timestamp = ?2, \
             application_name = COALESCE(application_name, ?3) WHERE version_name = ?1",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![self.version, self.now_ms, self.application_name])
        })
        .map_err(&fail)?;
        Ok(Promotion::Promoted)
    }
}

// ── Retention ───────────────────────────────────────────────────────────────────────────

impl OnSqlite for crate::store::DeleteFinishedBefore {
    const WRITES: bool = true;

    /// The oldest finished ids, then one `DELETE` per table (one writer transaction).
    fn on_sqlite(&self, conn: &Connection) -> Result<u64> {
        let fail = failed(self);
        let sql = format!(
            "SELECT workflow_uuid FROM workflow_status \
             WHERE status IN {} AND created_at < ?1 \
             ORDER BY created_at, workflow_uuid LIMIT ?2",
            crate::store::FINISHED
        );
        let ids: Vec<String> = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params![self.cutoff_ms, self.limit], |row| row.get(0))?
                    .collect()
            })
            .map_err(&fail)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = json_array(self, &ids)?;
        let deleted = delete_rows(conn, &ids).map_err(&fail)?;
        Ok(deleted.len() as u64)
    }
}

impl OnSqlite for crate::store::FinishedCreatedAt {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Option<i64>> {
        let sql = format!(
            "SELECT created_at FROM workflow_status WHERE status IN {} \
             ORDER BY created_at DESC LIMIT 1 OFFSET ?1",
            crate::store::FINISHED
        );
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([self.rank - 1], |row| row.get(0)).optional())
            .map_err(failed(self))
    }
}

// ---- Workflow attributes -----------------------------------------------------------------

impl OnSqlite for crate::store::UpdateWorkflowAttributes {
    const WRITES: bool = true;

    /// A merge reads the existing object and writes the merged one: on the writer thread,
    /// nothing else writes in between.
    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        let fail = failed(self);
        let attributes = if self.merge {
            let existing: Option<Option<String>> = conn
                .prepare_cached("SELECT attributes FROM workflow_status WHERE workflow_uuid = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([&self.workflow_id], |row| row.get(0))
                        .optional()
                })
                .map_err(&fail)?;
            let Some(existing) = existing else {
                return Ok(false);
            };
            Some(merged(existing.as_deref(), self.attributes.as_deref())?)
        } else {
            self.attributes.clone()
        };
        let changed = conn
            .prepare_cached(
                "UPDATE workflow_status SET attributes = ?2, updated_at = ?3 WHERE workflow_uuid = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![self.workflow_id, attributes, self.now_ms]))
            .map_err(&fail)?;
        Ok(changed > 0)
    }
}

/// `update`'s top-level keys set over `existing` (anything but an object counts as `{}`).
fn merged(existing: Option<&str>, update: Option<&str>) -> Result<String> {
    use serde_json::{Map, Value};
    let mut object = match existing.map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(object))) => object,
        _ => Map::new(),
    };
    let update: Value =
        serde_json::from_str(update.unwrap_or("{}")).map_err(|e| Error::InvalidArgument {
            argument: "attributes",
            reason: format!("not JSON: {e}"),
        })?;
    if let Value::Object(update) = update {
        object.extend(update);
    }
    Ok(Value::Object(object).to_string())
}

// ---- Event history -----------------------------------------------------------------------

impl OnSqlite for crate::store::EventHistory {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<crate::store::EventHistoryRow>> {
        conn.prepare_cached(
            "SELECT key, function_id, value, serialization FROM workflow_events_history \
             WHERE workflow_uuid = ?1 AND (?2 IS NULL OR key = ?2) ORDER BY function_id, key",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![self.workflow_id, self.key], |row| {
                Ok(crate::store::EventHistoryRow {
                    key: row.get(0)?,
                    function_id: row.get(1)?,
                    value: crate::store::Stored {
                        text: row.get(2)?,
                        serialization: row.get(3)?,
                    },
                })
            })?
            .collect()
        })
        .map_err(failed(self))
    }
}
