//! Durable timers: a sleep records its wake-up time, so a recovered workflow wakes at the
//! original time rather than a full duration after the restart.

use std::time::Duration;

use super::context::{WorkflowContext, halting};
use super::evict;
use super::runtime::now_ms;
use crate::error::Result;
use crate::serialization;

/// The internal step name DBOS uses for a durable sleep.
const SLEEP: &str = "DBOS.sleep";

/// Sleep durably for `duration`.
///
/// Inside a workflow the wake-up time is checkpointed (as `DBOS.sleep`, the time in epoch
/// seconds) before sleeping, so after a crash and recovery the workflow wakes at the original
/// time. Outside a workflow it is a plain `tokio::time::sleep`.
///
/// ```no_run
/// # async fn demo() -> cairn::Result<()> {
/// cairn::sleep(std::time::Duration::from_secs(60)).await?;
/// # Ok(()) }
/// ```
pub fn sleep(duration: Duration) -> impl Future<Output = Result<()>> + Send {
    let target = WorkflowContext::operation();
    let halted = target.as_ref().map(|(ctx, _)| std::sync::Arc::clone(ctx));
    halting(halted, async move {
        let Some((ctx, function_id)) = target else {
            tokio::time::sleep(duration).await;
            return Ok(());
        };
        ctx.check_running()?;
        let wake_at = durable_deadline(&ctx, function_id, duration).await?;
        let left = until(wake_at);
        let Some(after) = evict::evict_after(&ctx, left) else {
            return ctx.interruptible(tokio::time::sleep(left)).await;
        };
        let slept = ctx
            .interruptible(async {
                tokio::select! {
                    () = tokio::time::sleep(left) => true,
                    () = tokio::time::sleep(after) => false,
                }
            })
            .await?;
        if slept {
            return Ok(());
        }
        let wake = evict::Wake {
            wake_at,
            watch: None,
        };
        Err(evict::evict(&ctx, wake))
    })
}

/// The wake-up time of the durable timer at `function_id`, epoch seconds: recorded now as
/// `now + duration` (a `DBOS.sleep` checkpoint), or replayed from the record.
pub(crate) async fn durable_deadline(
    ctx: &WorkflowContext,
    function_id: i32,
    duration: Duration,
) -> Result<f64> {
    if let Some(checkpoint) = ctx.recorded(function_id) {
        return ctx.replay(checkpoint, SLEEP);
    }
    let started = now_ms();
    let wake_at = (started as f64 + duration.as_secs_f64() * 1000.0) / 1000.0;
    let mut record = ctx.step_record(function_id, SLEEP, started);
    record.output = Some(serialization::encode(&wake_at, || {
        "a sleep's wake-up time".to_owned()
    })?);
    ctx.record(record).await?;
    Ok(wake_at)
}

/// How long from now until `wake_at` (epoch seconds); zero if it has passed.
pub(crate) fn until(wake_at: f64) -> Duration {
    let remaining = wake_at - now_ms() as f64 / 1000.0;
    Duration::try_from_secs_f64(remaining.max(0.0)).unwrap_or(Duration::MAX)
}
