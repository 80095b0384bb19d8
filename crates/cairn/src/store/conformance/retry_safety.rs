//! Retry safety: `Store::run` re-runs an operation whose first commit may have succeeded
//! unseen (a connection lost at `COMMIT`). Each test runs an operation, then runs the very same
//! operation again, as the retry would, and checks that the answer is the one the first run
//! gave (see the "Retry safety" paragraph of each operation in `store::ops`). Statuses read
//! back as [`WorkflowState`]s.

use super::control::{claim, enqueued};
use super::*;
use crate::status::WorkflowState;
use crate::store::{
    CompleteWorkflow, ConsumeMessage, InsertOutcome, InsertWorkflow, RecordOutcome, RecordStep,
    ResumeWorkflow, SendMessage, SetEvent, StartChild, WriteStream,
};

/// Resume `w` onto the internal queue.
fn resume() -> ResumeWorkflow {
    ResumeWorkflow {
        workflow_id: "w".to_owned(),
        queue_name: "_dbos_internal_queue".to_owned(),
        now_ms: T0 + 10_000,
    }
}

/// The start of child `p-1` as step 1 of `p`.
fn start_child() -> StartChild {
    let mut parent = internal("p", 1, "child");
    parent.child_workflow_id = Some("p-1".to_owned());
    StartChild {
        parent,
        child: NewWorkflow {
            parent_workflow_id: Some("p".to_owned()),
            ..workflow("p-1", WorkflowState::Pending)
        },
    }
}

