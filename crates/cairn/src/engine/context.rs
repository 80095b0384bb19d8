//! The ambient context of a running workflow: which workflow, which owner, which operation next.
//!
//! The context is task-local, so a workflow's body (and every future it awaits, including
//! `join!`ed steps) sees it without passing it around. Operation ids are handed out when a
//! durable operation is *called*, never when it is first polled (invariant 1).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use super::runtime::{Interrupted, Interruption, Runtime, now_ms};
use crate::error::{Error, Result};
use crate::serialization;
use crate::status::WorkflowState;
use crate::store::{Checkpoint, Op, RecordOutcome, RecordStep, StepRecord};

tokio::task_local! {
    static CURRENT: Arc<WorkflowContext>;
    static IN_STEP: StepFrame;
}

/// The step body running in this task: its operation id, and which attempt this is.
struct StepFrame {
    function_id: i32,
    /// From 1; a retrying step moves it on before each attempt.
    attempt: std::cell::Cell<u32>,
}

/// The operation id and attempt of the step body running in this task, if one is.
pub(crate) fn current_step() -> Option<(i32, u32)> {
    IN_STEP
        .try_with(|frame| (frame.function_id, frame.attempt.get()))
        .ok()
}

/// Record that the step body running in this task starts attempt `attempt`.
pub(crate) fn set_step_attempt(attempt: u32) {
    let _ = IN_STEP.try_with(|frame| frame.attempt.set(attempt));
}

/// One execution of one workflow.
pub(crate) struct WorkflowContext {
    pub rt: Arc<Runtime>,
    pub workflow_id: String,
    pub name: &'static str,
    /// This execution's ownership token; every write is guarded by it.
    pub owner_xid: String,
    /// The last operation id handed out; the first operation gets 1, as in DBOS.
    last_id: AtomicI32,
    /// Checkpoints recorded by earlier executions, loaded once when recovery claimed the workflow.
    recorded: HashMap<i32, Checkpoint>,
    /// Why this execution must stop: an interruption (cancelled, taken over, shutting down)
    /// or a fatal replay error (non-determinism, an undecodable checkpoint).
    halt: Mutex<Option<Error>>,
    /// Whether the execution halted, and how many step bodies are running: the executor
    /// drops a halted workflow's body only between step bodies (a step that is not
    /// cancellable finishes first).
    progress: tokio::sync::watch::Sender<Progress>,
    /// Set when the execution is interrupted here: the workflow was cancelled (or timed out),
    /// taken over elsewhere, or the application is shutting down.
    cancelled: Interrupted,
    /// The workflow's deadline, epoch milliseconds; inherited by its children.
    pub deadline_ms: Option<i64>,
    /// The configured instance it runs as (`config_name`); inherited by its children.
    pub instance: Option<String>,
}

