//! Takeover: listing the executors that own pending work, and claiming a dead executor's
//! workflows for a live one only while nobody holds the dead one's lock.

use std::time::Duration;

use super::*;
use crate::store::{
    CompleteWorkflow, InsertWorkflow, LockAttempt, PendingExecutors, RecordOutcome, RecordStep,
    TakeOverPending,
};

/// Insert a `PENDING` workflow of executor `executor_id` and version `version`.
async fn pending_under(db: &TestStore, id: &str, executor_id: &str, version: &str) {
    let wf = NewWorkflow {
        executor_id: executor_id.to_owned(),
        app_version: Some(version.to_owned()),
        ..workflow(id, WorkflowState::Pending)
    };
    db.run(InsertWorkflow(wf)).await;
}

/// The executors other than `local` with pending work of `shop` version `v1`.
async fn pending_executors(db: &TestStore) -> Vec<String> {
    db.run(PendingExecutors {
        app_name: "shop".to_owned(),
        app_version: "v1".to_owned(),
        application_name: Some("shop".to_owned()),
        except: "local".to_owned(),
    })
    .await
}

/// Executor `taker` takes over `from`'s pending workflows of `shop` `v1` as `new_owner`.
fn take(from: &str, new_owner: &str) -> TakeOverPending {
    TakeOverPending {
        app_name: "shop".to_owned(),
        from: from.to_owned(),
        to: "taker".to_owned(),
        app_version: "v1".to_owned(),
        application_name: Some("shop".to_owned()),
        new_owner: new_owner.to_owned(),
        now_ms: T0 + 500,
    }
}

/// Run a takeover through the store, failing the test on an error.
async fn take_over(db: &TestStore, op: TakeOverPending) -> Vec<crate::store::Reclaimed> {
    db.store
        .take_over(op)
        .await
        .unwrap_or_else(|e| panic!("taking over: {e}"))
}

conformance! {
    /// The executors with pending work of this version are listed once each, sorted, without
    /// the caller's own id, and without executors whose workflows are all finished or of
    /// another version.
    async fn pending_executors_are_listed_once_without_the_callers_own(db) {
        pending_under(db, "a1", "a", "v1").await;
        pending_under(db, "a2", "a", "v1").await;
        pending_under(db, "b1", "b", "v1").await;
        pending_under(db, "mine", "local", "v1").await;
        pending_under(db, "old", "c", "v0").await;
        pending_under(db, "done", "d", "v1").await;
        assert!(db.run(CompleteWorkflow(completion("done", &owner("done")))).await);
        assert_eq!(pending_executors(db).await, strings(&["a", "b"]));
    }

    /// A dead executor's pending workflows (of this version) go to the taker with a fresh
    /// owner, one more recovery attempt and the taker's executor id, with their checkpoints;
    /// its other workflows stay. A second takeover finds nothing; the same takeover re-run (a
    /// commit that went unseen) answers the same rows without counting another attempt.
    async fn a_dead_executors_pending_workflows_are_taken_over_once(db) {
        pending_under(db, "w1", "dead", "v1").await;
        pending_under(db, "w2", "dead", "v1").await;
        pending_under(db, "old", "dead", "v0").await;
        assert_eq!(
            db.run(RecordStep(step("w1", &owner("w1"), 1))).await,
            RecordOutcome::Recorded
        );
        let taken = take_over(db, take("dead", "new-owner")).await;
        assert_eq!(ids(&taken), strings(&["w1", "w2"]));
        let w1 = taken.iter().find(|t| t.row.workflow_id == "w1").expect("w1");
        assert_eq!(function_ids(&w1.checkpoints), [1]);
        for id in ["w1", "w2"] {
            let row = db.row(id).await;
            assert_eq!(row.owner_xid.as_deref(), Some("new-owner"), "owner of {id}");
            assert_eq!(row.executor_id.as_deref(), Some("taker"), "executor of {id}");
            assert_eq!(row.recovery_attempts, Some(2), "attempts of {id}");
            assert_eq!(row.updated_at, T0 + 500, "updated_at of {id}");
            assert_eq!(row.status, Some(WorkflowState::Pending));
        }
        let old = db.row("old").await;
        assert_eq!(old.executor_id.as_deref(), Some("dead"));
        assert_eq!(old.owner_xid, Some(owner("old")));

        assert!(take_over(db, take("dead", "another-owner")).await.is_empty());
        let again = take_over(db, take("dead", "new-owner")).await;
        assert_eq!(ids(&again), strings(&["w1", "w2"]));
        assert_eq!(db.row("w1").await.recovery_attempts, Some(2));
        // The taker's rows are its own now: the old id has nothing left to list.
        assert!(!pending_executors(db).await.contains(&"dead".to_owned()));
    }

    /// While an executor's lock is held (it is alive), its workflows are not taken; Postgres,
    /// which sees held locks, does not even list it.
    async fn a_live_executors_workflows_are_not_taken_over(db) {
        pending_under(db, "w", "live", "v1").await;
        let held = db
            .store
            .lock_executor("shop", "live", Duration::ZERO, Duration::from_secs(10))
            .await
            .expect("taking the lock");
        assert!(matches!(held, LockAttempt::Taken(())));
        assert!(take_over(db, take("live", "new-owner")).await.is_empty());
        let row = db.row("w").await;
        assert_eq!(row.executor_id.as_deref(), Some("live"));
        assert_eq!(row.owner_xid, Some(owner("w")));
        assert_eq!(row.recovery_attempts, Some(1));
        let listed = pending_executors(db).await;
        if db.store.backend() == "postgres" {
            assert!(listed.is_empty(), "{listed:?}");
        } else {
            assert_eq!(listed, strings(&["live"]));
        }
        // Holding another id frees this one: now it is dead and taken. (The server releases
        // the old lock when the old lock session ends, which it learns asynchronously.)
        db.store
            .lock_executor("shop", "other", Duration::ZERO, Duration::from_secs(10))
            .await
            .expect("taking another lock");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let listed = pending_executors(db).await;
            if listed == strings(&["live"]) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still not listed: {listed:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ids(&take_over(db, take("live", "new-owner")).await), strings(&["w"]));
    }
}
