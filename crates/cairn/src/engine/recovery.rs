//! Recovery: at launch, every unfinished workflow of this executor resumes from its checkpoints.

use std::sync::Arc;

use super::registry;
use super::runtime::{Runtime, now_ms};
use super::step::encode_error;
use super::workflow::spawn_execution;
use crate::error::{Error, Result};
use crate::serialization;
use crate::store::{Completion, status};

/// Claim this executor's `PENDING` workflows (of this application version) and replay them.
/// Each claim counts as a recovery attempt; a workflow past its limit is dead-lettered.
/// Returns the ids of the workflows now executing again.
pub(crate) async fn recover_pending(rt: &Arc<Runtime>) -> Result<Vec<String>> {
    let owner = uuid::Uuid::new_v4().to_string();
    let reclaimed = rt
        .store
        .reclaim_pending(
            &rt.executor_id,
            &rt.app_version,
            Some(&rt.app_name),
            &owner,
            now_ms(),
        )
        .await?;
    let mut resumed = Vec::with_capacity(reclaimed.len());
    for workflow in reclaimed {
        let row = workflow.row;
        let id = row.workflow_id.clone();
        let Some(registration) = row.name.as_deref().and_then(registry::by_name) else {
            tracing::warn!(workflow_id = %id, name = ?row.name, "cannot recover a workflow whose function is not registered in this program");
            continue;
        };
        let attempts = row.recovery_attempts.unwrap_or(0);
        if attempts > i64::from(registration.max_recovery_attempts) + 1 {
            tracing::error!(workflow_id = %id, attempts, "workflow exceeded its recovery attempts; moved to MAX_RECOVERY_ATTEMPTS_EXCEEDED");
            rt.store.dead_letter(&id, &owner, now_ms()).await?;
            continue;
        }
        let args = match serialization::decode_inputs(
            row.inputs.as_deref(),
            row.serialization.as_deref(),
            &id,
        ) {
            Ok(args) => args,
            Err(undecodable) => {
                fail_unrecoverable(rt, &id, &owner, undecodable).await?;
                continue;
            }
        };
        tracing::info!(workflow_id = %id, name = registration.name, attempts, "recovering workflow");
        let deadline = row.workflow_deadline_epoch_ms;
        spawn_execution(
            rt,
            registration,
            id.clone(),
            owner.clone(),
            args,
            workflow.checkpoints,
            deadline,
        );
        resumed.push(id);
    }
    Ok(resumed)
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
        status: status::ERROR,
        output: None,
        error: Some(encode_error(&error.to_portable())),
        now_ms: now_ms(),
    };
    rt.store.complete_workflow(&completion).await.map(drop)
}
