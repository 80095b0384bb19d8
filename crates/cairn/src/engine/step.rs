//! Steps: calls to the outside world whose outcome is checkpointed before the workflow moves on.

use std::fmt::Display;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::WorkflowContext;
use super::runtime::now_ms;
use crate::error::{Error, PortableError};
use crate::serialization;

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
    /// [`Error::StepTimedOut`] (and is retried like any failure). Default: none.
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

/// A step call in progress. `#[cairn::step]` creates one when the step is *called*, which is
/// when the operation id is taken; not for direct use.
#[doc(hidden)]
pub struct StepCall {
    name: &'static str,
    /// The workflow and the operation id, when called from inside a workflow.
    target: Option<(Arc<WorkflowContext>, i32)>,
}

impl StepCall {
    /// Take the next operation id if called from a workflow (and not from inside a step).
    pub fn begin(name: &'static str) -> Self {
        let target = WorkflowContext::current().map(|ctx| {
            let id = ctx.next_id();
            (ctx, id)
        });
        Self { name, target }
    }

    /// Run a step body once.
    pub async fn run<T, E, F>(self, body: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display + 'static,
        F: Future<Output = Result<T, E>>,
    {
        self.checkpointed_outcome(catch_panic(body), false).await
    }

    /// Run a step body with options (retries, per-attempt timeout, cancellable): `attempt`
    /// makes each attempt's future.
    pub async fn run_retrying<T, E, F>(
        self,
        options: StepOptions,
        attempt: impl FnMut() -> F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display + 'static,
        F: Future<Output = Result<T, E>>,
    {
        self.run_retrying_if(options, |_: &E| true, attempt).await
    }

    /// [`StepCall::run_retrying`], retrying only errors for which `should_retry` is true.
    pub async fn run_retrying_if<T, E, F>(
        self,
        options: StepOptions,
        should_retry: impl Fn(&E) -> bool,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display + 'static,
        F: Future<Output = Result<T, E>>,
    {
        let name = self.name;
        let cancellable = options.cancellable;
        let retrying = async move {
            let mut tries = 1;
            loop {
                let outcome = match options.timeout {
                    None => catch_panic(attempt()).await,
                    Some(limit) => {
                        match tokio::time::timeout(limit, catch_panic(attempt())).await {
                            Ok(outcome) => outcome,
                            Err(_) => Ok(Err(E::from(Error::StepTimedOut {
                                step: name.to_owned(),
                                timeout_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                            }))),
                        }
                    }
                };
                let failure = match outcome {
                    Ok(Ok(value)) => return Ok(Ok(value)),
                    Ok(Err(error)) if !should_retry(&error) => return Ok(Err(error)),
                    // The only attempt: its own error (or panic) is the step's outcome.
                    last if options.max_attempts <= 1 => return last,
                    Ok(Err(error)) => serialization::portable_error_of(&error),
                    Err(Error::Application(panic)) => panic,
                    Err(other) => other.to_portable(),
                };
                if tries >= options.max_attempts {
                    return Err(Error::StepRetriesExhausted {
                        step: name.to_owned(),
                        attempts: tries,
                        last: Box::new(failure),
                    });
                }
                let wait = options.delay_after(tries);
                tracing::warn!(step = name, attempt = tries, error = %failure, "step failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                tries += 1;
            }
        };
        self.checkpointed_outcome(retrying, cancellable).await
    }

    /// Run the body (unless replaying) and checkpoint its outcome. The body's own `Err(Error)`
    /// (a panic, exhausted retries) is recorded in Cairn's portable form and returned as
    /// `E::from(error)`.
    async fn checkpointed_outcome<T, E, F>(self, body: F, cancellable: bool) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display + 'static,
        F: Future<Output = Result<Result<T, E>, Error>>,
    {
        let Some((ctx, function_id)) = self.target else {
            return body.await.unwrap_or_else(|error| Err(E::from(error)));
        };
        ctx.check_running()?;
        if let Some(checkpoint) = ctx.recorded(function_id) {
            return ctx.replay(checkpoint, self.name).map_err(E::from);
        }
        let started = now_ms();
        let outcome = if cancellable {
            // A cancellation interrupts the body itself; nothing is recorded.
            ctx.interruptible(WorkflowContext::step_scope(body)).await?
        } else {
            WorkflowContext::step_scope(body).await
        };
        let mut record = ctx.step_record(function_id, self.name, started);
        let result = match outcome {
            Ok(result) => result,
            Err(error) => {
                record.error = Some(encode_error(&error.to_portable()));
                ctx.record(&record).await?;
                return Err(E::from(error));
            }
        };
        match &result {
            Ok(value) => {
                match serialization::encode(value, || format!("the output of step `{}`", self.name))
                {
                    Ok(text) => record.output = Some(text),
                    Err(unencodable) => {
                        record.error = Some(encode_error(&unencodable.to_portable()));
                        ctx.record(&record).await?;
                        return Err(E::from(unencodable));
                    }
                }
            }
            Err(error) => {
                record.error = Some(encode_error(&serialization::portable_error_of(error)))
            }
        }
        ctx.record(&record).await?;
        result
    }
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
    E: From<Error> + Display + Send + 'static,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
{
    let call = StepCall::begin(name);
    async move { call.run(body()).await }
}

/// [`run_step`] with retry options; the closure runs once per attempt.
pub fn run_step_with<T, E, F, Fut>(
    name: &'static str,
    options: StepOptions,
    body: F,
) -> impl Future<Output = Result<T, E>> + Send
where
    T: Serialize + DeserializeOwned + Send,
    E: From<Error> + Display + Send + 'static,
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
{
    let call = StepCall::begin(name);
    async move { call.run_retrying(options, body).await }
}
