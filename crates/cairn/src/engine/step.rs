//! Steps: calls to the outside world whose outcome is checkpointed before the workflow moves on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::context::WorkflowContext;
use super::runtime::now_ms;
use crate::error::{DurableError, Error, PortableError};
use crate::serialization;
use crate::store::{Checkpoint, StepRecord};

/// How a step is retried when it fails.
///
/// ```
/// use std::time::Duration;
/// let options = cairn::StepOptions::default()
///     .max_attempts(5)
///     .interval(Duration::from_millis(100));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepOptions {
    /// How many times the body runs before its error is final. Default: 1 (no retries).
    pub max_attempts: u32,
    /// The wait before the first retry. Default: 1 second.
    pub interval: Duration,
    /// The factor the wait grows by after each retry. Default: 2.0.
    pub backoff_rate: f64,
    /// The longest wait between two attempts. Default: 1 hour.
    pub max_interval: Duration,
    /// The longest one attempt may run; a slower attempt fails with
    /// [`Error::StepTimedOut`] and is retried like any failure. If the last attempt times out,
    /// the step returns `E::from(Error::StepTimedOut)` when its error type converts from
    /// [`Error`] (`#[cairn::step]` detects that); otherwise the timeout fails the workflow.
    /// Outside a workflow it applies only where it converts. Default: none.
    pub timeout: Option<Duration>,
    /// Whether a cancellation (or the workflow's deadline) interrupts the step while its body
    /// runs. Otherwise the body finishes and the workflow stops at its next durable
    /// operation. Default: false.
    pub cancellable: bool,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            interval: Duration::from_secs(1),
            backoff_rate: 2.0,
            max_interval: Duration::from_secs(3600),
            timeout: None,
            cancellable: false,
        }
    }
}

impl StepOptions {
    /// Set [`StepOptions::max_attempts`] (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Set [`StepOptions::interval`].
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Set [`StepOptions::backoff_rate`].
    pub fn backoff_rate(mut self, rate: f64) -> Self {
        self.backoff_rate = rate;
        self
    }

    /// Set [`StepOptions::max_interval`].
    pub fn max_interval(mut self, max: Duration) -> Self {
        self.max_interval = max;
        self
    }

    /// Set [`StepOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Set [`StepOptions::cancellable`].
    pub fn cancellable(mut self, cancellable: bool) -> Self {
        self.cancellable = cancellable;
        self
    }

    /// The wait after failed attempt number `attempt` (1-based).
    fn delay_after(&self, attempt: u32) -> Duration {
        let factor = self
            .backoff_rate
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.interval.as_secs_f64() * factor).min(self.max_interval.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_interval)
    }
}

/// How a failure of Cairn's own in a step attempt (a panic, a timed-out attempt) becomes a
/// value of the step's error type, where the type can hold one (`E: From<cairn::Error>`;
/// `#[cairn::step]` finds that out at compile time). Without it such a failure, once retries
/// are spent, fails the step's workflow.
#[doc(hidden)]
pub type Convert<E> = Option<fn(Error) -> E>;

/// The name DBOS records for a step whose retries are spent.
const MAX_RETRIES_EXCEEDED: &str = "DBOSMaxStepRetriesExceeded";

/// A step call in progress. `#[cairn::step]` creates one when the step is *called*, which is
/// when the operation id is taken; not for direct use.
#[doc(hidden)]
pub struct StepCall {
    name: &'static str,
    /// The workflow and the operation id, when called from inside a workflow.
    target: Option<(Arc<WorkflowContext>, i32)>,
    /// Set by a body that wrote its own checkpoint in the transaction of its effects (a
    /// transactional step on the system database), so the outcome is not written again.
    written: Option<Arc<AtomicBool>>,
}

/// A step's outcome: the body's own result, or a failure of Cairn's (panic, timeout); and,
/// when its own error ended retries that all failed, how many attempts ran.
type Attempt<T, E> = (Result<Result<T, E>, Error>, Option<u32>);

impl StepCall {
    /// Take the next operation id if called from a workflow (and not from inside a step).
    pub fn begin(name: &'static str) -> Self {
        let target = WorkflowContext::operation();
        Self {
            name,
            target,
            written: None,
        }
    }

    /// The checkpoint this call will write, with its output and error still empty: the
    /// workflow, its owner and the operation id. `None` outside a workflow.
    pub(crate) fn checkpoint(&self) -> Option<StepRecord> {
        let (ctx, function_id) = self.target.as_ref()?;
        Some(ctx.step_record(*function_id, self.name, now_ms()))
    }

