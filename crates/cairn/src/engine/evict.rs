//! Eviction: a workflow parked in a durable wait (`recv`, `get_event`, `sleep`, or another
//! workflow's outcome) for longer than the application's `evict_after` leaves memory. Its
//! execution is dropped (nothing is written: the wait had recorded its deadline already, and
//! what it waits for is not consumed), and only a small wake-up task stays: the
//! announcement it waits for, a cheap look at the database, and its deadline. When one of them fires, the workflow is executed again from its checkpoints
//! under the same ownership token — finished steps replay from their records — and reaches
//! the same wait, which now finds what woke it (or its deadline passed).
//!
//! Workflow code cannot tell: the wait neither returns nor fails in the evicted execution,
//! and the replay returns every earlier result as before. Callers cannot tell either: a
//! handle's `result()` reads the outcome from the database when no execution is here, a
//! cancel finds the workflow `PENDING` in the database, and an event or message sent meanwhile
//! is what wakes it.

use std::sync::Arc;
use std::time::Duration;

use super::context::WorkflowContext;
use super::notify::Subscription;
use super::notify::{Channel, Notifier};
use super::recovery::{RECOVERY_IN_MEMORY, execute_claimed};
use super::runtime::Runtime;
use super::timer::until;
use super::workflow::{Origin, Outcome, wait_outcome};
use crate::error::{Error, Result};
use crate::status::WorkflowState;
use crate::store::{GetEvent, GetWorkflow, ListCheckpoints, PeekMessage, Reclaimed};

/// Eviction's default: a workflow waiting this long leaves memory.
pub(crate) const DEFAULT_EVICT_AFTER: Duration = Duration::from_secs(60);

/// What an evicted workflow's wait would find in the database once it can continue.
#[derive(Clone)]
pub(crate) enum Look {
    /// A message on `topic` for `workflow_id` (`recv`).
    Message { workflow_id: String, topic: String },
    /// The event `key` of `workflow_id` (`get_event`).
    Event { workflow_id: String, key: String },
    /// The outcome of the workflow `workflow_id` (a child, or any workflow whose result a
    /// workflow waits for).
    Outcome { workflow_id: String },
}

impl Look {
    /// A subscription to the announcements of what it looks for.
    pub(crate) fn subscribe(&self, notifier: &Arc<Notifier>) -> Subscription {
        match self {
            Look::Message { workflow_id, topic } => {
                notifier.subscribe(Channel::Message, workflow_id, topic)
            }
            Look::Event { workflow_id, key } => {
                notifier.subscribe(Channel::Event, workflow_id, key)
            }
            Look::Outcome { workflow_id } => notifier.subscribe(Channel::Outcome, workflow_id, ""),
        }
    }

    /// How long to wait for an announcement before looking anyway, after `looks` looks:
    /// messages and events are announced wherever they are written (Postgres's NOTIFY,
    /// SQLite's change check), but an outcome only by this process, so a workflow waiting
    /// for another process's looks at the database after 1 s, then ever less often, up to
    /// once a minute.
    fn recheck_after(&self, looks: u32) -> Duration {
        match self {
            Look::Outcome { .. } => Duration::from_secs(1 << looks.min(6)).min(OUTCOME_RECHECK_MAX),
            Look::Message { .. } | Look::Event { .. } => Duration::MAX,
        }
    }

    /// Whether it is there now.
    async fn found(&self, rt: &Runtime) -> Result<bool> {
        Ok(match self {
            Look::Message { workflow_id, topic } => rt
                .store
                .run(PeekMessage {
                    workflow_id: workflow_id.clone(),
                    topic: topic.clone(),
                })
                .await?
                .is_some(),
            Look::Event { workflow_id, key } => rt
                .store
                .run(GetEvent {
                    workflow_id: workflow_id.clone(),
                    key: key.clone(),
                })
                .await?
                .is_some(),
            Look::Outcome { workflow_id } => rt
                .store
                .run(GetWorkflow::of(workflow_id))
                .await?
                .is_none_or(|row| row.status.is_some_and(|status| status.is_terminal())),
        })
    }
}

/// The longest an evicted workflow waiting for another process's workflow goes without
/// looking whether it finished.
const OUTCOME_RECHECK_MAX: Duration = Duration::from_secs(60);

/// When an evicted workflow wakes: at its deadline (epoch seconds), or earlier when what it
/// waits for is announced and there.
pub(crate) struct Wake {
    pub wake_at: f64,
    pub watch: Option<(Subscription, Look)>,
}

/// Wait for the outcome of workflow `workflow_id` from the workflow executing in `ctx`:
/// interrupted as its other waits are, and evicting it from memory once it has waited for
/// longer than the application's `evict_after` (at once under memory pressure). A workflow
/// evicted here wakes when the awaited workflow stops in this process, or when a look at the
/// database finds it finished (another process's), and replays to this wait.
pub(crate) async fn wait_outcome_of(ctx: &WorkflowContext, workflow_id: &str) -> Result<Outcome> {
    let rt = &ctx.rt;
    let Some(after) = evict_after(ctx, Duration::MAX) else {
        return ctx.interruptible(wait_outcome(rt, workflow_id)).await?;
    };
    let waited = tokio::time::timeout(after, wait_outcome(rt, workflow_id));
    if let Ok(outcome) = ctx.interruptible(waited).await? {
        return outcome;
    }
    let look = Look::Outcome {
        workflow_id: workflow_id.to_owned(),
    };
    // Keyed before the last look, so that the wake-up task's own look (made once it has armed
    // its wait on the key) covers anything announced from here on.
    let subscription = look.subscribe(&rt.notifier);
    if look.found(rt).await.map_err(|error| ctx.stop_on(error))? {
        return ctx.interruptible(wait_outcome(rt, workflow_id)).await?;
    }
    let wake = Wake {
        wake_at: f64::INFINITY,
        watch: Some((subscription, look)),
    };
    Err(evict(ctx, wake))
}

