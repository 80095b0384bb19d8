//! Enqueueing workflows: the options, their validation, and the insert (alone, or as the
//! enqueuing workflow's operation, exactly once across its replays).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::engine::context::{WorkflowContext, halting};
use crate::engine::runtime::{Runtime, now_ms};
use crate::engine::workflow::{
    Started, WorkflowFn, WorkflowHandle, check_key, new_workflow_attributes, registration_of,
};
use crate::error::{Error, Result};
use crate::serialization;
use crate::status::WorkflowState;
use crate::store::{EnqueueOutcome, EnqueueWorkflow, NewWorkflow, QueuedFields, RecordStep};

/// The highest priority value DBOS accepts (`2^31 - 1`); the lowest is 1.
pub const MAX_PRIORITY: u32 = i32::MAX as u32;

/// What an enqueue does when another unfinished workflow of the queue already holds its
/// deduplication id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeduplicationPolicy {
    /// Fail with [`Error::Deduplicated`] (as DBOS). The default.
    #[default]
    Reject,
    /// Return a handle to the workflow holding the id; nothing new is enqueued.
    ReturnExisting,
}

/// Options of [`Client::enqueue_with`](crate::Client::enqueue_with) (DBOS's `SetEnqueueOptions`
/// and `SetWorkflowID` / `SetWorkflowTimeout`). Every field defaults to none.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// The workflow's id, an idempotency key as for a start. Default: a new time-ordered UUID (v7; inside
    /// a workflow, `<parent id>-<operation id>`).
    pub workflow_id: Option<String>,
    /// Priority, 1 (first) to [`MAX_PRIORITY`]; workflows without one (stored as 0) come
    /// before any with one. Default: none.
    pub priority: Option<u32>,
    /// At most one unfinished workflow of the queue carries this id. Default: none.
    pub deduplication_id: Option<String>,
    /// What happens when the deduplication id is taken. Default: [`DeduplicationPolicy::Reject`].
    pub deduplication_policy: DeduplicationPolicy,
    /// The partition this workflow belongs to: required on a partitioned queue, refused on
    /// another (when this process defines the queue). Default: none.
    pub partition_key: Option<String>,
    /// Keep the workflow `DELAYED` this long before it may be dequeued. Default: none.
    pub delay: Option<Duration>,
    /// Cancel the workflow if it has not finished this long after it is dequeued (the
    /// deadline is set when it starts). Default: none.
    pub timeout: Option<Duration>,
    /// The application version that may run it. Default: this process's.
    pub app_version: Option<String>,
    /// Custom attributes recorded with the workflow (DBOS's `attributes`), a JSON object; see
    /// [`StartOptions::attributes`](crate::StartOptions::attributes). Default: none.
    pub attributes: Option<Value>,
}

impl EnqueueOptions {
    /// Options with a caller-chosen workflow id.
    pub fn id(workflow_id: impl Into<String>) -> Self {
        Self::default().with_id(workflow_id)
    }

    /// Set [`EnqueueOptions::workflow_id`].
    pub fn with_id(mut self, workflow_id: impl Into<String>) -> Self {
        self.workflow_id = Some(workflow_id.into());
        self
    }

    /// Set [`EnqueueOptions::priority`].
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Set [`EnqueueOptions::deduplication_id`] (with the default policy, reject).
    pub fn with_deduplication_id(mut self, id: impl Into<String>) -> Self {
        self.deduplication_id = Some(id.into());
        self
    }

    /// Set [`EnqueueOptions::deduplication_policy`].
    pub fn with_deduplication_policy(mut self, policy: DeduplicationPolicy) -> Self {
        self.deduplication_policy = policy;
        self
    }

