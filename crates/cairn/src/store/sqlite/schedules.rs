//! Schedules on SQLite: the rows of `workflow_schedules`, as DBOS 3.4 writes them.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{OnSqlite, failed};
use crate::error::Result;
use crate::store::{
    CreateSchedule, DeleteSchedule, GetSchedule, InsertOutcome, InsertTick, InsertWorkflow,
    ListSchedules, ScheduleRow, SetLastFired, SetScheduleStatus,
};

/// The columns of a [`ScheduleRow`], in its field order.
const COLUMNS: &str = "schedule_id, schedule_name, workflow_name, workflow_class_name, schedule, \
     status, context, last_fired_at, automatic_backfill, cron_timezone, queue_name, application_name";

fn schedule_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        schedule_id: row.get(0)?,
        schedule_name: row.get(1)?,
        workflow_name: row.get(2)?,
        workflow_class_name: row.get(3)?,
        schedule: row.get(4)?,
        status: row.get(5)?,
        context: row.get(6)?,
        last_fired_at: row.get(7)?,
        automatic_backfill: row.get(8)?,
        cron_timezone: row.get(9)?,
        queue_name: row.get(10)?,
        application_name: row.get(11)?,
    })
}

impl OnSqlite for CreateSchedule {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        let fail = failed(self);
        let r = &self.row;
        let conflict = if self.replace_definition {
            "ON CONFLICT (schedule_name) DO UPDATE SET workflow_name = excluded.workflow_name, \
             workflow_class_name = excluded.workflow_class_name, schedule = excluded.schedule, \
             context = excluded.context, automatic_backfill = excluded.automatic_backfill, \
             cron_timezone = excluded.cron_timezone, queue_name = excluded.queue_name, \
             application_name = COALESCE(workflow_schedules.application_name, excluded.application_name)"
        } else {
            "ON CONFLICT (schedule_name) DO NOTHING"
        };
        let sql = format!(
            "INSERT INTO workflow_schedules ({COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) {conflict}"
        );
        let changed = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    r.schedule_id,
                    r.schedule_name,
                    r.workflow_name,
                    r.workflow_class_name,
                    r.schedule,
                    r.status,
                    r.context,
                    r.last_fired_at,
                    r.automatic_backfill,
                    r.cron_timezone,
                    r.queue_name,
                    r.application_name,
                ])
            })
            .map_err(&fail)?;
        if changed > 0 {
            return Ok(true);
        }
        // Not inserted: this very insert, committed unseen, or another schedule's name.
        let existing: Option<String> = conn
            .prepare_cached("SELECT schedule_id FROM workflow_schedules WHERE schedule_name = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([&r.schedule_name], |row| row.get(0))
                    .optional()
            })
            .map_err(&fail)?;
        Ok(existing.as_deref() == Some(r.schedule_id.as_str()))
    }
}

impl OnSqlite for ListSchedules {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<ScheduleRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM workflow_schedules \
             WHERE ?1 IS NULL OR application_name = ?1 OR application_name IS NULL \
             ORDER BY schedule_name"
        );
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map([&self.application_name], schedule_row)?
                    .collect()
            })
            .map_err(failed(self))
    }
}

impl OnSqlite for GetSchedule {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Option<ScheduleRow>> {
        let sql = format!("SELECT {COLUMNS} FROM workflow_schedules WHERE schedule_name = ?1");
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row([&self.schedule_name], schedule_row)
                    .optional()
            })
            .map_err(failed(self))
    }
}

impl OnSqlite for SetScheduleStatus {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        conn.prepare_cached("UPDATE workflow_schedules SET status = ?2 WHERE schedule_name = ?1")
            .and_then(|mut stmt| stmt.execute([&self.schedule_name, &self.status]))
            .map(|n| n > 0)
            .map_err(failed(self))
    }
}

impl OnSqlite for DeleteSchedule {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<bool> {
        conn.prepare_cached("DELETE FROM workflow_schedules WHERE schedule_name = ?1")
            .and_then(|mut stmt| stmt.execute([&self.schedule_name]))
            .map(|n| n > 0)
            .map_err(failed(self))
    }
}

impl OnSqlite for SetLastFired {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<()> {
        conn.prepare_cached(
            "UPDATE workflow_schedules SET last_fired_at = ?2 WHERE schedule_name = ?1",
        )
        .and_then(|mut stmt| stmt.execute([&self.schedule_name, &self.last_fired_at]))
        .map(drop)
        .map_err(failed(self))
    }
}

impl OnSqlite for InsertTick {
    const WRITES: bool = true;

    /// Both writes in the writer's transaction.
    fn on_sqlite(&self, conn: &Connection) -> Result<InsertOutcome> {
        let outcome = InsertWorkflow(self.workflow.clone()).on_sqlite(conn)?;
        conn.prepare_cached(
            "UPDATE workflow_status SET schedule_name = ?2 \
             WHERE workflow_uuid = ?1 AND schedule_name IS NULL",
        )
        .and_then(|mut stmt| stmt.execute([&self.workflow.id, &self.schedule_name]))
        .map_err(failed(self))?;
        Ok(outcome)
    }
}
