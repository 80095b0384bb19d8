//! Starting workflows, executing them, and waiting for their outcome.

use std::any::TypeId;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use super::context::{WorkflowContext, halting};
use super::notify::Channel;
use super::registry::{self, WorkflowFuture, WorkflowRegistration};
use super::runtime::{Launched, LocalOutcome, Runtime, now_ms};
use super::step::{Convert, encode_error};
use crate::error::{DurableError, Error, PortableError, Result};
use crate::serialization;
use crate::status::{WorkflowState, WorkflowStatus};
use crate::store::{
    CancelWorkflows, Checkpoint, CompleteWorkflow, GetWorkflow, InsertOutcome, InsertWorkflow,
    NewWorkflow, RecordOutcome, StartChild,
};

/// A function annotated with `#[cairn::workflow]`, seen through its argument types.
///
/// Implemented for every `#[cairn::workflow]` function of up to eight arguments (it returns a
/// [`WorkflowFuture`], which only the macro's functions do, so passing any other function to
/// `start` is a compile error); `Marker` is the tuple of argument types and is inferred.
/// `Args` is the single argument itself, `()` for none, or a tuple for two or more:
/// `app.start(checkout, 42)`, `app.start(transfer, (from, to, 100))`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[cairn::workflow]` function",
    label = "not a workflow",
    note = "annotate the function with #[cairn::workflow] (workflows take up to eight arguments)"
)]
pub trait WorkflowFn<Marker>: Copy + Send + Sync + 'static {
    /// The arguments, as passed to `start`.
    type Args: Send;
    /// The workflow's success value.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Encode the arguments as DBOS positional arguments.
    #[doc(hidden)]
    fn encode_args(args: &Self::Args, workflow: &str) -> Result<Vec<Value>>;
}

macro_rules! impl_workflow_fn {
    ($args:ty, ($($arg:ident: $idx:tt),*), $pattern:pat => $values:expr) => {
        impl<Func, Fut, T, E, $($arg),*> WorkflowFn<($($arg,)*)> for Func
        where
            Func: Fn($($arg),*) -> Fut + Copy + Send + Sync + 'static,
            Fut: WorkflowFuture<Output = std::result::Result<T, E>>,
            T: Serialize + DeserializeOwned + Send + 'static,
            $($arg: Serialize + Send,)*
        {
            type Args = $args;
            type Output = T;
            #[allow(unused_variables)]
            fn encode_args(args: &Self::Args, workflow: &str) -> Result<Vec<Value>> {
                let $pattern = args;
                $values(workflow)
            }
        }
    };
}

impl_workflow_fn!((), (), () => |_w: &str| Ok(Vec::new()));
impl_workflow_fn!(A1, (A1: 0), a1 => |w: &str| Ok(vec![serialization::encode_arg(a1, 0, w)?]));
macro_rules! impl_workflow_fn_tuple {
    ($($arg:ident: $idx:tt),+) => {
        impl_workflow_fn!(($($arg,)+), ($($arg: $idx),+), args => |w: &str| Ok(vec![$(serialization::encode_arg(&args.$idx, $idx, w)?),+]));
    };
}
impl_workflow_fn_tuple!(A1: 0, A2: 1);
impl_workflow_fn_tuple!(A1: 0, A2: 1, A3: 2);
impl_workflow_fn_tuple!(A1: 0, A2: 1, A3: 2, A4: 3);
impl_workflow_fn_tuple!(A1: 0, A2: 1, A3: 2, A4: 3, A5: 4);
impl_workflow_fn_tuple!(A1: 0, A2: 1, A3: 2, A4: 3, A5: 4, A6: 5);
impl_workflow_fn_tuple!(A1: 0, A2: 1, A3: 2, A4: 3, A5: 4, A6: 5, A7: 6);
impl_workflow_fn_tuple!(A1: 0, A2: 1, A3: 2, A4: 3, A5: 4, A6: 5, A7: 6, A8: 7);

/// The registration of a workflow function, or a clear error if it was not annotated.
pub(crate) fn registration_of<W: 'static>() -> Result<&'static WorkflowRegistration> {
    registry::by_type(TypeId::of::<W>()).ok_or_else(|| {
        Error::NotRegistered(
            std::any::type_name::<W>()
                .rsplit("::")
                .next()
                .unwrap_or("?")
                .to_owned(),
        )
    })
}

/// Options for starting a workflow.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StartOptions {
    /// The workflow's id, which is also its idempotency key: starting an id that exists
    /// returns the existing workflow and never runs it twice. Default: a new time-ordered UUID (v7; for a
    /// child workflow, `<parent id>-<operation id>`).
    pub workflow_id: Option<String>,
    /// Cancel the workflow if it has not finished this long after it starts, wherever it
    /// runs by then (the deadline is recorded). Its children inherit the deadline.
    /// Default: none.
    pub timeout: Option<Duration>,
    /// The configured instance the workflow runs as (recorded as DBOS's `config_name`): its
    /// code gets that instance's values from [`cairn::state`](crate::state), here and after
    /// recovery. The instance must be configured with
    /// [`CairnBuilder::instance_state`](crate::CairnBuilder::instance_state). Default: none
    /// for a top-level workflow; a child runs as its parent's instance.
    pub instance: Option<String>,
    /// Custom attributes recorded with the workflow (DBOS's `attributes`): a JSON object,
    /// shown by [`WorkflowStatus`](crate::WorkflowStatus), filterable in listings and
    /// changeable later with
    /// [`Client::update_workflow_attributes`](crate::Client::update_workflow_attributes).
    /// Anything but an object is [`Error::InvalidArgument`]. As DBOS, a child does not
    /// inherit its parent's. Default: none.
    pub attributes: Option<serde_json::Value>,
}

