//! Behaviour of the SQLite store's messages, events, streams, cancellation, resume and
//! change watching.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use super::SqliteStore;
use super::tests::{TempDb, completion, step, workflow};
use crate::error::Error;
use crate::store::{
    ChangeSink, NULL_TOPIC, NewMessage, PORTABLE_JSON, RecordOutcome, StepRecord, StoreOptions,
    SystemDatabase, status,
};

/// A message for `destination` on `topic` with an explicit uuid.
fn message(destination: &str, topic: &str, text: &str, uuid: &str) -> NewMessage {
    NewMessage {
        destination_id: destination.to_owned(),
        topic: topic.to_owned(),
        message: text.to_owned(),
        message_uuid: uuid.to_owned(),
    }
}

/// A `DBOS.recv` record of `workflow_id` at `function_id`, owned by `owner-<id>`.
fn recv(workflow_id: &str, function_id: i32) -> StepRecord {
    let mut rec = step(
        workflow_id,
        &format!("owner-{workflow_id}"),
        function_id,
        "\"ignored\"",
    );
    rec.function_name = "DBOS.recv".to_owned();
    rec
}

/// Count rows of a table matching a condition, on a separate connection.
fn count(db: &TempDb, sql_where: &str) -> i64 {
    let conn = Connection::open(&db.0).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {sql_where}"), [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// A message is inserted once per uuid; the sender's checkpoint is written with it.
#[tokio::test]
async fn send_is_idempotent_by_message_uuid() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("dest", status::PENDING))
        .await
        .unwrap();
    store
        .insert_workflow(&workflow("sender", status::PENDING))
        .await
        .unwrap();
    let msg = message("dest", "t", "\"hi\"", "key::dest");
    assert_eq!(
        store.send_message(&msg, None).await.unwrap(),
        RecordOutcome::Recorded
    );
    assert_eq!(
        store.send_message(&msg, None).await.unwrap(),
        RecordOutcome::Recorded
    );
    let mut send = step("sender", "owner-sender", 1, "null");
    send.function_name = "DBOS.send".to_owned();
    assert_eq!(
        store.send_message(&msg, Some(&send)).await.unwrap(),
        RecordOutcome::Recorded
    );
    // A replay of the same send is a duplicate and inserts nothing.
    let other = message("dest", "t", "\"again\"", "fresh-uuid");
    assert!(matches!(
        store.send_message(&other, Some(&send)).await.unwrap(),
        RecordOutcome::Duplicate(c) if c.function_name == "DBOS.send"
    ));
    assert!(store.has_message("dest", "t").await.unwrap());
    assert!(!store.has_message("dest", "other").await.unwrap());
    store.close().await;
    assert_eq!(count(&db, "notifications"), 1);
    let conn = Connection::open(&db.0).unwrap();
    let (serialization, consumed): (String, i64) = conn
        .query_row(
            "SELECT serialization, consumed FROM notifications",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((serialization.as_str(), consumed), (PORTABLE_JSON, 0));
}

/// A missing destination is NotFound, and the sender's checkpoint is not written.
#[tokio::test]
async fn send_to_a_missing_destination_writes_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("sender", status::PENDING))
        .await
        .unwrap();
    let send = step("sender", "owner-sender", 1, "null");
    match store
        .send_message(&message("ghost", "t", "1", "u1"), Some(&send))
        .await
    {
        Err(Error::NotFound(id)) => assert_eq!(id, "ghost"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store
            .send_message(&message("ghost", "t", "1", "u2"), None)
            .await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.get_checkpoint("sender", 1).await.unwrap(), None);
    store.close().await;
    assert_eq!(count(&db, "notifications"), 0);
}

