//! Debouncing (DBOS's `Debouncer`): start a workflow once its key has been quiet for a
//! period, with the latest arguments, and never later than an optional maximum wait.
//!
//! Everything lives in the workflow's own queued row, as DBOS stores it, so callers in any
//! process coalesce onto the same workflow:
//!
//! - The key is the row's `deduplication_id`, `<workflow name>-<key>` (so two workflows'
//!   keys never collide), on the debouncer's queue. The row is `DELAYED` with
//!   `is_debounced` set, `delay_until_epoch_ms` the moment it may start, and
//!   `debounce_deadline_epoch_ms` the maximum wait's end.
//! - A call enqueues a `DELAYED` workflow with that deduplication id
//!   ([`DeduplicationPolicy::ReturnExisting`]). When it created the row, it marks it
//!   debounced with the deadline ([`UpdateDelayed`] without inputs). When the key was held,
//!   it bounces the holder: while it is still `DELAYED` (and of this workflow), its inputs
//!   become this call's and its delay `now + period`, capped at the deadline ([`UpdateDelayed`]
//!   guarded by `status = 'DELAYED'`, one atomic write).
//! - The dispatcher promotes a due row to `ENQUEUED` and, for a debounced row, frees its
//!   deduplication id in the same statement (as DBOS): a call after that starts a new
//!   workflow. A holder that left `DELAYED` between the enqueue and the bounce has therefore
//!   freed the key, and the call enqueues again; a holder that still blocks a second attempt
//!   is not a debounced workflow of ours (another workflow's explicit deduplication id):
//!   [`Error::Deduplicated`], as DBOS.
//!
//! Limits: a debounce inside a workflow is refused (it would not be exactly once across
//! replays); a debounced workflow promoted before the call that created it marked it (a
//! period shorter than one round trip, or a crash between the two writes) holds its key until
//! it finishes, like any deduplicated workflow.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::app::Cairn;
use crate::engine::context::WorkflowContext;
use crate::engine::enqueue::{self, DeduplicationPolicy, EnqueueOptions};
use crate::engine::queue::INTERNAL_QUEUE_NAME;
use crate::engine::runtime::{Runtime, now_ms};
use crate::engine::workflow::{Started, WorkflowFn, WorkflowHandle, check_key, registration_of};
use crate::error::{Error, Result};
use crate::serialization;
use crate::store::UpdateDelayed;

/// How a workflow is debounced (DBOS's `Debouncer`): the queue it runs on and the longest
/// it may be put off. Use it with [`Cairn::debounce`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Debouncer {
    /// The queue the debounced workflow is enqueued on. Default: DBOS's internal queue
    /// ([`INTERNAL_QUEUE_NAME`]).
    pub queue: String,
    /// The longest a workflow may be put off after the call that created it, however often
    /// it is bounced. Default: none (each call may put it off by a full period).
    pub max_wait: Option<Duration>,
}

impl Default for Debouncer {
    fn default() -> Self {
        Self {
            queue: INTERNAL_QUEUE_NAME.to_owned(),
            max_wait: None,
        }
    }
}

impl Debouncer {
    /// A debouncer on DBOS's internal queue, without a maximum wait.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set [`Debouncer::queue`] (a [`Queue`](crate::Queue)'s name).
    pub fn with_queue(mut self, queue: impl AsRef<str>) -> Self {
        self.queue = queue.as_ref().to_owned();
        self
    }

    /// Set [`Debouncer::max_wait`].
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Cairn {
    /// Debounce `workflow` under `key`: it starts once no call with this key (for this
    /// workflow) has come for `period`, with the latest call's arguments, and no later than
    /// the debouncer's maximum wait after the first call. Answers a handle to the workflow
    /// the call created or bounced ([`WorkflowHandle::created`] tells which). A call after
    /// the workflow left its delay starts a new one. Works across processes: the state is
    /// the workflow's queued row (see the module `engine::debounce`). Inside a workflow:
    /// [`Error::InvalidArgument`] (not supported).
    pub fn debounce<W, M>(
        &self,
        debouncer: &Debouncer,
        _workflow: W,
        key: &str,
        period: Duration,
        args: W::Args,
    ) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send + use<W, M>
    where
        W: WorkflowFn<M>,
    {
        let rt = Arc::clone(&self.rt);
        let debouncer = debouncer.clone();
        let key = key.to_owned();
        async move {
            if WorkflowContext::current().is_some() {
                return Err(Error::InvalidArgument {
                    argument: "debounce",
                    reason: "debouncing inside a workflow is not supported".to_owned(),
                });
            }
            let registration = registration_of::<W>()?;
            let positional = W::encode_args(&args, registration.name)?;
            let started = debounce(
                &rt,
                &debouncer,
                registration.name,
                &key,
                period,
                &positional,
            )
            .await?;
            Ok(WorkflowHandle::started(rt, started))
        }
    }
}

/// Create or bounce the debounced workflow `name` under `key` (see the module doc).
async fn debounce(
    rt: &Arc<Runtime>,
    debouncer: &Debouncer,
    name: &str,
    key: &str,
    period: Duration,
    args: &[Value],
) -> Result<Started> {
    check_key("debounce key", key)?;
    let deduplication_id = format!("{name}-{key}");
    let inputs = serialization::encode_inputs(args)?;
    // The holder a bounce failed on: failing on it again means it is not ours to bounce.
    let mut refused_by: Option<String> = None;
    loop {
        let workflow_id = uuid::Uuid::new_v4().to_string();
        let first_delay = debouncer.max_wait.map_or(period, |wait| wait.min(period));
        let options = EnqueueOptions::id(workflow_id.clone())
            .with_deduplication_id(deduplication_id.clone())
            .with_deduplication_policy(DeduplicationPolicy::ReturnExisting)
            .with_delay(first_delay);
        let now = now_ms();
        let started = enqueue::enqueue(rt, None, &debouncer.queue, name, args, options).await?;
        if started.created {
            // Mark it debounced, keeping its delay and inputs (a bounce may already have
            // replaced them).
            rt.store
                .run(UpdateDelayed {
                    workflow_id: started.workflow_id.clone(),
                    workflow_name: name.to_owned(),
                    inputs: None,
                    delay_until_epoch_ms: None,
                    debounce_deadline_epoch_ms: debouncer
                        .max_wait
                        .map(|wait| now.saturating_add(millis(wait))),
                    now_ms: now,
                })
                .await?;
            return Ok(started);
        }
        let now = now_ms();
        let bounced = rt
            .store
            .run(UpdateDelayed {
                workflow_id: started.workflow_id.clone(),
                workflow_name: name.to_owned(),
                inputs: Some(inputs.clone()),
                delay_until_epoch_ms: Some(now.saturating_add(millis(period))),
                debounce_deadline_epoch_ms: None,
                now_ms: now,
            })
            .await?;
        if bounced {
            return Ok(started);
        }
        if refused_by.as_deref() == Some(started.workflow_id.as_str()) {
            return Err(Error::Deduplicated {
                workflow_id,
                queue: debouncer.queue.clone(),
                deduplication_id,
                existing: started.workflow_id,
            });
        }
        refused_by = Some(started.workflow_id);
    }
}
