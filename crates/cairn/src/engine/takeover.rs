//! Takeover: a live executor resumes the unfinished workflows of an executor whose process
//! is gone, without waiting for that executor id to be launched again.
//!
//! Every `interval` (see [`CairnBuilder::takeover_interval`](crate::CairnBuilder::takeover_interval))
//! one read lists the other executor ids that own `PENDING` workflows of this application
//! version; for each, the store tries its liveness lock and, only if nobody holds it, moves
//! its workflows to this executor with fresh ownership tokens, counting a recovery attempt,
//! exactly as recovery at launch claims this executor's own. Of several live executors trying
//! at once, the one that gets the lock claims them all; the others find the lock held, and
//! afterwards nothing left under the dead id. The workflows then execute here from their
//! checkpoints, as recovered ones do.

use std::sync::Arc;
use std::time::Duration;

use super::recovery::execute_claimed;
use super::runtime::{Runtime, now_ms};
use super::workflow::Origin;
use crate::error::{Error, Result};
use crate::store::{PendingExecutors, TakeOverPending};

/// How often a live executor looks for dead executors' work unless configured: a dead
/// executor's workflows resume elsewhere within about twice this.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Look for dead executors' work every `interval` until shutdown, and take it over.
pub(crate) async fn watch(rt: Arc<Runtime>, interval: Duration) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = rt.shutdown_requested() => return,
        }
        match check(&rt).await {
            Ok(()) | Err(Error::Shutdown) => {}
            Err(error) => {
                tracing::warn!(%error, "could not look for the work of dead executors; trying again next interval");
            }
        }
    }
}

/// One look: take over the `PENDING` workflows of every executor whose lock nobody holds,
/// and execute them here.
async fn check(rt: &Arc<Runtime>) -> Result<()> {
    let candidates = rt
        .store
        .run(PendingExecutors {
            app_name: rt.app_name.clone(),
            app_version: rt.app_version.clone(),
            application_name: Some(rt.app_name.clone()),
            except: rt.executor_id.clone(),
        })
        .await?;
    for dead in candidates {
        if rt.is_shutting_down() {
            return Ok(());
        }
        let owner = uuid::Uuid::new_v4().to_string();
        let taken = rt
            .store
            .take_over(TakeOverPending {
                app_name: rt.app_name.clone(),
                from: dead.clone(),
                to: rt.executor_id.clone(),
                app_version: rt.app_version.clone(),
                application_name: Some(rt.app_name.clone()),
                new_owner: owner.clone(),
                now_ms: now_ms(),
            })
            .await?;
        if taken.is_empty() {
            continue;
        }
        tracing::warn!(
            dead_executor_id = %dead,
            executor_id = %rt.executor_id,
            count = taken.len(),
            app_version = %rt.app_version,
            "executor {dead} is gone (nobody holds its lock) and left PENDING workflows: taking them over"
        );
        for workflow in taken {
            let workflow_id = workflow.row.workflow_id.clone();
            match execute_claimed(rt, &owner, workflow, Origin::Recovered).await {
                Ok(_) => {}
                Err(Error::Shutdown) => return Err(Error::Shutdown),
                // Claimed but not executing: it resumes at this executor's next launch.
                Err(error) => {
                    tracing::warn!(workflow_id, %error, "could not resume a workflow taken over from a dead executor");
                }
            }
        }
    }
    Ok(())
}
