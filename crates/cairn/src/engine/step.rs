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
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            interval: Duration::from_secs(1),
            backoff_rate: 2.0,
            max_interval: Duration::from_secs(3600),
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
        self.checkpointed_outcome(catch_panic(body)).await
    }

    /// Run a step body with retries: `attempt` makes each attempt's future.
    pub async fn run_retrying<T, E, F>(
        self,
        options: StepOptions,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display + 'static,
        F: Future<Output = Result<T, E>>,
    {
        let name = self.name;
        let retrying = async move {
            let mut tries = 1;
            loop {
                match catch_panic(attempt()).await {
                    Ok(Ok(value)) => return Ok(Ok(value)),
                    failed if tries >= options.max_attempts => return failed,
                    Ok(Err(error)) => {
                        let wait = options.delay_after(tries);
                        tracing::warn!(step = name, attempt = tries, error = %error, "step failed; retrying in {wait:?}");
                        tokio::time::sleep(wait).await;
                    }
                    Err(panic) => {
                        let wait = options.delay_after(tries);
                        tracing::warn!(step = name, attempt = tries, panic = %panic, "step panicked; retrying in {wait:?}");
                        tokio::time::sleep(wait).await;
                    }
                }
                tries += 1;
            }
        };
        self.checkpointed_outcome(retrying).await
    }

    /// Run the body (unless replaying) and checkpoint its outcome; a panic is recorded as an
    /// error named `Panic` and returned as [`Error::Application`].
    async fn checkpointed_outcome<T, E, F>(self, body: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display + 'static,
        F: Future<Output = Result<Result<T, E>, PortableError>>,
    {
        let Some((ctx, function_id)) = self.target else {
            return body
                .await
                .unwrap_or_else(|panic| Err(E::from(Error::Application(panic))));
        };
        ctx.check_running()?;
        if let Some(checkpoint) = ctx.recorded(function_id) {
            return ctx.replay(checkpoint, self.name).map_err(E::from);
        }
        let started = now_ms();
        let outcome = WorkflowContext::step_scope(body).await;
        let mut record = ctx.step_record(function_id, self.name, started);
        let result = match outcome {
            Ok(result) => result,
            Err(panic) => {
                record.error = Some(encode_error(&panic));
                ctx.record(&record).await?;
                return Err(E::from(Error::Application(panic)));
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

/// Run a body, catching a panic as its portable error.
async fn catch_panic<T>(body: impl Future<Output = T>) -> Result<T, PortableError> {
    AssertUnwindSafe(body)
        .catch_unwind()
        .await
        .map_err(|panic| serialization::panic_error(&*panic))
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
