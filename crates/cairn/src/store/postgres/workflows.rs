//! Workflows and their checkpoints: starting a workflow or a child, recording a step,
//! reading checkpoints and rows, completing.

use super::sql::{
    CHECKPOINT_COLUMNS, LIST_CHECKPOINTS, NEW_STATUS_COLUMNS, STEP_GUARD, Sql, WORKFLOW_COLUMNS,
    checkpoint_insert, checkpoint_insert_if, state, workflow_joins,
};
use super::{
    ATTEMPTS, Derived, OnPostgres, Param, PostgresStore, anomaly, checkpoint_at, col, refusal,
    state_at, step_params, workflow_params, workflow_row,
};
use crate::error::Result;
use crate::store::{
    Checkpoint, CompleteWorkflow, GetCheckpoint, GetWorkflow, InsertOutcome, InsertWorkflow,
    ListCheckpoints, RecordOutcome, RecordStep, StartChild, WorkflowRow,
};

/// `workflow_params`' eighteen: inserts the status and input rows, or reads the existing row.
/// Rows: `(ours, name, status)`. `ours` is true when this insert wrote the row, now or in an
/// attempt that committed unseen: the existing row is `PENDING` and owned by this insert's
/// creator (`$13`).
static INSERT_WORKFLOW: Sql = Sql(|q| {
    format!(
        "WITH ins AS ( \
             INSERT INTO {q}.workflow_status ({NEW_STATUS_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13, $14, $15, \
                 'portable_json', 0, $17, $18::text::jsonb) \
             ON CONFLICT (workflow_uuid) DO NOTHING \
             RETURNING workflow_uuid), \
         inp AS ( \
             INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
             SELECT workflow_uuid, $16::text, $8::int8 FROM ins \
             ON CONFLICT (workflow_uuid) DO NOTHING) \
         SELECT true, NULL::text, NULL::text FROM ins \
         UNION ALL \
         SELECT COALESCE(status = 'PENDING' AND owner_xid = $13::text, false), name, status \
         FROM {q}.workflow_status \
         WHERE workflow_uuid = $1 AND NOT EXISTS (SELECT 1 FROM ins)"
    )
});

impl OnPostgres for InsertWorkflow {
    /// One statement: insert status and input, or read the existing row's name and status.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<InsertOutcome> {
        let derived = Derived::of(&self.0);
        let params = workflow_params(&self.0, &derived);
        for _ in 0..ATTEMPTS {
            let rows = db.query(&INSERT_WORKFLOW, &params, self).await?;
            if let Some(row) = rows.first() {
                return if col(row, 0)? {
                    Ok(InsertOutcome::Inserted)
                } else {
                    Ok(InsertOutcome::Existing {
                        name: col(row, 1)?,
                        status: state_at(row, 2)?,
                    })
                };
            }
            // Nothing inserted and nothing visible: a concurrent insert committed after this
            // statement's snapshot was taken. The next statement sees it.
        }
        Err(anomaly(
            self,
            "the workflow row was neither inserted nor found",
        ))
    }
}

/// The checkpoint's `$1`…`$10`, then the child's eighteen as `$11`…`$28`: the parent's
/// checkpoint, and the child's rows only if that checkpoint was written.
/// Row: `(recorded, inserted, child name, child status)`.
static INSERT_CHILD: Sql = Sql(|q| {
    format!(
        "WITH cp AS ({} RETURNING 1), \
         ins AS ( \
             INSERT INTO {q}.workflow_status ({NEW_STATUS_COLUMNS}) \
             SELECT $11::text, $12::text, $13::text, $14::text, $15::text, $16::text, $17::text, \
                 $18::int8, $18::int8, $19::int8, $20::int8, $21::int8, $22::text, $23::text, \
                 $24::text, $25::int8, 'portable_json', 0, $27::text, $28::text::jsonb \
             FROM cp \
             ON CONFLICT (workflow_uuid) DO NOTHING \
             RETURNING workflow_uuid), \
         inp AS ( \
             INSERT INTO {q}.workflow_input (workflow_uuid, inputs, retention_timestamp) \
             SELECT workflow_uuid, $26::text, $18::int8 FROM ins \
             ON CONFLICT (workflow_uuid) DO NOTHING) \
         SELECT EXISTS (SELECT 1 FROM cp), EXISTS (SELECT 1 FROM ins), w.name, w.status \
         FROM (SELECT 1) AS one \
         LEFT JOIN {q}.workflow_status w ON w.workflow_uuid = $11::text",
        checkpoint_insert(q, "$5::text")
    )
});

