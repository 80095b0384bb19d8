//! Operations on many rows at once, on SQLite (see [`crate::store::bulk`]).

use rusqlite::{Connection, params};

use super::{OnSqlite, failed};
use crate::error::Result;
use crate::store::{PORTABLE_JSON, SendMessages};

impl OnSqlite for SendMessages {
    const WRITES: bool = true;

    /// Every destination is checked before anything is inserted, so a missing one leaves the
    /// group transaction untouched.
    fn on_sqlite(&self, conn: &Connection) -> Result<Option<String>> {
        let fail = failed(self);
        let mut exists = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM workflow_status WHERE workflow_uuid = ?1)",
            )
            .map_err(&fail)?;
        for message in &self.messages {
            let found: bool = exists
                .query_row([&message.destination_id], |row| row.get(0))
                .map_err(&fail)?;
            if !found {
                return Ok(Some(message.destination_id.clone()));
            }
        }
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO notifications (destination_uuid, topic, message, message_uuid, \
                 serialization, created_at_epoch_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (message_uuid) DO NOTHING",
            )
            .map_err(&fail)?;
        let now = crate::engine::runtime::now_ms();
        for m in &self.messages {
            insert
                .execute(params![
                    m.destination_id,
                    m.topic,
                    m.message,
                    m.message_uuid,
                    PORTABLE_JSON,
                    now
                ])
                .map_err(&fail)?;
        }
        Ok(None)
    }
}
