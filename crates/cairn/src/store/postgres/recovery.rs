//! Recovery, queues and control: reclaiming and dead-lettering this executor's workflows,
//! claiming queued ones, application versions, cancellation, descendants and resume.

use std::collections::HashSet;

use super::sql::{Sql, WORKFLOW_COLUMNS, workflow_joins};
use super::{OnPostgres, PostgresStore, col};
use crate::error::Result;
use crate::store::{
    CancelWorkflows, ClaimEnqueued, DeadLetter, Descendants, ReclaimPending, Reclaimed,
    RegisterAppVersion, ResumeWorkflow,
};

/// `$1` executor, `$2` version, `$3` application name or NULL, `$4` new owner, `$5` now: the
/// claimed rows, oldest first. A row this owner already holds (this very reclaim, committed
/// unseen) is not counted as another attempt.
static RECLAIM_PENDING: Sql = Sql(|q| {
    format!(
        "WITH s AS ( \
             UPDATE {q}.workflow_status \
             SET owner_xid = $4, updated_at = $5, \
                 recovery_attempts = recovery_attempts + CASE WHEN owner_xid = $4 THEN 0 ELSE 1 END \
             WHERE status = 'PENDING' AND executor_id = $1 AND application_version = $2 \
                 AND ($3::text IS NULL OR application_name = $3::text OR application_name IS NULL) \
             RETURNING *) \
         SELECT {WORKFLOW_COLUMNS} FROM s {} \
         ORDER BY s.created_at, s.workflow_uuid",
        workflow_joins(q)
    )
});

impl OnPostgres for ReclaimPending {
    /// Two round trips: the claiming update (returning the rows), then all their checkpoints.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<Reclaimed>> {
        let rows = db
            .query(
                &RECLAIM_PENDING,
                &[
                    &self.executor_id,
                    &self.app_version,
                    &self.application_name,
                    &self.new_owner,
                    &self.now_ms,
                ],
                self,
            )
            .await?;
        db.with_checkpoints(&rows, self).await
    }
}

/// The rows a claim by `$2` (new owner) at `$3` (now) of queue `$1` already took: `PENDING`
/// under that owner since that instant (`started_at_epoch_ms` is indexed, `owner_xid` not).
const CLAIMED_ALREADY: &str = "started_at_epoch_ms = $3::int8 AND owner_xid = $2::text \
     AND status = 'PENDING' AND queue_name = $1::text";

/// `$1` queue, `$2` new owner, `$3` now: whether the claim has anything to do, as a plain
/// read, so an idle queue costs no locking statement.
static ANY_ENQUEUED: Sql = Sql(|q| {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {q}.workflow_status \
             WHERE status = 'ENQUEUED' AND queue_name = $1::text) \
         OR EXISTS (SELECT 1 FROM {q}.workflow_status WHERE {CLAIMED_ALREADY})"
    )
});

