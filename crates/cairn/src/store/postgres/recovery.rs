//! Recovery, queues and control: reclaiming and dead-lettering this executor's workflows,
//! claiming queued ones, application versions, cancellation, descendants and resume.

use std::collections::HashSet;

use super::sql::{Sql, WORKFLOW_COLUMNS, workflow_joins};
use super::{OnPostgres, Param, PostgresStore, col};
use crate::error::Result;
use crate::store::{
    CancelWorkflows, ClaimEnqueued, DeadLetter, Descendants, QueuePartitions, ReclaimPending,
    Reclaimed, RegisterAppVersion, ResumeWorkflow,
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

/// [`RECLAIM_PENDING`] for one batch of a pass: `$6` the pattern of the pass's owners, `$7`
/// the limit. Rows an earlier batch of the pass claimed are skipped; this batch's own are not.
static RECLAIM_PENDING_BATCH: Sql = Sql(|q| {
    format!(
        "WITH c AS (              SELECT workflow_uuid FROM {q}.workflow_status              WHERE status = 'PENDING' AND executor_id = $1 AND application_version = $2                  AND ($3::text IS NULL OR application_name = $3::text OR application_name IS NULL)                  AND (owner_xid IS NULL OR owner_xid = $4 OR owner_xid NOT LIKE $6)              ORDER BY created_at, workflow_uuid LIMIT $7),          s AS (              UPDATE {q}.workflow_status w              SET owner_xid = $4, updated_at = $5,                  recovery_attempts = w.recovery_attempts + CASE WHEN w.owner_xid = $4 THEN 0 ELSE 1 END              FROM c WHERE w.workflow_uuid = c.workflow_uuid AND w.status = 'PENDING'              RETURNING w.*)          SELECT {WORKFLOW_COLUMNS} FROM s {}          ORDER BY s.created_at, s.workflow_uuid",
        workflow_joins(q)
    )
});

impl OnPostgres for ReclaimPending {
    /// Two round trips: the claiming update (returning the rows), then all their checkpoints.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<Reclaimed>> {
        let common: [Param<'_>; 5] = [
            &self.executor_id,
            &self.app_version,
            &self.application_name,
            &self.new_owner,
            &self.now_ms,
        ];
        let rows = match &self.batch {
            None => db.query(&RECLAIM_PENDING, &common, self).await?,
            Some(batch) => {
                let pattern = batch.owners_pattern();
                let params: Vec<Param<'_>> = common
                    .iter()
                    .copied()
                    .chain([&pattern as Param<'_>, &batch.limit])
                    .collect();
                db.query(&RECLAIM_PENDING_BATCH, &params, self).await?
            }
        };
        db.with_checkpoints(&rows, self).await
    }
}

/// The rows a claim by `$2` (new owner) at `$3` (now) of queue `$1` already took: `PENDING`
/// under that owner since that instant (`started_at_epoch_ms` is indexed, `owner_xid` not).
const CLAIMED_ALREADY: &str = "started_at_epoch_ms = $3::int8 AND owner_xid = $2::text \
     AND status = 'PENDING' AND queue_name = $1::text";

/// `$1` queue, `$2` new owner, `$3` now: whether the claim has anything to do, as plain
/// reads, so an idle queue costs no locking statement; and whether `DELAYED` rows are due.
static ANY_ENQUEUED: Sql = Sql(|q| {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {q}.workflow_status \
             WHERE status = 'ENQUEUED' AND queue_name = $1::text) \
         OR EXISTS (SELECT 1 FROM {q}.workflow_status WHERE {CLAIMED_ALREADY}), \
         EXISTS (SELECT 1 FROM {q}.workflow_status WHERE status = 'DELAYED' \
             AND queue_name = $1::text AND delay_until_epoch_ms <= $3::int8)"
    )
});

/// `$1` queue, `$2` now: its due `DELAYED` rows become `ENQUEUED`.
static PROMOTE_DELAYED: Sql = Sql(|q| {
    format!(
        "UPDATE {q}.workflow_status SET status = 'ENQUEUED', updated_at = $2::int8, \
         deduplication_id = CASE WHEN is_debounced THEN NULL ELSE deduplication_id END \
         WHERE status = 'DELAYED' AND queue_name = $1::text AND delay_until_epoch_ms <= $2::int8"
    )
});

/// `$1` queue: claimers of a queue whose budget processes share take turns (for the rest of
/// the transaction), so that each counts the room the others left. Under READ COMMITTED the
/// claiming statement after it sees every claim committed before.
static CLAIM_TURN: Sql = Sql(|_| {
    "SELECT pg_advisory_xact_lock(hashtext('cairn_queue_claim'), hashtext($1::text))".to_owned()
});