impl StartOptions {
    /// Options with a caller-chosen workflow id.
    pub fn id(workflow_id: impl Into<String>) -> Self {
        Self::default().with_id(workflow_id)
    }

    /// Set [`StartOptions::workflow_id`].
    pub fn with_id(mut self, workflow_id: impl Into<String>) -> Self {
        self.workflow_id = Some(workflow_id.into());
        self
    }

    /// Set [`StartOptions::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Set [`StartOptions::instance`].
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Set [`StartOptions::attributes`] (a JSON object).
    pub fn with_attributes(mut self, attributes: serde_json::Value) -> Self {
        self.attributes = Some(attributes);
        self
    }
}

/// The JSON text of workflow attributes, refusing anything but an object (DBOS's
/// `validate_workflow_attributes`): listings filter on their keys.
pub(crate) fn encode_attributes(attributes: Option<&serde_json::Value>) -> Result<Option<String>> {
    match attributes {
        None => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => Ok(Some(value.to_string())),
        Some(other) => Err(Error::InvalidArgument {
            argument: "attributes",
            reason: format!("must be a JSON object, not `{other}`"),
        }),
    }
}

/// The JSON text of a new workflow's attributes: the caller's and, with the `otel` feature,
/// the current span's W3C trace context under DBOS's `dbos.otelContext` (unless the caller
/// set that key), so the workflow's span joins the caller's trace wherever it runs.
pub(crate) fn new_workflow_attributes(
    attributes: Option<&serde_json::Value>,
) -> Result<Option<String>> {
    #[cfg(feature = "otel")]
    if let Some(traced) = crate::otel::with_trace_context(attributes) {
        return encode_attributes(Some(&traced));
    }
    encode_attributes(attributes)
}

/// Refuse an instance this process does not configure: it could not give the workflow its
/// state, nor recover it.
fn check_instance(rt: &Runtime, instance: &str) -> Result<()> {
    // `config_name` is a `varchar(255)` in DBOS's Postgres schema.
    if instance.is_empty() || instance.chars().count() > 255 {
        return Err(Error::InvalidArgument {
            argument: "instance",
            reason: "must be 1 to 255 characters long".to_owned(),
        });
    }
    if !rt.state.has_instance(instance) {
        return Err(Error::InvalidArgument {
            argument: "instance",
            reason: format!(
                "no instance `{instance}` is configured; configure it with \
                 `Cairn::builder(..).instance_state(\"{instance}\", value)`"
            ),
        });
    }
    Ok(())
}

/// What a start did: the workflow's id, and whether this call created it (`false`: the id
/// existed, and nothing new runs).
pub(crate) struct Started {
    pub workflow_id: String,
    pub created: bool,
}

/// Start a workflow from outside any workflow: insert it, and execute it here if it is new.
pub(crate) async fn start_top_level(
    rt: &Arc<Runtime>,
    registration: &'static WorkflowRegistration,
    args: Vec<Value>,
    options: StartOptions,
) -> Result<Started> {
    if rt.is_shutting_down() {
        return Err(Error::Shutdown);
    }
    let workflow_id = match options.workflow_id {
        Some(id) => {
            check_key("workflow_id", &id)?;
            id
        }
        None => super::runtime::new_id(),
    };
    if let Some(instance) = &options.instance {
        check_instance(rt, instance)?;
    }
    let attributes = new_workflow_attributes(options.attributes.as_ref())?;
    let mut new = new_workflow(
        rt,
        registration,
        &workflow_id,
        &args,
        None,
        options.timeout,
        None,
    )?;
    new.config_name = options.instance;
    new.attributes = attributes;
    let inserted = rt.store.run(InsertWorkflow(new.clone())).await?;
    let created = execute_if_new(rt, registration, new, args, inserted, Origin::Started)?;
    Ok(Started {
        workflow_id,
        created,
    })
}