/// `$1` queue, `$2` new owner, `$3` now, `$4` names (text[]), `$5` application name or NULL,
/// `$6` version, `$7` limit, `$8` executor: claims up to the limit (`FOR UPDATE SKIP LOCKED`),
/// counting the rows this very claim took in an attempt that committed unseen, and returns
/// both, oldest first.
static CLAIM_ENQUEUED: Sql = Sql(|q| {
    format!(
        "WITH again AS (SELECT workflow_uuid FROM {q}.workflow_status WHERE {CLAIMED_ALREADY}), \
         picked AS ( \
             SELECT workflow_uuid FROM {q}.workflow_status \
             WHERE status = 'ENQUEUED' AND queue_name = $1::text AND name = ANY($4::text[]) \
                 AND ($5::text IS NULL OR application_name = $5::text OR application_name IS NULL) \
                 AND (application_version IS NULL OR application_version = $6::text) \
             ORDER BY priority, created_at \
             LIMIT GREATEST($7::int8 - (SELECT count(*) FROM again), 0) \
             FOR UPDATE SKIP LOCKED), \
         upd AS ( \
             UPDATE {q}.workflow_status w SET status = 'PENDING', owner_xid = $2::text, \
                 executor_id = $8::text, application_version = $6::text, \
                 application_name = COALESCE($5::text, w.application_name), \
                 started_at_epoch_ms = $3::int8, recovery_attempts = w.recovery_attempts + 1, \
                 updated_at = $3::int8, \
                 workflow_deadline_epoch_ms = CASE \
                     WHEN w.workflow_timeout_ms IS NOT NULL AND w.workflow_deadline_epoch_ms IS NULL \
                     THEN $3::int8 + w.workflow_timeout_ms ELSE w.workflow_deadline_epoch_ms END \
             FROM picked WHERE w.workflow_uuid = picked.workflow_uuid \
             RETURNING w.*), \
         s AS ( \
             SELECT * FROM upd \
             UNION ALL \
             SELECT w.* FROM {q}.workflow_status w JOIN again USING (workflow_uuid)) \
         SELECT {WORKFLOW_COLUMNS} FROM s {} \
         ORDER BY s.created_at, s.workflow_uuid",
        workflow_joins(q)
    )
});

impl OnPostgres for ClaimEnqueued {
    /// A plain read first (an idle queue costs nothing more), then one claiming statement and
    /// the claimed workflows' checkpoints.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<Reclaimed>> {
        let claim = &self.0;
        let waiting = db
            .query_row(
                &ANY_ENQUEUED,
                &[&claim.queue_name, &claim.new_owner, &claim.now_ms],
                self,
            )
            .await?;
        if !col::<bool>(&waiting, 0)? {
            return Ok(Vec::new());
        }
        let rows = db
            .query(
                &CLAIM_ENQUEUED,
                &[
                    &claim.queue_name,
                    &claim.new_owner,
                    &claim.now_ms,
                    &claim.names,
                    &claim.application_name,
                    &claim.app_version,
                    &claim.limit,
                    &claim.executor_id,
                ],
                self,
            )
            .await?;
        db.with_checkpoints(&rows, self).await
    }
}

/// `$1` workflow, `$2` owner, `$3` now.
static DEAD_LETTER: Sql = Sql(|q| {
    format!(
        "UPDATE {q}.workflow_status \
         SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', owner_xid = NULL, deduplication_id = NULL, \
             started_at_epoch_ms = NULL, queue_name = NULL, updated_at = $3, completed_at = $3 \
         WHERE workflow_uuid = $1 AND status = 'PENDING' AND owner_xid = $2"
    )
});

impl OnPostgres for DeadLetter {
    /// One owner-guarded update.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        let changed = db
            .execute(
                &DEAD_LETTER,
                &[&self.workflow_id, &self.owner_xid, &self.now_ms],
                self,
            )
            .await?;
        Ok(changed > 0)
    }
}

/// `$1` version, `$2` now, `$3` application name.
static REGISTER_APP_VERSION: Sql = Sql(|q| {
    format!(
        "INSERT INTO {q}.application_versions \
             (version_id, version_name, version_timestamp, created_at, application_name) \
         VALUES (gen_random_uuid()::text, $1, $2, $2, $3) ON CONFLICT DO NOTHING"
    )
});

impl OnPostgres for RegisterAppVersion {
    /// One insert; an existing version (under any application) is left as it is.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<()> {
        db.execute(
            &REGISTER_APP_VERSION,
            &[&self.version, &self.now_ms, &self.application_name],
            self,
        )
        .await?;
        Ok(())
    }
}

/// The statuses a cancellation applies to.
const UNFINISHED: &str = "('PENDING', 'ENQUEUED', 'DELAYED')";

