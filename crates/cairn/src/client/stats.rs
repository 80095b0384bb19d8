//! Counts for operators' views: depth, running workflows and recent throughput per queue
//! ([`Client::queue_stats`], for dashboards and `cairn queue list`), a workflow's streams
//! ([`Client::list_streams`]) and the messages sent to it ([`Client::list_messages`]).

use std::collections::BTreeMap;

use serde::ser::SerializeStruct;

use super::Client;
use crate::engine::queue::{Queue, RateLimit};
use crate::engine::runtime::now_ms;
use crate::error::Result;
use crate::store::{self, NULL_TOPIC, stats::THROUGHPUT_MINUTES};

/// What waits, runs and finished on one queue: an entry of [`Client::queue_stats`].
///
/// Serializes (for JSON APIs) with the field names below; `definition` becomes an object
/// with `name`, `concurrency`, `worker_concurrency`, `rate_limit` (`{"limit",
/// "period_ms"}` or null), `priority_enabled`, `partition_queue`, `partition_concurrency`,
/// `partition_worker_concurrency`, `partition_rate_limit` and `polling_interval_ms`.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue's name.
    pub name: String,
    /// Workflows waiting to be dequeued (`ENQUEUED`).
    pub enqueued: u64,
    /// Workflows enqueued with a delay that has not passed (`DELAYED`).
    pub delayed: u64,
    /// Workflows of this queue running now (`PENDING`).
    pub running: u64,
    /// Workflows of this queue that finished (`SUCCESS` or `ERROR`) in each of the last 10
    /// minutes, oldest first; the last entry is the current minute, so far. Minutes are
    /// wall-clock minutes of the completion time.
    pub finished_per_minute: Vec<u64>,
    /// The queue's stored definition (its limits), if it has one in the `queues` table.
    #[serde(serialize_with = "serialize_definition")]
    pub definition: Option<Queue>,
}

impl QueueStats {
    fn empty(name: String) -> Self {
        QueueStats {
            name,
            enqueued: 0,
            delayed: 0,
            running: 0,
            finished_per_minute: vec![0; THROUGHPUT_MINUTES],
            definition: None,
        }
    }
}

impl Client {
    /// One [`QueueStats`] per queue, by name: every queue with a stored definition this
    /// client sees (as [`Client::list_queues`]) and every queue holding an `ENQUEUED`,
    /// `DELAYED` or `PENDING` workflow (DBOS's internal queue included). Two reads, each
    /// answered from the indexes of DBOS's schema, whatever the size of the history. Not a
    /// step inside a workflow (DBOS has no such call): call it from a step if a workflow
    /// needs it.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        let now = now_ms();
        let minute = 60_000;
        let minutes = i64::try_from(THROUGHPUT_MINUTES).unwrap_or(10);
        let since_ms = (now / minute - (minutes - 1)) * minute;
        let counts = self
            .rt
            .store
            .run(store::stats::QueueCounts { since_ms })
            .await?;
        let definitions = self.list_queues().await?;
        let mut stats: BTreeMap<String, QueueStats> = BTreeMap::new();
        for count in counts {
            let n = u64::try_from(count.count).unwrap_or(0);
            let entry = stats
                .entry(count.queue_name.clone())
                .or_insert_with(|| QueueStats::empty(count.queue_name));
            match count.status.as_str() {
                "ENQUEUED" => entry.enqueued += n,
                "PENDING" => entry.running += n,
                "DELAYED" => entry.delayed += n,
                _ => {
                    // A completion stamped later than now (clock skew) counts in this minute.
                    let at = usize::try_from(count.minute.max(0))
                        .unwrap_or(0)
                        .min(THROUGHPUT_MINUTES - 1);
                    entry.finished_per_minute[at] += n;
                }
            }
        }
        for queue in definitions {
            let name = queue.name.clone();
            stats
                .entry(name.clone())
                .or_insert_with(|| QueueStats::empty(name))
                .definition = Some(queue);
        }
        // Finished rows alone do not make a queue: only a definition or unfinished work does.
        stats.retain(|_, s| s.definition.is_some() || s.enqueued + s.delayed + s.running > 0);
        Ok(stats.into_values().collect())
    }
}

/// A rate limit as JSON: `{"limit": n, "period_ms": ms}`.
fn rate_limit_json(limit: Option<RateLimit>) -> serde_json::Value {
    match limit {
        Some(l) => serde_json::json!({
            "limit": l.limit,
            "period_ms": u64::try_from(l.period.as_millis()).unwrap_or(u64::MAX),
        }),
        None => serde_json::Value::Null,
    }
}