/// Start a child workflow as the parent's operation `function_id`: the child's rows and the
/// parent's checkpoint commit together, so across replays the child starts exactly once.
/// `created` is whether this call inserted the child (`false` on replay).
pub(crate) async fn start_child(
    parent: &Arc<WorkflowContext>,
    function_id: i32,
    registration: &'static WorkflowRegistration,
    args: Vec<Value>,
    options: StartOptions,
) -> Result<Started> {
    parent.check_running()?;
    let workflow_id = match options.workflow_id {
        Some(id) => {
            check_key("workflow_id", &id)?;
            id
        }
        None => format!("{}-{function_id}", parent.workflow_id),
    };
    if let Some(checkpoint) = parent.recorded(function_id) {
        parent.check_name(checkpoint, registration.name)?;
        let workflow_id = checkpoint.child_workflow_id.clone().unwrap_or(workflow_id);
        return Ok(Started {
            workflow_id,
            created: false,
        });
    }
    let rt = &parent.rt;
    if let Some(instance) = &options.instance {
        check_instance(rt, instance)?;
    }
    // Not inherited from the parent (as DBOS); the trace context is the parent's span.
    let attributes = new_workflow_attributes(options.attributes.as_ref())?;
    let mut new = new_workflow(
        rt,
        registration,
        &workflow_id,
        &args,
        Some(parent.workflow_id.clone()),
        options.timeout,
        parent.deadline_ms,
    )?;
    new.config_name = options.instance.or_else(|| parent.instance.clone());
    new.attributes = attributes;
    let mut record = parent.step_record(function_id, registration.name, now_ms());
    record.child_workflow_id = Some(workflow_id.clone());
    let start = StartChild {
        parent: record,
        child: new.clone(),
    };
    let (recorded, inserted) = match rt.store.run(start).await {
        Ok(outcome) => outcome,
        Err(error) => return Err(parent.halt(error)),
    };
    if let RecordOutcome::Duplicate(existing) = &recorded {
        parent.check_name(existing, registration.name)?;
        let workflow_id = existing.child_workflow_id.clone().unwrap_or(workflow_id);
        return Ok(Started {
            workflow_id,
            created: false,
        });
    }
    parent.settle(recorded, registration.name)?;
    let created = execute_if_new(rt, registration, new, args, inserted, Origin::Child)?;
    Ok(Started {
        workflow_id,
        created,
    })
}

/// Execute a workflow here if its insert created it, and say whether it did; an existing id
/// must be the same workflow (it is not run again: it is running, finished, or left for
/// recovery).
fn execute_if_new(
    rt: &Arc<Runtime>,
    registration: &'static WorkflowRegistration,
    new: NewWorkflow,
    args: Vec<Value>,
    inserted: InsertOutcome,
    origin: Origin,
) -> Result<bool> {
    match inserted {
        InsertOutcome::Inserted => {
            let execution = NewExecution {
                workflow_id: new.id,
                owner_xid: new.creator_xid,
                args,
                recorded: Vec::new(),
                deadline_ms: new.deadline_epoch_ms,
                instance: new.config_name,
                origin,
                serialization: None,
                attributes: new.attributes,
            };
            spawn_execution(rt, registration, execution);
            Ok(true)
        }
        InsertOutcome::Existing { name, .. } => {
            check_same_workflow(&new.id, name, registration).map(|()| false)
        }
    }
}

/// The longest workflow id, event or stream key, or message topic Cairn stores, in bytes.
/// They are index keys, and Postgres refuses an index entry over ~2.7 KB (with the row's
/// other key columns); a limit well below keeps the error at the caller, typed and short.
pub(crate) const MAX_KEY_BYTES: usize = 1000;

/// Refuse an identifier the system database could not index: empty, or over
/// [`MAX_KEY_BYTES`]. The error quotes only its start.
pub(crate) fn check_key(argument: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidArgument {
            argument,
            reason: "must not be empty".to_owned(),
        });
    }
    if value.len() > MAX_KEY_BYTES {
        let start: String = value.chars().take(32).collect();
        return Err(Error::InvalidArgument {
            argument,
            reason: format!(
                "is {} bytes long (\"{start}…\"); the most the system database can index is {MAX_KEY_BYTES} bytes",
                value.len()
            ),
        });
    }
    Ok(())
}

fn new_workflow(
    rt: &Runtime,
    registration: &WorkflowRegistration,
    workflow_id: &str,
    args: &[Value],
    parent_workflow_id: Option<String>,
    timeout: Option<Duration>,
    inherited_deadline: Option<i64>,
) -> Result<NewWorkflow> {
    let now = now_ms();
    let timeout_ms = timeout.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
    let own_deadline = timeout_ms.map(|t| now.saturating_add(t));
    let deadline_epoch_ms = match (own_deadline, inherited_deadline) {
        (Some(own), Some(inherited)) => Some(own.min(inherited)),
        (own, inherited) => own.or(inherited),
    };
    Ok(NewWorkflow {
        id: workflow_id.to_owned(),
        name: registration.name.to_owned(),
        status: WorkflowState::Pending,
        queue_name: None,
        executor_id: rt.executor_id.clone(),
        app_version: Some(rt.app_version.clone()),
        application_name: Some(rt.app_name.clone()),
        inputs: serialization::encode_inputs(args)?,
        creator_xid: uuid::Uuid::new_v4().to_string(),
        parent_workflow_id,
        timeout_ms,
        deadline_epoch_ms,
        config_name: None,
        now_ms: now,
        attributes: None,
    })
}