/// Messages on one topic come out oldest first; an empty topic records `null`; topics are
/// separate; a replayed receive consumes nothing more; a non-owner consumes nothing.
#[tokio::test]
async fn receive_is_fifo_per_topic_and_exactly_once() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("wf", status::PENDING))
        .await
        .unwrap();
    for (i, text) in ["1", "2", "3"].iter().enumerate() {
        store
            .send_message(&message("wf", "t", text, &format!("m{i}")), None)
            .await
            .unwrap();
    }
    store
        .send_message(&message("wf", NULL_TOPIC, "\"n\"", "mn"), None)
        .await
        .unwrap();
    for (id, expected) in [(1, "1"), (2, "2"), (3, "3")] {
        let (outcome, text) = store.consume_message(&recv("wf", id), "t").await.unwrap();
        assert_eq!(
            (outcome, text.as_ref().map(|s| s.text.as_str())),
            (RecordOutcome::Recorded, Some(expected))
        );
        let checkpoint = store
            .get_checkpoint("wf", id)
            .await
            .unwrap()
            .expect("checkpoint");
        assert_eq!(checkpoint.output.as_deref(), Some(expected));
        assert_eq!(checkpoint.function_name, "DBOS.recv");
    }
    let (outcome, text) = store.consume_message(&recv("wf", 4), "t").await.unwrap();
    assert_eq!((outcome, text), (RecordOutcome::Recorded, None));
    assert_eq!(
        store
            .get_checkpoint("wf", 4)
            .await
            .unwrap()
            .expect("checkpoint")
            .output
            .as_deref(),
        Some("null")
    );
    assert!(store.has_message("wf", NULL_TOPIC).await.unwrap());
    assert!(!store.has_message("wf", "t").await.unwrap());

    // A second receive at an id already recorded replays it and leaves the new message.
    store
        .send_message(&message("wf", "t", "4", "m3"), None)
        .await
        .unwrap();
    match store.consume_message(&recv("wf", 1), "t").await.unwrap() {
        (RecordOutcome::Duplicate(existing), None) => {
            assert_eq!(existing.output.as_deref(), Some("1"))
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert!(store.has_message("wf", "t").await.unwrap());
    let mut intruder = recv("wf", 5);
    intruder.owner_xid = "intruder".to_owned();
    assert_eq!(
        store.consume_message(&intruder, "t").await.unwrap(),
        (
            RecordOutcome::NotOwner {
                status: Some("PENDING".to_owned())
            },
            None
        )
    );
    assert!(store.has_message("wf", "t").await.unwrap());
    assert_eq!(store.get_checkpoint("wf", 5).await.unwrap(), None);

    let (_, text) = store
        .consume_message(&recv("wf", 6), NULL_TOPIC)
        .await
        .unwrap();
    assert_eq!(text.as_ref().map(|s| s.text.as_str()), Some("\"n\""));
    store.close().await;
    let conn = Connection::open(&db.0).unwrap();
    let consumed: Vec<(String, i64)> = conn
        .prepare("SELECT message, consumed_by_function_id FROM notifications WHERE consumed = 1 ORDER BY consumed_by_function_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected = [("1", 1), ("2", 2), ("3", 3), ("\"n\"", 6)];
    assert_eq!(
        consumed,
        expected
            .iter()
            .map(|(m, f)| ((*m).to_owned(), *f))
            .collect::<Vec<_>>()
    );
}

