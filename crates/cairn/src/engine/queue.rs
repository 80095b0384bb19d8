//! Queues: named lines of workflows that every worker process serving them takes its share
//! of, under limits that all processes together respect (the system database is the only
//! coordinator). This module holds the definition; enqueueing and dispatch build on it.

use std::time::Duration;

use crate::error::{Error, Result};

/// The queue DBOS puts resumed and forked workflows on. Every process serves it.
pub const INTERNAL_QUEUE_NAME: &str = "_dbos_internal_queue";

/// A rate limit: at most `limit` workflows started per `period` (across all processes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Workflows that may start in any window of `period`.
    pub limit: u32,
    /// The window.
    pub period: Duration,
}

/// A queue's definition, as DBOS 3.4's `Queue(...)` (stored in the `queues` table).
///
/// ```
/// use std::time::Duration;
/// let orders = cairn::Queue::new("orders")
///     .concurrency(10)
///     .worker_concurrency(2)
///     .rate_limit(50, Duration::from_secs(1));
/// # let _ = orders;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Queue {
    /// The queue's name (`workflow_status.queue_name`).
    pub name: String,
    /// The most workflows of this queue running at once across all processes. Default: no
    /// limit.
    pub concurrency: Option<u32>,
    /// The most workflows of this queue running at once in one process. Default: no limit.
    pub worker_concurrency: Option<u32>,
    /// The most workflows started per period across all processes. Default: none.
    pub rate_limit: Option<RateLimit>,
    /// Whether enqueue priorities are honoured (lower runs first). Default: false (first
    /// in, first out).
    pub priority_enabled: bool,
    /// Whether the queue is partitioned by each workflow's partition key, the limits below
    /// applying per partition. Default: false.
    pub partition_queue: bool,
    /// Per-partition global concurrency. Default: no limit.
    pub partition_concurrency: Option<u32>,
    /// Per-partition, per-process concurrency. Default: no limit.
    pub partition_worker_concurrency: Option<u32>,
    /// Per-partition rate limit. Default: none.
    pub partition_rate_limit: Option<RateLimit>,
    /// How often the queue is checked when nothing wakes its dispatcher (an enqueue or a
    /// completion in this process, or a notification from another). Default: 1 s (DBOS's).
    pub polling_interval: Duration,
}

impl Queue {
    /// A queue named `name` with DBOS's defaults: no limits, FIFO, not partitioned, polled
    /// every second as a fallback.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            concurrency: None,
            worker_concurrency: None,
            rate_limit: None,
            priority_enabled: false,
            partition_queue: false,
            partition_concurrency: None,
            partition_worker_concurrency: None,
            partition_rate_limit: None,
            polling_interval: Duration::from_secs(1),
        }
    }

    /// Set [`Queue::concurrency`].
    pub fn concurrency(mut self, limit: u32) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// Set [`Queue::worker_concurrency`].
    pub fn worker_concurrency(mut self, limit: u32) -> Self {
        self.worker_concurrency = Some(limit);
        self
    }

    /// Set [`Queue::rate_limit`]: at most `limit` starts per `period`.
    pub fn rate_limit(mut self, limit: u32, period: Duration) -> Self {
        self.rate_limit = Some(RateLimit { limit, period });
        self
    }

    /// Set [`Queue::priority_enabled`].
    pub fn priority_enabled(mut self, enabled: bool) -> Self {
        self.priority_enabled = enabled;
        self
    }

    /// Set [`Queue::partition_queue`].
    pub fn partition_queue(mut self, partitioned: bool) -> Self {
        self.partition_queue = partitioned;
        self
    }

    /// Set [`Queue::partition_concurrency`].
    pub fn partition_concurrency(mut self, limit: u32) -> Self {
        self.partition_concurrency = Some(limit);
        self
    }

    /// Set [`Queue::partition_worker_concurrency`].
    pub fn partition_worker_concurrency(mut self, limit: u32) -> Self {
        self.partition_worker_concurrency = Some(limit);
        self
    }

    /// Set [`Queue::partition_rate_limit`].
    pub fn partition_rate_limit(mut self, limit: u32, period: Duration) -> Self {
        self.partition_rate_limit = Some(RateLimit { limit, period });
        self
    }

    /// Set [`Queue::polling_interval`].
    pub fn polling_interval(mut self, interval: Duration) -> Self {
        self.polling_interval = interval;
        self
    }
}

/// Names starting with this belong to DBOS's own queues; an application cannot define one.
pub const RESERVED_QUEUE_PREFIX: &str = "_dbos_";

impl Queue {
    /// Whether workflows of this queue carry a partition key: [`Queue::partition_queue`], or
    /// any per-partition limit (as DBOS 3.4 derives it).
    pub fn is_partitioned(&self) -> bool {
        self.partition_queue
            || self.partition_concurrency.is_some()
            || self.partition_worker_concurrency.is_some()
            || self.partition_rate_limit.is_some()
    }

