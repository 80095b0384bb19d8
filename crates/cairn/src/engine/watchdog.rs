//! The watchdog: a workflow executing here stops when another process decides its fate.
//!
//! A cancel made elsewhere (another application, the `dbos` CLI, plain SQL), a resume or a
//! recovery that put the workflow in other hands, or an outcome written elsewhere changes the
//! workflow's row, but an execution here would learn of it only at its next write: one parked
//! in `recv` for an hour would wait out the hour. So about once a second, and soon after the
//! store's change feed says something changed, one query reads the status and owner of every
//! workflow executing here; an execution whose workflow is no longer `PENDING` under its own
//! ownership token is interrupted at its wait or cancellable step, as a cancel made here
//! would (its next durable operation stops it either way). While nothing executes here the
//! watchdog costs no query. The check reads a row per execution, so with more than
//! [`PER_INTERVAL`] executing the checks space out in proportion (a second per 10,000): its
//! cost stays a small, fixed share of the work however many workflows run here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::runtime::{Interruption, Runtime};
use crate::error::Error;
use crate::status::WorkflowState;
use crate::store::ExecutionStates;

/// How often the workflows executing here are checked.
const INTERVAL: Duration = Duration::from_secs(1);

/// How many executions one [`INTERVAL`] covers; with more, the interval grows in proportion.
const PER_INTERVAL: usize = 10_000;

/// The shortest time between two checks. The change feed can announce many times a second
/// (SQLite announces every commit of another connection): this bounds the queries it causes.
const MIN_SPACING: Duration = Duration::from_millis(200);

/// Check the workflows executing here until shutdown.
pub(crate) async fn watch(rt: Arc<Runtime>) {
    let mut last = Instant::now();
    let mut checked: usize = 0;
    loop {
        // At least 1: a stretch of `PER_INTERVAL` or fewer executions pays one interval.
        let stretch = u32::try_from(checked.div_ceil(PER_INTERVAL).max(1)).unwrap_or(u32::MAX);
        tokio::select! {
            () = sleep_until(last + INTERVAL.saturating_mul(stretch)) => {}
            () = rt.notifier.changed() => {}
            () = rt.shutdown_requested() => return,
        }
        tokio::select! {
            () = sleep_until(last + MIN_SPACING.saturating_mul(stretch)) => {}
            () = rt.shutdown_requested() => return,
        }
        last = Instant::now();
        checked = check(&rt).await;
    }
}

/// One check: read the rows of the workflows executing here, interrupt those no longer
/// theirs. Returns how many executions it checked.
async fn check(rt: &Runtime) -> usize {
    let executions = rt.uninterrupted_executions();
    if executions.is_empty() {
        return 0;
    }
    let mut workflow_ids: Vec<String> = executions.iter().map(|(id, _)| id.clone()).collect();
    workflow_ids.sort_unstable();
    workflow_ids.dedup();
    let states = match rt.store.run(ExecutionStates { workflow_ids }).await {
        Ok(states) => states,
        Err(Error::Shutdown) => return 0,
        Err(error) => {
            tracing::warn!(%error, "could not check the workflows executing here against the system database");
            return executions.len();
        }
    };
    let states: HashMap<String, _> = states
        .into_iter()
        .map(|state| (state.workflow_id.clone(), state))
        .collect();
    for (workflow_id, owner) in &executions {
        let state = states.get(workflow_id);
        let status = state.and_then(|s| s.status.as_ref());
        let reason = match status {
            Some(WorkflowState::Pending)
                if state.and_then(|s| s.owner_xid.as_deref()) == Some(owner.as_str()) =>
            {
                continue;
            }
            Some(WorkflowState::Cancelled) => Interruption::Cancelled,
            _ => Interruption::OwnershipLost,
        };
        match status {
            Some(WorkflowState::Cancelled) => {
                tracing::info!(
                    workflow_id,
                    "workflow cancelled elsewhere; stopping its execution here"
                );
            }
            // An execution that has just written its own outcome may still be registered.
            Some(WorkflowState::Success | WorkflowState::Error) => {
                tracing::debug!(
                    workflow_id,
                    status = status.map(WorkflowState::as_str),
                    "workflow finished; stopping its execution here"
                );
            }
            _ => {
                tracing::info!(
                    workflow_id,
                    status = status.map(WorkflowState::as_str),
                    "workflow resumed, claimed or removed elsewhere; stopping its execution here"
                );
            }
        }
        rt.interrupt_execution(workflow_id, owner, reason);
    }
    executions.len()
}
