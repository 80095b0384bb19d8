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

// ── Application versions and retention ──────────────────────────────────────────────────

/// Register `version` for `application` at `now_ms`.
fn register(
    version: &str,
    application: Option<&str>,
    now_ms: i64,
) -> crate::store::RegisterAppVersion {
    crate::store::RegisterAppVersion {
        version: version.to_owned(),
        application_name: application.map(str::to_owned),
        now_ms,
    }
}

/// The names listed for `application`.
async fn versions(db: &TestStore, application: Option<&str>, limit: Option<i64>) -> Vec<String> {
    let list = crate::store::ListAppVersions {
        application_name: application.map(str::to_owned),
        limit,
    };
    db.run(list).await.into_iter().map(|v| v.name).collect()
}

/// Promote `version` for `application` at `now_ms`.
fn promote(
    version: &str,
    application: Option<&str>,
    now_ms: i64,
) -> crate::store::PromoteAppVersion {
    crate::store::PromoteAppVersion {
        version: version.to_owned(),
        application_name: application.map(str::to_owned),
        now_ms,
    }
}

conformance! {
    /// An application sees its own and unclaimed versions, newest first; a promotion retimes
    /// a version and claims an unclaimed one; another application's version is refused
    /// unless the promoter names no application, which keeps the owner; a missing version
    /// writes nothing.
    async fn application_versions_are_listed_and_promoted_as_dbos_does(db) {
        use crate::store::Promotion;
        db.run(register("v1", Some("shop"), T0)).await;
        db.run(register("v2", None, T0 + 1)).await;
        db.run(register("v3", Some("other"), T0 + 2)).await;
        assert_eq!(versions(db, Some("shop"), None).await, ["v2", "v1"]);
        assert_eq!(versions(db, None, None).await, ["v3", "v2", "v1"]);
        assert_eq!(versions(db, Some("shop"), Some(1)).await, ["v2"]);

        assert_eq!(db.run(promote("v1", Some("shop"), T0 + 10)).await, Promotion::Promoted);
        assert_eq!(versions(db, Some("shop"), None).await, ["v1", "v2"]);
        assert_eq!(db.run(promote("v2", Some("shop"), T0 + 11)).await, Promotion::Promoted);
        assert_eq!(
            db.run(promote("v3", Some("shop"), T0 + 12)).await,
            Promotion::OwnedBy("other".to_owned())
        );
        assert_eq!(db.run(promote("nope", Some("shop"), T0 + 12)).await, Promotion::Missing);
        assert_eq!(db.run(promote("v3", None, T0 + 13)).await, Promotion::Promoted);
        assert_eq!(
            db.lines(
                "SELECT version_name, version_timestamp, COALESCE(application_name, '-') \
                 FROM application_versions ORDER BY version_name"
            )
            .await,
            [
                format!("v1|{}|shop", T0 + 10),
                format!("v2|{}|shop", T0 + 11),
                format!("v3|{}|other", T0 + 13),
            ]
        );
        assert_eq!(versions(db, Some("other"), None).await, ["v3"]);
    }

    /// Retention deletes finished workflows created before the cutoff — every row of them —
    /// oldest first, at most `limit` per run, and never an unfinished one; the rank query
    /// finds the n-th newest finished workflow's creation time.
    async fn retention_deletes_old_finished_workflows_oldest_first(db) {
        for (id, finish) in [("old-1", true), ("old-2", true), ("old-3", true), ("new", true)] {
            populated(db, id, finish).await;
        }
        populated(db, "old-pending", false).await;
        db.pending(&["old-enqueued", "old-delayed"]).await;
        for (id, created_at, status) in [
            ("old-1", T0 + 3, "ERROR"),
            ("old-2", T0 + 1, "CANCELLED"),
            ("old-3", T0 + 2, "MAX_RECOVERY_ATTEMPTS_EXCEEDED"),
            ("new", T0 + 100, "SUCCESS"),
            ("old-pending", T0, "PENDING"),
            ("old-enqueued", T0, "ENQUEUED"),
            ("old-delayed", T0, "DELAYED"),
        ] {
            db.execute(&format!(
                "UPDATE workflow_status SET created_at = {created_at}, status = '{status}' \
                 WHERE workflow_uuid = '{id}'"
            ))
            .await;
        }
        let rank = |rank| crate::store::FinishedCreatedAt { rank };
        assert_eq!(db.run(rank(1)).await, Some(T0 + 100));
        assert_eq!(db.run(rank(2)).await, Some(T0 + 3));
        assert_eq!(db.run(rank(5)).await, None);

        let batch = crate::store::DeleteFinishedBefore { cutoff_ms: T0 + 50, limit: 2 };
        assert_eq!(db.run(batch.clone()).await, 2);
        assert_eq!(rows_of(db, "old-2").await, [0; 8]);
        assert_eq!(rows_of(db, "old-3").await, [0; 8]);
        assert_ne!(rows_of(db, "old-1").await, [0; 8], "the newest old one waits its turn");
        assert_eq!(db.run(batch.clone()).await, 1);
        assert_eq!(rows_of(db, "old-1").await, [0; 8]);
        assert_eq!(db.run(batch).await, 0);
        assert_eq!(
            db.lines("SELECT workflow_uuid FROM workflow_status ORDER BY 1").await,
            ["new", "old-delayed", "old-enqueued", "old-pending"]
        );
        assert_eq!(rows_of(db, "old-pending").await, [1, 1, 0, 4, 1, 1, 2, 1]);
    }

    /// Deleting in batches goes on until a batch comes back short: five finished workflows
    /// in batches of two take three transactions and all go; the unfinished one stays.
    async fn retention_in_batches_deletes_every_batch(db) {
        let ids = ["b1", "b2", "b3", "b4", "b5"];
        for id in ids {
            populated(db, id, true).await;
        }
        populated(db, "running", false).await;
        assert_eq!(db.store.delete_finished_in_batches(T0 + 1, 2).await.unwrap(), 5);
        for id in ids {
            assert_eq!(rows_of(db, id).await, [0; 8], "{id}");
        }
        assert_eq!(db.store.delete_finished_in_batches(T0 + 1, 2).await.unwrap(), 0);
        assert_eq!(
            db.lines("SELECT workflow_uuid FROM workflow_status").await,
            ["running"]
        );
    }
}

