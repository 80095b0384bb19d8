//! Recovery: at launch, every unfinished workflow of this executor resumes from its checkpoints.

use std::sync::Arc;

use super::registry;
use super::runtime::{Runtime, now_ms};
use super::step::encode_error;
use super::workflow::{NewExecution, Origin, spawn_execution};
use crate::error::{Error, Result};
use crate::serialization;
use crate::status::WorkflowState;
use crate::store::{
    CompleteWorkflow, Completion, DeadLetter, ReclaimBatch, ReclaimPending, Reclaimed,
};

/// How many workflows recovery claims (and loads with their checkpoints) at a time.
pub(crate) const RECOVERY_BATCH: i64 = 1000;

/// How many executions recovery lets be in memory before it claims the next batch, when
/// eviction is on: it waits for some to finish or leave memory (see [`evict`](super::evict),
/// which evicts at once above this), so a large backlog is resumed with bounded memory.
pub(crate) const RECOVERY_IN_MEMORY: usize = 10 * RECOVERY_BATCH as usize;

/// Claim this executor's `PENDING` workflows (of this application version) and replay them,
/// in batches of [`RECOVERY_BATCH`], oldest first. Each claim counts as a recovery attempt; a
/// workflow past its limit is dead-lettered. Returns the ids of the workflows now executing
/// again.
pub(crate) async fn recover_pending(rt: &Arc<Runtime>) -> Result<Vec<String>> {
    let pass = RecoveryPass::new();
    let mut resumed = Vec::new();
    while let Some(batch) = pass.next_batch(rt).await? {
        resumed.extend(batch);
    }
    Ok(resumed)
}

/// One recovery pass, claiming batch after batch under owners `{pass}:{n}`.
pub(crate) struct RecoveryPass {
    id: String,
    batches: std::sync::atomic::AtomicUsize,
}

impl RecoveryPass {
    pub(crate) fn new() -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            batches: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Claim and execute the next batch, once fewer than [`RECOVERY_IN_MEMORY`] executions
    /// are in memory; `None` when nothing was left to claim.
    pub(crate) async fn next_batch(&self, rt: &Arc<Runtime>) -> Result<Option<Vec<String>>> {
        let n = self
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n > 0 && rt.evict_after().is_some() {
            rt.until_in_flight_below(RECOVERY_IN_MEMORY).await;
        }
        let owner = format!("{}:{n}", self.id);
        let reclaimed = rt
            .store
            .run(ReclaimPending {
                executor_id: rt.executor_id.clone(),
                app_version: rt.app_version.clone(),
                application_name: Some(rt.app_name.clone()),
                new_owner: owner.clone(),
                now_ms: now_ms(),
                batch: Some(ReclaimBatch {
                    limit: RECOVERY_BATCH,
                    pass: self.id.clone(),
                }),
            })
            .await?;
        if reclaimed.is_empty() {
            return Ok(None);
        }
        let mut resumed = Vec::with_capacity(reclaimed.len());
        for workflow in reclaimed {
            if let Some(id) = execute_claimed(rt, &owner, workflow, Origin::Recovered).await? {
                resumed.push(id);
            }
        }
        Ok(Some(resumed))
    }
}

/// Log how many of this executor's `PENDING` workflows belong to other application versions.
/// Recovery here leaves them alone (their code may have changed); they wait for a process of
/// their version with this executor id, or for an operator to move them. Advisory: a failure
/// to count is logged, not returned.
pub(crate) async fn report_other_versions(rt: &Runtime) {
    let count = crate::store::CountPendingElsewhere {
        executor_id: rt.executor_id.clone(),
        app_version: rt.app_version.clone(),
        application_name: Some(rt.app_name.clone()),
    };
    let versions = match rt.store.run(count).await {
        Ok(versions) => versions,
        Err(error) => {
            tracing::warn!(%error, "could not count the pending workflows of other application versions");
            return;
        }
    };
    let total: i64 = versions.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return;
    }
    let listed: Vec<String> = versions
        .iter()
        .map(|(version, n)| format!("{}: {n}", version.as_deref().unwrap_or("none")))
        .collect();
    tracing::warn!(
        count = total,
        executor_id = %rt.executor_id,
        app_version = %rt.app_version,
        other_versions = %listed.join(", "),
        "{total} PENDING workflows of this executor belong to other application versions and are \
         left alone. To finish them, run their version's code under this executor id until they \
         drain; or cancel each and fork it onto this version \
         (`dbos workflow fork <id> --step <n> --application-version {}`)",
        rt.app_version
    );
}