fn check_same_workflow(
    workflow_id: &str,
    existing: Option<String>,
    registration: &WorkflowRegistration,
) -> Result<()> {
    match existing {
        Some(name) if name != registration.name => Err(Error::ConflictingWorkflow {
            workflow_id: workflow_id.to_owned(),
            existing: name,
            requested: registration.name.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Why an execution starts in this process: its span's `origin` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A new top-level workflow this process just inserted.
    Started,
    /// A new child workflow, started by a workflow executing here.
    Child,
    /// An unfinished workflow of this executor, reclaimed by recovery.
    Recovered,
    /// A workflow claimed from a queue (a resume or a fork goes through DBOS's internal queue).
    Dequeued,
    /// A workflow of this process evicted from memory while it waited, woken.
    Woken,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Started => "start",
            Origin::Child => "child",
            Origin::Recovered => "recovery",
            Origin::Dequeued => "queue",
            Origin::Woken => "wake",
        }
    }
}

/// An execution to start in this process.
pub(crate) struct NewExecution {
    pub workflow_id: String,
    /// The ownership token every write of the execution is guarded by.
    pub owner_xid: String,
    /// The workflow's positional arguments.
    pub args: Vec<Value>,
    /// Checkpoints recorded by earlier executions (none for a new workflow).
    pub recorded: Vec<Checkpoint>,
    /// The workflow's deadline, epoch milliseconds.
    pub deadline_ms: Option<i64>,
    /// The instance it runs as (`config_name`).
    pub instance: Option<String>,
    pub origin: Origin,
    /// The format its row names (`workflow_status.serialization`), which its outcome is
    /// written in: `None` for workflows Cairn starts (portable JSON).
    pub serialization: Option<String>,
    /// The JSON text of its attributes, where a stored trace context is (feature `otel`).
    pub attributes: Option<String>,
}

/// Execute a workflow in this process as a task of its own, inside a `workflow` span. A
/// child's span nests under its parent's; any other execution's span is a root that follows
/// from the caller's, so a caller's span (a request's) need not stay open while it runs.
/// With the `otel` feature, the OpenTelemetry parent of the span is the trace context
/// stored in the workflow's attributes, when there is one.
pub(crate) fn spawn_execution(
    rt: &Arc<Runtime>,
    registration: &'static WorkflowRegistration,
    execution: NewExecution,
) {
    let NewExecution {
        workflow_id,
        owner_xid,
        args,
        recorded,
        deadline_ms,
        instance,
        origin,
        serialization,
        attributes,
    } = execution;
    let caller = tracing::Span::current();
    let parent = if origin == Origin::Child {
        caller.id()
    } else {
        None
    };
    let span = tracing::info_span!(
        parent: parent.clone(),
        "workflow",
        workflow_id = %workflow_id,
        name = registration.name,
        origin = origin.as_str(),
    );
    // The trace context stored with the workflow wins, as in DBOS: the same parent whether
    // it runs here now, from a queue, or recovered in another process.
    #[cfg(feature = "otel")]
    crate::otel::follow_stored_context(&span, &workflow_id, attributes.as_deref());
    #[cfg(not(feature = "otel"))]
    drop(attributes);
    if parent.is_none() {
        span.follows_from(&caller);
    }
    let (execution, cancelled) = rt.track(&workflow_id, &owner_xid);
    let owner = owner_xid.clone();
    let ctx = WorkflowContext::new(
        Arc::clone(rt),
        workflow_id.clone(),
        registration.name,
        owner_xid,
        recorded,
        cancelled,
        deadline_ms,
        instance,
    );
    let task = tokio::spawn(
        async move {
            // Recovered and dequeued executions are logged where they are claimed.
            if matches!(origin, Origin::Started | Origin::Child) {
                tracing::debug!(workflow_id = %ctx.workflow_id, name = ctx.name, "workflow started");
            }
            let outcome = execute(&ctx, registration, args, serialization.as_deref()).await;
            execution.publish(outcome);
            // For workflows evicted while they wait for this one.
            ctx.rt
                .notifier
                .announce(Channel::Outcome, &ctx.workflow_id, "");
        }
        .instrument(span),
    );
    rt.set_abort(&workflow_id, &owner, task.abort_handle());
}

/// Run the body and write its outcome; a panic is the workflow's error, an interruption
/// writes nothing.
async fn execute(
    ctx: &Arc<WorkflowContext>,
    registration: &WorkflowRegistration,
    args: Vec<Value>,
    row_format: Option<&str>,
) -> LocalOutcome {
    let body = AssertUnwindSafe(Arc::clone(ctx).scope((registration.run)(args))).catch_unwind();
    tokio::pin!(body);
    // A halted execution (cancelled, timed out, taken over, shutting down, or failed in a way
    // its code cannot see) is dropped between step bodies: its steps stop where they are.
    // At the deadline the workflow is cancelled in the database first.
    let stopped = async {
        tokio::select! {
            () = deadline_passed(ctx) => ctx.stopped().await,
            () = ctx.stopped() => {}
        }
    };
    let caught = tokio::select! {
        caught = &mut body => Some(caught),
        () = stopped => None,
    };
    let outcome = match caught {
        Some(Ok(outcome)) => Some(outcome),
        Some(Err(panic)) => Some(Err(serialization::panic_error(&*panic))),
        None => None,
    };
    // A body that ended because something it waited on hit the same deadline (a child that
    // inherited it) still timed out: the deadline decides, not the race between the two.
    let halt = ctx.take_halt();
    if ctx.deadline_ms.is_some_and(|deadline| deadline <= now_ms())
        && halt.as_ref().is_none_or(Error::is_interruption)
    {
        cancel_timed_out(ctx).await;
        return LocalOutcome::Interrupted;
    }
    let outcome = match (halt, outcome) {
        (Some(halt), _) if halt.is_interruption() => {
            log_interruption(ctx, &halt);
            return LocalOutcome::Interrupted;
        }
        (Some(halt), _) => Err(halt.to_portable()),
        (None, Some(outcome)) => outcome,
        // Stopped only ever follows a halt.
        (None, None) => return LocalOutcome::Interrupted,
    };
    let completion = crate::store::Completion {
        workflow_id: ctx.workflow_id.clone(),
        owner_xid: ctx.owner_xid.clone(),
        status: if outcome.is_ok() {
            WorkflowState::Success
        } else {
            WorkflowState::Error
        },
        output: (outcome.as_ref().ok().cloned())
            .map(|text| serialization::in_row_format(text, row_format)),
        error: (outcome.as_ref().err().map(encode_error))
            .map(|text| serialization::in_row_format(text, row_format)),
        now_ms: now_ms(),
    };
    match ctx.rt.store.run(CompleteWorkflow(completion)).await {
        Ok(true) => {
            log_outcome(ctx, &outcome);
            LocalOutcome::Finished(outcome)
        }
        Ok(false) => {
            // Not ours to complete any more: cancelled (seen here) or settled elsewhere.
            match ctx.check_running() {
                Err(reason) if reason.is_interruption() => log_interruption(ctx, &reason),
                _ => {
                    tracing::debug!(workflow_id = %ctx.workflow_id, name = ctx.name, "workflow outcome not recorded: the workflow was settled elsewhere")
                }
            }
            LocalOutcome::Interrupted
        }
        Err(error) => {
            tracing::error!(workflow_id = %ctx.workflow_id, %error, "could not record the workflow's outcome; it stays PENDING for recovery");
            LocalOutcome::Interrupted
        }
    }
}

/// The line for a finished workflow. Success is `debug`: at a thousand workflows a second,
/// `info` lines for every start and success would drown the ones that need attention.
fn log_outcome(ctx: &WorkflowContext, outcome: &Result<String, PortableError>) {
    match outcome {
        Ok(_) => {
            tracing::debug!(workflow_id = %ctx.workflow_id, name = ctx.name, "workflow succeeded");
        }
        Err(error) => tracing::warn!(
            workflow_id = %ctx.workflow_id,
            name = ctx.name,
            error = %format_args!("{}: {}", error.name, error.message),
            "workflow failed"
        ),
    }
}

/// The line for an execution that stopped without recording an outcome: cancelled, taken
/// over by another execution, or stopped by shutdown (it stays `PENDING` for recovery).
fn log_interruption(ctx: &WorkflowContext, reason: &Error) {
    let (workflow_id, name) = (&ctx.workflow_id, ctx.name);
    match reason {
        Error::Cancelled(_) => tracing::info!(%workflow_id, name, "workflow cancelled"),
        Error::OwnershipLost(_) => {
            tracing::info!(%workflow_id, name, "workflow taken over by another execution; stopped here")
        }
        _ => tracing::debug!(%workflow_id, name, reason = %reason, "workflow execution stopped"),
    }
}

/// Cancel a workflow whose deadline passed (in the database; it stops here by itself).
async fn cancel_timed_out(ctx: &WorkflowContext) {
    let cancel = CancelWorkflows {
        workflow_ids: vec![ctx.workflow_id.clone()],
        now_ms: now_ms(),
    };
    match ctx.rt.store.run(cancel).await {
        // Logged once, by whichever of the deadline and the executor cancels it.
        Ok(cancelled) if cancelled.is_empty() => {}
        Ok(_) => {
            tracing::info!(workflow_id = %ctx.workflow_id, name = ctx.name, "workflow timed out; cancelled")
        }
        Err(error) => {
            tracing::error!(workflow_id = %ctx.workflow_id, %error, "could not cancel a timed-out workflow")
        }
    }
}

/// Complete when the workflow's deadline passes, after cancelling it (never, without one).
async fn deadline_passed(ctx: &WorkflowContext) {
    let Some(deadline) = ctx.deadline_ms else {
        return std::future::pending().await;
    };
    let wait = u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    cancel_timed_out(ctx).await;
    ctx.halt(Error::TimedOut(ctx.workflow_id.clone()));
    ctx.rt.interrupt(&ctx.workflow_id);
}

/// Wait for a workflow's outcome: woken by the executing task when it runs here, otherwise
/// read from the database with a growing interval.
pub(crate) async fn wait_outcome(rt: &Arc<Runtime>, workflow_id: &str) -> Result<Outcome> {
    let mut interval = Duration::from_millis(5);
    let mut interrupted_here = false;
    loop {
        // Once interrupted (cancelled, timed out), the execution may still be finishing a
        // step; its fate is already in the database, so stop waiting on it.
        let local = rt
            .local_execution(workflow_id)
            .filter(|_| !interrupted_here);
        if let Some((mut slot, mut interrupted)) = local {
            let wait_interrupt = async {
                let _ = interrupted.wait_for(Option::is_some).await;
            };
            let outcome = tokio::select! {
                outcome = slot.wait_for(Option::is_some) => outcome.ok().and_then(|o| o.clone()),
                () = wait_interrupt => {
                    interrupted_here = true;
                    None
                }
            };
            if let Some(LocalOutcome::Finished(result)) = outcome {
                return Ok(Outcome {
                    result,
                    serialization: None,
                });
            }
        }
        let row = rt
            .store
            .run(GetWorkflow::of(workflow_id))
            .await?
            .ok_or_else(|| Error::NotFound(workflow_id.to_owned()))?;
        let format = row.serialization.as_deref();
        match row.status {
            Some(WorkflowState::Success) => {
                let result = Ok(row.output.unwrap_or_else(|| "null".to_owned()));
                return Ok(Outcome {
                    result,
                    serialization: row.serialization,
                });
            }
            Some(WorkflowState::Error) => {
                let text = row.error.as_deref().unwrap_or("null");
                let result = Err(serialization::decode_error(
                    text,
                    format,
                    workflow_id,
                    "workflow_output.error",
                )?);
                return Ok(Outcome {
                    result,
                    serialization: row.serialization,
                });
            }
            Some(WorkflowState::Cancelled) => {
                let timed_out = row
                    .workflow_deadline_epoch_ms
                    .is_some_and(|deadline| deadline <= row.updated_at);
                return Err(if timed_out {
                    Error::TimedOut(workflow_id.to_owned())
                } else {
                    Error::Cancelled(workflow_id.to_owned())
                });
            }
            Some(WorkflowState::MaxRecoveryAttemptsExceeded) => {
                let max_attempts = row
                    .name
                    .as_deref()
                    .and_then(registry::by_name)
                    .map_or(crate::DEFAULT_MAX_RECOVERY_ATTEMPTS, |r| {
                        r.max_recovery_attempts
                    });
                return Err(Error::MaxRecoveryAttemptsExceeded {
                    workflow_id: workflow_id.to_owned(),
                    max_attempts,
                });
            }
            _ => {}
        }
        if rt.is_shutting_down() {
            return Err(Error::Shutdown);
        }
        if interrupted_here || !rt.is_running_here(workflow_id) {
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(1));
        }
    }
}

