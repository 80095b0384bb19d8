//! Queue statistics on Postgres (see [`crate::store::stats`]).

use super::sql::Sql;
use super::{OnPostgres, PostgresStore, col};
use crate::error::Result;
use crate::store::Stored;
use crate::store::stats::{
    ListMessages, ListStreams, MessageRow, QueueCount, QueueCounts, StreamSummary,
    messages_statement, statement, streams_statement,
};

/// `$1` the start of the oldest minute counted.
static QUEUE_COUNTS: Sql = Sql(|q| statement(&format!("{q}.workflow_status"), "$1::int8"));

impl OnPostgres for QueueCounts {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<QueueCount>> {
        let rows = db.query(&QUEUE_COUNTS, &[&self.since_ms], self).await?;
        Ok(rows
            .iter()
            .map(|row| QueueCount {
                queue_name: row.get(0),
                status: row.get(1),
                minute: row.get(2),
                count: row.get(3),
            })
            .collect())
    }
}

/// `$1` the workflow.
static LIST_STREAMS: Sql = Sql(|q| streams_statement(&format!("{q}.streams"), "$1"));

impl OnPostgres for ListStreams {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<StreamSummary>> {
        let rows = db.query(&LIST_STREAMS, &[&self.workflow_id], self).await?;
        Ok(rows
            .iter()
            .map(|row| StreamSummary {
                key: row.get(0),
                values: row.get(1),
                closed: row.get::<_, i64>(2) != 0,
            })
            .collect())
    }
}

/// `$1` the workflow.
static LIST_MESSAGES: Sql =
    Sql(|q| messages_statement(&format!("{q}.notifications"), "$1", "ctid"));

impl OnPostgres for ListMessages {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<MessageRow>> {
        let rows = db.query(&LIST_MESSAGES, &[&self.workflow_id], self).await?;
        rows.iter()
            .map(|row| {
                Ok(MessageRow {
                    message_uuid: col(row, 0)?,
                    topic: col(row, 1)?,
                    message: Stored {
                        text: col(row, 2)?,
                        serialization: col(row, 3)?,
                    },
                    created_at_ms: col(row, 4)?,
                    consumed: col(row, 5)?,
                })
            })
            .collect()
    }
}