impl WorkflowContext {
    #[allow(clippy::too_many_arguments)] // one per part of an execution, each named at the call
    pub(crate) fn new(
        rt: Arc<Runtime>,
        workflow_id: String,
        name: &'static str,
        owner_xid: String,
        recorded: Vec<Checkpoint>,
        cancelled: Interrupted,
        deadline_ms: Option<i64>,
        instance: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            rt,
            workflow_id,
            name,
            owner_xid,
            last_id: AtomicI32::new(0),
            recorded: recorded.into_iter().map(|c| (c.function_id, c)).collect(),
            halt: Mutex::new(None),
            progress: tokio::sync::watch::Sender::new(Progress::default()),
            cancelled,
            deadline_ms,
            instance,
        })
    }

    /// Run `wait` unless the workflow is interrupted first (cancelled, timed out, shutting
    /// down), in which case the execution halts with the reason.
    ///
    /// `wait` is boxed for as long as it runs (not an `async fn`, which would hold it twice:
    /// as its argument and as the future it selects on); a workflow in a long wait holds the
    /// box and little else.
    pub(crate) fn interruptible<'a, T: 'a>(
        &'a self,
        wait: impl Future<Output = T> + 'a,
    ) -> impl Future<Output = Result<T>> + 'a {
        let mut wait = Box::pin(wait);
        let mut cancelled = self.cancelled.clone();
        async move {
            tokio::select! {
                value = &mut wait => Ok(value),
                _ = cancelled.wait_for(Option::is_some) => Err(self.halt(self.interruption())),
            }
        }
    }

    /// Why an interruption happened: shutdown, the workflow taken over, or cancellation.
    fn interruption(&self) -> Error {
        if self.rt.is_shutting_down() {
            return Error::Shutdown;
        }
        match *self.cancelled.borrow() {
            Some(Interruption::OwnershipLost) => Error::OwnershipLost(self.workflow_id.clone()),
            _ => Error::Cancelled(self.workflow_id.clone()),
        }
    }

    /// The next operation id, without taking it (for `patch`).
    pub(crate) fn peek_id(&self) -> i32 {
        self.last_id.load(Ordering::SeqCst) + 1
    }

    /// The calling workflow and the next operation id, taken now — at call time, so
    /// operations started together (`join!`) get deterministic ids (invariant 1). `None`
    /// outside a workflow or inside a step.
    pub(crate) fn operation() -> Option<(Arc<Self>, i32)> {
        Self::current().map(|ctx| {
            let id = ctx.next_id();
            (ctx, id)
        })
    }

    /// The workflow context of the calling task, unless the caller is inside a step (where
    /// durable operations are plain calls) or outside any workflow.
    pub(crate) fn current() -> Option<Arc<Self>> {
        if IN_STEP.try_with(|_| ()).is_ok() {
            return None;
        }
        CURRENT.try_with(Arc::clone).ok()
    }

    /// The workflow context of the calling task, in workflow code and in its step bodies
    /// alike (for what code may read about where it runs: ids, state).
    pub(crate) fn ambient() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// Run a workflow body with this context installed.
    pub(crate) async fn scope<F: Future>(self: Arc<Self>, body: F) -> F::Output {
        CURRENT.scope(self, body).await
    }

    /// Run the body of step `function_id`: durable operations inside it are plain calls.
    pub(crate) async fn step_scope<F: Future>(function_id: i32, body: F) -> F::Output {
        let frame = StepFrame {
            function_id,
            attempt: std::cell::Cell::new(1),
        };
        IN_STEP.scope(frame, body).await
    }

    /// Hand out the next operation id.
    pub(crate) fn next_id(&self) -> i32 {
        self.last_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The checkpoint an earlier execution recorded at this id, if any.
    pub(crate) fn recorded(&self, function_id: i32) -> Option<&Checkpoint> {
        self.recorded.get(&function_id)
    }

    /// Stop this execution for `reason` (the first reason wins) and return it as an error.
    pub(crate) fn halt(&self, reason: Error) -> Error {
        let mut halt = self.halt.lock().unwrap_or_else(|p| p.into_inner());
        let copy = clone_halt(&reason);
        if halt.is_none() {
            *halt = Some(reason);
        }
        drop(halt);
        self.progress.send_if_modified(|p| {
            p.halted = true;
            p.stoppable()
        });
        copy
    }

    /// Completes once the execution has halted and no step body is running: the moment the
    /// executor may drop the workflow's body.
    pub(crate) async fn stopped(&self) {
        let mut progress = self.progress.subscribe();
        let _ = progress.wait_for(Progress::stoppable).await;
    }

    /// Mark a step body as running until the guard is dropped (even by a cancellation).
    pub(crate) fn step_running(&self) -> StepRunning<'_> {
        // Counting in or out wakes the executor only when the body may be dropped: a wake-up
        // per step would cost every step a poll of the executor's task.
        self.progress.send_if_modified(|p| {
            p.running_steps += 1;
            false
        });
        StepRunning(self)
    }

    /// Why the execution stopped, if it did.
    pub(crate) fn take_halt(&self) -> Option<Error> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Refuse to start another operation once the execution must stop.
    pub(crate) fn check_running(&self) -> Result<()> {
        if let Some(reason) = self.halt.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Err(clone_halt(reason));
        }
        if self.rt.is_shutting_down() {
            return Err(self.halt(Error::Shutdown));
        }
        if self.cancelled.borrow().is_some() {
            return Err(self.halt(self.interruption()));
        }
        Ok(())
    }

    /// The replayed value of a recorded operation, checking it is the same operation.
    pub(crate) fn replay<T: DeserializeOwned>(
        &self,
        checkpoint: &Checkpoint,
        name: &str,
    ) -> Result<T> {
        self.check_name(checkpoint, name)?;
        let column = "operation_outputs";
        let format = checkpoint.serialization.as_deref();
        if let Some(error) = &checkpoint.error {
            return match serialization::decode_error(
                error,
                format,
                &self.workflow_id,
                &format!("{column}.error"),
            ) {
                Ok(portable) => Err(Error::from_portable(portable)),
                Err(undecodable) => Err(self.halt(undecodable)),
            };
        }
        let output = checkpoint.output.as_deref().unwrap_or("null");
        serialization::decode(
            output,
            format,
            &self.workflow_id,
            &format!("{column}.output"),
        )
        .map_err(|undecodable| self.halt(undecodable))
    }

    /// A recorded operation under another name means the code changed: fatal for this workflow.
    pub(crate) fn check_name(&self, checkpoint: &Checkpoint, name: &str) -> Result<()> {
        if checkpoint.function_name == name {
            return Ok(());
        }
        Err(self.halt(Error::NonDeterminism {
            workflow_id: self.workflow_id.clone(),
            function_id: checkpoint.function_id,
            expected: name.to_owned(),
            recorded: checkpoint.function_name.clone(),
        }))
    }

    /// A step record for this workflow, guarded by this execution's token.
    pub(crate) fn step_record(&self, function_id: i32, name: &str, started_at: i64) -> StepRecord {
        StepRecord {
            workflow_id: self.workflow_id.clone(),
            owner_xid: self.owner_xid.clone(),
            function_id,
            function_name: name.to_owned(),
            output: None,
            error: None,
            child_workflow_id: None,
            started_at_epoch_ms: started_at,
            completed_at_epoch_ms: now_ms(),
            application_name: Some(self.rt.app_name.clone()),
        }
    }

    /// Run a store operation for this workflow. A failure of the system database that is
    /// left after retrying (a permanent one, or the store giving up at shutdown) stops the
    /// execution rather than reaching the workflow's code.
    pub(crate) async fn durable<O: Op>(&self, op: O) -> Result<O::Output> {
        self.rt
            .store
            .run(op)
            .await
            .map_err(|error| self.stop_on(error))
    }

    /// Halt the execution if `error` is a failure of the system database (see
    /// [`WorkflowContext::durable`]); return it either way.
    pub(crate) fn stop_on(&self, error: Error) -> Error {
        match error {
            Error::Database { .. } | Error::Shutdown => self.halt(error),
            other => other,
        }
    }

    /// Write a checkpoint; a refusal halts the execution with the reason. (A combinator: the
    /// future a step holds while its checkpoint commits is the store's box and the name.)
    pub(crate) fn record(&self, record: StepRecord) -> impl Future<Output = Result<()>> + '_ {
        use futures::FutureExt;
        let name = record.function_name.clone();
        self.rt
            .store
            .run(RecordStep(record))
            .map(move |outcome| match outcome {
                Ok(outcome) => self.settle(outcome, &name),
                // Transient failures were retried; what is left stops this execution.
                Err(error) => Err(self.halt(error)),
            })
    }

    /// Turn a write's outcome into this execution's next move.
    pub(crate) fn settle(&self, outcome: RecordOutcome, name: &str) -> Result<()> {
        match outcome {
            RecordOutcome::Recorded => Ok(()),
            RecordOutcome::Duplicate(existing) => self.check_name(&existing, name),
            RecordOutcome::NotOwner { status } => Err(self.halt(self.lost(status.as_ref()))),
        }
    }

    fn lost(&self, status: Option<&WorkflowState>) -> Error {
        match status {
            Some(WorkflowState::Cancelled) => Error::Cancelled(self.workflow_id.clone()),
            None => Error::NotFound(self.workflow_id.clone()),
            _ => Error::OwnershipLost(self.workflow_id.clone()),
        }
    }
}