/// The latest event value wins; every set is kept in the history; replays change nothing.
#[tokio::test]
async fn set_event_keeps_the_latest_value_and_the_history() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("wf", status::PENDING))
        .await
        .unwrap();
    let owner = "owner-wf";
    assert_eq!(
        store
            .set_event(&step("wf", owner, 1, "null"), "k", "1")
            .await
            .unwrap(),
        RecordOutcome::Recorded
    );
    assert_eq!(
        store
            .set_event(&step("wf", owner, 2, "null"), "k", "2")
            .await
            .unwrap(),
        RecordOutcome::Recorded
    );
    assert_eq!(
        store
            .set_event(&step("wf", owner, 3, "null"), "a", "\"x\"")
            .await
            .unwrap(),
        RecordOutcome::Recorded
    );
    assert!(matches!(
        store
            .set_event(&step("wf", owner, 1, "null"), "k", "99")
            .await
            .unwrap(),
        RecordOutcome::Duplicate(_)
    ));
    assert!(matches!(
        store
            .set_event(&step("wf", "intruder", 4, "null"), "k", "98")
            .await
            .unwrap(),
        RecordOutcome::NotOwner { .. }
    ));
    assert_eq!(
        store
            .get_event("wf", "k")
            .await
            .unwrap()
            .map(|s| s.text)
            .as_deref(),
        Some("2")
    );
    assert_eq!(store.get_event("wf", "missing").await.unwrap(), None);
    assert_eq!(
        texts(store.list_events("wf").await.unwrap()),
        vec![
            ("a".to_owned(), "\"x\"".to_owned()),
            ("k".to_owned(), "2".to_owned())
        ]
    );
    store.close().await;
    let conn = Connection::open(&db.0).unwrap();
    let history: Vec<(i64, String, String, String)> = conn
        .prepare("SELECT function_id, key, value, serialization FROM workflow_events_history ORDER BY function_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let json = PORTABLE_JSON.to_owned();
    assert_eq!(
        history,
        vec![
            (1, "k".to_owned(), "1".to_owned(), json.clone()),
            (2, "k".to_owned(), "2".to_owned(), json.clone()),
            (3, "a".to_owned(), "\"x\"".to_owned(), json),
        ]
    );
}

/// Stream offsets are dense from 0 per key; reads start at an offset; replays append nothing.
#[tokio::test]
async fn stream_offsets_are_dense() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("wf", status::PENDING))
        .await
        .unwrap();
    for i in 0..5 {
        let rec = step("wf", "owner-wf", i + 1, "null");
        assert_eq!(
            store.write_stream(&rec, "s", &i.to_string()).await.unwrap(),
            RecordOutcome::Recorded
        );
    }
    store
        .write_stream(&step("wf", "owner-wf", 10, "null"), "other", "\"o\"")
        .await
        .unwrap();
    assert!(matches!(
        store
            .write_stream(&step("wf", "owner-wf", 1, "null"), "s", "dup")
            .await
            .unwrap(),
        RecordOutcome::Duplicate(_)
    ));
    let all = texts(store.read_stream("wf", "s", 0).await.unwrap());
    assert_eq!(all, (0..5).map(|i| (i, i.to_string())).collect::<Vec<_>>());
    assert_eq!(
        texts(store.read_stream("wf", "s", 3).await.unwrap()),
        vec![(3, "3".to_owned()), (4, "4".to_owned())]
    );
    assert_eq!(
        texts(store.read_stream("wf", "other", 0).await.unwrap()),
        vec![(0, "\"o\"".to_owned())]
    );
    assert_eq!(
        texts(store.read_stream("wf", "none", 0).await.unwrap()),
        vec![]
    );
    store.close().await;
    assert_eq!(
        count(
            &db,
            "streams WHERE key = 's' AND function_id = \"offset\" + 1"
        ),
        5
    );
}

