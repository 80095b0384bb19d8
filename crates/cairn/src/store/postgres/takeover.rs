//! Takeover on Postgres: the executors with pending workflows whose lock nobody holds, and
//! claiming a dead one's under its lock, tried inside the claiming statement.

use super::sql::{Sql, WORKFLOW_COLUMNS, workflow_joins};
use super::{OnPostgres, PostgresStore, col};
use crate::error::Result;
use crate::store::{PendingExecutors, Reclaimed, TakeOverPending};

/// `$1` version, `$2` application name or NULL, `$3` the caller's executor id, `$4` the lock
/// names' prefix (the lock name of an empty id): the other executors with `PENDING` rows whose
/// advisory lock no session holds. A 64-bit advisory lock shows in `pg_locks` as its high and
/// low halves (`classid`, `objid`) with `objsubid = 1`; `pg_locks` is read once.
static PENDING_EXECUTORS: Sql = Sql(|q| {
    format!(
        "WITH e AS ( \
             SELECT DISTINCT executor_id FROM {q}.workflow_status \
             WHERE status = 'PENDING' AND application_version = $1::text \
                 AND ($2::text IS NULL OR application_name = $2::text OR application_name IS NULL) \
                 AND executor_id IS NOT NULL AND executor_id <> $3::text), \
         held AS MATERIALIZED ( \
             SELECT classid, objid FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())), \
         k AS (SELECT executor_id, hashtextextended($4::text || executor_id, 0) AS key FROM e) \
         SELECT executor_id FROM k WHERE NOT EXISTS ( \
             SELECT 1 FROM held \
             WHERE held.classid = ((k.key >> 32) & 4294967295)::oid \
                 AND held.objid = (k.key & 4294967295)::oid) \
         ORDER BY executor_id"
    )
});

impl OnPostgres for PendingExecutors {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<String>> {
        let prefix = db.liveness.lock_name(&self.app_name, "");
        let rows = db
            .query(
                &PENDING_EXECUTORS,
                &[
                    &self.app_version,
                    &self.application_name,
                    &self.except,
                    &prefix,
                ],
                self,
            )
            .await?;
        rows.iter().map(|row| col(row, 0)).collect()
    }
}

/// `$1` from, `$2` to, `$3` version, `$4` application name or NULL, `$5` new owner, `$6` now,
/// `$7` the lock name of `from`: the claimed rows, oldest first. `from`'s rows are claimed only
/// if this transaction gets `from`'s lock, which conflicts with the session lock a live holder
/// keeps (the uncorrelated subquery runs once, when first needed, and the lock goes at commit).
/// Rows another transaction changed meanwhile are re-checked against the condition, so two
/// takers never claim one row. Rows under `to` with this owner are this very takeover,
/// committed unseen (not counted again).
static TAKE_OVER_PENDING: Sql = Sql(|q| {
    format!(
        "WITH s AS ( \
             UPDATE {q}.workflow_status \
             SET owner_xid = $5::text, executor_id = $2::text, updated_at = $6::int8, \
                 recovery_attempts = recovery_attempts + CASE WHEN owner_xid = $5::text THEN 0 ELSE 1 END \
             WHERE status = 'PENDING' AND application_version = $3::text \
                 AND ($4::text IS NULL OR application_name = $4::text OR application_name IS NULL) \
                 AND ((executor_id = $1::text \
                         AND (SELECT pg_try_advisory_xact_lock(hashtextextended($7::text, 0)))) \
                     OR (executor_id = $2::text AND owner_xid = $5::text)) \
             RETURNING *) \
         SELECT {WORKFLOW_COLUMNS} FROM s {} \
         ORDER BY s.created_at, s.workflow_uuid",
        workflow_joins(q)
    )
});

impl OnPostgres for TakeOverPending {
    /// Two round trips: the claiming update (returning the rows), then all their checkpoints.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<Reclaimed>> {
        let lock = db.liveness.lock_name(&self.app_name, &self.from);
        let rows = db
            .query(
                &TAKE_OVER_PENDING,
                &[
                    &self.from,
                    &self.to,
                    &self.app_version,
                    &self.application_name,
                    &self.new_owner,
                    &self.now_ms,
                    &lock,
                ],
                self,
            )
            .await?;
        db.with_checkpoints(&rows, self).await
    }
}