/// Run a durable operation of the workflow `ctx` (if any). If it fails because the execution
/// halted (cancelled, timed out, taken over, shutting down, non-determinism, a database
/// failure left after retrying), it never completes: the executor drops the workflow's body
/// there, so Cairn's own failures do not flow through the workflow's code. Other errors (a
/// missing destination, an unserializable value) are the operation's result.
///
/// The operation's future is boxed for as long as it runs: a workflow's own future then
/// holds a pointer per operation it awaits, not the operation (an `async fn` here would hold
/// it twice, as its argument and as the future it awaits), and only the operations running
/// now take memory.
pub(crate) fn halting<T, F: Future<Output = Result<T>>>(
    ctx: Option<Arc<WorkflowContext>>,
    op: F,
) -> Halting<F> {
    Halting {
        ctx,
        op: Box::pin(op),
        stopped: false,
    }
}

/// The future of [`halting`].
pub(crate) struct Halting<F> {
    ctx: Option<Arc<WorkflowContext>>,
    op: std::pin::Pin<Box<F>>,
    /// The operation failed because the execution halted: never complete.
    stopped: bool,
}

impl<T, F: Future<Output = Result<T>>> Future for Halting<F> {
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T>> {
        use std::task::Poll;
        if self.stopped {
            return Poll::Pending;
        }
        match self.op.as_mut().poll(cx) {
            Poll::Ready(Err(error))
                if self
                    .ctx
                    .as_ref()
                    .is_some_and(|ctx| ctx.progress.borrow().halted) =>
            {
                // The executor drops the workflow's body from here; nothing wakes this.
                drop(error);
                self.stopped = true;
                Poll::Pending
            }
            other => other,
        }
    }
}

/// Whether an execution halted, and how many of its step bodies are running.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Progress {
    halted: bool,
    running_steps: usize,
}

impl Progress {
    /// Whether the executor may drop the body now: halted, and no step body running.
    fn stoppable(&self) -> bool {
        self.halted && self.running_steps == 0
    }
}

/// A step body running; dropping it (at the body's end, or when a cancellable step is
/// interrupted) counts it out.
pub(crate) struct StepRunning<'a>(&'a WorkflowContext);

impl Drop for StepRunning<'_> {
    fn drop(&mut self) {
        self.0.progress.send_if_modified(|p| {
            p.running_steps -= 1;
            p.stoppable()
        });
    }
}

/// A copy of a halt reason to return to the caller (the original is kept in the context).
fn clone_halt(reason: &Error) -> Error {
    reason
        .clone_data()
        .unwrap_or_else(|| Error::Application(reason.to_portable()))
}