/// [`QueueStats::definition`] as a JSON object (see [`QueueStats`]).
fn serialize_definition<S: serde::Serializer>(
    queue: &Option<Queue>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let Some(q) = queue else {
        return serializer.serialize_none();
    };
    let mut s = serializer.serialize_struct("Queue", 10)?;
    s.serialize_field("name", &q.name)?;
    s.serialize_field("concurrency", &q.concurrency)?;
    s.serialize_field("worker_concurrency", &q.worker_concurrency)?;
    s.serialize_field("rate_limit", &rate_limit_json(q.rate_limit))?;
    s.serialize_field("priority_enabled", &q.priority_enabled)?;
    s.serialize_field("partition_queue", &q.partition_queue)?;
    s.serialize_field("partition_concurrency", &q.partition_concurrency)?;
    s.serialize_field(
        "partition_worker_concurrency",
        &q.partition_worker_concurrency,
    )?;
    s.serialize_field(
        "partition_rate_limit",
        &rate_limit_json(q.partition_rate_limit),
    )?;
    s.serialize_field(
        "polling_interval_ms",
        &u64::try_from(q.polling_interval.as_millis()).unwrap_or(u64::MAX),
    )?;
    s.end()
}

/// One stream of a workflow, from [`Client::list_streams`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The stream's key.
    pub key: String,
    /// How many values were written to it (the closing marker not counted).
    pub values: u64,
    /// Whether the workflow closed it.
    pub closed: bool,
}

impl Client {
    /// The streams workflow `workflow_id` wrote, by key, with how many values each holds and
    /// whether it is closed (read the values with [`Client::read_stream`]). A workflow with
    /// none, or no such workflow, gives an empty list. Not a step inside a workflow (DBOS has
    /// no such call).
    pub async fn list_streams(&self, workflow_id: &str) -> Result<Vec<StreamInfo>> {
        let op = store::stats::ListStreams {
            workflow_id: workflow_id.to_owned(),
        };
        Ok(self
            .rt
            .store
            .run(op)
            .await?
            .into_iter()
            .map(|s| StreamInfo {
                key: s.key,
                values: u64::try_from(s.values).unwrap_or(0),
                closed: s.closed,
            })
            .collect())
    }
}

/// One message sent to a workflow, from [`Client::list_messages`].
///
/// Serializes (for JSON APIs) with the field names below.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct MessageInfo {
    /// The message's id (`message_uuid`): `<idempotency key>::<destination>` for a message
    /// sent with an idempotency key, a random id otherwise.
    pub message_id: String,
    /// The topic it was sent on; `None` for a message sent without one.
    pub topic: Option<String>,
    /// The message, decoded to JSON; `None` when Cairn cannot decode it (see
    /// [`MessageInfo::decode_error`]).
    pub value: Option<serde_json::Value>,
    /// Why the message could not be decoded (an unknown `serialization`, text that is not
    /// JSON); `None` when [`MessageInfo::value`] holds it.
    pub decode_error: Option<String>,
    /// When it was sent, in milliseconds since the epoch.
    pub created_at: i64,
    /// Whether the workflow received it (a received message is marked, not deleted).
    pub consumed: bool,
}

impl Client {
    /// Every message sent to workflow `workflow_id`, received or still waiting, oldest first
    /// (messages of the same millisecond in storage order, which for those still waiting is
    /// the order a receive takes them). A message Cairn
    /// cannot decode is listed with no value and a [`MessageInfo::decode_error`]. A workflow
    /// with none, or no such workflow, gives an empty list. One read over DBOS's index on
    /// the messages' destination. Not a step inside a workflow (DBOS has no such call).
    pub async fn list_messages(&self, workflow_id: &str) -> Result<Vec<MessageInfo>> {
        let op = store::stats::ListMessages {
            workflow_id: workflow_id.to_owned(),
        };
        Ok(self
            .rt
            .store
            .run(op)
            .await?
            .into_iter()
            .map(|m| {
                let decoded = crate::serialization::decode::<serde_json::Value>(
                    &m.message.text,
                    m.message.serialization.as_deref(),
                    workflow_id,
                    "notifications.message",
                );
                let (value, decode_error) = match decoded {
                    Ok(value) => (Some(value), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                MessageInfo {
                    message_id: m.message_uuid,
                    topic: m.topic.filter(|t| t != NULL_TOPIC),
                    value,
                    decode_error,
                    created_at: m.created_at_ms,
                    consumed: m.consumed,
                }
            })
            .collect())
    }
}
