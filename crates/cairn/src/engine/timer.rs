//! Durable timers: a sleep records its wake-up time, so a recovered workflow wakes at the
//! original time rather than a full duration after the restart.

use std::time::Duration;

use super::context::WorkflowContext;
use super::runtime::now_ms;
use crate::error::{Error, Result};
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
    let target = WorkflowContext::current().map(|ctx| {
        let id = ctx.next_id();
        (ctx, id)
    });
    async move {
        let Some((ctx, function_id)) = target else {
            tokio::time::sleep(duration).await;
            return Ok(());
        };
        ctx.check_running()?;
        let wake_at_secs: f64 = match ctx.recorded(function_id) {
            Some(checkpoint) => ctx.replay(checkpoint, SLEEP)?,
            None => {
                let started = now_ms();
                let wake_at = (started as f64 + duration.as_secs_f64() * 1000.0) / 1000.0;
                let mut record = ctx.step_record(function_id, SLEEP, started);
                record.output = Some(serialization::encode(&wake_at, || {
                    "a sleep's wake-up time".to_owned()
                })?);
                ctx.record(&record).await?;
                wake_at
            }
        };
        let remaining = wake_at_secs - now_ms() as f64 / 1000.0;
        if remaining > 0.0 {
            let remaining =
                Duration::try_from_secs_f64(remaining).map_err(|e| Error::InvalidArgument {
                    argument: "duration",
                    reason: e.to_string(),
                })?;
            tokio::time::sleep(remaining).await;
        }
        Ok(())
    }
}