// ---- Workflow attributes and event history ------------------------------------------------

/// `workflow_id`'s attributes, parsed (`None` for NULL).
async fn attributes_of(db: &TestStore, workflow_id: &str) -> Option<serde_json::Value> {
    let rows = db
        .rows(&format!(
            "SELECT CAST(attributes AS TEXT) FROM workflow_status WHERE workflow_uuid = '{workflow_id}'"
        ))
        .await;
    let text = rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten());
    text.map(|text| serde_json::from_str(&text).expect("attributes are JSON"))
}

conformance! {
    /// Attributes inserted with a workflow are stored as JSON; an update replaces them, a
    /// merge sets top-level keys over them (over `{}` when there are none), `None` clears
    /// them, and a missing workflow answers `false`.
    async fn attributes_are_written_replaced_merged_and_cleared(db) {
        use crate::store::{InsertWorkflow, UpdateWorkflowAttributes};
        let wf = NewWorkflow {
            attributes: Some(r#"{"a":1,"b":{"x":1}}"#.to_owned()),
            ..workflow("attr", WorkflowState::Pending)
        };
        db.run(InsertWorkflow(wf)).await;
        db.pending(&["plain"]).await;
        assert_eq!(attributes_of(db, "attr").await, Some(serde_json::json!({"a": 1, "b": {"x": 1}})));
        assert_eq!(attributes_of(db, "plain").await, None);

        let update = |id: &str, attributes: Option<&str>, merge| UpdateWorkflowAttributes {
            workflow_id: id.to_owned(),
            attributes: attributes.map(str::to_owned),
            merge,
            now_ms: T0 + 10,
        };
        assert!(db.run(update("attr", Some(r#"{"b":{"y":2},"c":3}"#), true)).await);
        assert_eq!(
            attributes_of(db, "attr").await,
            Some(serde_json::json!({"a": 1, "b": {"y": 2}, "c": 3}))
        );
        assert_eq!(
            db.lines("SELECT updated_at FROM workflow_status WHERE workflow_uuid = 'attr'").await,
            [(T0 + 10).to_string()]
        );
        assert!(db.run(update("attr", Some(r#"{"d":4}"#), false)).await);
        assert_eq!(attributes_of(db, "attr").await, Some(serde_json::json!({"d": 4})));
        assert!(db.run(update("attr", None, false)).await);
        assert_eq!(attributes_of(db, "attr").await, None);
        assert!(db.run(update("plain", Some(r#"{"e":5}"#), true)).await);
        assert_eq!(attributes_of(db, "plain").await, Some(serde_json::json!({"e": 5})));
        assert!(!db.run(update("missing", Some("{}"), false)).await);
    }
}

conformance! {
    /// The event history lists every value set, by the operation that set it, for every key
    /// or for one; another workflow's history is not mixed in.
    async fn the_event_history_lists_every_value_in_the_order_set(db) {
        use crate::store::{EventHistory, EventHistoryRow, Stored};
        db.pending(&["hist", "other"]).await;
        for (id, function_id, key, value) in
            [("hist", 1, "k", "1"), ("hist", 2, "j", "\"j\""), ("hist", 3, "k", "2"), ("other", 1, "k", "9")]
        {
            let set = SetEvent {
                record: internal(id, function_id, "DBOS.setEvent"),
                key: key.to_owned(),
                value: value.to_owned(),
            };
            assert_eq!(db.run(set).await, RecordOutcome::Recorded);
        }
        let all = db.run(EventHistory { workflow_id: "hist".to_owned(), key: None }).await;
        let seen: Vec<(&str, i32, &str)> =
            all.iter().map(|r| (r.key.as_str(), r.function_id, r.value.text.as_str())).collect();
        assert_eq!(seen, [("k", 1, "1"), ("j", 2, "\"j\""), ("k", 3, "2")]);
        // Each row carries the serialization its value was written in.
        let set: Vec<EventHistoryRow> = db.run(EventHistory { workflow_id: "other".to_owned(), key: None }).await;
        assert_eq!(set[0].value, Stored { text: "9".to_owned(), serialization: set[0].value.serialization.clone() });
        assert!(all.iter().all(|r| r.value.serialization == set[0].value.serialization));
        let k = db.run(EventHistory { workflow_id: "hist".to_owned(), key: Some("k".to_owned()) }).await;
        let k: Vec<(i32, &str)> = k.iter().map(|r| (r.function_id, r.value.text.as_str())).collect();
        assert_eq!(k, [(1, "1"), (3, "2")]);
        assert!(db.run(EventHistory { workflow_id: "missing".to_owned(), key: None }).await.is_empty());
    }
}