/// `$1` queue, `$2` executor, `$3` now, `$4` partition key: the room of `$5` limit,
/// `$6`/`$7`/`$8`+`$9` global, worker and rate (limit, period) limits, `$10`/`$11`/`$12`+`$13`
/// the same per partition (each NULL when there is none), beside the rows of `again`.
const ROOM: &str = "GREATEST(LEAST( \
     $5::int8 - (SELECT count(*) FROM again), \
     CASE WHEN $6::int8 IS NOT NULL THEN $6::int8 - (SELECT count(*) FROM {q}.workflow_status \
         WHERE queue_name = $1::text AND status = 'PENDING') END, \
     CASE WHEN $7::int8 IS NOT NULL THEN $7::int8 - (SELECT count(*) FROM {q}.workflow_status \
         WHERE queue_name = $1::text AND status = 'PENDING' AND executor_id = $2::text) END, \
     CASE WHEN $8::int8 IS NOT NULL THEN $8::int8 - (SELECT count(*) FROM {q}.workflow_status \
         WHERE queue_name = $1::text AND status NOT IN ('ENQUEUED', 'DELAYED') \
             AND started_at_epoch_ms > $3::int8 - $9::int8) END, \
     CASE WHEN $10::int8 IS NOT NULL THEN $10::int8 - (SELECT count(*) FROM {q}.workflow_status \
         WHERE queue_name = $1::text AND status = 'PENDING' AND queue_partition_key = $4::text) END, \
     CASE WHEN $11::int8 IS NOT NULL THEN $11::int8 - (SELECT count(*) FROM {q}.workflow_status \
         WHERE queue_name = $1::text AND status = 'PENDING' AND executor_id = $2::text \
             AND queue_partition_key = $4::text) END, \
     CASE WHEN $12::int8 IS NOT NULL THEN $12::int8 - (SELECT count(*) FROM {q}.workflow_status \
         WHERE queue_name = $1::text AND status NOT IN ('ENQUEUED', 'DELAYED') \
             AND started_at_epoch_ms > $3::int8 - $13::int8 AND queue_partition_key = $4::text) END \
     ), 0)";

/// The rows a claim by `$14` (new owner) at `$3` (now) of queue `$1` already took: `PENDING`
/// under that owner since that instant (`started_at_epoch_ms` is indexed, `owner_xid` not).
const CLAIMED_AGAIN: &str = "started_at_epoch_ms = $3::int8 AND owner_xid = $14::text \
     AND status = 'PENDING' AND queue_name = $1::text";

/// `$1`–`$14` as [`ROOM`] and [`CLAIMED_AGAIN`], `$15` names (text[]), `$16` application name
/// or NULL, `$17` version, `$18` whether priorities order the queue: claims up to the room
/// (`FOR UPDATE SKIP LOCKED`), counting the rows this very claim took in an attempt that
/// committed unseen, and returns both, oldest first, each followed by whether it has
/// checkpoints (most dequeued workflows have none: their load is skipped). (`LEAST` ignores
/// NULLs: an absent limit leaves no bound.)
static CLAIM_ENQUEUED: Sql = Sql(|q| {
    let room = ROOM.replace("{q}", q);
    format!(
        "WITH again AS (SELECT workflow_uuid FROM {q}.workflow_status WHERE {CLAIMED_AGAIN}), \
         picked AS ( \
             SELECT workflow_uuid FROM {q}.workflow_status \
             WHERE status = 'ENQUEUED' AND queue_name = $1::text AND name = ANY($15::text[]) \
                 AND ($16::text IS NULL OR application_name = $16::text OR application_name IS NULL) \
                 AND (application_version IS NULL OR application_version = $17::text) \
                 AND ($4::text IS NULL OR queue_partition_key = $4::text) \
             ORDER BY CASE WHEN $18::bool THEN priority ELSE 0 END, created_at \
             LIMIT {room} \
             FOR UPDATE SKIP LOCKED), \
         upd AS ( \
             UPDATE {q}.workflow_status w SET status = 'PENDING', owner_xid = $14::text, \
                 executor_id = $2::text, application_version = $17::text, \
                 application_name = COALESCE($16::text, w.application_name), \
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
         SELECT {WORKFLOW_COLUMNS}, \
             EXISTS (SELECT 1 FROM {q}.operation_outputs c WHERE c.workflow_uuid = s.workflow_uuid) \
         FROM s {} \
         ORDER BY s.created_at, s.workflow_uuid",
        workflow_joins(q)
    )
});