    /// The runtime of the calling workflow, if called from one.
    pub(crate) fn runtime(&self) -> Option<Arc<super::runtime::Runtime>> {
        self.target.as_ref().map(|(ctx, _)| Arc::clone(&ctx.rt))
    }

    /// Whether the call replays a recorded outcome (its body will not run).
    pub(crate) fn is_replay(&self) -> bool {
        self.target
            .as_ref()
            .is_some_and(|(ctx, function_id)| ctx.recorded(*function_id).is_some())
    }

    /// A flag the body sets once it has written the call's checkpoint itself (in the same
    /// transaction as its effects); the outcome is then not written a second time.
    pub(crate) fn written_flag(&mut self) -> Arc<AtomicBool> {
        Arc::clone(self.written.get_or_insert_with(Arc::default))
    }

    /// Run a step body once.
    pub async fn run<T, E, F>(self, convert: Convert<E>, body: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: DurableError,
        F: Future<Output = Result<T, E>>,
    {
        let Some((ctx, function_id)) = self.target else {
            return body.await;
        };
        let span = step_span(self.name, &ctx, function_id);
        let body = async { (catch_panic(body).await, None) };
        let written = self.written.as_deref();
        checkpointed(self.name, ctx, function_id, body, false, convert, written)
            .instrument(span)
            .await
    }

    /// Run a step body with options (retries, per-attempt timeout, cancellable), retrying
    /// only errors for which `should_retry` is true: `attempt` makes each attempt's future.
    pub async fn run_retrying_if<T, E, F>(
        self,
        options: StepOptions,
        convert: Convert<E>,
        should_retry: impl Fn(&E) -> bool,
        attempt: impl FnMut() -> F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: DurableError,
        F: Future<Output = Result<T, E>>,
    {
        let cancellable = options.cancellable;
        let workflow = self.target.as_ref().map(|(ctx, _)| Arc::clone(ctx));
        let attempts = attempts(self.name, options, convert, workflow, should_retry, attempt);
        let Some((ctx, function_id)) = self.target else {
            return match (attempts.await.0, convert) {
                (Ok(result), _) => result,
                (Err(failure), Some(convert)) => Err(convert(failure)),
                // Outside a workflow, `attempts` neither catches panics nor applies a timeout
                // that does not convert, so it has no failure of its own to report.
                (Err(failure), None) => {
                    unreachable!("step `{}` failed outside a workflow: {failure}", self.name)
                }
            };
        };
        let span = step_span(self.name, &ctx, function_id);
        let written = self.written.as_deref();
        checkpointed(
            self.name,
            ctx,
            function_id,
            attempts,
            cancellable,
            convert,
            written,
        )
        .instrument(span)
        .await
    }
}

/// The span of a step called from a workflow. `attempt` counts up as a retrying step retries.
fn step_span(name: &'static str, ctx: &WorkflowContext, function_id: i32) -> tracing::Span {
    tracing::info_span!(
        "step",
        workflow_id = %ctx.workflow_id,
        name,
        function_id,
        attempt = 1u32
    )
}

/// Run a step's body (unless replaying) and checkpoint its outcome before returning it. An
/// error of `E` is recorded with its value, so a replay returns the same `E`. A failure that
/// `E` cannot hold, or any refusal to continue (cancelled, taken over, shutting down,
/// non-determinism), stops the workflow here: the step never returns and the executor drops
/// the workflow's body. `written`, once set by the body, says it recorded a successful
/// outcome itself.
async fn checkpointed<T, E, F>(
    name: &'static str,
    ctx: Arc<WorkflowContext>,
    function_id: i32,
    body: F,
    cancellable: bool,
    convert: Convert<E>,
    written: Option<&AtomicBool>,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: DurableError,
    F: Future<Output = Attempt<T, E>>,
{
    if ctx.check_running().is_err() {
        return stop().await;
    }
    if let Some(checkpoint) = ctx.recorded(function_id) {
        return match replay(&ctx, checkpoint, name) {
            Some(result) => result,
            None => stop().await,
        };
    }
    let started = now_ms();
    // Counted as running until its outcome is recorded, so a halted workflow is dropped only
    // after a step that finished has been recorded.
    let running = ctx.step_running();
    let body = WorkflowContext::step_scope(function_id, body);
    let outcome = if cancellable {
        // A cancellation interrupts the body itself; nothing is recorded.
        // Boxed: cancellable steps are the rare kind, and would size every step's future.
        match Box::pin(ctx.interruptible(body)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                drop(running);
                return stop().await;
            }
        }
    } else {
        body.await
    };
    let (outcome, exhausted) = outcome;
    let mut record = ctx.step_record(function_id, name, started);
    // Settled in a plain function: what it takes apart is not held across the write below.
    let settled = settle(name, outcome, exhausted, convert, &mut record);
    if let Settled::Failed(failure) = settled {
        // Recorded as the step's outcome, then the workflow fails with it (a replay reads the
        // record and fails the same way). Boxed: a rare path should not size every step.
        record.error = Some(encode_error(&failure.to_portable()));
        let _ = Box::pin(ctx.record(record)).await;
        ctx.halt(failure);
        drop(running);
        return stop().await;
    }
    let recorded = if written.is_some_and(|w| w.load(Ordering::Acquire)) {
        Ok(())
    } else {
        ctx.record(record).await
    };
    drop(running);
    if recorded.is_err() {
        return stop().await;
    }
    match settled {
        Settled::Value(value) => Ok(value),
        Settled::Error(error) => Err(error),
        Settled::Failed(_) => stop().await,
    }
}

/// Turn a step body's outcome into what the step returns, filling in what `record` records:
/// its output, or its error (under DBOS's name for spent retries when `exhausted`).
fn settle<T: Serialize, E: DurableError>(
    name: &'static str,
    outcome: Result<Result<T, E>, Error>,
    exhausted: Option<u32>,
    convert: Convert<E>,
    record: &mut StepRecord,
) -> Settled<T, E> {
    // A failure of Cairn's converted into `E` is recorded under its own name and message
    // (`Panic`, `StepTimedOut`, as DBOS's tools show them), with the `E` as its value.
    let mut recorded_as: Option<PortableError> = None;
    let settled = match outcome {
        Ok(Ok(value)) => {
            match serialization::encode(&value, || format!("the output of step `{name}`")) {
                Ok(text) => {
                    record.output = Some(text);
                    Settled::Value(value)
                }
                Err(unencodable) => Settled::Failed(unencodable),
            }
        }
        Ok(Err(error)) => Settled::Error(error),
        Err(failure) => match convert {
            Some(convert) => {
                recorded_as = Some(failure.to_portable());
                Settled::Error(convert(failure))
            }
            None => Settled::Failed(failure),
        },
    };
    match settled {
        Settled::Error(error) => match serialization::portable_error_of(&error) {
            Ok(mut portable) => {
                if let Some(own) = recorded_as {
                    portable.name = own.name;
                    portable.message = own.message;
                }
                // Recorded under DBOS's name for spent retries; the value is still the last
                // attempt's error, which is what the step returns now and on replay.
                if let Some(attempts) = exhausted {
                    portable.name = MAX_RETRIES_EXCEEDED.to_owned();
                    portable.message = format!(
                        "step `{name}` failed after {attempts} attempts: {}",
                        portable.message
                    );
                }
                record.error = Some(encode_error(&portable));
                Settled::Error(error)
            }
            Err(unencodable) => Settled::Failed(unencodable),
        },
        other => other,
    }
}

/// What a step's body came to, before it is recorded.
enum Settled<T, E> {
    /// Its output.
    Value(T),
    /// Its own error.
    Error(E),
    /// A failure of Cairn's that `E` cannot hold; it fails the workflow.
    Failed(Error),
}

/// The attempts of a retrying step: each attempt's own error is retried while `should_retry`
/// allows and attempts remain; the last one's is the outcome. Inside a workflow a panic or a
/// timed-out attempt counts as a failed attempt too; outside one, panics propagate and the
/// timeout applies only where it converts into `E`. `workflow` is the calling workflow, if any.
async fn attempts<T, E, F>(
    name: &'static str,
    options: StepOptions,
    convert: Convert<E>,
    workflow: Option<Arc<WorkflowContext>>,
    should_retry: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> F,
) -> Attempt<T, E>
where
    E: DurableError,
    F: Future<Output = Result<T, E>>,
{
    let in_workflow = workflow.is_some();
    let workflow_id = workflow
        .as_deref()
        .map(|ctx| tracing::field::display(ctx.workflow_id.as_str()));
    let timeout = options.timeout.filter(|_| in_workflow || convert.is_some());
    let mut tries = 1;
    loop {
        let body = attempt();
        let outcome = match (timeout, in_workflow) {
            (None, false) => Ok(body.await),
            (None, true) => catch_panic(body).await,
            (Some(limit), _) => {
                let run = async {
                    if in_workflow {
                        catch_panic(body).await
                    } else {
                        Ok(body.await)
                    }
                };
                match tokio::time::timeout(limit, run).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Error::StepTimedOut {
                        step: name.to_owned(),
                        timeout_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                    }),
                }
            }
        };
        let failure = match &outcome {
            Ok(Ok(_)) => return (outcome, None),
            Ok(Err(error)) if !should_retry(error) => return (outcome, None),
            Ok(Err(error)) => error.to_string(),
            Err(failure) => failure.to_string(),
        };
        if tries >= options.max_attempts {
            if tries > 1 {
                tracing::warn!(workflow_id, step = name, attempts = tries, error = %failure, "step failed on every attempt");
            }
            return match outcome {
                // A failure of Cairn's on the last of several attempts: say so.
                Err(last) if tries > 1 => (
                    Err(Error::StepRetriesExhausted {
                        step: name.to_owned(),
                        attempts: tries,
                        last: Box::new(last.to_portable()),
                    }),
                    None,
                ),
                other => (other, (tries > 1).then_some(tries)),
            };
        }
        let wait = options.delay_after(tries);
        tracing::warn!(workflow_id, step = name, attempt = tries, error = %failure, "step failed; retrying in {wait:?}");
        tokio::time::sleep(wait).await;
        tries += 1;
        if in_workflow {
            // The current span is this step's (see `step_span`).
            tracing::Span::current().record("attempt", tries);
            super::context::set_step_attempt(tries);
        }
    }
}

