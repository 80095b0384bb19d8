//! Workflow control: cancel, resume, durable waits over several workflows, and patches for
//! changing a deployed workflow's code.

use std::sync::Arc;
use std::time::Duration;

use super::context::{WorkflowContext, halting};
use super::recovery::INTERNAL_QUEUE;
use super::runtime::{Runtime, now_ms};
use super::workflow::WorkflowHandle;
use crate::error::{Error, Result};
use crate::serialization;
use crate::status::WorkflowState;
use crate::store::{CancelWorkflows, Descendants, ExecutionStates, GetWorkflow, ResumeWorkflow};

const WAIT_FIRST: &str = "DBOS.waitFirst";

/// Cancel workflows (and, with `descendants`, every workflow they started, transitively).
/// Those executing here are interrupted at once; elsewhere they stop at their next durable
/// operation. Returns the ids cancelled (finished workflows are left alone).
pub(crate) async fn cancel(
    rt: &Runtime,
    workflow_id: &str,
    descendants: bool,
) -> Result<Vec<String>> {
    if rt.store.run(GetWorkflow::of(workflow_id)).await?.is_none() {
        return Err(Error::NotFound(workflow_id.to_owned()));
    }
    let mut ids = vec![workflow_id.to_owned()];
    if descendants {
        ids.extend(
            rt.store
                .run(Descendants {
                    workflow_id: workflow_id.to_owned(),
                })
                .await?,
        );
    }
    let cancelled = rt
        .store
        .run(CancelWorkflows {
            workflow_ids: ids,
            now_ms: now_ms(),
        })
        .await?;
    for id in &cancelled {
        rt.interrupt(id);
    }
    Ok(cancelled)
}

/// Resume a workflow as DBOS 3.4 does: unless it finished (`SUCCESS` or `ERROR`), it goes back
/// on DBOS's internal queue with its recovery attempts reset, keeping its application version,
/// and whichever process of that version dequeues it continues it from its last checkpoint
/// (this one at once, if it can). Returns whether it was put back (`false`: it had finished).
pub(crate) async fn resume(rt: &Arc<Runtime>, workflow_id: &str) -> Result<bool> {
    // An execution still running here would race the resumed one: let it stop first.
    if let Some(mut slot) = rt.local_outcome(workflow_id) {
        rt.interrupt(workflow_id);
        let _ = slot.wait_for(Option::is_some).await;
    }
    let resumed = rt
        .store
        .run(ResumeWorkflow {
            workflow_id: workflow_id.to_owned(),
            queue_name: INTERNAL_QUEUE.to_owned(),
            now_ms: now_ms(),
        })
        .await?;
    match resumed {
        None => Err(Error::NotFound(workflow_id.to_owned())),
        Some(true) => {
            rt.wake_dispatcher();
            Ok(true)
        }
        Some(false) => Ok(false),
    }
}

/// Whether a workflow has finished, checking this process first.
async fn finished(rt: &Runtime, workflow_id: &str) -> Result<bool> {
    if rt.is_running_here(workflow_id) {
        return Ok(false);
    }
    let row = rt
        .store
        .run(GetWorkflow::of(workflow_id))
        .await?
        .ok_or_else(|| Error::NotFound(workflow_id.to_owned()))?;
    Ok(row.status.as_ref().is_some_and(WorkflowState::is_terminal))
}

/// Wait until one of `ids` has finished; returns its index. Woken by completions in this
/// process, otherwise re-checked with a growing interval.
async fn first_finished(rt: &Runtime, ids: &[String]) -> Result<usize> {
    let mut interval = Duration::from_millis(5);
    loop {
        for (index, id) in ids.iter().enumerate() {
            if finished(rt, id).await? {
                return Ok(index);
            }
        }
        let local: Vec<_> = ids.iter().filter_map(|id| rt.local_outcome(id)).collect();
        let any_local = async {
            if local.is_empty() {
                return std::future::pending().await;
            }
            let waits = local.into_iter().map(|mut slot| {
                Box::pin(async move { drop(slot.wait_for(Option::is_some).await) })
            });
            futures::future::select_all(waits).await;
        };
        tokio::select! {
            _ = any_local => {}
            _ = tokio::time::sleep(interval) => interval = (interval * 2).min(Duration::from_secs(1)),
        }
    }
}

/// Wait for the first of several workflows to finish and return its handle. Inside a
/// workflow the choice is recorded (`DBOS.waitFirst`), so a replay takes the same branch.
pub fn wait_first<T>(
    handles: &[WorkflowHandle<T>],
) -> impl Future<Output = Result<WorkflowHandle<T>>> + Send + use<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
{
    let target = WorkflowContext::operation();
    let handles = handles.to_vec();
    let halted = target.as_ref().map(|(ctx, _)| Arc::clone(ctx));
    halting(halted, async move {
        if handles.is_empty() {
            return Err(Error::InvalidArgument {
                argument: "handles",
                reason: "must not be empty".to_owned(),
            });
        }
        let ids: Vec<String> = handles.iter().map(|h| h.id().to_owned()).collect();
        let pick = |id: &str| handles.iter().find(|h| h.id() == id).cloned();
        let Some((ctx, function_id)) = target else {
            let rt = handles[0].runtime();
            let index = first_finished(rt, &ids).await?;
            return Ok(handles[index].clone());
        };
        ctx.check_running()?;
        if let Some(checkpoint) = ctx.recorded(function_id) {
            let id: String = ctx.replay(checkpoint, WAIT_FIRST)?;
            return pick(&id).ok_or_else(|| {
                ctx.halt(Error::NonDeterminism {
                    workflow_id: ctx.workflow_id.clone(),
                    function_id,
                    expected: format!("{WAIT_FIRST} over {ids:?}"),
                    recorded: format!("{WAIT_FIRST} returning {id}"),
                })
            });
        }
        let started = now_ms();
        let index = ctx
            .interruptible(first_finished(&ctx.rt, &ids))
            .await?
            .map_err(|error| ctx.stop_on(error))?;
        let mut record = ctx.step_record(function_id, WAIT_FIRST, started);
        record.output = Some(serialization::encode(&ids[index], String::new)?);
        ctx.record(record).await?;
        Ok(handles[index].clone())
    })
}

