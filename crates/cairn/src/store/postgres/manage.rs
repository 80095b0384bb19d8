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
use crate::store::manage::in_order_asked;
use crate::store::{DeleteWorkflows, ForkOutcome, ForkWorkflow, SetWorkflowDelay};

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

/// `$1` original, `$2` fork, `$3` version, `$4` queue, `$5` partition key, `$6` owner when
/// the original has none, `$7` timeout, `$8` now, `$9` creator: the fork's status row, copied
/// from the original's; answers the fork's owner (no row: not inserted).
static FORK_STATUS: Sql = Sql(|q| {
    format!(
        "INSERT INTO {q}.workflow_status (workflow_uuid, status, name, class_name, config_name, \
             application_version, application_id, authenticated_user, authenticated_roles, \
             assumed_role, serialization, queue_name, queue_partition_key, forked_from, \
             attributes, application_name, workflow_timeout_ms, created_at, updated_at, \
             recovery_attempts, priority, creator_xid) \
         SELECT $2::text, 'ENQUEUED', name, class_name, config_name, $3::text, application_id, \
             authenticated_user, authenticated_roles, assumed_role, serialization, $4::text, \
             $5::text, workflow_uuid, attributes, COALESCE(application_name, $6::text), $7::int8, \
             $8::int8, $8::int8, 0, 0, $9::text \
         FROM {q}.workflow_status WHERE workflow_uuid = $1::text \
         ON CONFLICT (workflow_uuid) DO NOTHING RETURNING application_name"
    )
});

/// `$1` fork, `$2` original, `$3` creator: whether the row holding the fork's id is this very
/// fork (no row: the id is free).
static FORK_MINE: Sql = Sql(|q| {
    format!(
        "SELECT COALESCE(forked_from = $2::text AND creator_xid = $3::text, FALSE) \
         FROM {q}.workflow_status WHERE workflow_uuid = $1::text"
    )
});

/// `$1` original, `$2` fork, `$3` now: the fork's input row and the original's mark.
static FORK_INPUT: Sql = Sql(|q| {
    format!(
        "WITH mark AS (UPDATE {q}.workflow_status SET was_forked_from = TRUE \
             WHERE workflow_uuid = $1::text) \
         INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
         SELECT $2::text, COALESCE(i.inputs, s.inputs), $3::int8 FROM {q}.workflow_status s \
         LEFT JOIN {q}.workflow_input i ON i.workflow_uuid = s.workflow_uuid \
         WHERE s.workflow_uuid = $1::text \
         ON CONFLICT (workflow_uuid) DO UPDATE SET inputs = excluded.inputs, \
             retention_timestamp = excluded.retention_timestamp"
    )
});

/// `$1` original, `$2` fork, `$3` start step, `$4` now, `$5` owner: the checkpoints before
/// the start step.
static FORK_STEPS: Sql = Sql(|q| {
    format!(
        "INSERT INTO {q}.operation_outputs (workflow_uuid, function_id, function_name, output, \
             error, child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, \
             application_name, retention_timestamp) \
         SELECT $2::text, function_id, function_name, output, error, child_workflow_id, \
             started_at_epoch_ms, completed_at_epoch_ms, serialization, $5::text, $4::int8 \
         FROM {q}.operation_outputs WHERE workflow_uuid = $1::text AND function_id < $3::int4"
    )
});

/// `$1` original, `$2` fork, `$3` start step: the events history, each event's latest value
/// and the stream values written before the start step.
static FORK_EFFECTS: Sql = Sql(|q| {
    format!(
        "WITH h AS (INSERT INTO {q}.workflow_events_history \
                 (workflow_uuid, function_id, key, value, serialization) \
             SELECT $2::text, function_id, key, value, serialization \
             FROM {q}.workflow_events_history \
             WHERE workflow_uuid = $1::text AND function_id < $3::int4), \
         t AS (INSERT INTO {q}.streams (workflow_uuid, key, value, \"offset\", function_id, serialization) \
             SELECT $2::text, key, value, \"offset\", function_id, serialization FROM {q}.streams \
             WHERE workflow_uuid = $1::text AND function_id < $3::int4) \
         INSERT INTO {q}.workflow_events (workflow_uuid, key, value, serialization) \
         SELECT $2::text, key, value, serialization FROM ( \
             SELECT key, value, serialization, \
                 row_number() OVER (PARTITION BY key ORDER BY function_id DESC) AS rn \
             FROM {q}.workflow_events_history \
             WHERE workflow_uuid = $1::text AND function_id < $3::int4) ranked \
         WHERE rn = 1"
    )
});

impl OnPostgres for ForkWorkflow {
    /// One transaction: the status row, then (if inserted) the input row with the original's
    /// mark, the checkpoints and their effects.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<ForkOutcome> {
        let texts = [
            &FORK_STATUS,
            &FORK_MINE,
            &FORK_INPUT,
            &FORK_STEPS,
            &FORK_EFFECTS,
        ]
        .map(|sql| db.sql.text(sql));
        let mut client = db.checkout(self).await?;
        match fork(&mut client, &texts, self).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(failed(&db.pool, client, e, self)),
        }
    }
}

