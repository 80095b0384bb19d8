//! Workflow management: deleting a workflow removes every row that belongs to it and nothing
//! else; retention deletes only finished workflows; a fork copies what DBOS copies; delays,
//! attributes, application versions and event history as DBOS keeps them.

use super::*;
use crate::store::{
    CompleteWorkflow, DeleteWorkflows, ForkOutcome, ForkWorkflow, RecordOutcome, RecordStep,
    SendMessage, SetEvent, SetWorkflowDelay, WriteStream,
};

/// The tables holding a workflow's rows, with the column naming the workflow.
const TABLES: [(&str, &str); 8] = [
    ("workflow_status", "workflow_uuid"),
    ("workflow_input", "workflow_uuid"),
    ("workflow_output", "workflow_uuid"),
    ("operation_outputs", "workflow_uuid"),
    ("notifications", "destination_uuid"),
    ("workflow_events", "workflow_uuid"),
    ("workflow_events_history", "workflow_uuid"),
    ("streams", "workflow_uuid"),
];

/// How many rows each table holds for `workflow_id`, in [`TABLES`] order.
async fn rows_of(db: &TestStore, workflow_id: &str) -> Vec<i64> {
    let mut counts = Vec::new();
    for (table, column) in TABLES {
        counts.push(
            db.count(&format!(
                "SELECT COUNT(*) FROM {table} WHERE {column} = '{workflow_id}'"
            ))
            .await,
        );
    }
    counts
}

/// A `PENDING` workflow `id` with a row in every table: a step, an event (set twice, so two
/// history rows), a stream value, a message to it, and (with `finish`) its output.
async fn populated(db: &TestStore, id: &str, finish: bool) {
    db.pending(&[id]).await;
    let me = owner(id);
    assert_eq!(
        db.run(RecordStep(step(id, &me, 1))).await,
        RecordOutcome::Recorded
    );
    for (function_id, value) in [(2, "1"), (3, "2")] {
        let set = SetEvent {
            record: internal(id, function_id, "DBOS.setEvent"),
            key: "k".to_owned(),
            value: value.to_owned(),
        };
        assert_eq!(db.run(set).await, RecordOutcome::Recorded);
    }
    let write = WriteStream {
        record: internal(id, 4, "DBOS.writeStream"),
        key: "s".to_owned(),
        value: "\"v\"".to_owned(),
    };
    assert_eq!(db.run(write).await, RecordOutcome::Recorded);
    let sent = SendMessage {
        message: message(id, "t", "\"hi\"", &format!("to-{id}")),
        sender: None,
    };
    assert_eq!(db.run(sent).await, RecordOutcome::Recorded);
    if finish {
        assert!(db.run(CompleteWorkflow(completion(id, &me))).await);
    }
}

/// Delete these ids.
fn delete(ids: &[&str]) -> DeleteWorkflows {
    DeleteWorkflows {
        workflow_ids: strings(ids),
    }
}