/// A finished workflow's outcome: its output text or its error, and the output's format.
pub(crate) struct Outcome {
    pub result: Result<String, PortableError>,
    pub serialization: Option<String>,
}

/// Decode a workflow's outcome into the caller's type.
fn decode_outcome<T: DeserializeOwned>(workflow_id: &str, outcome: Outcome) -> Result<T> {
    match outcome.result {
        Ok(text) => serialization::decode(
            &text,
            outcome.serialization.as_deref(),
            workflow_id,
            "workflow_output.output",
        ),
        Err(error) => Err(Error::from_portable(error)),
    }
}

/// A handle to a workflow: its id, its status, and (typed) its result.
///
/// Inside a workflow, `result()` and `status()` are durable operations: their answers are
/// recorded and a replay gets the same answer.
pub struct WorkflowHandle<T> {
    workflow_id: String,
    rt: Arc<Runtime>,
    created: bool,
    _output: PhantomData<fn() -> T>,
}

impl<T> Clone for WorkflowHandle<T> {
    fn clone(&self) -> Self {
        Self {
            workflow_id: self.workflow_id.clone(),
            rt: Arc::clone(&self.rt),
            created: self.created,
            _output: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for WorkflowHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowHandle")
            .field("workflow_id", &self.workflow_id)
            .field("created", &self.created)
            .finish()
    }
}

impl<T: DeserializeOwned + Serialize + Send + 'static> WorkflowHandle<T> {
    pub(crate) fn new(rt: Arc<Runtime>, workflow_id: String) -> Self {
        Self {
            workflow_id,
            rt,
            created: false,
            _output: PhantomData,
        }
    }

