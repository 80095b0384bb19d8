//! Queue statistics on SQLite (see [`crate::store::stats`]).

use rusqlite::Connection;

use super::{OnSqlite, failed};
use crate::error::Result;
use crate::store::Stored;
use crate::store::stats::{
    ListMessages, ListStreams, MessageRow, QueueCount, QueueCounts, StreamSummary,
    messages_statement, statement, streams_statement,
};

impl OnSqlite for QueueCounts {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<QueueCount>> {
        conn.prepare_cached(&statement("workflow_status", "?1"))
            .and_then(|mut stmt| {
                stmt.query_map([self.since_ms], |row| {
                    Ok(QueueCount {
                        queue_name: row.get(0)?,
                        status: row.get(1)?,
                        minute: row.get(2)?,
                        count: row.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(failed(self))
    }
}

impl OnSqlite for ListStreams {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<StreamSummary>> {
        conn.prepare_cached(&streams_statement("streams", "?1"))
            .and_then(|mut stmt| {
                stmt.query_map([&self.workflow_id], |row| {
                    Ok(StreamSummary {
                        key: row.get(0)?,
                        values: row.get(1)?,
                        closed: row.get::<_, i64>(2)? != 0,
                    })
                })?
                .collect()
            })
            .map_err(failed(self))
    }
}

impl OnSqlite for ListMessages {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<MessageRow>> {
        conn.prepare_cached(&messages_statement("notifications", "?1", "rowid"))
            .and_then(|mut stmt| {
                stmt.query_map([&self.workflow_id], |row| {
                    Ok(MessageRow {
                        message_uuid: row.get(0)?,
                        topic: row.get(1)?,
                        message: Stored {
                            text: row.get(2)?,
                            serialization: row.get(3)?,
                        },
                        created_at_ms: row.get(4)?,
                        consumed: row.get(5)?,
                    })
                })?
                .collect()
            })
            .map_err(failed(self))
    }
}