/// Only unfinished workflows are cancelled, with their run fields cleared.
#[tokio::test]
async fn cancel_touches_only_unfinished_workflows() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("running", status::PENDING))
        .await
        .unwrap();
    let mut queued = workflow("queued", status::ENQUEUED);
    queued.queue_name = Some("q".to_owned());
    store.insert_workflow(&queued).await.unwrap();
    store
        .insert_workflow(&workflow("done", status::PENDING))
        .await
        .unwrap();
    assert!(
        store
            .complete_workflow(&completion("done", "owner-done"))
            .await
            .unwrap()
    );
    let ids: Vec<String> = ["running", "queued", "done", "missing", "running"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(
        store.cancel_workflows(&ids, 9_000).await.unwrap(),
        vec!["running", "queued"]
    );
    assert_eq!(
        store.cancel_workflows(&ids, 9_500).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.cancel_workflows(&[], 9_500).await.unwrap(),
        Vec::<String>::new()
    );
    for id in ["running", "queued"] {
        let row = store.get_workflow(id).await.unwrap().expect("row");
        assert_eq!(row.status.as_deref(), Some(status::CANCELLED));
        assert_eq!(
            (
                row.owner_xid,
                row.queue_name,
                row.started_at_epoch_ms,
                row.updated_at
            ),
            (None, None, None, 9_000)
        );
    }
    let done = store.get_workflow("done").await.unwrap().expect("row");
    assert_eq!(done.status.as_deref(), Some(status::SUCCESS));
    assert!(matches!(
        store.record_step(&step("running", "owner-running", 1, "1")).await.unwrap(),
        RecordOutcome::NotOwner { status: Some(s) } if s == status::CANCELLED
    ));
    store.close().await;
}

/// Descendants follow parent_workflow_id through every level, and nothing else.
#[tokio::test]
async fn descendants_cover_a_three_level_tree() {
    let db = TempDb::new();
    let store = db.open().await;
    for (id, parent) in [
        ("root", None),
        ("a", Some("root")),
        ("b", Some("root")),
        ("a1", Some("a")),
        ("a2", Some("a")),
        ("a1x", Some("a1")),
        ("stranger", None),
        ("s1", Some("stranger")),
    ] {
        let mut wf = workflow(id, status::PENDING);
        wf.parent_workflow_id = parent.map(str::to_owned);
        store.insert_workflow(&wf).await.unwrap();
    }
    let mut found = store.descendants("root").await.unwrap();
    found.sort();
    assert_eq!(found, vec!["a", "a1", "a1x", "a2", "b"]);
    let mut under_a = store.descendants("a").await.unwrap();
    under_a.sort();
    assert_eq!(under_a, vec!["a1", "a1x", "a2"]);
    assert_eq!(
        store.descendants("a1x").await.unwrap(),
        Vec::<String>::new()
    );
    store.close().await;
}

/// A cancelled workflow resumes here with a fresh owner, one attempt and a new deadline;
/// a successful (or pending, or missing) one does not.
#[tokio::test]
async fn resume_restarts_a_cancelled_workflow_but_not_a_successful_one() {
    let db = TempDb::new();
    let store = db.open().await;
    let mut wf = workflow("wf", status::PENDING);
    wf.timeout_ms = Some(60_000);
    wf.deadline_epoch_ms = Some(61_000);
    store.insert_workflow(&wf).await.unwrap();
    store
        .record_step(&step("wf", "owner-wf", 1, "\"a\""))
        .await
        .unwrap();
    store
        .cancel_workflows(&["wf".to_owned()], 5_000)
        .await
        .unwrap();
    assert!(
        store
            .resume_workflow("missing", "exec2", "v2", "new", 10_000)
            .await
            .unwrap()
            .is_none()
    );
    let resumed = store
        .resume_workflow("wf", "exec2", "v2", "new-owner", 10_000)
        .await
        .unwrap()
        .expect("resumed");
    let row = &resumed.row;
    assert_eq!(row.status.as_deref(), Some(status::PENDING));
    assert_eq!(row.owner_xid.as_deref(), Some("new-owner"));
    assert_eq!(row.executor_id.as_deref(), Some("exec2"));
    assert_eq!(row.application_version.as_deref(), Some("v2"));
    assert_eq!(row.recovery_attempts, Some(1));
    assert_eq!(row.started_at_epoch_ms, Some(10_000));
    assert_eq!(row.workflow_deadline_epoch_ms, Some(70_000));
    assert_eq!(
        (row.queue_name.as_deref(), row.completed_at, row.updated_at),
        (None, None, 10_000)
    );
    assert_eq!(resumed.checkpoints.len(), 1);
    assert_eq!(resumed.checkpoints[0].output.as_deref(), Some("\"a\""));
    assert!(
        store
            .resume_workflow("wf", "exec2", "v2", "other", 11_000)
            .await
            .unwrap()
            .is_none(),
        "a PENDING workflow has nothing to resume"
    );
    assert!(
        store
            .record_step(&step("wf", "new-owner", 2, "2"))
            .await
            .unwrap()
            == RecordOutcome::Recorded
    );

    // Without a timeout the deadline stays empty.
    store
        .insert_workflow(&workflow("plain", status::PENDING))
        .await
        .unwrap();
    store
        .cancel_workflows(&["plain".to_owned()], 5_000)
        .await
        .unwrap();
    let plain = store
        .resume_workflow("plain", "e", "v1", "o", 12_000)
        .await
        .unwrap()
        .expect("resumed");
    assert_eq!(plain.row.workflow_deadline_epoch_ms, None);

    store
        .insert_workflow(&workflow("done", status::PENDING))
        .await
        .unwrap();
    store
        .complete_workflow(&completion("done", "owner-done"))
        .await
        .unwrap();
    assert!(
        store
            .resume_workflow("done", "exec2", "v2", "x", 12_000)
            .await
            .unwrap()
            .is_none()
    );
    let done = store.get_workflow("done").await.unwrap().expect("row");
    assert_eq!(
        (done.status.as_deref(), done.owner_xid),
        (Some(status::SUCCESS), None)
    );
    store.close().await;
}

