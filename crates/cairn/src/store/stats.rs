//! Counts for operators' views: how many workflows wait, are delayed or run on each queue,
//! and how many finished in each of the last minutes (the read behind
//! [`Client::queue_stats`]); a workflow's streams (behind [`Client::list_streams`]) and the
//! messages sent to it (behind [`Client::list_messages`]).
//!
//! One statement in both backends, each branch answered from an index of DBOS's schema:
//! `idx_workflow_status_in_flight_v2` (`ENQUEUED`/`PENDING`), `idx_workflow_status_delayed`
//! (`DELAYED`) and `idx_workflow_status_completed_at` (finished rows; a completion sets
//! `completed_at` and `updated_at` to the same instant).
//!
//! [`Client::queue_stats`]: crate::Client::queue_stats
//! [`Client::list_streams`]: crate::Client::list_streams
//! [`Client::list_messages`]: crate::Client::list_messages

use super::{Operation, Stored};

/// How many minutes of throughput [`QueueCounts`] reports.
pub(crate) const THROUGHPUT_MINUTES: usize = 10;

/// Per-queue counts of the workflows on a queue, by status, and of those that finished
/// (`SUCCESS` or `ERROR`) in each of the [`THROUGHPUT_MINUTES`] minutes from `since_ms`.
#[derive(Debug, Clone)]
pub(crate) struct QueueCounts {
    /// The start of the oldest minute counted (epoch milliseconds).
    pub since_ms: i64,
}

/// One answer line of [`QueueCounts`]: `status` is `ENQUEUED`, `PENDING`, `DELAYED` (with
/// `minute` 0) or `FINISHED` (with the minute since `since_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueCount {
    pub queue_name: String,
    pub status: String,
    pub minute: i64,
    pub count: i64,
}

impl Operation for QueueCounts {
    type Output = Vec<QueueCount>;
    fn describe(&self) -> String {
        "counting the workflows of each queue".to_owned()
    }
}

/// The statement, over the status table `table`; `{since}` is the placeholder of
/// [`QueueCounts::since_ms`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn statement(table: &str, since: &str) -> String {
    format!(
        "SELECT queue_name, status, CAST(0 AS BIGINT), COUNT(*) FROM {table} \
         WHERE status IN ('ENQUEUED', 'PENDING') AND queue_name IS NOT NULL \
         GROUP BY queue_name, status \
         UNION ALL \
         SELECT queue_name, status, CAST(0 AS BIGINT), COUNT(*) FROM {table} \
         WHERE status = 'DELAYED' AND queue_name IS NOT NULL GROUP BY queue_name, status \
         UNION ALL \
         SELECT queue_name, 'FINISHED', (completed_at - {since}) / 60000, COUNT(*) FROM {table} \
         WHERE completed_at IS NOT NULL AND completed_at >= {since} \
           AND status IN ('SUCCESS', 'ERROR') AND queue_name IS NOT NULL \
         GROUP BY queue_name, (completed_at - {since}) / 60000"
    )
}

/// A workflow's streams, by key: how many values each holds and whether it was closed. One
/// statement over the primary key of `streams`.
#[derive(Debug, Clone)]
pub(crate) struct ListStreams {
    pub workflow_id: String,
}

/// One stream of [`ListStreams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamSummary {
    pub key: String,
    /// Values written, the closing marker not counted.
    pub values: i64,
    pub closed: bool,
}

impl Operation for ListStreams {
    type Output = Vec<StreamSummary>;
    fn describe(&self) -> String {
        format!("listing the streams of workflow {}", self.workflow_id)
    }
}

/// The statement over the streams table `table`; `{workflow}` is the workflow id's
/// placeholder. The closing marker is DBOS's, as JSON (Cairn, DBOS's portable format) or bare.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn streams_statement(table: &str, workflow: &str) -> String {
    let closed = "value IN ('\"__DBOS_STREAM_CLOSED__\"', '__DBOS_STREAM_CLOSED__')";
    format!(
        "SELECT key, CAST(SUM(CASE WHEN {closed} THEN 0 ELSE 1 END) AS BIGINT), \
             CAST(MAX(CASE WHEN {closed} THEN 1 ELSE 0 END) AS BIGINT) \
         FROM {table} WHERE workflow_uuid = {workflow} GROUP BY key ORDER BY key"
    )
}

/// Every message sent to a workflow, consumed or not, oldest first. One statement over
/// `idx_workflow_topic` (`destination_uuid, topic`), whose first column it filters on.
#[derive(Debug, Clone)]
pub(crate) struct ListMessages {
    pub workflow_id: String,
}

/// One message of [`ListMessages`], as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageRow {
    pub message_uuid: String,
    /// As stored: a message sent without a topic has [`super::NULL_TOPIC`].
    pub topic: Option<String>,
    pub message: Stored,
    pub created_at_ms: i64,
    pub consumed: bool,
}

impl Operation for ListMessages {
    type Output = Vec<MessageRow>;
    fn describe(&self) -> String {
        format!("listing the messages of workflow {}", self.workflow_id)
    }
}

/// The statement over the notifications table `table`; `{workflow}` is the workflow id's
/// placeholder, `{position}` the backend's storage position (`rowid`, `ctid`), which orders
/// the waiting messages of one millisecond as a receive does (a consumed row's `ctid` moves).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn messages_statement(table: &str, workflow: &str, position: &str) -> String {
    format!(
        "SELECT message_uuid, topic, message, serialization, created_at_epoch_ms, consumed \
         FROM {table} WHERE destination_uuid = {workflow} \
         ORDER BY created_at_epoch_ms, {position}"
    )
}