/// The recorded outcome of a step, as the same typed value the first run returned. `None`
/// when the record must stop the workflow instead: another operation's record
/// (non-determinism), an undecodable value, or a failure of Cairn's (panic, timeout) that
/// failed the workflow the first time too.
fn replay<T, E>(ctx: &WorkflowContext, checkpoint: &Checkpoint, name: &str) -> Option<Result<T, E>>
where
    T: DeserializeOwned,
    E: DurableError,
{
    let Some(error) = &checkpoint.error else {
        return ctx.replay(checkpoint, name).ok().map(Ok);
    };
    ctx.check_name(checkpoint, name).ok()?;
    let column = "operation_outputs.error";
    let format = checkpoint.serialization.as_deref();
    let portable = match serialization::decode_error(error, format, &ctx.workflow_id, column) {
        Ok(portable) => portable,
        Err(undecodable) => {
            ctx.halt(undecodable);
            return None;
        }
    };
    match serialization::typed_error::<E>(portable.clone()) {
        Some(Ok(typed)) => Some(Err(typed)),
        Some(Err(mismatch)) => {
            ctx.halt(Error::Decode {
                workflow_id: ctx.workflow_id.clone(),
                column: column.to_owned(),
                reason: format!(
                    "the error recorded for step `{name}` is not a {}: {mismatch}",
                    std::any::type_name::<E>()
                ),
            });
            None
        }
        None => {
            ctx.halt(Error::from_portable(portable));
            None
        }
    }
}

