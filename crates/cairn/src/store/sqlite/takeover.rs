//! Takeover on SQLite: the executors with pending workflows, and claiming a dead one's
//! (its lock file is held by [`Store::take_over`](crate::store::Store::take_over) meanwhile).

use rusqlite::{Connection, params};

use super::ops::load_all_reclaimed;
use super::{OnSqlite, failed};
use crate::error::Result;
use crate::store::{PendingExecutors, Reclaimed, TakeOverPending};

impl OnSqlite for PendingExecutors {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<String>> {
        conn.prepare_cached(
            "SELECT DISTINCT executor_id FROM workflow_status \
             WHERE status = 'PENDING' AND application_version = ?1 \
             AND (?2 IS NULL OR application_name = ?2 OR application_name IS NULL) \
             AND executor_id IS NOT NULL AND executor_id <> ?3 \
             ORDER BY executor_id",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![self.app_version, self.application_name, self.except],
                |row| row.get(0),
            )?
            .collect()
        })
        .map_err(failed(self))
    }
}

impl OnSqlite for TakeOverPending {
    const WRITES: bool = true;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<Reclaimed>> {
        let fail = failed(self);
        let ids: Vec<String> = conn
            .prepare_cached(
                "UPDATE workflow_status SET owner_xid = ?1, executor_id = ?2, updated_at = ?3, \
                 recovery_attempts = recovery_attempts + CASE WHEN owner_xid = ?1 THEN 0 ELSE 1 END \
                 WHERE status = 'PENDING' AND application_version = ?4 \
                 AND (?5 IS NULL OR application_name = ?5 OR application_name IS NULL) \
                 AND (executor_id = ?6 OR (executor_id = ?2 AND owner_xid = ?1)) \
                 RETURNING workflow_uuid",
            )
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![
                        self.new_owner,
                        self.to,
                        self.now_ms,
                        self.app_version,
                        self.application_name,
                        self.from
                    ],
                    |row| row.get(0),
                )?
                .collect()
            })
            .map_err(&fail)?;
        load_all_reclaimed(conn, ids).map_err(&fail)
    }
}