/// [`ForkWorkflow`]'s transaction; `texts` are its statements in declaration order.
async fn fork(
    client: &mut Object,
    texts: &[std::sync::Arc<str>; 5],
    op: &ForkWorkflow,
) -> std::result::Result<ForkOutcome, tokio_postgres::Error> {
    let [status, mine, input, steps, effects] = texts;
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(status).await?;
    let inserted = tx
        .query_opt(
            &statement,
            &[
                &op.original_id,
                &op.forked_id,
                &op.application_version,
                &op.queue_name,
                &op.queue_partition_key,
                &op.application_name,
                &op.timeout_ms,
                &op.now_ms,
                &op.creator_xid,
            ],
        )
        .await?;
    let Some(inserted) = inserted else {
        let statement = tx.prepare_cached(mine).await?;
        let row = tx
            .query_opt(
                &statement,
                &[&op.forked_id, &op.original_id, &op.creator_xid],
            )
            .await?;
        return Ok(
            match row.map(|row| row.try_get::<_, bool>(0)).transpose()? {
                Some(true) => ForkOutcome::Forked,
                Some(false) => ForkOutcome::IdTaken,
                None => ForkOutcome::OriginalMissing,
            },
        );
    };
    let owner: Option<String> = inserted.try_get(0)?;
    let statement = tx.prepare_cached(input).await?;
    tx.execute(&statement, &[&op.original_id, &op.forked_id, &op.now_ms])
        .await?;
    if op.start_step > 1 {
        let statement = tx.prepare_cached(steps).await?;
        tx.execute(
            &statement,
            &[
                &op.original_id,
                &op.forked_id,
                &op.start_step,
                &op.now_ms,
                &owner,
            ],
        )
        .await?;
        let statement = tx.prepare_cached(effects).await?;
        tx.execute(
            &statement,
            &[&op.original_id, &op.forked_id, &op.start_step],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ForkOutcome::Forked)
}

/// `$1` workflow, `$2` delay until, `$3` now: `(changed, exists)`.
static SET_DELAY: Sql = Sql(|q| {
    format!(
        "WITH upd AS ( \
             UPDATE {q}.workflow_status SET delay_until_epoch_ms = $2::int8, updated_at = $3::int8 \
             WHERE workflow_uuid = $1::text AND status = 'DELAYED' RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM upd), \
             EXISTS (SELECT 1 FROM {q}.workflow_status WHERE workflow_uuid = $1::text)"
    )
});

impl OnPostgres for SetWorkflowDelay {
    /// One statement: the guarded update and whether the row exists.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<bool>> {
        let params: [Param<'_>; 3] = [&self.workflow_id, &self.delay_until_epoch_ms, &self.now_ms];
        let row = db.query_row(&SET_DELAY, &params, self).await?;
        let (changed, exists): (bool, bool) = (col(&row, 0)?, col(&row, 1)?);
        Ok(exists.then_some(changed))
    }
}

// ── Application versions ────────────────────────────────────────────────────────────────

/// `$1` application (NULL: all), `$2` limit (NULL: all).
static LIST_APP_VERSIONS: Sql = Sql(|q| {
    format!(
        "SELECT version_name, version_timestamp, created_at, application_name \
         FROM {q}.application_versions \
         WHERE $1::text IS NULL OR application_name = $1::text OR application_name IS NULL \
         ORDER BY version_timestamp DESC, version_name LIMIT $2::int8"
    )
});

impl OnPostgres for crate::store::ListAppVersions {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<crate::store::AppVersionRow>> {
        let rows = db
            .query(
                &LIST_APP_VERSIONS,
                &[&self.application_name, &self.limit],
                self,
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(crate::store::AppVersionRow {
                    name: col(row, 0)?,
                    timestamp_ms: col(row, 1)?,
                    created_at_ms: col(row, 2)?,
                    application_name: col(row, 3)?,
                })
            })
            .collect()
    }
}

/// `$1` version, `$2` application (NULL: keep the owner), `$3` now: `(found, owner,
/// promoted)`. The update re-checks its guard on the row's latest version, so a concurrent
/// claim by another application is never overwritten.
static PROMOTE_APP_VERSION: Sql = Sql(|q| {
    format!(
        "WITH cur AS (SELECT application_name FROM {q}.application_versions \
             WHERE version_name = $1::text), \
         upd AS (UPDATE {q}.application_versions SET version_timestamp = $3::int8, \
                 application_name = COALESCE(application_name, $2::text) \
             WHERE version_name = $1::text AND (application_name IS NULL \
                 OR $2::text IS NULL OR application_name = $2::text) \
             RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM cur), (SELECT application_name FROM cur), \
             EXISTS (SELECT 1 FROM upd)"
    )
});