conformance! {
    /// An insert re-run by its creator while the row is still `PENDING` under it is that insert
    /// committed unseen: `Inserted`. The same id from another creator, or after the workflow
    /// finished, is `Existing`.
    async fn re_running_an_insert_by_its_creator_answers_inserted(db) {
        let wf = workflow("w", WorkflowState::Pending);
        assert_eq!(db.run(InsertWorkflow(wf.clone())).await, InsertOutcome::Inserted);
        assert_eq!(db.run(InsertWorkflow(wf.clone())).await, InsertOutcome::Inserted);
        let other = NewWorkflow { creator_xid: "another".to_owned(), ..wf.clone() };
        let existing = |status| InsertOutcome::Existing {
            name: Some("checkout".to_owned()),
            status: Some(status),
        };
        assert_eq!(db.run(InsertWorkflow(other)).await, existing(WorkflowState::Pending));
        assert_eq!(db.count("SELECT COUNT(*) FROM workflow_status").await, 1);
        assert_eq!(db.count("SELECT COUNT(*) FROM workflow_input").await, 1);
        assert_eq!(db.row("w").await.recovery_attempts, Some(1));

        assert!(db.run(CompleteWorkflow(completion("w", "owner-w"))).await);
        assert_eq!(db.run(InsertWorkflow(wf)).await, existing(WorkflowState::Success));
    }

    /// A child start re-run with the same child token, while the child is still `PENDING`
    /// under it, answers `(Recorded, Inserted)` and writes nothing twice; once the child has
    /// finished, the re-run is a duplicate of the parent's step and reports the child's row.
    async fn re_running_a_child_start_answers_recorded_and_inserted(db) {
        db.pending(&["p"]).await;
        let first = db.run(start_child()).await;
        assert_eq!(first, (RecordOutcome::Recorded, InsertOutcome::Inserted));
        assert_eq!(db.run(start_child()).await, first);
        assert_eq!(
            db.count("SELECT COUNT(*) FROM workflow_status WHERE workflow_uuid = 'p-1'").await,
            1
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM operation_outputs").await, 1);

        assert!(db.run(CompleteWorkflow(completion("p-1", "owner-p-1"))).await);
        let checkpoint = db.checkpoint("p", 1).await.expect("the parent's checkpoint");
        assert_eq!(
            db.run(start_child()).await,
            (
                RecordOutcome::Duplicate(checkpoint),
                InsertOutcome::Existing {
                    name: Some("checkout".to_owned()),
                    status: Some(WorkflowState::Success),
                }
            )
        );
    }

    /// A checkpointed write re-run (a step, an event, a stream write, a send) finds its own
    /// checkpoint, under the same name, and writes nothing twice.
    async fn re_running_a_checkpointed_write_answers_its_own_checkpoint(db) {
        db.pending(&["w", "dest"]).await;
        let step_record = step("w", "owner-w", 1);
        let event = SetEvent {
            record: internal("w", 2, "DBOS.setEvent"),
            key: "k".to_owned(),
            value: "1".to_owned(),
        };
        let stream = WriteStream {
            record: internal("w", 3, "DBOS.writeStream"),
            key: "s".to_owned(),
            value: "1".to_owned(),
        };
        let sent = SendMessage {
            message: message("dest", "t", "1", "m1"),
            sender: Some(internal("w", 4, "DBOS.send")),
        };
        for (function_id, name, first, again) in [
            (1, "step1", db.run(RecordStep(step_record.clone())).await, db.run(RecordStep(step_record)).await),
            (2, "DBOS.setEvent", db.run(event.clone()).await, db.run(event).await),
            (3, "DBOS.writeStream", db.run(stream.clone()).await, db.run(stream).await),
            (4, "DBOS.send", db.run(sent.clone()).await, db.run(sent).await),
        ] {
            assert_eq!(first, RecordOutcome::Recorded, "{name}");
            match again {
                RecordOutcome::Duplicate(checkpoint) => {
                    assert_eq!((checkpoint.function_id, checkpoint.function_name.as_str()), (function_id, name));
                }
                other => panic!("{name}: expected a duplicate, got {other:?}"),
            }
        }
        assert_eq!(db.count("SELECT COUNT(*) FROM workflow_events_history").await, 1);
        assert_eq!(db.count("SELECT COUNT(*) FROM streams").await, 1);
        assert_eq!(db.count("SELECT COUNT(*) FROM notifications").await, 1);
    }

    /// A receive re-run is a duplicate whose checkpoint holds the message it consumed; nothing
    /// else is consumed.
    async fn re_running_a_receive_answers_the_checkpoint_holding_the_message(db) {
        db.pending(&["w"]).await;
        for i in 1..=2 {
            db.run(SendMessage { message: message("w", "t", &i.to_string(), &format!("m{i}")), sender: None })
                .await;
        }
        let receive = ConsumeMessage { record: internal("w", 1, "DBOS.recv"), topic: "t".to_owned() };
        let (first, consumed) = db.run(receive.clone()).await;
        assert_eq!(first, RecordOutcome::Recorded);
        assert_eq!(consumed.map(|s| s.text).as_deref(), Some("1"));
        match db.run(receive).await {
            (RecordOutcome::Duplicate(checkpoint), None) => {
                assert_eq!(checkpoint.output.as_deref(), Some("1"));
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert_eq!(db.lines("SELECT message_uuid FROM notifications WHERE NOT consumed").await, ["m2"]);
    }

    /// A completion re-run answers `false` (it no longer owns the workflow) and the row holds
    /// the outcome the first run wrote.
    async fn re_running_a_completion_leaves_the_outcome_in_the_row(db) {
        db.pending(&["w"]).await;
        assert!(db.run(CompleteWorkflow(completion("w", "owner-w"))).await);
        assert!(!db.run(CompleteWorkflow(completion("w", "owner-w"))).await);
        let row = db.row("w").await;
        assert_eq!((row.status, row.output.as_deref()), (Some(WorkflowState::Success), Some("\"done\"")));
    }

    /// A resume re-run after an unseen commit finds the workflow enqueued and answers the
    /// same: put back, the same row.
    async fn re_running_a_resume_answers_the_same(db) {
        db.pending(&["w"]).await;
        db.run(RecordStep(step("w", "owner-w", 1))).await;
        db.run(crate::store::CancelWorkflows { workflow_ids: strings(&["w"]), now_ms: T0 + 1 }).await;
        assert_eq!(db.run(resume()).await, Some(true));
        let first = db.row("w").await;
        assert_eq!(db.run(resume()).await, Some(true));
        assert_eq!(db.row("w").await, first);
        assert_eq!(first.status, Some(WorkflowState::Enqueued));
    }

    /// A claim re-run with the same new owner answers the rows the first run claimed, and
    /// claims no others.
    async fn re_running_a_claim_with_the_same_owner_answers_the_same_rows(db) {
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            db.run(InsertWorkflow(enqueued(id, i as i64))).await;
        }
        let first = db.run(claim("worker-1", 2, T0 + 100)).await;
        assert_eq!(ids(&first), ["a", "b"]);
        let again = db.run(claim("worker-1", 2, T0 + 100)).await;
        assert_eq!(ids(&again), ["a", "b"]);
        for (before, after) in first.iter().zip(&again) {
            assert_eq!(after.row.owner_xid, before.row.owner_xid);
            assert_eq!(after.row.status, Some(WorkflowState::Pending));
        }
        assert_eq!(
            db.count("SELECT COUNT(*) FROM workflow_status WHERE status = 'ENQUEUED'").await,
            3
        );
        assert_eq!(ids(&db.run(claim("worker-2", 10, T0 + 200)).await), ["c", "d", "e"]);
    }

    /// Every stored status reads back as its [`WorkflowState`] (an unknown one as `Other`), in
    /// rows and in the outcomes that report a status.
    async fn statuses_read_back_as_workflow_states(db) {
        let states = [
            ("PENDING", WorkflowState::Pending),
            ("ENQUEUED", WorkflowState::Enqueued),
            ("DELAYED", WorkflowState::Delayed),
            ("SUCCESS", WorkflowState::Success),
            ("ERROR", WorkflowState::Error),
            ("CANCELLED", WorkflowState::Cancelled),
            ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", WorkflowState::MaxRecoveryAttemptsExceeded),
            ("SOMETHING_NEWER", WorkflowState::Other("SOMETHING_NEWER".to_owned())),
        ];
        for (text, state) in &states {
            let id = text.to_lowercase();
            db.pending(&[&id]).await;
            db.execute(&format!("UPDATE workflow_status SET status = '{text}' WHERE workflow_uuid = '{id}'"))
                .await;
            assert_eq!(db.row(&id).await.status.as_ref(), Some(state), "{text}");
            let again = NewWorkflow { creator_xid: "another".to_owned(), ..workflow(&id, WorkflowState::Pending) };
            assert_eq!(
                db.run(InsertWorkflow(again)).await,
                InsertOutcome::Existing { name: Some("checkout".to_owned()), status: Some(state.clone()) },
                "{text}"
            );
            let expected = match state {
                // Still `PENDING` under its owner: the write lands.
                WorkflowState::Pending => RecordOutcome::Recorded,
                other => RecordOutcome::NotOwner { status: Some(other.clone()) },
            };
            assert_eq!(db.run(RecordStep(step(&id, &owner(&id), 1))).await, expected, "{text}");
        }
    }
}
