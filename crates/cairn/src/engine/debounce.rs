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
//!
//! Inside a workflow a debounce is that workflow's operation, recorded under DBOS's step name
//! (`DBOS.debounce_delayed_workflow`): its output is DBOS's `DebounceResult` for the call
//! (the workflow it bounced, if any) and its `child_workflow_id` the workflow it answered, so
//! a replay answers that workflow without touching the rows again. A workflow the call
//! creates gets the id `<caller id>-<operation id>`: an execution that died between its
//! writes and its checkpoint finds that workflow again on recovery rather than creating a
//! second one. A bounce repeated on recovery only puts the holder off once more (or, if the
//! holder started meanwhile, starts a new workflow, as any later call would).
//!
//! Limits: a debounced workflow promoted before the call that created it marked it (a
//! period shorter than one round trip, or a crash between the two writes) holds its key until
//! it finishes, like any deduplicated workflow. Unlike DBOS, a workflow created by a debounce
//! inside a workflow does not name the caller in `parent_workflow_id`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::client::Client;
use crate::engine::context::{WorkflowContext, halting};
use crate::engine::enqueue::{self, DeduplicationPolicy, EnqueueOptions};
use crate::engine::queue::INTERNAL_QUEUE_NAME;
use crate::engine::runtime::{Runtime, now_ms};
use crate::engine::step::encode_error;
use crate::engine::workflow::{Started, WorkflowFn, WorkflowHandle, check_key, registration_of};
use crate::error::{Error, Result};
use crate::serialization;
use crate::store::{Checkpoint, RecordOutcome, RecordStep, UpdateDelayed};

/// The name a debounce inside a workflow is recorded under (DBOS's step name for it).
pub(crate) const DEBOUNCE_STEP: &str = "DBOS.debounce_delayed_workflow";

/// How a workflow is debounced (DBOS's `Debouncer`): the queue it runs on and the longest
/// it may be put off. Use it with [`Client::debounce`].
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

impl Client {
    /// Debounce `workflow` under `key`: it starts once no call with this key (for this
    /// workflow) has come for `period`, with the latest call's arguments, and no later than
    /// the debouncer's maximum wait after the first call. Answers a handle to the workflow
    /// the call created or bounced ([`WorkflowHandle::created`] tells which). A call after
    /// the workflow left its delay starts a new one. Works across processes: the state is
    /// the workflow's queued row (see the module `engine::debounce`). Inside a workflow the
    /// call is that workflow's operation (`DBOS.debounce_delayed_workflow`, as in DBOS),
    /// exactly once across replays: a replay answers the workflow the first call answered.
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
        // Taken at call time, as every durable operation's id (invariant 1).
        let operation = WorkflowContext::operation();
        let halted = operation.as_ref().map(|(ctx, _)| Arc::clone(ctx));
        halting(halted, async move {
            let registration = registration_of::<W>()?;
            let positional = W::encode_args(&args, registration.name)?;
            let call = Debounce {
                rt: &rt,
                debouncer: &debouncer,
                name: registration.name,
                key: &key,
                period,
                args: &positional,
            };
            let started = match operation {
                None => call.run(None).await?,
                Some((ctx, function_id)) => call.recorded(&ctx, function_id).await?,
            };
            Ok(WorkflowHandle::started(rt, started))
        })
    }
}

/// One debounce call: which workflow, under which key, with which arguments.
struct Debounce<'a> {
    rt: &'a Arc<Runtime>,
    debouncer: &'a Debouncer,
    name: &'a str,
    key: &'a str,
    period: Duration,
    args: &'a [Value],
}

/// What a debounce inside a workflow records as its output: DBOS's `DebounceResult` for the
/// call, so DBOS's tools read the operation as they read their own.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct DebounceResult {
    /// The workflow the call bounced; none when it created one.
    bounced_workflow_id: Option<String>,
    /// The holder of the key when nothing was bounced: always none here, since only a call
    /// that landed on a workflow is recorded with an output.
    holder_workflow_id: Option<String>,
    /// Whether that holder was debounced.
    holder_is_debounced: bool,
    /// That holder's workflow name.
    holder_workflow_name: Option<String>,
    /// That holder's application.
    holder_application_name: Option<String>,
}