    /// A handle from a start, which knows whether the start created the workflow.
    pub(crate) fn started(rt: Arc<Runtime>, started: Started) -> Self {
        Self {
            created: started.created,
            ..Self::new(rt, started.workflow_id)
        }
    }

    /// The workflow's id.
    pub fn id(&self) -> &str {
        &self.workflow_id
    }

    /// Whether the call that returned this handle created the workflow. `false` when a start
    /// found its id taken (a retry of the same request, or another request that chose the
    /// same id: the existing workflow is returned and nothing new runs), for a handle from
    /// [`Client::retrieve`](crate::Client::retrieve), and inside a workflow when a child start
    /// is replayed (an earlier execution created the child).
    pub fn created(&self) -> bool {
        self.created
    }

    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// The workflow's current status row.
    pub fn status(&self) -> impl Future<Output = Result<WorkflowStatus>> + Send + 'static {
        let rt = Arc::clone(&self.rt);
        let workflow_id = self.workflow_id.clone();
        let call = super::step::StepCall::begin("DBOS.getStatus");
        async move {
            call.run(Some(std::convert::identity), async {
                let row = rt.store.run(GetWorkflow::of(&workflow_id)).await?;
                row.map(WorkflowStatus::from_row)
                    .ok_or(Error::NotFound(workflow_id))
            })
            .await
        }
    }

    /// Wait for the workflow to finish and return its output, or its error as
    /// [`Error::Application`] (also [`Error::Cancelled`], [`Error::MaxRecoveryAttemptsExceeded`]).
    pub fn result(&self) -> impl Future<Output = Result<T>> + Send + 'static {
        let caller = WorkflowContext::operation();
        result_of(Arc::clone(&self.rt), self.workflow_id.clone(), caller)
    }
}