/// Where a step stops a halted workflow: it never returns, and the executor drops the
/// workflow's body (see `WorkflowContext::stopped`).
async fn stop<T>() -> T {
    std::future::pending().await
}

/// Run a body, catching a panic as an application error named `Panic`.
async fn catch_panic<T>(body: impl Future<Output = T>) -> Result<T, Error> {
    AssertUnwindSafe(body)
        .catch_unwind()
        .await
        .map_err(|panic| Error::Application(serialization::panic_error(&*panic)))
}

/// A portable error as stored text (an error object always encodes).
pub(crate) fn encode_error(error: &PortableError) -> String {
    serialization::encode(error, String::new)
        .unwrap_or_else(|_| format!("{{\"name\":\"Error\",\"message\":{:?}}}", error.message))
}

/// Run a closure as a checkpointed step named `name`.
///
/// Inside a workflow the closure's outcome is recorded before the workflow continues, and a
/// replay returns the recorded outcome without running it. Outside a workflow (or inside
/// another step) it simply runs.
///
/// ```no_run
/// # async fn demo() -> cairn::Result<()> {
/// let n: u64 = cairn::run_step("roll", || async { Ok::<_, cairn::Error>(4) }).await?;
/// # let _ = n; Ok(()) }
/// ```
pub fn run_step<T, E, F, Fut>(
    name: &'static str,
    body: F,
) -> impl Future<Output = Result<T, E>> + Send
where
    T: Serialize + DeserializeOwned + Send,
    E: DurableError,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
{
    let call = StepCall::begin(name);
    async move { call.run(None, body()).await }
}

/// [`run_step`] with retry options; the closure runs once per attempt.
pub fn run_step_with<T, E, F, Fut>(
    name: &'static str,
    options: StepOptions,
    body: F,
) -> impl Future<Output = Result<T, E>> + Send
where
    T: Serialize + DeserializeOwned + Send,
    E: DurableError,
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
{
    let call = StepCall::begin(name);
    async move { call.run_retrying_if(options, None, |_| true, body).await }
}