/// `STEP_STATE`'s three, `$4` child id and `$5` the child's creator: `(…, child name, child
/// status, whether the child is `PENDING` under its creator)`.
static CHILD_STATE: Sql = Sql(|q| {
    state(
        q,
        ", w.name, w.status, COALESCE(w.status = 'PENDING' AND w.owner_xid = $5::text, false)",
        &format!(" LEFT JOIN {q}.workflow_status w ON w.workflow_uuid = $4::text"),
    )
});

/// `$1` workflow: its name and status.
static WORKFLOW_NAME_STATUS: Sql =
    Sql(|q| format!("SELECT name, status FROM {q}.workflow_status WHERE workflow_uuid = $1"));

impl OnPostgres for StartChild {
    /// One statement in the common case: the parent's checkpoint (guarded by ownership) and
    /// the child's rows, the latter only if the former was written. A second query says why
    /// the checkpoint was refused.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<(RecordOutcome, InsertOutcome)> {
        let (parent, child) = (&self.parent, &self.child);
        let derived = Derived::of(child);
        let mut params: Vec<Param<'_>> = Vec::with_capacity(27);
        params.extend(step_params(parent));
        params.extend(workflow_params(child, &derived));
        for _ in 0..ATTEMPTS {
            let row = db.query_row(&INSERT_CHILD, &params, self).await?;
            let (recorded, inserted): (bool, bool) = (col(&row, 0)?, col(&row, 1)?);
            if recorded && inserted {
                return Ok((RecordOutcome::Recorded, InsertOutcome::Inserted));
            }
            if recorded {
                let (mut name, mut status): (Option<String>, _) =
                    (col(&row, 2)?, state_at(&row, 3)?);
                if name.is_none() && status.is_none() {
                    // The child was inserted by a transaction that committed after our snapshot.
                    let rows = db.query(&WORKFLOW_NAME_STATUS, &[&child.id], self).await?;
                    if let Some(row) = rows.first() {
                        (name, status) = (col(row, 0)?, state_at(row, 1)?);
                    }
                }
                return Ok((
                    RecordOutcome::Recorded,
                    InsertOutcome::Existing { name, status },
                ));
            }
            let row = db
                .query_row(
                    &CHILD_STATE,
                    &[
                        &parent.workflow_id,
                        &parent.owner_xid,
                        &parent.function_id,
                        &child.id,
                        &child.creator_xid,
                    ],
                    self,
                )
                .await?;
            match refusal(&row)? {
                // This very start, committed unseen: the checkpoint names this child, which is
                // still `PENDING` under the token this start gave it.
                Some(RecordOutcome::Duplicate(checkpoint))
                    if checkpoint.child_workflow_id.as_deref() == Some(child.id.as_str())
                        && col::<bool>(&row, 12)? =>
                {
                    return Ok((RecordOutcome::Recorded, InsertOutcome::Inserted));
                }
                Some(outcome) => {
                    let existing = InsertOutcome::Existing {
                        name: col(&row, 10)?,
                        status: state_at(&row, 11)?,
                    };
                    return Ok((outcome, existing));
                }
                None => {}
            }
        }
        Err(anomaly(
            self,
            "the parent's checkpoint was neither written nor found",
        ))
    }
}

