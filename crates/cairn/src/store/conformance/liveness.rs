//! Liveness: the status check of the workflows executing in a process, and executor locks.

use std::time::Duration;

use super::*;
use crate::status::WorkflowState;
use crate::store::{
    CancelWorkflows, CompleteWorkflow, ExecutionState, ExecutionStates, LockAttempt,
};

/// Read the states of these workflows, sorted by id.
async fn states(db: &TestStore, ids: &[&str]) -> Vec<ExecutionState> {
    let mut states = db
        .run(ExecutionStates {
            workflow_ids: strings(ids),
        })
        .await;
    states.sort_by(|a, b| a.workflow_id.cmp(&b.workflow_id));
    states
}

/// Take the lock of `executor_id` of `app` without waiting for a holder to go.
async fn lock(db: &TestStore, app: &str, executor_id: &str) -> LockAttempt<()> {
    db.store
        .lock_executor(app, executor_id, Duration::ZERO, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("taking the lock of {executor_id}: {e}"))
}

conformance! {
    /// One read answers the status and owner of every workflow asked about: a running one
    /// with its owner, a cancelled or finished one without, a missing one not at all, and
    /// an empty list nothing.
    async fn execution_states_answer_status_and_owner_in_one_read(db) {
        db.pending(&["running", "cancelled", "finished"]).await;
        db.run(CancelWorkflows {
            workflow_ids: strings(&["cancelled"]),
            now_ms: T0 + 10,
        })
        .await;
        assert!(db.run(CompleteWorkflow(completion("finished", &owner("finished")))).await);
        let found = states(db, &["running", "cancelled", "finished", "missing"]).await;
        let expected = [
            ("cancelled", WorkflowState::Cancelled, None),
            ("finished", WorkflowState::Success, None),
            ("running", WorkflowState::Pending, Some(owner("running"))),
        ];
        assert_eq!(found.len(), expected.len(), "{found:?}");
        for (state, (id, status, owner_xid)) in found.iter().zip(expected) {
            assert_eq!(state.workflow_id, id);
            assert_eq!(state.status, Some(status), "status of {id}");
            assert_eq!(state.owner_xid, owner_xid, "owner of {id}");
        }
        assert!(states(db, &[]).await.is_empty());
    }

    /// An executor id of an application has one holder at a time: taking it again (on a new
    /// session or file handle, as another process would) finds it in use and names this
    /// process, while the same id of another application is another lock. A store holds one
    /// id: taking another releases the first, once the new one is held.
    async fn an_executor_id_has_one_holder_at_a_time(db) {
        assert!(matches!(lock(db, "shop", "one").await, LockAttempt::Taken(())));
        match lock(db, "shop", "one").await {
            LockAttempt::InUse { holder } => {
                let holder = holder.expect("the holder is named");
                assert!(holder.contains(&std::process::id().to_string()), "{holder}");
            }
            LockAttempt::Taken(()) => panic!("a held executor id was taken again"),
        }
        assert!(
            matches!(lock(db, "other-app", "one").await, LockAttempt::Taken(())),
            "the same id of another application is another lock"
        );
        assert!(
            matches!(lock(db, "shop", "one").await, LockAttempt::Taken(())),
            "taking another id released the first"
        );
    }
}