/// The watcher fires when another connection commits, and stops at close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_changes_sees_other_connections_and_stops_at_close() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("wf", status::PENDING))
        .await
        .unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fired);
    let sink: ChangeSink = Arc::new(move |channel: &str, payload: &str| {
        assert_eq!((channel, payload), ("*", ""));
        counter.fetch_add(1, Ordering::SeqCst);
    });
    store
        .watch_changes(sink, Duration::from_millis(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(fired.load(Ordering::SeqCst), 0, "nothing committed yet");

    let other = Connection::open(&db.0).unwrap();
    other
        .execute(
            "INSERT INTO notifications (destination_uuid, topic, message, message_uuid) VALUES ('wf', 't', '1', 'ext')",
            [],
        )
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fired.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        fired.load(Ordering::SeqCst) >= 1,
        "the watcher missed another connection's commit"
    );
    assert!(store.has_message("wf", "t").await.unwrap());

    let started = std::time::Instant::now();
    store.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close hung on the watcher"
    );
    let before = fired.load(Ordering::SeqCst);
    other
        .execute(
            "INSERT INTO notifications (destination_uuid, topic, message, message_uuid) VALUES ('wf', 't', '2', 'ext2')",
            [],
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        fired.load(Ordering::SeqCst),
        before,
        "the watcher outlived close"
    );
    assert!(matches!(
        store
            .watch_changes(Arc::new(|_: &str, _: &str| {}), Duration::from_millis(10))
            .await,
        Err(Error::Shutdown)
    ));
}

/// An in-memory database has nothing to watch, and says so by doing nothing.
#[tokio::test]
async fn watch_changes_on_memory_is_a_no_op() {
    let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
        .await
        .unwrap();
    store
        .watch_changes(Arc::new(|_: &str, _: &str| {}), Duration::from_millis(5))
        .await
        .unwrap();
    store
        .insert_workflow(&workflow("wf", status::PENDING))
        .await
        .unwrap();
    store
        .send_message(&message("wf", "t", "1", "u"), None)
        .await
        .unwrap();
    let (_, text) = store.consume_message(&recv("wf", 1), "t").await.unwrap();
    assert_eq!(text.as_ref().map(|s| s.text.as_str()), Some("1"));
    store.close().await;
}

/// The texts of stored values, for comparisons.
fn texts<K>(values: Vec<(K, crate::store::Stored)>) -> Vec<(K, String)> {
    values.into_iter().map(|(k, v)| (k, v.text)).collect()
}