/// `step_params`' ten: the checkpoint, written only while the workflow is `PENDING` under
/// this owner. One row when written.
pub(super) static RECORD_STEP: Sql = Sql(|q| {
    format!(
        "{} RETURNING 1",
        checkpoint_insert_if(q, "$5::text", STEP_GUARD)
    )
});

impl OnPostgres for RecordStep {
    /// One statement when the checkpoint is written, shared with concurrent steps by the
    /// batcher; a second only to say why it was not.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<RecordOutcome> {
        for attempt in 0..ATTEMPTS {
            let written = if attempt == 0 {
                db.steps.write(self).await?
            } else {
                !db.query(&RECORD_STEP, &step_params(&self.0), self)
                    .await?
                    .is_empty()
            };
            if written {
                return Ok(RecordOutcome::Recorded);
            }
            if let Some(outcome) = db.step_state(&self.0, self).await? {
                return Ok(outcome);
            }
            // Still ours and no checkpoint visible: a race with a concurrent writer that the
            // next statement's snapshot resolves.
        }
        Err(anomaly(
            self,
            "the checkpoint was neither written nor found",
        ))
    }
}

/// `$1` workflow, `$2` function id.
static GET_CHECKPOINT: Sql = Sql(|q| {
    format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM {q}.operation_outputs WHERE workflow_uuid = $1 AND function_id = $2"
    )
});

impl OnPostgres for GetCheckpoint {
    /// One statement, by primary key.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<Checkpoint>> {
        let rows = db
            .query(
                &GET_CHECKPOINT,
                &[&self.workflow_id, &self.function_id],
                self,
            )
            .await?;
        rows.first().map(|row| checkpoint_at(row, 0)).transpose()
    }
}

impl OnPostgres for ListCheckpoints {
    /// One statement, in `function_id` order.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<Checkpoint>> {
        let rows = db
            .query(&LIST_CHECKPOINTS, &[&self.workflow_id], self)
            .await?;
        rows.iter().map(|row| checkpoint_at(row, 0)).collect()
    }
}

/// `$1` workflow, `$2` owner, `$3` status, `$4` output, `$5` error, `$6` now: the guarded
/// status update and the output upsert. A row iff the workflow was completed.
pub(super) static COMPLETE_WORKFLOW: Sql = Sql(|q| {
    format!(
        "WITH upd AS ( \
             UPDATE {q}.workflow_status \
             SET status = $3, owner_xid = NULL, deduplication_id = NULL, updated_at = $6, completed_at = $6 \
             WHERE workflow_uuid = $1 AND status = 'PENDING' AND owner_xid = $2 \
             RETURNING workflow_uuid), \
         out AS ( \
             INSERT INTO {q}.workflow_output (workflow_uuid, output, error, retention_timestamp) \
             SELECT workflow_uuid, $4::text, $5::text, $6::int8 FROM upd \
             ON CONFLICT (workflow_uuid) DO UPDATE SET output = EXCLUDED.output, \
                 error = EXCLUDED.error, retention_timestamp = EXCLUDED.retention_timestamp) \
         SELECT workflow_uuid FROM upd"
    )
});

impl OnPostgres for CompleteWorkflow {
    /// One statement (the guarded status update and the output upsert), shared with
    /// concurrent completions by the batcher.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        db.completions.write(self).await
    }
}

/// `$1` workflow: the status row joined with its input and output rows.
static GET_WORKFLOW: Sql = Sql(|q| {
    format!(
        "SELECT {WORKFLOW_COLUMNS} FROM {q}.workflow_status s {} WHERE s.workflow_uuid = $1",
        workflow_joins(q)
    )
});

impl OnPostgres for GetWorkflow {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<WorkflowRow>> {
        let rows = db.query(&GET_WORKFLOW, &[&self.workflow_id], self).await?;
        rows.first().map(workflow_row).transpose()
    }
}