impl Debounce<'_> {
    /// The debounce as operation `function_id` of the workflow `ctx`: replayed from its
    /// checkpoint if an earlier execution recorded it; otherwise run, and its answer (the
    /// workflow, or the error the call failed with) recorded before the workflow goes on.
    async fn recorded(&self, ctx: &WorkflowContext, function_id: i32) -> Result<Started> {
        ctx.check_running()?;
        if let Some(checkpoint) = ctx.recorded(function_id) {
            return replayed(ctx, checkpoint).map(recorded_answer);
        }
        let started_at = now_ms();
        let own_id = format!("{}-{function_id}", ctx.workflow_id);
        let answer = match self.run(Some(&own_id)).await {
            // A failure of the system database or a shutdown is not the call's answer: the
            // execution stops, and recovery makes the call again.
            Err(error @ (Error::Database { .. } | Error::Shutdown)) => {
                return Err(ctx.stop_on(error));
            }
            answer => answer,
        };
        let mut record = ctx.step_record(function_id, DEBOUNCE_STEP, started_at);
        match &answer {
            Ok(started) => {
                let bounced = (!started.created && started.workflow_id != own_id)
                    .then(|| started.workflow_id.clone());
                let result = DebounceResult {
                    bounced_workflow_id: bounced,
                    holder_workflow_id: None,
                    holder_is_debounced: false,
                    holder_workflow_name: None,
                    holder_application_name: None,
                };
                record.output = Some(serialization::encode(&result, || {
                    format!("the debounce recorded by workflow {}", ctx.workflow_id)
                })?);
                record.child_workflow_id = Some(started.workflow_id.clone());
            }
            Err(error) => record.error = Some(encode_error(&error.to_portable())),
        }
        let outcome = match self.rt.store.run(RecordStep(record)).await {
            Ok(outcome) => outcome,
            Err(error) => return Err(ctx.halt(error)),
        };
        if let RecordOutcome::Duplicate(existing) = &outcome {
            // Another execution recorded this operation first: its answer is the answer.
            return replayed(ctx, existing).map(recorded_answer);
        }
        ctx.settle(outcome, DEBOUNCE_STEP)?;
        answer
    }

    /// Create or bounce the debounced workflow; a created one gets the id `own_id`.
    async fn run(&self, own_id: Option<&str>) -> Result<Started> {
        debounce(
            self.rt,
            self.debouncer,
            self.name,
            self.key,
            self.period,
            self.args,
            own_id,
        )
        .await
    }
}

/// The workflow a recorded debounce answered, or the error it failed with.
fn replayed(ctx: &WorkflowContext, checkpoint: &Checkpoint) -> Result<String> {
    ctx.check_name(checkpoint, DEBOUNCE_STEP)?;
    if let Some(text) = &checkpoint.error {
        let portable = serialization::decode_error(
            text,
            checkpoint.serialization.as_deref(),
            &ctx.workflow_id,
            "operation_outputs.error",
        )?;
        return Err(Error::from_portable(portable));
    }
    if let Some(workflow_id) = &checkpoint.child_workflow_id {
        return Ok(workflow_id.clone());
    }
    // A record without the column (as DBOS writes its step): the bounced workflow it names.
    let result: DebounceResult = ctx.replay(checkpoint, DEBOUNCE_STEP)?;
    result.bounced_workflow_id.ok_or_else(|| Error::Decode {
        workflow_id: ctx.workflow_id.clone(),
        column: "operation_outputs.child_workflow_id".to_owned(),
        reason: format!(
            "the debounce recorded at operation {} names no workflow",
            checkpoint.function_id
        ),
    })
}

/// A workflow the answering execution did not create (a replay, or another's record).
fn recorded_answer(workflow_id: String) -> Started {
    Started {
        workflow_id,
        created: false,
    }
}

/// Create or bounce the debounced workflow `name` under `key` (see the module doc). A
/// created workflow gets the id `own_id` (default: a new time-ordered UUID, v7).
async fn debounce(
    rt: &Arc<Runtime>,
    debouncer: &Debouncer,
    name: &str,
    key: &str,
    period: Duration,
    args: &[Value],
    own_id: Option<&str>,
) -> Result<Started> {
    check_key("debounce key", key)?;
    let deduplication_id = format!("{name}-{key}");
    let inputs = serialization::encode_inputs(args)?;
    // The holder a bounce failed on: failing on it again means it is not ours to bounce.
    let mut refused_by: Option<String> = None;
    loop {
        let workflow_id = own_id.map_or_else(super::runtime::new_id, str::to_owned);
        let first_delay = debouncer.max_wait.map_or(period, |wait| wait.min(period));
        let options = EnqueueOptions::id(workflow_id.clone())
            .with_deduplication_id(deduplication_id.clone())
            .with_deduplication_policy(DeduplicationPolicy::ReturnExisting)
            .with_delay(first_delay);
        let now = now_ms();
        let started = enqueue::enqueue(rt, None, &debouncer.queue, name, args, options).await?;
        // Our own id already there: an earlier attempt of this same call created it.
        if started.created || own_id == Some(started.workflow_id.as_str()) {
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