impl OnPostgres for crate::store::PromoteAppVersion {
    /// One statement: the guarded update, and the owner that refused it.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<crate::store::Promotion> {
        use crate::store::Promotion;
        let params: [Param<'_>; 3] = [&self.version, &self.application_name, &self.now_ms];
        let row = db.query_row(&PROMOTE_APP_VERSION, &params, self).await?;
        let (found, owner, promoted): (bool, Option<String>, bool) =
            (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?);
        Ok(match (found, promoted) {
            (_, true) => Promotion::Promoted,
            (false, false) => Promotion::Missing,
            // Claimed meanwhile by another application when `owner` reads NULL.
            (true, false) => Promotion::OwnedBy(owner.unwrap_or_default()),
        })
    }
}

// ── Retention ───────────────────────────────────────────────────────────────────────────

/// `$1` cutoff, `$2` limit: the oldest finished ids, locked, skipping rows others hold.
static LOCK_FINISHED: Sql = Sql(|q| {
    format!(
        "SELECT workflow_uuid FROM {q}.workflow_status \
         WHERE status IN {finished} AND created_at < $1::int8 \
         ORDER BY created_at, workflow_uuid LIMIT $2::int8 FOR UPDATE SKIP LOCKED",
        finished = crate::store::FINISHED
    )
});

impl OnPostgres for crate::store::DeleteFinishedBefore {
    /// One transaction: lock the batch's status rows, then delete them from every table.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<u64> {
        let (lock, delete) = (db.sql.text(&LOCK_FINISHED), db.sql.text(&DELETE_WORKFLOWS));
        let mut client = db.checkout(self).await?;
        match delete_finished(&mut client, &lock, &delete, self).await {
            Ok(deleted) => Ok(deleted),
            Err(e) => Err(failed(&db.pool, client, e, self)),
        }
    }
}

/// [`crate::store::DeleteFinishedBefore`]'s transaction.
async fn delete_finished(
    client: &mut Object,
    lock: &str,
    delete: &str,
    op: &crate::store::DeleteFinishedBefore,
) -> std::result::Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(lock).await?;
    let ids: Vec<String> = tx
        .query(&statement, &[&op.cutoff_ms, &op.limit])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let statement = tx.prepare_cached(delete).await?;
    let deleted = tx.query(&statement, &[&ids]).await?.len();
    tx.commit().await?;
    Ok(deleted as u64)
}

/// `$1` rank - 1.
static FINISHED_CREATED_AT: Sql = Sql(|q| {
    format!(
        "SELECT created_at FROM {q}.workflow_status WHERE status IN {finished} \
         ORDER BY created_at DESC LIMIT 1 OFFSET $1::int8",
        finished = crate::store::FINISHED
    )
});

impl OnPostgres for crate::store::FinishedCreatedAt {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<i64>> {
        let offset = self.rank - 1;
        let rows = db.query(&FINISHED_CREATED_AT, &[&offset], self).await?;
        rows.first().map(|row| col(row, 0)).transpose()
    }
}

// ---- Workflow attributes -----------------------------------------------------------------

/// `$1` workflow, `$2` attributes (JSON text or NULL), `$3` merge, `$4` now. A merge sets
/// `$2`'s top-level keys over the existing object (anything else counts as `{}`).
static UPDATE_ATTRIBUTES: Sql = Sql(|q| {
    format!(
        "UPDATE {q}.workflow_status SET attributes = CASE WHEN $3::bool THEN \
             (CASE WHEN jsonb_typeof(attributes) = 'object' THEN attributes ELSE '{{}}'::jsonb END) \
                 || COALESCE($2::text::jsonb, '{{}}'::jsonb) \
             ELSE $2::text::jsonb END, \
             updated_at = $4::int8 \
         WHERE workflow_uuid = $1::text"
    )
});

impl OnPostgres for crate::store::UpdateWorkflowAttributes {
    /// One statement; the row's lock makes a merge atomic.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        let params: [Param<'_>; 4] = [
            &self.workflow_id,
            &self.attributes,
            &self.merge,
            &self.now_ms,
        ];
        Ok(db.execute(&UPDATE_ATTRIBUTES, &params, self).await? > 0)
    }
}

// ---- Event history -----------------------------------------------------------------------

/// `$1` workflow, `$2` key or NULL: `(key, function_id, value, serialization)` in the order set.
static EVENT_HISTORY: Sql = Sql(|q| {
    format!(
        "SELECT key, function_id, value, serialization FROM {q}.workflow_events_history \
         WHERE workflow_uuid = $1::text AND ($2::text IS NULL OR key = $2::text) \
         ORDER BY function_id, key"
    )
});

impl OnPostgres for crate::store::EventHistory {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<crate::store::EventHistoryRow>> {
        let rows = db
            .query(&EVENT_HISTORY, &[&self.workflow_id, &self.key], self)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(crate::store::EventHistoryRow {
                    key: col(row, 0)?,
                    function_id: col(row, 1)?,
                    value: crate::store::Stored {
                        text: col(row, 2)?,
                        serialization: col(row, 3)?,
                    },
                })
            })
            .collect()
    }
}