/// How long a wait may last before its workflow is evicted, if eviction applies to it: the
/// application evicts, and the wait has longer than that left. With more executions in
/// memory than recovery lets in ([`RECOVERY_IN_MEMORY`]), a wait evicts at once.
pub(crate) fn evict_after(ctx: &WorkflowContext, left: Duration) -> Option<Duration> {
    let after = ctx.rt.evict_after()?;
    if ctx.rt.in_flight() >= RECOVERY_IN_MEMORY {
        return Some(Duration::ZERO);
    }
    Some(after).filter(|after| left > *after)
}

/// Evict the calling execution: leave a wake-up task for `wake` and halt the execution (its
/// wait never returns; the executor drops it). Returns the halt, for the wait to return.
pub(crate) fn evict(ctx: &WorkflowContext, wake: Wake) -> Error {
    let rt = Arc::clone(&ctx.rt);
    let (workflow_id, owner) = (ctx.workflow_id.clone(), ctx.owner_xid.clone());
    // The new execution starts once this one is gone (both hold the same token).
    let gone = rt.local_outcome(&workflow_id);
    tracing::debug!(%workflow_id, name = ctx.name, "workflow evicted from memory while it waits");
    // This task is all an evicted workflow costs while it waits (the benchmark's `park
    // --evict-after-ms` measures it), so it holds two pointers while it waits, and what runs
    // only before or after the wait (the old execution's end, the execution again, the
    // database look) is boxed then rather than sized into the waiting task.
    let parked = Box::new(Parked {
        workflow_id,
        owner,
        wake,
    });
    tokio::spawn(async move {
        if let Some(mut gone) = gone {
            let _ = Box::pin(gone.wait_for(Option::is_some)).await;
        }
        let woke = tokio::select! {
            () = woken(&rt, &parked.wake) => true,
            () = rt.shutdown_requested() => false,
        };
        if woke {
            let Parked {
                workflow_id, owner, ..
            } = *parked;
            Box::pin(resume(&rt, workflow_id, owner)).await;
        }
    });
    ctx.halt(Error::Evicted(ctx.workflow_id.clone()))
}

/// What an evicted workflow keeps while it waits.
struct Parked {
    workflow_id: String,
    /// The execution's ownership token, which the execution again holds too.
    owner: String,
    wake: Wake,
}

/// Completes when the evicted workflow should run again.
///
/// An announcement reaches only a wait armed when it is made (`notify_waiters` keeps no
/// permit), and nothing was armed between the evicted wait's last look and here (the old
/// execution was being dropped meanwhile), nor between one look and the next wait. So each
/// round arms the wait first and then looks at the database: what was announced before
/// arming, the look finds; what comes after, the wait catches.
async fn woken(rt: &Runtime, wake: &Wake) {
    let Some((subscription, look)) = &wake.watch else {
        return tokio::time::sleep(until(wake.wake_at)).await;
    };
    let mut looks = 0;
    loop {
        let left = until(wake.wake_at);
        if left.is_zero() {
            return;
        }
        let notified = subscription.notified();
        match Box::pin(look.found(rt)).await {
            Ok(false) => {}
            // Found, or the database cannot say: the execution will look itself.
            Ok(true) | Err(_) => return,
        }
        let recheck = look.recheck_after(looks);
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(left.min(recheck)) => if left <= recheck { return },
        }
        looks = looks.saturating_add(1);
    }
}

/// Execute the evicted workflow again from its checkpoints, if it is still this process's
/// under `owner` (it may have been cancelled, resumed elsewhere or finished meanwhile).
async fn resume(rt: &Arc<Runtime>, workflow_id: String, owner: String) {
    let mut delay = Duration::from_millis(100);
    loop {
        match resume_once(rt, &workflow_id, &owner).await {
            Ok(()) => return,
            Err(Error::Shutdown) => return,
            Err(error) => {
                tracing::warn!(%workflow_id, %error, "could not execute an evicted workflow again; retrying in {delay:?}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = rt.shutdown_requested() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn resume_once(rt: &Arc<Runtime>, workflow_id: &str, owner: &str) -> Result<()> {
    if rt.is_shutting_down() {
        return Err(Error::Shutdown);
    }
    let Some(row) = rt.store.run(GetWorkflow::of(workflow_id)).await? else {
        return Ok(());
    };
    let ours = row.status == Some(WorkflowState::Pending)
        && row.owner_xid.as_deref() == Some(owner)
        && row.executor_id.as_deref() == Some(rt.executor_id.as_str());
    if !ours {
        tracing::debug!(%workflow_id, status = ?row.status, "evicted workflow is no longer this process's; not executed again");
        return Ok(());
    }
    let checkpoints = rt
        .store
        .run(ListCheckpoints {
            workflow_id: workflow_id.to_owned(),
        })
        .await?;
    execute_claimed(rt, owner, Reclaimed { row, checkpoints }, Origin::Woken).await?;
    Ok(())
}