    /// Refuse a definition DBOS would refuse: an empty or reserved name, a zero limit, or a
    /// per-process (or per-partition) limit above the limit it refines.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| {
            Err(Error::InvalidArgument {
                argument: "queue",
                reason: format!("queue `{}`: {reason}", self.name),
            })
        };
        crate::engine::workflow::check_key("queue", &self.name)?;
        if self.name.starts_with(RESERVED_QUEUE_PREFIX) {
            return invalid(format!(
                "names starting with `{RESERVED_QUEUE_PREFIX}` belong to DBOS's internal queues"
            ));
        }
        let limits = [
            ("concurrency", self.concurrency),
            ("worker_concurrency", self.worker_concurrency),
            ("partition_concurrency", self.partition_concurrency),
            (
                "partition_worker_concurrency",
                self.partition_worker_concurrency,
            ),
            ("rate limit", self.rate_limit.map(|r| r.limit)),
            (
                "partition rate limit",
                self.partition_rate_limit.map(|r| r.limit),
            ),
        ];
        for (what, limit) in limits {
            if limit == Some(0) {
                return invalid(format!("{what} must be at least 1"));
            }
        }
        let refinements = [
            (
                "worker_concurrency",
                self.worker_concurrency,
                "concurrency",
                self.concurrency,
            ),
            (
                "partition_concurrency",
                self.partition_concurrency,
                "concurrency",
                self.concurrency,
            ),
            (
                "partition_worker_concurrency",
                self.partition_worker_concurrency,
                "partition_concurrency",
                self.partition_concurrency,
            ),
            (
                "partition_worker_concurrency",
                self.partition_worker_concurrency,
                "worker_concurrency",
                self.worker_concurrency,
            ),
        ];
        for (inner, inner_limit, outer, outer_limit) in refinements {
            if let (Some(i), Some(o)) = (inner_limit, outer_limit)
                && i > o
            {
                return invalid(format!("{inner} ({i}) must not exceed {outer} ({o})"));
            }
        }
        for period in [self.rate_limit, self.partition_rate_limit]
            .into_iter()
            .flatten()
            .map(|r| r.period)
            .chain([self.polling_interval])
        {
            if period.is_zero() {
                return invalid(
                    "rate limit periods and the polling interval must be positive".to_owned(),
                );
            }
        }
        Ok(())
    }
}

/// A queue definition as the `queues` table stores it (DBOS's columns and units).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueRow {
    pub name: String,
    pub concurrency: Option<i32>,
    pub worker_concurrency: Option<i32>,
    pub rate_limit_max: Option<i32>,
    pub rate_limit_period_sec: Option<f64>,
    pub priority_enabled: bool,
    pub partition_queue: bool,
    pub polling_interval_sec: f64,
    pub partition_concurrency: Option<i32>,
    pub partition_worker_concurrency: Option<i32>,
    pub partition_rate_limit_max: Option<i32>,
    pub partition_rate_limit_period_sec: Option<f64>,
}

/// A limit as an `integer` column (limits over `i32::MAX` are as good as none).
fn int(limit: Option<u32>) -> Option<i32> {
    limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX))
}

/// An `integer` column as a limit (a negative value, which DBOS never writes, as 0).
fn limit(column: Option<i32>) -> Option<u32> {
    column.map(|c| u32::try_from(c).unwrap_or(0))
}

/// Seconds as a duration (a negative or non-finite value, which DBOS never writes, as 0).
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

fn rate(max: Option<i32>, period: Option<f64>) -> Option<RateLimit> {
    Some(RateLimit {
        limit: limit(max)?,
        period: seconds(period.unwrap_or(0.0)),
    })
}

impl QueueRow {
    /// The row DBOS 3.4 writes for `queue`: `priority_enabled` always true (every queue
    /// honours priorities), `partition_queue` derived.
    pub(crate) fn of(queue: &Queue) -> Self {
        Self {
            name: queue.name.clone(),
            concurrency: int(queue.concurrency),
            worker_concurrency: int(queue.worker_concurrency),
            rate_limit_max: int(queue.rate_limit.map(|r| r.limit)),
            rate_limit_period_sec: queue.rate_limit.map(|r| r.period.as_secs_f64()),
            priority_enabled: true,
            partition_queue: queue.is_partitioned(),
            polling_interval_sec: queue.polling_interval.as_secs_f64(),
            partition_concurrency: int(queue.partition_concurrency),
            partition_worker_concurrency: int(queue.partition_worker_concurrency),
            partition_rate_limit_max: int(queue.partition_rate_limit.map(|r| r.limit)),
            partition_rate_limit_period_sec: queue
                .partition_rate_limit
                .map(|r| r.period.as_secs_f64()),
        }
    }

    /// The definition this row stores.
    pub(crate) fn into_queue(self) -> Queue {
        Queue {
            concurrency: limit(self.concurrency),
            worker_concurrency: limit(self.worker_concurrency),
            rate_limit: rate(self.rate_limit_max, self.rate_limit_period_sec),
            priority_enabled: self.priority_enabled,
            partition_queue: self.partition_queue,
            partition_concurrency: limit(self.partition_concurrency),
            partition_worker_concurrency: limit(self.partition_worker_concurrency),
            partition_rate_limit: rate(
                self.partition_rate_limit_max,
                self.partition_rate_limit_period_sec,
            ),
            polling_interval: seconds(self.polling_interval_sec),
            name: self.name,
        }
    }
}

/// The `queues` columns [`QueueRow`] reads, in its field order.
pub(crate) const QUEUE_COLUMNS: &str = "name, concurrency, worker_concurrency, rate_limit_max, \
     rate_limit_period_sec, priority_enabled, partition_queue, polling_interval_sec, \
     partition_concurrency, partition_worker_concurrency, partition_rate_limit_max, \
     partition_rate_limit_period_sec";

/// The error for a queue name another application registered (DBOS raises it too).
pub(crate) fn owned_elsewhere(name: &str, owner: &str, ours: &str) -> Error {
    Error::InvalidArgument {
        argument: "queue",
        reason: format!(
            "queue `{name}` is already registered by application `{owner}` in this system \
             database; queue names are unique across the applications sharing it: give \
             `{ours}`'s queue another name"
        ),
    }
}

/// A queue stands for its name wherever a queue is asked for (`app.enqueue(&orders, ..)`).
impl AsRef<str> for Queue {
    fn as_ref(&self) -> &str {
        &self.name
    }
}
