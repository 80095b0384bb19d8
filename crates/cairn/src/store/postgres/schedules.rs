//! Schedules on Postgres: the rows of `workflow_schedules`, as DBOS 3.4 writes them. Each
//! operation is one autocommit statement.

use tokio_postgres::Row;

use super::sql::Sql;
use super::{OnPostgres, PostgresStore, col};
use crate::error::Result;
use crate::store::{
    CreateSchedule, DeleteSchedule, GetSchedule, InsertOutcome, InsertTick, InsertWorkflow,
    ListSchedules, ScheduleRow, SetLastFired, SetScheduleStatus,
};

/// The columns of a [`ScheduleRow`], in its field order.
const COLUMNS: &str = "schedule_id, schedule_name, workflow_name, workflow_class_name, schedule, \
     status, context, last_fired_at, automatic_backfill, cron_timezone, queue_name, application_name";

fn schedule_row(row: &Row) -> Result<ScheduleRow> {
    Ok(ScheduleRow {
        schedule_id: col(row, 0)?,
        schedule_name: col(row, 1)?,
        workflow_name: col(row, 2)?,
        workflow_class_name: col(row, 3)?,
        schedule: col(row, 4)?,
        status: col(row, 5)?,
        context: col(row, 6)?,
        last_fired_at: col(row, 7)?,
        automatic_backfill: col(row, 8)?,
        cron_timezone: col(row, 9)?,
        queue_name: col(row, 10)?,
        application_name: col(row, 11)?,
    })
}

/// `$1`…`$12` the row's columns; answers the row's `schedule_id` when it was written.
static INSERT_SCHEDULE: Sql = Sql(|q| {
    format!(
        "INSERT INTO {q}.workflow_schedules ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (schedule_name) DO NOTHING RETURNING schedule_id"
    )
});

/// As [`INSERT_SCHEDULE`], replacing an existing schedule's definition (DBOS's upsert).
static UPSERT_SCHEDULE: Sql = Sql(|q| {
    format!(
        "INSERT INTO {q}.workflow_schedules AS s ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (schedule_name) DO UPDATE SET workflow_name = excluded.workflow_name, \
         workflow_class_name = excluded.workflow_class_name, schedule = excluded.schedule, \
         context = excluded.context, automatic_backfill = excluded.automatic_backfill, \
         cron_timezone = excluded.cron_timezone, queue_name = excluded.queue_name, \
         application_name = COALESCE(s.application_name, excluded.application_name) \
         RETURNING schedule_id"
    )
});

/// `$1` name: the schedule's id.
static SCHEDULE_ID: Sql =
    Sql(|q| format!("SELECT schedule_id FROM {q}.workflow_schedules WHERE schedule_name = $1"));

impl OnPostgres for CreateSchedule {
    /// One statement; a second reads the existing row's id when nothing was written.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        let r = &self.row;
        let sql = if self.replace_definition {
            &UPSERT_SCHEDULE
        } else {
            &INSERT_SCHEDULE
        };
        let rows = db
            .query(
                sql,
                &[
                    &r.schedule_id,
                    &r.schedule_name,
                    &r.workflow_name,
                    &r.workflow_class_name,
                    &r.schedule,
                    &r.status,
                    &r.context,
                    &r.last_fired_at,
                    &r.automatic_backfill,
                    &r.cron_timezone,
                    &r.queue_name,
                    &r.application_name,
                ],
                self,
            )
            .await?;
        if !rows.is_empty() {
            return Ok(true);
        }
        // Not inserted: this very insert, committed unseen, or another schedule's name.
        let existing = db.query(&SCHEDULE_ID, &[&r.schedule_name], self).await?;
        match existing.first() {
            Some(row) => Ok(col::<String>(row, 0)? == r.schedule_id),
            None => Ok(false),
        }
    }
}

/// `$1` application (NULL: all): its schedules and the unowned ones, by name.
static LIST_SCHEDULES: Sql = Sql(|q| {
    format!(
        "SELECT {COLUMNS} FROM {q}.workflow_schedules \
         WHERE $1::text IS NULL OR application_name = $1 OR application_name IS NULL \
         ORDER BY schedule_name"
    )
});

impl OnPostgres for ListSchedules {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<ScheduleRow>> {
        let rows = db
            .query(&LIST_SCHEDULES, &[&self.application_name], self)
            .await?;
        rows.iter().map(schedule_row).collect()
    }
}

/// `$1` name.
static GET_SCHEDULE: Sql =
    Sql(|q| format!("SELECT {COLUMNS} FROM {q}.workflow_schedules WHERE schedule_name = $1"));

impl OnPostgres for GetSchedule {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<ScheduleRow>> {
        let rows = db
            .query(&GET_SCHEDULE, &[&self.schedule_name], self)
            .await?;
        rows.first().map(schedule_row).transpose()
    }
}

/// `$1` name, `$2` status.
static SET_SCHEDULE_STATUS: Sql = Sql(|q| {
    format!("UPDATE {q}.workflow_schedules SET status = $2 WHERE schedule_name = $1 RETURNING 1")
});

impl OnPostgres for SetScheduleStatus {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        let rows = db
            .query(
                &SET_SCHEDULE_STATUS,
                &[&self.schedule_name, &self.status],
                self,
            )
            .await?;
        Ok(!rows.is_empty())
    }
}

/// `$1` name.
static DELETE_SCHEDULE: Sql =
    Sql(|q| format!("DELETE FROM {q}.workflow_schedules WHERE schedule_name = $1 RETURNING 1"));

impl OnPostgres for DeleteSchedule {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<bool> {
        let rows = db
            .query(&DELETE_SCHEDULE, &[&self.schedule_name], self)
            .await?;
        Ok(!rows.is_empty())
    }
}

/// `$1` name, `$2` time.
static SET_LAST_FIRED: Sql = Sql(|q| {
    format!("UPDATE {q}.workflow_schedules SET last_fired_at = $2 WHERE schedule_name = $1")
});

impl OnPostgres for SetLastFired {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<()> {
        db.query(
            &SET_LAST_FIRED,
            &[&self.schedule_name, &self.last_fired_at],
            self,
        )
        .await
        .map(drop)
    }
}

/// `$1` workflow, `$2` schedule.
static TAG_TICK: Sql = Sql(|q| {
    format!(
        "UPDATE {q}.workflow_status SET schedule_name = $2 \
         WHERE workflow_uuid = $1 AND schedule_name IS NULL"
    )
});

impl OnPostgres for InsertTick {
    /// The insert's statement, then one more (idempotent, so not in one transaction).
    async fn on_postgres(&self, db: &PostgresStore) -> Result<InsertOutcome> {
        let outcome = InsertWorkflow(self.workflow.clone())
            .on_postgres(db)
            .await?;
        db.query(&TAG_TICK, &[&self.workflow.id, &self.schedule_name], self)
            .await?;
        Ok(outcome)
    }
}