/// A workflow's result; inside a workflow (`caller`: its context and the operation id taken
/// for it, at call time) recorded as `DBOS.getResult`.
///
/// Outside a workflow the wait is a future of its own, without the recording's state: a
/// caller waiting on many workflows (a server awaiting each request's workflow) holds one
/// per workflow.
pub(crate) fn result_of<T: DeserializeOwned + Send + 'static>(
    rt: Arc<Runtime>,
    workflow_id: String,
    caller: Option<(Arc<WorkflowContext>, i32)>,
) -> impl Future<Output = Result<T>> + Send + 'static {
    use futures::future::{Either, FutureExt};
    let Some((ctx, function_id)) = caller else {
        let wait = async move {
            let outcome = wait_outcome(&rt, &workflow_id).await?;
            decode_outcome(&workflow_id, outcome)
        };
        return Either::Left(wait.boxed());
    };
    Either::Right({
        let halted = Some(Arc::clone(&ctx));
        halting(halted, async move {
            ctx.check_running()?;
            if let Some(checkpoint) = ctx.recorded(function_id) {
                return ctx.replay(checkpoint, "DBOS.getResult");
            }
            let started = now_ms();
            let outcome = super::evict::wait_outcome_of(&ctx, &workflow_id)
                .await
                .map_err(|error| ctx.stop_on(error))?;
            let mut record = ctx.step_record(function_id, "DBOS.getResult", started);
            record.child_workflow_id = Some(workflow_id.clone());
            match &outcome.result {
                Ok(output) => record.output = Some(output.clone()),
                Err(error) => record.error = Some(encode_error(error)),
            }
            ctx.record(record).await?;
            decode_outcome(&workflow_id, outcome)
        })
    })
}

/// A direct call of a workflow function. Inside a workflow it starts a child workflow
/// (exactly once across replays) and waits for it; outside, the body runs as a plain call.
#[doc(hidden)]
pub struct WorkflowCall<W> {
    child: Option<ChildStart>,
    /// Outside any workflow (and not in a step): the application the call runs on, if one is
    /// launched, and the arguments.
    outside: Outside,
    _workflow: PhantomData<W>,
}

/// Where a direct call outside any workflow runs.
enum Outside {
    /// Inside a workflow or a step, or with no application launched: no durable start.
    Plain,
    /// On the one launched application, with these arguments.
    On(Arc<Runtime>, Result<Vec<Value>>),
    /// Several applications are launched: which one is ambiguous.
    Ambiguous,
}

struct ChildStart {
    parent: Arc<WorkflowContext>,
    function_id: i32,
    args: Result<Vec<Value>>,
}

impl<W: 'static> WorkflowCall<W> {
    /// Take the operation id now (at call time) if called from a workflow.
    pub fn begin(_workflow: W, encode: impl FnOnce(&str) -> Result<Vec<Value>>) -> Self {
        let Some(parent) = WorkflowContext::current() else {
            // Inside a step body a workflow function is a plain call, as every durable
            // operation is there.
            let outside = if super::context::current_step().is_some() {
                Outside::Plain
            } else {
                match super::runtime::launched() {
                    Launched::None => Outside::Plain,
                    Launched::One(rt) => {
                        Outside::On(rt, registration_of::<W>().and_then(|r| encode(r.name)))
                    }
                    Launched::Several => Outside::Ambiguous,
                }
            };
            return Self {
                child: None,
                outside,
                _workflow: PhantomData,
            };
        };
        let function_id = parent.next_id();
        let args = registration_of::<W>().and_then(|r| encode(r.name));
        Self {
            child: Some(ChildStart {
                parent,
                function_id,
                args,
            }),
            outside: Outside::Plain,
            _workflow: PhantomData,
        }
    }

    /// Run the call: as a child workflow inside a workflow, else the body itself. The child's
    /// error comes back as the same typed value it returned. A failure of Cairn's (the child
    /// cancelled, timed out, or failed with another error type) becomes `E` through `convert`
    /// where `E: From<cairn::Error>`; otherwise it fails the calling workflow.
    pub async fn run<T, E>(
        self,
        convert: Convert<E>,
        body: impl Future<Output = std::result::Result<T, E>>,
    ) -> std::result::Result<T, E>
    where
        T: DeserializeOwned,
        E: DurableError,
    {
        let Some(child) = self.child else {
            return run_outside::<W, T, E>(self.outside, convert, body).await;
        };
        let parent = &child.parent;
        let waited = async {
            let registration = registration_of::<W>()?;
            let id = start_child(
                parent,
                child.function_id,
                registration,
                child.args?,
                StartOptions::default(),
            )
            .await?
            .workflow_id;
            let outcome = super::evict::wait_outcome_of(parent, &id).await?;
            Ok::<_, Error>((id, outcome))
        };
        let failure = match waited
            .await
            .and_then(|(id, outcome)| typed_outcome(&id, outcome))
        {
            Ok(typed) => return typed,
            Err(failure) => failure,
        };
        if parent.check_running().is_ok() {
            if let Some(convert) = convert {
                return Err(convert(failure));
            }
            parent.halt(failure);
        }
        // Halted: the executor drops the parent's body from here.
        std::future::pending().await
    }
}