impl OnPostgres for ClaimEnqueued {
    /// With `probe`, a plain read first (an idle queue costs nothing more) and the promotion
    /// of due `DELAYED` rows if there are any, then one claiming statement (after the queue's
    /// turn lock when processes share its budget: one transaction) and, if any claimed
    /// workflow has checkpoints, their load.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<Reclaimed>> {
        let claim = &self.0;
        let limits = &claim.limits;
        if claim.probe {
            let waiting = db
                .query_row(
                    &ANY_ENQUEUED,
                    &[&claim.queue_name, &claim.new_owner, &claim.now_ms],
                    self,
                )
                .await?;
            let due = col::<bool>(&waiting, 1)?;
            if due {
                db.execute(&PROMOTE_DELAYED, &[&claim.queue_name, &claim.now_ms], self)
                    .await?;
            }
            if !col::<bool>(&waiting, 0)? && !due {
                return Ok(Vec::new());
            }
        }
        let (rate, period) = limits.rate_limit.unzip();
        let (partition_rate, partition_period) = limits.partition_rate_limit.unzip();
        let params: [Param<'_>; 18] = [
            &claim.queue_name,
            &claim.executor_id,
            &claim.now_ms,
            &claim.partition_key,
            &claim.limit,
            &limits.concurrency,
            &limits.worker_concurrency,
            &rate,
            &period,
            &limits.partition_concurrency,
            &limits.partition_worker_concurrency,
            &partition_rate,
            &partition_period,
            &claim.new_owner,
            &claim.names,
            &claim.application_name,
            &claim.app_version,
            &limits.priority_enabled,
        ];
        let rows = if shared(limits) {
            in_turn(db, &claim.queue_name, &params, self).await?
        } else {
            db.query(&CLAIM_ENQUEUED, &params, self).await?
        };
        with_checkpoints_if_any(db, rows, self).await
    }
}

/// The claimed rows (each ending with whether it has checkpoints) with their checkpoints,
/// oldest first: a round trip for the checkpoints only if some row has any (a resumed or
/// forked workflow), so a claim of fresh workflows is one statement.
async fn with_checkpoints_if_any(
    db: &PostgresStore,
    rows: Vec<tokio_postgres::Row>,
    op: &dyn super::Describe,
) -> Result<Vec<Reclaimed>> {
    let mut fresh = Vec::new();
    let mut recorded = Vec::new();
    for row in rows {
        let has_checkpoints = match row.len().checked_sub(1) {
            Some(last) => col::<bool>(&row, last)?,
            None => true,
        };
        if has_checkpoints {
            recorded.push(row);
        } else {
            fresh.push(Reclaimed {
                row: super::workflow_row(&row)?,
                checkpoints: Vec::new(),
            });
        }
    }
    let mut claimed = db.with_checkpoints(&recorded, op).await?;
    claimed.append(&mut fresh);
    claimed.sort_by(|a, b| {
        (a.row.created_at, &a.row.workflow_id).cmp(&(b.row.created_at, &b.row.workflow_id))
    });
    Ok(claimed)
}

/// Whether claimers in several processes share the queue's budget (and must take turns).
fn shared(limits: &crate::store::ClaimLimits) -> bool {
    limits.concurrency.is_some()
        || limits.rate_limit.is_some()
        || limits.partition_concurrency.is_some()
        || limits.partition_rate_limit.is_some()
}

/// [`CLAIM_ENQUEUED`] after the queue's turn lock, in one transaction (the two statements
/// pipelined, so the claim's snapshot is taken once the lock is held). Dropping the
/// transaction unfinished rolls it back.
async fn in_turn(
    db: &PostgresStore,
    queue: &String,
    params: &[Param<'_>],
    op: &dyn super::Describe,
) -> Result<Vec<tokio_postgres::Row>> {
    let lock = db.sql.text(&CLAIM_TURN);
    let claim = db.sql.text(&CLAIM_ENQUEUED);
    let mut client = db.checkout(op).await?;
    let result = async {
        let tx = client.transaction().await?;
        let (lock, claim) =
            futures::try_join!(tx.prepare_cached(&lock), tx.prepare_cached(&claim))?;
        let lock_params: [Param<'_>; 1] = [queue];
        let (_, rows) =
            futures::try_join!(tx.execute(&lock, &lock_params), tx.query(&claim, params))?;
        tx.commit().await?;
        Ok(rows)
    }
    .await;
    result.map_err(|e| super::failed(&db.pool, client, e, op))
}

/// `$1` queue, `$2` now.
static QUEUE_PARTITIONS: Sql = Sql(|q| {
    format!(
        "SELECT DISTINCT queue_partition_key FROM {q}.workflow_status \
         WHERE queue_name = $1::text AND queue_partition_key IS NOT NULL \
             AND (status = 'ENQUEUED' OR (status = 'DELAYED' AND delay_until_epoch_ms <= $2::int8))"
    )
});

impl OnPostgres for QueuePartitions {
    /// One read.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<String>> {
        db.query(&QUEUE_PARTITIONS, &[&self.queue_name, &self.now_ms], self)
            .await?
            .iter()
            .map(|row| col(row, 0))
            .collect()
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
