//! Workflow management: deleting a workflow removes every row that belongs to it and nothing
//! else; retention deletes only finished workflows; a fork copies what DBOS copies; delays,
//! attributes, application versions and event history as DBOS keeps them.

use super::*;
use crate::store::{
    CompleteWorkflow, DeleteWorkflows, RecordOutcome, RecordStep, SendMessage, SetEvent,
    WriteStream,
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
}