/// A direct call of a workflow function outside any workflow. With one application
/// launched in this process it runs as a durable workflow there (a generated id, as DBOS's
/// `my_workflow()`) and the call waits for its outcome — when the error type can hold
/// Cairn's own failures (`E: From<cairn::Error>`: a cancelled workflow, a start the database
/// refused). Otherwise, with no application launched, or with several (ambiguous: use
/// `app.run`), it is a plain call of the function, and the last two cases log a warning once.
async fn run_outside<W: 'static, T, E>(
    outside: Outside,
    convert: Convert<E>,
    body: impl Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, E>
where
    T: DeserializeOwned,
    E: DurableError,
{
    let (rt, args) = match (outside, convert) {
        (Outside::On(rt, args), Some(_)) => (rt, args),
        (Outside::Plain, _) => return body.await,
        (Outside::On(..), None) => {
            warn_plain_once(
                "a workflow function called outside any workflow runs as a plain call: its \
                 error type has no From<cairn::Error> to report a cancellation with; use \
                 app.run(workflow, args) to run it durably",
            );
            return body.await;
        }
        (Outside::Ambiguous, _) => {
            warn_plain_once(
                "a workflow function called outside any workflow runs as a plain call: \
                 several Cairn applications are launched in this process; use \
                 app.run(workflow, args) to say which one runs it",
            );
            return body.await;
        }
    };
    let durable = async {
        let registration = registration_of::<W>()?;
        let started = start_top_level(&rt, registration, args?, StartOptions::default()).await?;
        let outcome = wait_outcome(&rt, &started.workflow_id).await?;
        Ok::<_, Error>((started.workflow_id, outcome))
    };
    let failure = match durable
        .await
        .and_then(|(id, outcome)| typed_outcome(&id, outcome))
    {
        Ok(typed) => return typed,
        Err(failure) => failure,
    };
    match convert {
        Some(convert) => Err(convert(failure)),
        // Unreachable: a call without a conversion ran as a plain call above.
        None => unreachable!("a durable direct call without a conversion: {failure}"),
    }
}

/// A finished workflow's outcome as its function's types: its output, or the typed error it
/// returned. `Err` for what `E` cannot hold: an output that does not decode, or an error of
/// Cairn's or of another type.
fn typed_outcome<T: DeserializeOwned, E: DurableError>(
    workflow_id: &str,
    outcome: Outcome,
) -> Result<std::result::Result<T, E>> {
    match outcome.result {
        Ok(text) => serialization::decode::<T>(
            &text,
            outcome.serialization.as_deref(),
            workflow_id,
            "workflow_output.output",
        )
        .map(Ok),
        Err(portable) => match serialization::typed_error::<E>(portable.clone()) {
            Some(Ok(typed)) => Ok(Err(typed)),
            Some(Err(_)) | None => Err(Error::from_portable(portable)),
        },
    }
}

/// Log `message` once per process.
fn warn_plain_once(message: &'static str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| tracing::warn!("{message}"));
}

/// Start a workflow from inside a workflow, as a child: its id is `<parent id>-<operation id>`
/// and it starts exactly once across replays. Returns a handle to wait on.
pub fn start_child_workflow<W, M>(
    workflow: W,
    args: W::Args,
) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send
where
    W: WorkflowFn<M>,
    W::Args: Sync,
{
    start_child_workflow_with(StartOptions::default(), workflow, args)
}

/// [`start_child_workflow`] with options (a caller-chosen child id).
pub fn start_child_workflow_with<W, M>(
    options: StartOptions,
    _workflow: W,
    args: W::Args,
) -> impl Future<Output = Result<WorkflowHandle<W::Output>>> + Send
where
    W: WorkflowFn<M>,
    W::Args: Sync,
{
    let parent = WorkflowContext::operation();
    let halted = parent.as_ref().map(|(ctx, _)| Arc::clone(ctx));
    halting(halted, async move {
        let (parent, function_id) =
            parent.ok_or(Error::NotInWorkflow("cairn::start_child_workflow"))?;
        let registration = registration_of::<W>()?;
        let positional = W::encode_args(&args, registration.name)?;
        let started = start_child(&parent, function_id, registration, positional, options).await?;
        Ok(WorkflowHandle::started(Arc::clone(&parent.rt), started))
    })
}

/// Decode arguments, run a workflow body and encode its outcome (used by generated code).
///
/// A combinator rather than an `async fn`: an `async fn` keeps its argument and the future
/// it awaits in separate places, so the workflow's whole body would be held twice.
#[doc(hidden)]
pub fn finish<T: Serialize, E: DurableError>(
    workflow: &'static str,
    body: impl Future<Output = std::result::Result<T, E>>,
) -> impl Future<Output = std::result::Result<String, PortableError>> {
    body.map(move |outcome| match outcome {
        Ok(value) => {
            serialization::encode(&value, || format!("the output of workflow `{workflow}`"))
                .map_err(|e| e.to_portable())
        }
        Err(error) => {
            Err(serialization::portable_error_of(&error).unwrap_or_else(|e| e.to_portable()))
        }
    })
}
