//! Queue statistics on Postgres (see [`crate::store::stats`]).

use super::sql::Sql;
use super::{OnPostgres, PostgresStore};
use crate::error::Result;
use crate::store::stats::{
    ListStreams, QueueCount, QueueCounts, StreamSummary, statement, streams_statement,
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
