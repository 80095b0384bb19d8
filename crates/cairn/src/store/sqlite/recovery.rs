//! Recovery and queue claims on SQLite: loading the workflows a claim just took, with their
//! checkpoints, in two statements whatever their number.

use std::collections::HashMap;

use rusqlite::Connection;

use super::ops::{checkpoint_columns, checkpoint_from_row, status_columns, workflow_from_row};
use crate::store::{Checkpoint, Reclaimed};

/// The workflows `ids` names (just claimed in this transaction, so they exist), each with its
/// checkpoints, ordered by `created_at` then id. Two statements in all (the rows, then every
/// checkpoint), the ids going in as one JSON array: recovering a thousand workflows must not
/// cost two thousand statements on the writer thread.
pub(super) fn load_claimed(conn: &Connection, ids: &[String]) -> rusqlite::Result<Vec<Reclaimed>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(ids)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let mut checkpoints: HashMap<String, Vec<Checkpoint>> = HashMap::new();
    let mut statement = conn.prepare_cached(concat!(
        "SELECT ",
        checkpoint_columns!(),
        ", workflow_uuid FROM operation_outputs WHERE workflow_uuid IN (SELECT value FROM json_each(?1)) \
         ORDER BY workflow_uuid, function_id"
    ))?;
    let mut rows = statement.query([&ids])?;
    while let Some(row) = rows.next()? {
        // After the checkpoint's eight columns.
        let id: String = row.get(8)?;
        let checkpoint = checkpoint_from_row(row)?;
        checkpoints.entry(id).or_default().push(checkpoint);
    }
    drop(rows);
    let mut statement = conn.prepare_cached(concat!(
        "SELECT ",
        status_columns!(),
        ", i.inputs, o.output, o.error \
         FROM workflow_status s \
         LEFT JOIN workflow_input i ON i.workflow_uuid = s.workflow_uuid \
         LEFT JOIN workflow_output o ON o.workflow_uuid = s.workflow_uuid \
         WHERE s.workflow_uuid IN (SELECT value FROM json_each(?1)) \
         ORDER BY s.created_at, s.workflow_uuid"
    ))?;
    statement
        .query_map([&ids], workflow_from_row)?
        .map(|row| {
            let row = row?;
            let checkpoints = checkpoints.remove(&row.workflow_id).unwrap_or_default();
            Ok(Reclaimed { row, checkpoints })
        })
        .collect()
}
