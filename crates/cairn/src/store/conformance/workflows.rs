//! Workflow rows and checkpoints: inserting, recording steps, completing, recovery, the dead
//! letter, child starts and application versions.

use std::sync::Arc;

use super::*;
use crate::error::Error;
use crate::status::WorkflowState;
use crate::store::{
    CompleteWorkflow, DeadLetter, GetWorkflow, InsertOutcome, InsertWorkflow, ListCheckpoints,
    PORTABLE_JSON, ReclaimPending, RecordOutcome, RecordStep, RegisterAppVersion, StartChild,
};

/// The `Existing` outcome of a `checkout` workflow in `status`.
fn existing(status: WorkflowState) -> InsertOutcome {
    InsertOutcome::Existing {
        name: Some("checkout".to_owned()),
        status: Some(status),
    }
}

/// Reclaim this executor's (`local`, `v1`) pending workflows for `application`.
fn reclaim(application: Option<&str>, new_owner: &str, now_ms: i64) -> ReclaimPending {
    ReclaimPending {
        executor_id: "local".to_owned(),
        app_version: "v1".to_owned(),
        application_name: application.map(str::to_owned),
        new_owner: new_owner.to_owned(),
        now_ms,
        batch: None,
    }
}

conformance! {
    /// A direct start writes DBOS's status and input rows, owned by its creator; inserting the
    /// id again (under another creator) reports the row and changes nothing.
    async fn an_insert_writes_the_rows_and_a_second_insert_changes_nothing(db) {
        let wf = workflow("w", WorkflowState::Pending);
        assert_eq!(db.run(InsertWorkflow(wf.clone())).await, InsertOutcome::Inserted);
        let again = NewWorkflow {
            name: "other".to_owned(),
            status: WorkflowState::Enqueued,
            creator_xid: "another-creator".to_owned(),
            inputs: "{}".to_owned(),
            now_ms: T0 + 5,
            ..wf.clone()
        };
        assert_eq!(db.run(InsertWorkflow(again)).await, existing(WorkflowState::Pending));

        let row = db.row("w").await;
        assert_eq!(row.workflow_id, "w");
        assert_eq!(row.status, Some(WorkflowState::Pending));
        assert_eq!(row.name.as_deref(), Some("checkout"));
        assert_eq!(row.owner_xid.as_deref(), Some("owner-w"));
        assert_eq!(row.recovery_attempts, Some(1));
        assert_eq!(row.started_at_epoch_ms, Some(T0));
        assert_eq!((row.created_at, row.updated_at), (T0, T0));
        assert_eq!(row.executor_id.as_deref(), Some("local"));
        assert_eq!(row.application_version.as_deref(), Some("v1"));
        assert_eq!(row.application_name.as_deref(), Some("shop"));
        assert_eq!(row.serialization.as_deref(), Some(PORTABLE_JSON));
        assert_eq!(row.inputs.as_deref(), Some(INPUTS));
        assert_eq!((row.queue_name, row.completed_at), (None, None));
        assert_eq!((row.output, row.error), (None, None));
        assert_eq!(
            db.lines("SELECT creator_xid, priority FROM workflow_status WHERE workflow_uuid = 'w'")
                .await,
            ["owner-w|0"]
        );
        assert_eq!(
            db.run(GetWorkflow { workflow_id: "missing".to_owned() }).await,
            None
        );
    }

    /// An enqueued insert waits on its queue unowned, with no attempt and no start time; its
    /// creator is recorded and its input row carries the creation time.
    async fn an_enqueued_insert_waits_unowned_on_its_queue(db) {
        let mut wf = workflow("q", WorkflowState::Enqueued);
        (wf.timeout_ms, wf.deadline_epoch_ms) = (Some(5_000), None);
        assert_eq!(db.run(InsertWorkflow(wf)).await, InsertOutcome::Inserted);
        let row = db.row("q").await;
        assert_eq!(row.status, Some(WorkflowState::Enqueued));
        assert_eq!(row.queue_name.as_deref(), Some("orders"));
        assert_eq!(row.recovery_attempts, Some(0));
        assert_eq!((row.owner_xid, row.started_at_epoch_ms), (None, None));
        assert_eq!(row.workflow_timeout_ms, Some(5_000));
        assert_eq!(row.workflow_deadline_epoch_ms, None);
        assert_eq!(
            db.lines(
                "SELECT s.creator_xid, s.priority, i.retention_timestamp FROM workflow_status s \
                 JOIN workflow_input i ON i.workflow_uuid = s.workflow_uuid WHERE s.workflow_uuid = 'q'"
            )
            .await,
            [format!("owner-q|0|{T0}")]
        );
    }

    /// Twenty concurrent inserts of one id by twenty creators: exactly one inserts, the others
    /// see its row.
    async fn twenty_concurrent_inserts_of_one_id_insert_once(db) {
        let inserts: Vec<_> = (0..20)
            .map(|i| {
                let wf = NewWorkflow {
                    creator_xid: format!("creator-{i}"),
                    ..workflow("same", WorkflowState::Pending)
                };
                let store = Arc::clone(&db.store);
                tokio::spawn(async move { store.run(InsertWorkflow(wf)).await })
            })
            .collect();
        let outcomes = futures::future::join_all(inserts).await;
        let mut inserted = 0;
        for outcome in outcomes {
            match outcome.expect("the task").expect("insert") {
                InsertOutcome::Inserted => inserted += 1,
                other => assert_eq!(other, existing(WorkflowState::Pending)),
            }
        }
        assert_eq!(inserted, 1);
        assert_eq!(db.count("SELECT COUNT(*) FROM workflow_input").await, 1);
    }

    /// A checkpoint lands only for the owner of a `PENDING` workflow, once per function id (a
    /// second write returns the first, unchanged); checkpoints read back in function id order.
    async fn a_step_is_recorded_only_by_its_owner_and_only_once(db) {
        db.pending(&["w"]).await;
        let owner = owner("w");
        assert_eq!(db.run(RecordStep(step("w", &owner, 2))).await, RecordOutcome::Recorded);
        assert_eq!(db.run(RecordStep(step("w", &owner, 1))).await, RecordOutcome::Recorded);
        let mut failed = step("w", &owner, 3);
        (failed.output, failed.error) = (None, Some(r#"{"name":"E","message":"m"}"#.to_owned()));
        assert_eq!(db.run(RecordStep(failed)).await, RecordOutcome::Recorded);

        let recorded = Checkpoint {
            function_id: 1,
            function_name: "step1".to_owned(),
            output: Some("\"out1\"".to_owned()),
            error: None,
            child_workflow_id: None,
            serialization: Some(PORTABLE_JSON.to_owned()),
            started_at_epoch_ms: Some(T0 + 100),
            completed_at_epoch_ms: Some(T0 + 200),
        };
        let mut retry = step("w", &owner, 1);
        retry.output = Some("\"different\"".to_owned());
        assert_eq!(
            db.run(RecordStep(retry)).await,
            RecordOutcome::Duplicate(recorded.clone())
        );
        assert_eq!(db.checkpoint("w", 1).await, Some(recorded.clone()));
        assert_eq!(db.checkpoint("w", 9).await, None);
        let all = db.run(ListCheckpoints { workflow_id: "w".to_owned() }).await;
        assert_eq!(function_ids(&all), [1, 2, 3]);
        assert_eq!(all[0], recorded);
        assert_eq!(all[2].output, None);
        assert_eq!(all[2].error.as_deref(), Some(r#"{"name":"E","message":"m"}"#));
        assert!(db.run(ListCheckpoints { workflow_id: "none".to_owned() }).await.is_empty());

        assert_eq!(
            db.run(RecordStep(step("w", "intruder", 4))).await,
            RecordOutcome::NotOwner { status: Some(WorkflowState::Pending) }
        );
        assert_eq!(
            db.run(RecordStep(step("nowhere", &owner, 1))).await,
            RecordOutcome::NotOwner { status: None }
        );
        assert_eq!(db.checkpoint("w", 4).await, None);
        assert_eq!(
            db.lines(
                "SELECT application_name, retention_timestamp FROM operation_outputs \
                 WHERE workflow_uuid = 'w' AND function_id = 1"
            )
            .await,
            [format!("shop|{}", T0 + 200)]
        );
    }

    /// Only the current owner completes a `PENDING` workflow, once; the completion clears the
    /// owner, stamps the times and writes the output row; afterwards nobody can checkpoint.
    async fn only_the_owner_completes_a_workflow_and_only_once(db) {
        db.pending(&["w"]).await;
        db.execute("UPDATE workflow_status SET deduplication_id = 'd' WHERE workflow_uuid = 'w'")
            .await;
        assert!(!db.run(CompleteWorkflow(completion("w", "intruder"))).await);
        assert_eq!(db.row("w").await.status, Some(WorkflowState::Pending));
        assert!(db.run(CompleteWorkflow(completion("w", "owner-w"))).await);
        assert!(!db.run(CompleteWorkflow(completion("w", "owner-w"))).await);
        assert!(!db.run(CompleteWorkflow(completion("missing", "x"))).await);

        let row = db.row("w").await;
        assert_eq!(row.status, Some(WorkflowState::Success));
        assert_eq!(row.owner_xid, None);
        assert_eq!((row.completed_at, row.updated_at), (Some(T0 + 1_000), T0 + 1_000));
        assert_eq!((row.output.as_deref(), row.error), (Some("\"done\""), None));
        assert_eq!(
            db.lines("SELECT deduplication_id FROM workflow_status WHERE workflow_uuid = 'w'")
                .await,
            ["NULL"]
        );
        assert_eq!(
            db.lines("SELECT retention_timestamp FROM workflow_output WHERE workflow_uuid = 'w'")
                .await,
            [(T0 + 1_000).to_string()]
        );
        assert_eq!(
            db.run(RecordStep(step("w", "owner-w", 1))).await,
            RecordOutcome::NotOwner { status: Some(WorkflowState::Success) }
        );
    }

    /// A failed workflow's completion writes `ERROR` and its error, and no output.
    async fn an_error_completion_writes_the_error(db) {
        db.pending(&["w"]).await;
        let failed = Completion {
            status: WorkflowState::Error,
            output: None,
            error: Some(r#"{"name":"E","message":"boom"}"#.to_owned()),
            ..completion("w", "owner-w")
        };
        assert!(db.run(CompleteWorkflow(failed)).await);
        let row = db.row("w").await;
        assert_eq!(row.status, Some(WorkflowState::Error));
        assert_eq!(row.output, None);
        assert_eq!(row.error.as_deref(), Some(r#"{"name":"E","message":"boom"}"#));
    }

    /// Recovery takes this executor's `PENDING` workflows of this version and application (or
    /// unclaimed ones): each gets the new owner, one more attempt, and its checkpoints.
    async fn reclaiming_takes_this_executors_pending_workflows(db) {
        let mut elsewhere = workflow("elsewhere", WorkflowState::Pending);
        elsewhere.executor_id = "other-executor".to_owned();
        let mut other_app = workflow("other-app", WorkflowState::Pending);
        other_app.application_name = Some("bank".to_owned());
        let mut unclaimed = workflow("unclaimed", WorkflowState::Pending);
        unclaimed.application_name = None;
        let mut old_version = workflow("old-version", WorkflowState::Pending);
        old_version.app_version = Some("v0".to_owned());
        for wf in [
            workflow("a", WorkflowState::Pending),
            workflow("b", WorkflowState::Pending),
            workflow("done", WorkflowState::Pending),
            workflow("queued", WorkflowState::Enqueued),
            elsewhere,
            other_app,
            unclaimed,
            old_version,
        ] {
            db.run(InsertWorkflow(wf)).await;
        }
        assert!(db.run(CompleteWorkflow(completion("done", "owner-done"))).await);
        for function_id in [2, 1] {
            db.run(RecordStep(step("a", "owner-a", function_id))).await;
        }

        let reclaimed = db.run(reclaim(Some("shop"), "new-owner", T0 + 5_000)).await;
        assert_eq!(ids(&reclaimed), ["a", "b", "unclaimed"]);
        for r in &reclaimed {
            assert_eq!(r.row.status, Some(WorkflowState::Pending));
            assert_eq!(r.row.recovery_attempts, Some(2));
            assert_eq!(r.row.owner_xid.as_deref(), Some("new-owner"));
            assert_eq!(r.row.updated_at, T0 + 5_000);
            assert_eq!(r.row.inputs.as_deref(), Some(INPUTS));
            let expected: &[i32] = if r.row.workflow_id == "a" { &[1, 2] } else { &[] };
            assert_eq!(function_ids(&r.checkpoints), expected);
        }
        assert_eq!(
            db.run(RecordStep(step("a", "owner-a", 3))).await,
            RecordOutcome::NotOwner { status: Some(WorkflowState::Pending) }
        );
        assert_eq!(db.run(RecordStep(step("a", "new-owner", 3))).await, RecordOutcome::Recorded);

        let all = db.run(reclaim(None, "third", T0 + 6_000)).await;
        assert_eq!(ids(&all), ["a", "b", "other-app", "unclaimed"], "no application filter");
        assert_eq!(db.row("a").await.recovery_attempts, Some(3));
        let mut other_version = reclaim(None, "x", T0 + 7_000);
        other_version.app_version = "v2".to_owned();
        assert!(db.run(other_version).await.is_empty());
        assert_eq!(db.row("elsewhere").await.recovery_attempts, Some(1));
        assert_eq!(db.row("queued").await.status, Some(WorkflowState::Enqueued));
    }

    /// A pass that reclaims in batches takes the oldest rows first, each batch skipping what
    /// the pass's earlier batches claimed, until none is left.
    async fn a_batched_reclaim_takes_each_pending_workflow_once_oldest_first(db) {
        for (n, id) in ["e", "d", "c", "b", "a"].iter().enumerate() {
            let wf = NewWorkflow { now_ms: T0 + n as i64, ..workflow(id, WorkflowState::Pending) };
            db.run(InsertWorkflow(wf)).await;
        }
        let batch = |n: usize| {
            let mut op = reclaim(Some("shop"), &format!("pass:{n}"), T0 + 100 + n as i64);
            op.batch = Some(crate::store::ReclaimBatch { limit: 2, pass: "pass".to_owned() });
            op
        };
        assert_eq!(ids(&db.run(batch(0)).await), ["d", "e"], "the two oldest");
        assert_eq!(ids(&db.run(batch(1)).await), ["b", "c"]);
        assert_eq!(ids(&db.run(batch(2)).await), ["a"]);
        assert!(db.run(batch(3)).await.is_empty());
        assert_eq!(db.row("d").await.owner_xid.as_deref(), Some("pass:0"));
        assert_eq!(db.row("a").await.recovery_attempts, Some(2));
        // Another pass claims them all again.
        let mut next = batch(0);
        next.batch = Some(crate::store::ReclaimBatch { limit: 10, pass: "next".to_owned() });
        next.new_owner = "next:0".to_owned();
        assert_eq!(db.run(next).await.len(), 5);
    }

    /// Reclaimed workflows come back oldest first, ties broken by id.
    async fn reclaimed_workflows_come_back_oldest_first(db) {
        for (id, created) in [("c", T0 + 2), ("b", T0 + 1), ("z", T0), ("a", T0 + 1)] {
            db.run(InsertWorkflow(NewWorkflow { now_ms: created, ..workflow(id, WorkflowState::Pending) })).await;
        }
        let order: Vec<String> = db
            .run(reclaim(Some("shop"), "r", T0 + 10))
            .await
            .into_iter()
            .map(|r| r.row.workflow_id)
            .collect();
        assert_eq!(order, ["z", "a", "b", "c"]);
    }

    /// Dead-lettering is owner-guarded (a stale owner or an intruder changes nothing) and takes
    /// the workflow out of `PENDING`, its queue and recovery.
    async fn a_dead_lettered_workflow_leaves_the_pending_set(db) {
        let mut wf = workflow("w", WorkflowState::Pending);
        wf.queue_name = Some("orders".to_owned());
        db.run(InsertWorkflow(wf)).await;
        db.pending(&["kept"]).await;
        db.run(reclaim(Some("shop"), "recovery", T0 + 10)).await;
        let dead_letter = |owner: &str| DeadLetter {
            workflow_id: "w".to_owned(),
            owner_xid: owner.to_owned(),
            now_ms: T0 + 20,
        };
        assert!(!db.run(dead_letter("intruder")).await);
        assert!(!db.run(dead_letter("owner-w")).await, "the owner before recovery");
        assert!(db.run(dead_letter("recovery")).await);
        assert!(!db.run(dead_letter("recovery")).await, "already dead-lettered");

        let row = db.row("w").await;
        assert_eq!(row.status, Some(WorkflowState::MaxRecoveryAttemptsExceeded));
        assert_eq!(
            (row.owner_xid, row.started_at_epoch_ms, row.queue_name),
            (None, None, None)
        );
        assert_eq!((row.updated_at, row.completed_at), (T0 + 20, Some(T0 + 20)));
        assert_eq!(ids(&db.run(reclaim(None, "x", T0 + 30)).await), ["kept"]);
    }

    /// A child start writes the child's rows and the parent's checkpoint together, under the
    /// parent's owner; replayed by a later execution it reports both as they are.
    async fn a_child_start_commits_with_the_parents_checkpoint(db) {
        db.pending(&["p", "other"]).await;
        let mut record = internal("p", 1, "child");
        record.child_workflow_id = Some("p-1".to_owned());
        let mut child = workflow("p-1", WorkflowState::Pending);
        child.parent_workflow_id = Some("p".to_owned());
        child.inputs = r#"{"positionalArgs":[7],"namedArgs":{}}"#.to_owned();
        let start = StartChild { parent: record.clone(), child: child.clone() };
        assert_eq!(
            db.run(start).await,
            (RecordOutcome::Recorded, InsertOutcome::Inserted)
        );
        let checkpoint = db.checkpoint("p", 1).await.expect("the parent's checkpoint");
        assert_eq!(checkpoint.child_workflow_id.as_deref(), Some("p-1"));
        assert_eq!(checkpoint.function_name, "child");
        let row = db.row("p-1").await;
        assert_eq!(row.parent_workflow_id.as_deref(), Some("p"));
        assert_eq!(row.inputs.as_deref(), Some(child.inputs.as_str()));
        assert_eq!(row.owner_xid.as_deref(), Some("owner-p-1"));

        // A recovered parent replays the start with a fresh token for the child.
        let replay = StartChild {
            parent: record.clone(),
            child: NewWorkflow { creator_xid: "replay".to_owned(), ..child.clone() },
        };
        assert_eq!(
            db.run(replay).await,
            (RecordOutcome::Duplicate(checkpoint), existing(WorkflowState::Pending))
        );
        assert_eq!(db.row("p-1").await.owner_xid.as_deref(), Some("owner-p-1"));

        // A new step naming a workflow that exists records the step and reports the row.
        let mut reuse = internal("p", 3, "child");
        reuse.child_workflow_id = Some("other".to_owned());
        let reuse_child = NewWorkflow { creator_xid: "reuser".to_owned(), ..workflow("other", WorkflowState::Pending) };
        assert_eq!(
            db.run(StartChild { parent: reuse, child: reuse_child }).await,
            (RecordOutcome::Recorded, existing(WorkflowState::Pending))
        );
        assert_eq!(db.row("other").await.parent_workflow_id, None);
    }

    /// A child start the parent's checkpoint refuses (not the owner, or the parent finished)
    /// writes no child and says there is none.
    async fn a_refused_child_start_writes_no_child(db) {
        db.pending(&["p", "q"]).await;
        let mut record = as_intruder(internal("p", 2, "child"));
        record.child_workflow_id = Some("p-2".to_owned());
        let nothing = InsertOutcome::Existing { name: None, status: None };
        assert_eq!(
            db.run(StartChild { parent: record, child: workflow("p-2", WorkflowState::Pending) }).await,
            (RecordOutcome::NotOwner { status: Some(WorkflowState::Pending) }, nothing.clone())
        );
        assert_eq!(db.run(GetWorkflow { workflow_id: "p-2".to_owned() }).await, None);
        assert_eq!(db.checkpoint("p", 2).await, None);

        assert!(db.run(CompleteWorkflow(completion("q", "owner-q"))).await);
        let mut late = internal("q", 1, "child");
        late.child_workflow_id = Some("q-1".to_owned());
        assert_eq!(
            db.run(StartChild { parent: late, child: workflow("q-1", WorkflowState::Pending) }).await,
            (RecordOutcome::NotOwner { status: Some(WorkflowState::Success) }, nothing)
        );
        assert_eq!(db.run(GetWorkflow { workflow_id: "q-1".to_owned() }).await, None);
        assert_eq!(db.count("SELECT COUNT(*) FROM workflow_input").await, 2);
    }

    /// Registering a version again, under any application, keeps the first row as it was.
    async fn registering_an_app_version_is_idempotent(db) {
        let register = |version: &str, application: Option<&str>, now_ms| RegisterAppVersion {
            version: version.to_owned(),
            application_name: application.map(str::to_owned),
            now_ms,
        };
        db.run(register("v1", Some("shop"), 10)).await;
        db.run(register("v1", Some("shop"), 11)).await;
        db.run(register("v1", Some("bank"), 12)).await;
        db.run(register("v2", None, 13)).await;
        db.run(register("v2", None, 14)).await;
        assert_eq!(
            db.lines(
                "SELECT version_name, version_timestamp, created_at, application_name \
                 FROM application_versions ORDER BY version_name"
            )
            .await,
            ["v1|10|10|shop", "v2|13|13|NULL"]
        );
    }

    /// Two hundred checkpoints written concurrently to twenty workflows all land.
    async fn concurrent_checkpoints_all_land(db) {
        for w in 0..20 {
            db.pending(&[&format!("wf{w}")]).await;
        }
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let id = format!("wf{}", i % 20);
                let record = StepRecord {
                    output: Some(i.to_string()),
                    ..step(&id, &owner(&id), i / 20)
                };
                let store = Arc::clone(&db.store);
                tokio::spawn(async move { store.run(RecordStep(record)).await })
            })
            .collect();
        let outcomes = futures::future::join_all(writes).await;
        for outcome in outcomes {
            assert_eq!(outcome.expect("the task").expect("record a step"), RecordOutcome::Recorded);
        }
        for w in 0..20 {
            let id = format!("wf{w}");
            let checkpoints = db.run(ListCheckpoints { workflow_id: id }).await;
            assert_eq!(function_ids(&checkpoints), (0..10).collect::<Vec<_>>());
            for c in &checkpoints {
                assert_eq!(c.output, Some((c.function_id * 20 + w).to_string()));
            }
        }
    }

    /// After the store is closed an operation fails with `Shutdown`, without retrying.
    async fn an_operation_after_close_fails_with_shutdown(db) {
        db.pending(&["w"]).await;
        db.store.close().await;
        match db.attempt(RecordStep(step("w", "owner-w", 1))).await {
            Err(Error::Shutdown) => {}
            other => panic!("expected Shutdown, got {other:?}"),
        }
    }
}
