//! Workflow management on Postgres: deletion, retention, forks, delays, attributes,
//! application versions and event history.
//!
//! Deleting takes the status rows' locks first, in a transaction, and deletes in a second
//! statement: a checkpoint insert locks its workflow's status row (`FOR SHARE`) before it
//! writes, so once the locks are held no insert is in flight, and the deleting statement's
//! snapshot (taken after them) sees every row there is to delete.

use std::collections::HashSet;

use deadpool_postgres::Object;
use tokio_postgres::Row;

use super::sql::Sql;
use super::{OnPostgres, Param, PostgresStore, col, failed};
use crate::error::Result;
use crate::store::DeleteWorkflows;
use crate::store::manage::in_order_asked;

/// `$1` ids (text[]): lock their status rows, in id order (two overlapping deletes cannot
/// deadlock).
static LOCK_WORKFLOWS: Sql = Sql(|q| {
    format!(
        "SELECT workflow_uuid FROM {q}.workflow_status WHERE workflow_uuid = ANY($1::text[]) \
         ORDER BY workflow_uuid FOR UPDATE"
    )
});

/// The statement deleting every row of the workflows whose ids are in `ids` (a text[]
/// expression), answering the ids whose status row it deleted. The foreign keys would cascade
/// the last four tables; they are deleted explicitly all the same.
fn delete_rows(q: &str, ids: &str) -> String {
    format!(
        "WITH i AS (DELETE FROM {q}.workflow_input WHERE workflow_uuid = ANY({ids})), \
              o AS (DELETE FROM {q}.workflow_output WHERE workflow_uuid = ANY({ids})), \
              c AS (DELETE FROM {q}.operation_outputs WHERE workflow_uuid = ANY({ids})), \
              n AS (DELETE FROM {q}.notifications WHERE destination_uuid = ANY({ids})), \
              e AS (DELETE FROM {q}.workflow_events WHERE workflow_uuid = ANY({ids})), \
              h AS (DELETE FROM {q}.workflow_events_history WHERE workflow_uuid = ANY({ids})), \
              t AS (DELETE FROM {q}.streams WHERE workflow_uuid = ANY({ids})) \
         DELETE FROM {q}.workflow_status WHERE workflow_uuid = ANY({ids}) RETURNING workflow_uuid"
    )
}

/// `$1` ids (text[]): delete them (see [`delete_rows`]).
static DELETE_WORKFLOWS: Sql = Sql(|q| delete_rows(q, "$1::text[]"));

/// `lock`, then `sql`, in one transaction (three round trips: begin, the two statements
/// pipelined, commit); answers the rows of each. Dropping it unfinished rolls it back.
pub(super) async fn locked(
    client: &mut Object,
    lock: &str,
    lock_params: &[Param<'_>],
    sql: &str,
    params: &[Param<'_>],
) -> std::result::Result<(Vec<Row>, Vec<Row>), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let (lock_statement, statement) =
        futures::try_join!(tx.prepare_cached(lock), tx.prepare_cached(sql))?;
    // Polled in order, so the lock's request is sent first and the server runs them in turn.
    let rows = futures::try_join!(
        tx.query(&lock_statement, lock_params),
        tx.query(&statement, params)
    )?;
    tx.commit().await?;
    Ok(rows)
}

impl PostgresStore {
    /// Run `lock` then `sql` in one transaction on a pooled connection (see [`locked`]).
    async fn locked(
        &self,
        lock: &'static Sql,
        lock_params: &[Param<'_>],
        sql: &'static Sql,
        params: &[Param<'_>],
        op: &dyn super::Describe,
    ) -> Result<(Vec<Row>, Vec<Row>)> {
        let (lock, sql) = (self.sql.text(lock), self.sql.text(sql));
        let mut client = self.checkout(op).await?;
        match locked(&mut client, &lock, lock_params, &sql, params).await {
            Ok(rows) => Ok(rows),
            Err(e) => Err(failed(&self.pool, client, e, op)),
        }
    }
}

/// The first column of each row, as a set of ids.
fn ids_of(rows: &[Row]) -> Result<HashSet<String>> {
    rows.iter().map(|row| col(row, 0)).collect()
}

impl OnPostgres for DeleteWorkflows {
    /// One transaction: the locks, then one statement deleting from every table.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<String>> {
        if self.workflow_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = &self.workflow_ids;
        let (_, rows) = db
            .locked(&LOCK_WORKFLOWS, &[ids], &DELETE_WORKFLOWS, &[ids], self)
            .await?;
        Ok(in_order_asked(&self.workflow_ids, &ids_of(&rows)?))
    }
}