conformance! {
    /// Deleting a workflow removes its rows from every table (the payload tables, which no
    /// foreign key cascades into, included), whatever its status, and leaves other workflows'
    /// rows — the messages it sent them included — alone. The answer names each id deleted
    /// once, in the order asked; a missing id is skipped, and a re-run deletes nothing.
    async fn deleting_a_workflow_removes_every_row_it_owns(db) {
        populated(db, "done", true).await;
        populated(db, "running", false).await;
        populated(db, "kept", true).await;
        // A message from `done` to `kept` is `kept`'s.
        let sent = SendMessage {
            message: message("kept", "t", "\"from done\"", "done-to-kept"),
            sender: Some(internal("done", 9, "DBOS.send")),
        };
        // `done` has finished: its checkpoint is refused, and so the message.
        assert!(matches!(db.run(sent).await, RecordOutcome::NotOwner { .. }));
        let sent = SendMessage {
            message: message("kept", "t", "\"from running\"", "running-to-kept"),
            sender: Some(internal("running", 9, "DBOS.send")),
        };
        assert_eq!(db.run(sent).await, RecordOutcome::Recorded);
        let kept_before = rows_of(db, "kept").await;
        assert_eq!(kept_before, [1, 1, 1, 4, 2, 1, 2, 1]);
        assert_eq!(rows_of(db, "done").await, [1, 1, 1, 4, 1, 1, 2, 1]);

        let deleted = db.run(delete(&["done", "missing", "running", "done"])).await;
        assert_eq!(deleted, strings(&["done", "running"]));
        assert_eq!(rows_of(db, "done").await, [0; 8]);
        assert_eq!(rows_of(db, "running").await, [0; 8]);
        assert_eq!(rows_of(db, "kept").await, kept_before);

        assert!(db.run(delete(&["done", "running"])).await.is_empty());
        assert!(db.run(delete(&[])).await.is_empty());
    }

    /// A checkpoint for a deleted workflow is refused: nothing of it reappears.
    async fn a_deleted_workflow_takes_no_more_checkpoints(db) {
        populated(db, "w", false).await;
        db.run(delete(&["w"])).await;
        let late = db.run(RecordStep(step("w", &owner("w"), 5))).await;
        assert_eq!(late, RecordOutcome::NotOwner { status: None });
        assert_eq!(rows_of(db, "w").await, [0; 8]);
    }

    /// A fork from step 3 gets a copy of the checkpoints before it, the event history they
    /// wrote and each event's latest value among them, and none of the later stream value;
    /// it is `ENQUEUED` on its queue with `forked_from`, and the original is marked. A re-run
    /// by the same creator is `Forked`; another creator finds the id taken; a missing original
    /// writes nothing.
    async fn a_fork_copies_what_came_before_its_start(db) {
        populated(db, "orig", true).await;
        let fork = ForkWorkflow {
            original_id: "orig".to_owned(),
            forked_id: "fork".to_owned(),
            start_step: 3,
            application_version: Some("v2".to_owned()),
            queue_name: "_dbos_internal_queue".to_owned(),
            queue_partition_key: None,
            timeout_ms: None,
            application_name: Some("other".to_owned()),
            creator_xid: "forker".to_owned(),
            now_ms: T0 + 5,
        };
        assert_eq!(db.run(fork.clone()).await, ForkOutcome::Forked);
        assert_eq!(rows_of(db, "fork").await, [1, 1, 0, 2, 0, 1, 1, 0]);
        assert_eq!(
            db.lines(
                "SELECT status, queue_name, application_version, application_name, forked_from \
                 FROM workflow_status WHERE workflow_uuid = 'fork'"
            )
            .await,
            ["ENQUEUED|_dbos_internal_queue|v2|shop|orig"]
        );
        assert_eq!(
            db.lines("SELECT value FROM workflow_events WHERE workflow_uuid = 'fork'").await,
            ["1"]
        );
        assert_eq!(
            db.count(
                "SELECT COUNT(*) FROM workflow_status WHERE workflow_uuid = 'orig' AND was_forked_from"
            )
            .await,
            1
        );
        assert_eq!(db.run(fork.clone()).await, ForkOutcome::Forked);
        let other = ForkWorkflow { creator_xid: "another".to_owned(), ..fork.clone() };
        assert_eq!(db.run(other).await, ForkOutcome::IdTaken);
        let missing = ForkWorkflow {
            original_id: "missing".to_owned(),
            forked_id: "fork-2".to_owned(),
            ..fork
        };
        assert_eq!(db.run(missing).await, ForkOutcome::OriginalMissing);
        assert_eq!(rows_of(db, "fork-2").await, [0; 8]);
    }

    /// A delay changes only on a `DELAYED` workflow; a missing one answers `None`.
    async fn only_a_delayed_workflow_takes_a_new_delay(db) {
        db.pending(&["d", "p"]).await;
        db.execute("UPDATE workflow_status SET status = 'DELAYED' WHERE workflow_uuid = 'd'").await;
        let delay = |id: &str| SetWorkflowDelay {
            workflow_id: id.to_owned(),
            delay_until_epoch_ms: T0 + 42,
            now_ms: T0 + 1,
        };
        assert_eq!(db.run(delay("d")).await, Some(true));
        assert_eq!(db.run(delay("p")).await, Some(false));
        assert_eq!(db.run(delay("missing")).await, None);
        assert_eq!(
            db.lines("SELECT workflow_uuid, delay_until_epoch_ms FROM workflow_status ORDER BY 1")
                .await,
            [format!("d|{}", T0 + 42), "p|NULL".to_owned()]
        );
    }
}