    /// Set [`EnqueueOptions::partition_key`].
    pub fn with_partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Set [`EnqueueOptions::delay`].
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Set [`EnqueueOptions::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Set [`EnqueueOptions::app_version`].
    pub fn with_app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }

    /// Set [`EnqueueOptions::attributes`] (a JSON object).
    pub fn with_attributes(mut self, attributes: Value) -> Self {
        self.attributes = Some(attributes);
        self
    }
}

/// Refuse what DBOS refuses before writing anything.
fn validate(rt: &Runtime, queue: &str, options: &EnqueueOptions) -> Result<()> {
    check_key("queue", queue)?;
    if let Some(priority) = options.priority
        && !(1..=MAX_PRIORITY).contains(&priority)
    {
        return Err(Error::InvalidArgument {
            argument: "priority",
            reason: format!("is {priority}; it must be between 1 and {MAX_PRIORITY}"),
        });
    }
    if let Some(id) = &options.deduplication_id {
        check_key("deduplication_id", id)?;
    }
    if let Some(key) = &options.partition_key {
        check_key("partition_key", key)?;
    }
    if let Some(version) = &options.app_version {
        check_key("app_version", version)?;
    }
    // A queue this process does not define may be served elsewhere: only its name is checked.
    if let Some(defined) = rt.queue(queue) {
        match (defined.is_partitioned(), options.partition_key.is_some()) {
            (true, false) => {
                return Err(Error::InvalidArgument {
                    argument: "partition_key",
                    reason: format!("queue `{queue}` is partitioned: every enqueue needs a key"),
                });
            }
            (false, true) => {
                return Err(Error::InvalidArgument {
                    argument: "partition_key",
                    reason: format!("queue `{queue}` is not partitioned"),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// `Some` unless empty (a client's runtime has no application version, perhaps no name).
fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Enqueue workflow `name` with these positional arguments on `queue`, and answer its id.
/// With `parent` (the enqueuing workflow and the operation id taken at call time) the
/// enqueue is that workflow's operation: its row and the parent's checkpoint commit
/// together, and a replay answers the recorded id without enqueueing again.
pub(crate) async fn enqueue(
    rt: &Arc<Runtime>,
    parent: Option<(Arc<WorkflowContext>, i32)>,
    queue: &str,
    name: &str,
    args: &[Value],
    options: EnqueueOptions,
) -> Result<Started> {
    if rt.is_shutting_down() {
        return Err(Error::Shutdown);
    }
    validate(rt, queue, &options)?;
    if let Some((ctx, function_id)) = &parent {
        ctx.check_running()?;
        if let Some(checkpoint) = ctx.recorded(*function_id) {
            ctx.check_name(checkpoint, name)?;
            return replayed(ctx, checkpoint).map(Started::existing);
        }
    }
    let workflow_id = match (&options.workflow_id, &parent) {
        (Some(id), _) => {
            check_key("workflow_id", id)?;
            id.clone()
        }
        (None, Some((ctx, function_id))) => format!("{}-{function_id}", ctx.workflow_id),
        (None, None) => super::runtime::new_id(),
    };
    let now = now_ms();
    let delay_until = options.delay.map(|d| now.saturating_add(millis(d)));
    let workflow = NewWorkflow {
        id: workflow_id.clone(),
        name: name.to_owned(),
        status: if delay_until.is_some() {
            WorkflowState::Delayed
        } else {
            WorkflowState::Enqueued
        },
        queue_name: Some(queue.to_owned()),
        executor_id: rt.executor_id.clone(),
        // A client has neither: any worker of the queue may run what it enqueues (as DBOS).
        app_version: options
            .app_version
            .clone()
            .or_else(|| non_empty(&rt.app_version)),
        application_name: non_empty(&rt.app_name),
        inputs: serialization::encode_inputs(args)?,
        creator_xid: uuid::Uuid::new_v4().to_string(),
        parent_workflow_id: parent.as_ref().map(|(ctx, _)| ctx.workflow_id.clone()),
        // The deadline starts when the workflow is dequeued.
        timeout_ms: options.timeout.map(millis),
        deadline_epoch_ms: None,
        config_name: None,
        now_ms: now,
        attributes: new_workflow_attributes(options.attributes.as_ref())?,
    };
    let record = parent.as_ref().map(|(ctx, function_id)| {
        let mut record = ctx.step_record(*function_id, name, now);
        record.child_workflow_id = Some(workflow_id.clone());
        record
    });
    let op = EnqueueWorkflow {
        workflow,
        queued: QueuedFields {
            deduplication_id: options.deduplication_id.clone(),
            priority: options
                .priority
                .map_or(0, |p| i32::try_from(p).unwrap_or(i32::MAX)),
            partition_key: options.partition_key.clone(),
            delay_until_epoch_ms: delay_until,
        },
        parent: record.clone(),
    };
    let outcome = match (&parent, rt.store.run(op).await) {
        (_, Ok(outcome)) => outcome,
        (Some((ctx, _)), Err(error)) => return Err(ctx.stop_on(error)),
        (None, Err(error)) => return Err(error),
    };
    // What the parent records when nothing new was enqueued: the id it gets, or the error.
    let (answer, mut record) = match outcome {
        EnqueueOutcome::Enqueued => {
            rt.wake_dispatcher();
            return Ok(Started {
                workflow_id,
                created: true,
            });
        }
        EnqueueOutcome::Refused(refused) => {
            let Some((ctx, _)) = &parent else {
                return Err(Error::database(
                    format!("enqueueing workflow {workflow_id}"),
                    std::io::Error::other("a parent's refusal without a parent"),
                ));
            };
            if let crate::store::RecordOutcome::Duplicate(existing) = &refused {
                ctx.check_name(existing, name)?;
                return replayed(ctx, existing).map(Started::existing);
            }
            ctx.settle(refused, name)?;
            return Ok(Started::existing(workflow_id));
        }
        EnqueueOutcome::Existing { name: existing, .. } => {
            if let Some(existing) = existing
                && existing != name
            {
                return Err(Error::ConflictingWorkflow {
                    workflow_id,
                    existing,
                    requested: name.to_owned(),
                });
            }
            (Ok(workflow_id.clone()), record)
        }
        EnqueueOutcome::Deduplicated {
            existing_workflow_id,
        } => match options.deduplication_policy {
            DeduplicationPolicy::ReturnExisting => {
                let record = record.map(|mut r| {
                    r.child_workflow_id = Some(existing_workflow_id.clone());
                    r
                });
                (Ok(existing_workflow_id), record)
            }
            DeduplicationPolicy::Reject => {
                let error = Error::Deduplicated {
                    workflow_id: workflow_id.clone(),
                    queue: queue.to_owned(),
                    deduplication_id: options.deduplication_id.clone().unwrap_or_default(),
                    existing: existing_workflow_id,
                };
                let record = match record {
                    Some(mut r) => {
                        r.child_workflow_id = None;
                        r.error = Some(serde_json::to_string(&error.to_portable()).map_err(
                            |source| Error::Serialize {
                                what: "an enqueue's deduplication error".to_owned(),
                                source,
                            },
                        )?);
                        Some(r)
                    }
                    None => None,
                };
                (Err(error), record)
            }
        },
    };
    // Inside a workflow the answer is recorded, so a replay gives the same one.
    if let (Some((ctx, _)), Some(record)) = (&parent, record.take()) {
        let outcome = match rt.store.run(RecordStep(record)).await {
            Ok(outcome) => outcome,
            Err(error) => return Err(ctx.halt(error)),
        };
        if let crate::store::RecordOutcome::Duplicate(existing) = &outcome {
            ctx.check_name(existing, name)?;
            return replayed(ctx, existing).map(Started::existing);
        }
        ctx.settle(outcome, name)?;
    }
    answer.map(Started::existing)
}

impl Started {
    /// A workflow this call did not create.
    fn existing(workflow_id: String) -> Self {
        Self {
            workflow_id,
            created: false,
        }
    }
}

/// The answer an enqueue recorded: the workflow id it got, or the error it failed with.
fn replayed(ctx: &WorkflowContext, checkpoint: &crate::store::Checkpoint) -> Result<String> {
    if let Some(text) = &checkpoint.error {
        let portable = serialization::decode_error(
            text,
            checkpoint.serialization.as_deref(),
            &ctx.workflow_id,
            "operation_outputs.error",
        )?;
        return Err(Error::from_portable(portable));
    }
    checkpoint
        .child_workflow_id
        .clone()
        .ok_or_else(|| Error::Decode {
            workflow_id: ctx.workflow_id.clone(),
            column: "operation_outputs.child_workflow_id".to_owned(),
            reason: format!(
                "the enqueue recorded at operation {} names no workflow",
                checkpoint.function_id
            ),
        })
}

/// Enqueue a workflow on `queue` from inside a workflow (on the application running it), as
/// that workflow's operation: exactly once across replays, the child's id
/// `<parent id>-<operation id>`. Outside a workflow: [`Error::NotInWorkflow`] (use
/// [`Client::enqueue`](crate::Client::enqueue)).
pub fn enqueue_workflow<W, M, Q>(
    queue: Q,
    workflow: W,
    args: W::Args,
) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send + use<W, M, Q>
where
    W: WorkflowFn<M>,
    Q: AsRef<str>,
{
    enqueue_workflow_with(EnqueueOptions::default(), queue, workflow, args)
}

/// [`enqueue_workflow`] with options.
pub fn enqueue_workflow_with<W, M, Q>(
    options: EnqueueOptions,
    queue: Q,
    _workflow: W,
    args: W::Args,
) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send + use<W, M, Q>
where
    W: WorkflowFn<M>,
    Q: AsRef<str>,
{
    let queue = queue.as_ref().to_owned();
    let parent = WorkflowContext::operation();
    let halted = parent.as_ref().map(|(ctx, _)| Arc::clone(ctx));
    halting(halted, async move {
        let Some((ctx, function_id)) = parent else {
            return Err(Error::NotInWorkflow("cairn::enqueue_workflow"));
        };
        let rt = Arc::clone(&ctx.rt);
        let registration = registration_of::<W>()?;
        let positional = W::encode_args(&args, registration.name)?;
        let started = enqueue(
            &rt,
            Some((ctx, function_id)),
            &queue,
            registration.name,
            &positional,
            options,
        )
        .await?;
        Ok(WorkflowHandle::started(rt, started))
    })
}