/// Wait until every one of several workflows has finished (whatever their outcome).
pub async fn wait_all<T>(handles: &[WorkflowHandle<T>]) -> Result<()>
where
    T: serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
{
    let ctx = WorkflowContext::current();
    halting(ctx.clone(), async move {
        for handle in handles {
            let ids = [handle.id().to_owned()];
            let rt = handle.runtime();
            match &ctx {
                Some(ctx) => ctx
                    .interruptible(first_finished(rt, &ids))
                    .await?
                    .map_err(|error| ctx.stop_on(error))?,
                None => first_finished(rt, &ids).await?,
            };
        }
        Ok(())
    })
    .await
}

/// Whether this execution takes the patched code path named `name`.
///
/// New executions record a `DBOS.patch-<name>` marker and get `true`; executions that began
/// before the patch was deployed (their history has another operation at this point) get
/// `false` and continue on the old path without consuming an operation id.
///
/// ```no_run
/// # async fn demo() -> cairn::Result<()> {
/// if cairn::patch("use-new-carrier").await? {
///     // new code
/// } else {
///     // old code, for executions started before the change
/// }
/// # Ok(()) }
/// ```
pub fn patch(name: &str) -> impl Future<Output = Result<bool>> + Send + use<> {
    let ctx = WorkflowContext::current();
    let marker = format!("DBOS.patch-{name}");
    halting(ctx.clone(), async move {
        let ctx = ctx.ok_or(Error::NotInWorkflow("cairn::patch"))?;
        ctx.check_running()?;
        let position = ctx.peek_id();
        match ctx.recorded(position) {
            Some(checkpoint) if checkpoint.function_name == marker => {
                ctx.next_id();
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                let function_id = ctx.next_id();
                let record = ctx.step_record(function_id, &marker, now_ms());
                ctx.record(record).await?;
                Ok(true)
            }
        }
    })
}

/// Retire a patch once no execution from before it remains: always `true`; consumes the
/// marker where an execution recorded one, and records nothing new.
pub fn deprecate_patch(name: &str) -> impl Future<Output = Result<bool>> + Send + use<> {
    let ctx = WorkflowContext::current();
    let marker = format!("DBOS.patch-{name}");
    halting(ctx.clone(), async move {
        let ctx = ctx.ok_or(Error::NotInWorkflow("cairn::deprecate_patch"))?;
        ctx.check_running()?;
        if ctx
            .recorded(ctx.peek_id())
            .is_some_and(|c| c.function_name == marker)
        {
            ctx.next_id();
        }
        Ok(true)
    })
}

/// The ids of `workflow_ids` that have no row (one read, however many ids), each once.
async fn missing(rt: &Runtime, workflow_ids: &[String]) -> Result<Vec<String>> {
    let states = rt
        .store
        .run(ExecutionStates {
            workflow_ids: workflow_ids.to_vec(),
        })
        .await?;
    let found: std::collections::HashSet<&str> =
        states.iter().map(|s| s.workflow_id.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    Ok(workflow_ids
        .iter()
        .filter(|id| !found.contains(id.as_str()) && seen.insert(id.as_str()))
        .cloned()
        .collect())
}

/// [`Error::NotFound`] naming every id of `workflow_ids` that does not exist, if any does not.
async fn all_exist(rt: &Runtime, workflow_ids: &[String]) -> Result<()> {
    let missing = missing(rt, workflow_ids).await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::NotFound(missing.join(", ")))
    }
}

/// [`cancel`] for several workflows in one write: every id must exist (else
/// [`Error::NotFound`] naming the missing ones, and nothing is cancelled). Returns the ids
/// cancelled, in the order asked (each workflow before its descendants), each once.
pub(crate) async fn cancel_many(
    rt: &Runtime,
    workflow_ids: &[String],
    descendants: bool,
) -> Result<Vec<String>> {
    all_exist(rt, workflow_ids).await?;
    let mut ids = Vec::with_capacity(workflow_ids.len());
    for workflow_id in workflow_ids {
        ids.push(workflow_id.clone());
        if descendants {
            let of = Descendants {
                workflow_id: workflow_id.clone(),
            };
            ids.extend(rt.store.run(of).await?);
        }
    }
    let cancelled = rt
        .store
        .run(CancelWorkflows {
            workflow_ids: ids,
            now_ms: now_ms(),
        })
        .await?;
    for id in &cancelled {
        rt.interrupt(id);
    }
    Ok(cancelled)
}

/// [`resume`] for several workflows: every id must exist (else [`Error::NotFound`] naming
/// the missing ones, and nothing is resumed, as DBOS's `resume_workflows`). Returns, in the
/// order asked, whether each was put back (`false`: it had finished).
pub(crate) async fn resume_many(rt: &Arc<Runtime>, workflow_ids: &[String]) -> Result<Vec<bool>> {
    all_exist(rt, workflow_ids).await?;
    let mut resumed = Vec::with_capacity(workflow_ids.len());
    for workflow_id in workflow_ids {
        resumed.push(resume(rt, workflow_id).await?);
    }
    Ok(resumed)
}