/// `$1` ids (text[]), `$2` now: the ids cancelled. The rows are locked in id order first, so
/// two overlapping cancels cannot deadlock.
static CANCEL: Sql = Sql(|q| {
    format!(
        "UPDATE {q}.workflow_status \
         SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL, deduplication_id = NULL, \
             started_at_epoch_ms = NULL, updated_at = $2 \
         WHERE workflow_uuid IN ( \
                 SELECT workflow_uuid FROM {q}.workflow_status \
                 WHERE workflow_uuid = ANY($1::text[]) AND status IN {UNFINISHED} \
                 ORDER BY workflow_uuid FOR UPDATE) \
             AND status IN {UNFINISHED} \
         RETURNING workflow_uuid"
    )
});

impl OnPostgres for CancelWorkflows {
    /// One statement (none for an empty list).
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<String>> {
        if self.workflow_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = db
            .query(&CANCEL, &[&self.workflow_ids, &self.now_ms], self)
            .await?;
        let mut cancelled = rows
            .iter()
            .map(|row| col(row, 0))
            .collect::<Result<HashSet<String>>>()?;
        // In the order asked, each once (`RETURNING` follows no order).
        Ok(self
            .workflow_ids
            .iter()
            .filter(|id| cancelled.remove(*id))
            .cloned()
            .collect())
    }
}

/// `$1` workflow: every descendant's id.
static DESCENDANTS: Sql = Sql(|q| {
    format!(
        "WITH RECURSIVE d(id) AS ( \
             SELECT workflow_uuid FROM {q}.workflow_status WHERE parent_workflow_id = $1 \
             UNION \
             SELECT s.workflow_uuid FROM {q}.workflow_status s JOIN d ON s.parent_workflow_id = d.id) \
         SELECT id FROM d WHERE id <> $1"
    )
});

impl OnPostgres for Descendants {
    /// One recursive statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<String>> {
        let rows = db.query(&DESCENDANTS, &[&self.workflow_id], self).await?;
        rows.iter().map(|row| col(row, 0)).collect()
    }
}

/// `$1` workflow, `$2` queue, `$3` now: `(resumed, exists)`.
static RESUME: Sql = Sql(|q| {
    format!(
        "WITH upd AS ( \
             UPDATE {q}.workflow_status \
             SET status = 'ENQUEUED', owner_xid = NULL, queue_name = $2::text, recovery_attempts = 0, \
                 workflow_deadline_epoch_ms = NULL, deduplication_id = NULL, started_at_epoch_ms = NULL, \
                 completed_at = NULL, updated_at = $3::int8 \
             WHERE workflow_uuid = $1::text AND status NOT IN ('SUCCESS', 'ERROR') \
             RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM upd), \
             EXISTS (SELECT 1 FROM {q}.workflow_status WHERE workflow_uuid = $1::text)"
    )
});

impl OnPostgres for ResumeWorkflow {
    /// One statement: the guarded update and whether the row exists.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<bool>> {
        let row = db
            .query_row(
                &RESUME,
                &[&self.workflow_id, &self.queue_name, &self.now_ms],
                self,
            )
            .await?;
        let (resumed, exists): (bool, bool) = (col(&row, 0)?, col(&row, 1)?);
        Ok(exists.then_some(resumed))
    }
}

/// `$1` executor, `$2` version, `$3` application name or NULL: `(version, count)` per version.
static COUNT_PENDING_ELSEWHERE: Sql = Sql(|q| {
    format!(
        "SELECT application_version, count(*) FROM {q}.workflow_status \
         WHERE status = 'PENDING' AND executor_id = $1 AND application_version IS DISTINCT FROM $2 \
             AND ($3::text IS NULL OR application_name = $3::text OR application_name IS NULL) \
         GROUP BY application_version ORDER BY 2 DESC, 1"
    )
});

impl OnPostgres for crate::store::CountPendingElsewhere {
    /// One grouped read.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<(Option<String>, i64)>> {
        let rows = db
            .query(
                &COUNT_PENDING_ELSEWHERE,
                &[&self.executor_id, &self.app_version, &self.application_name],
                self,
            )
            .await?;
        rows.iter()
            .map(|row| Ok((col(row, 0)?, col(row, 1)?)))
            .collect()
    }
}