/// Execute a workflow this process has just claimed (by recovery or from a queue) under
/// `owner`, unless it is past its recovery attempts (dead-lettered) or cannot be decoded
/// (recorded as ERROR). Returns its id if it now executes here.
pub(crate) async fn execute_claimed(
    rt: &Arc<Runtime>,
    owner: &str,
    workflow: Reclaimed,
    origin: Origin,
) -> Result<Option<String>> {
    let row = workflow.row;
    let id = row.workflow_id.clone();
    let Some(registration) = row.name.as_deref().and_then(registry::by_name) else {
        tracing::warn!(workflow_id = %id, name = ?row.name, "cannot run a workflow whose function is not registered in this program");
        return Ok(None);
    };
    // Its state comes from its instance: left for a process that configures it (as DBOS).
    let unconfigured = row
        .config_name
        .as_deref()
        .filter(|i| !rt.state.has_instance(i));
    if let Some(instance) = unconfigured {
        tracing::warn!(workflow_id = %id, instance, "cannot run a workflow of an instance this program does not configure (CairnBuilder::instance_state)");
        return Ok(None);
    }
    let attempts = row.recovery_attempts.unwrap_or(0);
    if attempts > i64::from(registration.max_recovery_attempts) + 1 {
        tracing::error!(workflow_id = %id, attempts, "workflow exceeded its recovery attempts; moved to MAX_RECOVERY_ATTEMPTS_EXCEEDED");
        let dead_letter = DeadLetter {
            workflow_id: id.clone(),
            owner_xid: owner.to_owned(),
            now_ms: now_ms(),
        };
        rt.store.run(dead_letter).await?;
        return Ok(None);
    }
    let args = match serialization::decode_inputs(
        row.inputs.as_deref(),
        row.serialization.as_deref(),
        &id,
    ) {
        Ok(args) => args,
        Err(undecodable) => {
            fail_unrecoverable(rt, &id, owner, undecodable).await?;
            return Ok(None);
        }
    };
    let name = registration.name;
    match origin {
        Origin::Dequeued => {
            tracing::info!(workflow_id = %id, name, queue = ?row.queue_name, attempts, "workflow dequeued")
        }
        Origin::Woken => tracing::debug!(workflow_id = %id, name, "evicted workflow woken"),
        _ => tracing::info!(workflow_id = %id, name, attempts, "workflow recovered"),
    }
    let execution = NewExecution {
        workflow_id: id.clone(),
        owner_xid: owner.to_owned(),
        args,
        recorded: workflow.checkpoints,
        deadline_ms: row.workflow_deadline_epoch_ms,
        instance: row.config_name,
        origin,
        serialization: row.serialization,
        attributes: row.attributes,
    };
    spawn_execution(rt, registration, execution);
    Ok(Some(id))
}

/// A workflow whose inputs cannot be decoded would fail every recovery: record it as ERROR now.
async fn fail_unrecoverable(
    rt: &Runtime,
    workflow_id: &str,
    owner: &str,
    error: Error,
) -> Result<()> {
    tracing::error!(workflow_id, %error, "cannot recover workflow");
    let completion = Completion {
        workflow_id: workflow_id.to_owned(),
        owner_xid: owner.to_owned(),
        status: WorkflowState::Error,
        output: None,
        error: Some(encode_error(&error.to_portable())),
        now_ms: now_ms(),
    };
    rt.store.run(CompleteWorkflow(completion)).await.map(drop)
}

/// The queue DBOS puts resumed (and recovered) workflows on: `dbos workflow resume` and the
/// DBOS client's `resume_workflow` enqueue there, and this process runs what it can.
pub(crate) const INTERNAL_QUEUE: &str = "_dbos_internal_queue";
