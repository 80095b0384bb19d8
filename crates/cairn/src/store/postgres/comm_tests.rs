//! Messages, events, streams, cancellation, resume and change announcements against the local
//! server, each test on a fresh database (see [`super::tests::TestDb`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::tests::{TestDb, step, workflow};
use super::*;
use crate::store::PORTABLE_JSON;

/// A message to `destination` on `topic` with uuid `uuid`.
fn message(destination: &str, topic: &str, text: &str, uuid: &str) -> NewMessage {
    NewMessage {
        destination_id: destination.to_owned(),
        topic: topic.to_owned(),
        message: text.to_owned(),
        message_uuid: uuid.to_owned(),
    }
}

/// A step record named `name` at `function_id` of `workflow_id`, owned by `owner-of-<id>`.
fn op(workflow_id: &str, function_id: i32, name: &str) -> StepRecord {
    let mut rec = step(workflow_id, &format!("owner-of-{workflow_id}"), function_id);
    rec.function_name = name.to_owned();
    rec.output = None;
    rec
}

/// Insert `PENDING` workflows with these ids.
async fn pending(store: &PostgresStore, ids: &[&str]) {
    for id in ids {
        store
            .insert_workflow(&workflow(id, status::PENDING))
            .await
            .expect("insert workflow");
    }
}

/// One `i64` from a query.
async fn count(sql: &tokio_postgres::Client, query: &str) -> i64 {
    sql.query_one(query, &[]).await.expect("count").get(0)
}

/// Sending is idempotent by `message_uuid`; the sender's checkpoint commits with the message,
/// a replay at its id sends nothing, and a missing destination writes nothing at all.
#[tokio::test]
async fn sending_is_idempotent_and_a_missing_destination_writes_nothing() {
    let db = TestDb::new();
    let store = db.open().await;
    pending(&store, &["w", "s"]).await;
    let sql = db.sql().await;
    let messages = "SELECT count(*) FROM dbos.notifications";

    let keyed = message("w", "t", "\"hi\"", "key::w");
    for _ in 0..2 {
        assert_eq!(
            store.send_message(&keyed, None).await.unwrap(),
            RecordOutcome::Recorded
        );
    }
    assert_eq!(count(&sql, messages).await, 1);
    let row = sql
        .query_one(
            "SELECT destination_uuid, topic, message, serialization, consumed, created_at_epoch_ms > 0
             FROM dbos.notifications WHERE message_uuid = 'key::w'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "w");
    assert_eq!(row.get::<_, String>(1), "t");
    assert_eq!(row.get::<_, String>(2), "\"hi\"");
    assert_eq!(row.get::<_, String>(3), PORTABLE_JSON);
    assert!(!row.get::<_, bool>(4));
    assert!(row.get::<_, bool>(5));

    let send = op("s", 1, "DBOS.send");
    let first = message("w", "t", "1", "m1");
    assert_eq!(
        store.send_message(&first, Some(&send)).await.unwrap(),
        RecordOutcome::Recorded
    );
    assert_eq!(count(&sql, messages).await, 2);
    let recorded = store
        .get_checkpoint("s", 1)
        .await
        .unwrap()
        .expect("checkpoint");
    assert_eq!(recorded.function_name, "DBOS.send");
    // A replay at the same id with a fresh uuid: the recorded checkpoint, no second message.
    let replay = message("w", "t", "1", "m1-again");
    assert_eq!(
        store.send_message(&replay, Some(&send)).await.unwrap(),
        RecordOutcome::Duplicate(recorded)
    );
    assert_eq!(count(&sql, messages).await, 2);

    let ghost = message("ghost", "t", "1", "m2");
    match store
        .send_message(&ghost, Some(&op("s", 2, "DBOS.send")))
        .await
    {
        Err(Error::NotFound(id)) => assert_eq!(id, "ghost"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.get_checkpoint("s", 2).await.unwrap(), None);
    assert!(matches!(
        store.send_message(&ghost, None).await,
        Err(Error::NotFound(id)) if id == "ghost"
    ));
    assert_eq!(count(&sql, messages).await, 2);

    let mut intruder = op("s", 3, "DBOS.send");
    intruder.owner_xid = "intruder".to_owned();
    assert_eq!(
        store
            .send_message(&message("w", "t", "1", "m3"), Some(&intruder))
            .await
            .unwrap(),
        RecordOutcome::NotOwner {
            status: Some("PENDING".to_owned())
        }
    );
    assert_eq!(count(&sql, messages).await, 2);
    store.close().await;
    drop(sql);
    db.drop().await;
}

/// Messages are consumed first in, first out, per topic; an empty topic records `null`; a
/// replay at a recorded id consumes nothing; a non-owner consumes nothing.
#[tokio::test]
async fn messages_are_consumed_in_order_and_exactly_once() {
    let db = TestDb::new();
    let store = db.open().await;
    pending(&store, &["w"]).await;
    let sql = db.sql().await;
    for i in 1..=3 {
        let msg = message("w", "t", &i.to_string(), &format!("m{i}"));
        store.send_message(&msg, None).await.unwrap();
    }
    store
        .send_message(&message("w", "other", "\"o\"", "o1"), None)
        .await
        .unwrap();
    assert!(store.has_message("w", "t").await.unwrap());

    for i in 1..=3 {
        let (outcome, text) = store
            .consume_message(&op("w", i, "DBOS.recv"), "t")
            .await
            .unwrap();
        assert_eq!(outcome, RecordOutcome::Recorded);
        assert_eq!(
            text.as_ref().map(|s| s.text.as_str()),
            Some(i.to_string().as_str())
        );
        let cp = store
            .get_checkpoint("w", i)
            .await
            .unwrap()
            .expect("checkpoint");
        assert_eq!(cp.output.as_deref(), Some(i.to_string().as_str()));
        assert_eq!(cp.function_name, "DBOS.recv");
        assert_eq!(cp.serialization.as_deref(), Some(PORTABLE_JSON));
    }
    let consumed: Vec<(String, Option<i32>)> = sql
        .query(
            "SELECT message_uuid, consumed_by_function_id FROM dbos.notifications
             WHERE consumed ORDER BY message_uuid",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, Option<i32>)> =
        (1..=3).map(|i| (format!("m{i}"), Some(i))).collect();
    assert_eq!(consumed, expected);

    assert!(!store.has_message("w", "t").await.unwrap());
    assert!(store.has_message("w", "other").await.unwrap());
    let (outcome, text) = store
        .consume_message(&op("w", 4, "DBOS.recv"), "t")
        .await
        .unwrap();
    assert_eq!((outcome, text), (RecordOutcome::Recorded, None));
    let empty = store
        .get_checkpoint("w", 4)
        .await
        .unwrap()
        .expect("checkpoint");
    assert_eq!(empty.output.as_deref(), Some("null"));

    store
        .send_message(&message("w", "t", "4", "m4"), None)
        .await
        .unwrap();
    let recorded = store
        .get_checkpoint("w", 2)
        .await
        .unwrap()
        .expect("checkpoint");
    assert_eq!(
        store
            .consume_message(&op("w", 2, "DBOS.recv"), "t")
            .await
            .unwrap(),
        (RecordOutcome::Duplicate(recorded), None)
    );
    let mut intruder = op("w", 5, "DBOS.recv");
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
    assert!(store.has_message("w", "t").await.unwrap());
    let (_, text) = store
        .consume_message(&op("w", 5, "DBOS.recv"), "other")
        .await
        .unwrap();
    assert_eq!(text.as_ref().map(|s| s.text.as_str()), Some("\"o\""));
    store.close().await;
    drop(sql);
    db.drop().await;
}

/// The latest value of an event wins, every write stays in the history, and a replay at a
/// recorded id changes nothing.
#[tokio::test]
async fn events_keep_the_latest_value_and_the_history() {
    let db = TestDb::new();
    let store = db.open().await;
    pending(&store, &["w"]).await;
    let set = |id, key: &'static str, value: &'static str| {
        let store = &store;
        async move {
            store
                .set_event(&op("w", id, "DBOS.setEvent"), key, value)
                .await
                .unwrap()
        }
    };
    assert_eq!(set(1, "k", "1").await, RecordOutcome::Recorded);
    assert_eq!(set(2, "k", "2").await, RecordOutcome::Recorded);
    assert_eq!(set(3, "j", "3").await, RecordOutcome::Recorded);
    assert!(matches!(
        set(1, "k", "9").await,
        RecordOutcome::Duplicate(_)
    ));
    assert_eq!(
        store
            .get_event("w", "k")
            .await
            .unwrap()
            .map(|s| s.text)
            .as_deref(),
        Some("2")
    );
    assert_eq!(store.get_event("w", "none").await.unwrap(), None);
    assert_eq!(
        texts(store.list_events("w").await.unwrap()),
        vec![
            ("j".to_owned(), "3".to_owned()),
            ("k".to_owned(), "2".to_owned())
        ]
    );
    let sql = db.sql().await;
    let history: Vec<(i32, String, String, String)> = sql
        .query(
            "SELECT function_id, key, value, serialization FROM dbos.workflow_events_history
             WHERE workflow_uuid = 'w' ORDER BY function_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let json = PORTABLE_JSON.to_owned();
    assert_eq!(
        history,
        vec![
            (1, "k".to_owned(), "1".to_owned(), json.clone()),
            (2, "k".to_owned(), "2".to_owned(), json.clone()),
            (3, "j".to_owned(), "3".to_owned(), json),
        ]
    );
    let mut intruder = op("w", 4, "DBOS.setEvent");
    intruder.owner_xid = "intruder".to_owned();
    assert!(matches!(
        store.set_event(&intruder, "k", "x").await.unwrap(),
        RecordOutcome::NotOwner { .. }
    ));
    assert_eq!(
        store
            .get_event("w", "k")
            .await
            .unwrap()
            .map(|s| s.text)
            .as_deref(),
        Some("2")
    );
    store.close().await;
    drop(sql);
    db.drop().await;
}

/// Stream offsets are dense from 0, also with twenty concurrent writers of one workflow, and a
/// replay appends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_offsets_are_dense_under_concurrent_writers() {
    let db = TestDb::new();
    let store = Arc::new(db.open().await);
    pending(&store, &["w"]).await;
    for (id, value) in [
        (1, "\"a\""),
        (2, "\"b\""),
        (3, "\"__DBOS_STREAM_CLOSED__\""),
    ] {
        let rec = op("w", id, "DBOS.writeStream");
        assert_eq!(
            store.write_stream(&rec, "s", value).await.unwrap(),
            RecordOutcome::Recorded
        );
    }
    assert!(matches!(
        store
            .write_stream(&op("w", 2, "DBOS.writeStream"), "s", "\"again\"")
            .await
            .unwrap(),
        RecordOutcome::Duplicate(_)
    ));
    assert_eq!(
        texts(store.read_stream("w", "s", 1).await.unwrap()),
        vec![
            (1, "\"b\"".to_owned()),
            (2, "\"__DBOS_STREAM_CLOSED__\"".to_owned())
        ]
    );
    assert_eq!(
        texts(store.read_stream("w", "s", 0).await.unwrap()).len(),
        3
    );

    let writers: Vec<_> = (100..120)
        .map(|id| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let rec = op("w", id, "DBOS.writeStream");
                store.write_stream(&rec, "par", &id.to_string()).await
            })
        })
        .collect();
    for writer in writers {
        assert_eq!(writer.await.unwrap().unwrap(), RecordOutcome::Recorded);
    }
    let values = texts(store.read_stream("w", "par", 0).await.unwrap());
    assert_eq!(
        values.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    let mut written: Vec<String> = values.into_iter().map(|(_, v)| v).collect();
    written.sort();
    let mut expected: Vec<String> = (100..120).map(|i: i32| i.to_string()).collect();
    expected.sort();
    assert_eq!(written, expected);
    let sql = db.sql().await;
    let mismatched = count(
        &sql,
        "SELECT count(*) FROM dbos.streams WHERE key = 'par' AND value <> function_id::text",
    )
    .await;
    assert_eq!(mismatched, 0);
    store.close().await;
    drop(sql);
    db.drop().await;
}

/// Only unfinished workflows are cancelled, with their ownership and queue cleared.
#[tokio::test]
async fn cancelling_touches_only_unfinished_workflows() {
    let db = TestDb::new();
    let store = db.open().await;
    pending(&store, &["a", "c"]).await;
    store
        .insert_workflow(&workflow("b", status::ENQUEUED))
        .await
        .unwrap();
    let mut done = Completion {
        workflow_id: "c".to_owned(),
        owner_xid: "owner-of-c".to_owned(),
        status: status::SUCCESS,
        output: Some("1".to_owned()),
        error: None,
        now_ms: 1_700_000_001_000,
    };
    assert!(store.complete_workflow(&done).await.unwrap());
    let ids: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut cancelled = store
        .cancel_workflows(&ids, 1_700_000_002_000)
        .await
        .unwrap();
    cancelled.sort();
    assert_eq!(cancelled, vec!["a".to_owned(), "b".to_owned()]);
    for id in ["a", "b"] {
        let row = store.get_workflow(id).await.unwrap().expect("row");
        assert_eq!(row.status.as_deref(), Some(status::CANCELLED));
        assert_eq!(
            (row.owner_xid, row.queue_name, row.started_at_epoch_ms),
            (None, None, None)
        );
        assert_eq!(row.updated_at, 1_700_000_002_000);
    }
    let c = store.get_workflow("c").await.unwrap().expect("row");
    assert_eq!(c.status.as_deref(), Some(status::SUCCESS));
    assert!(
        store
            .cancel_workflows(&ids, 1_700_000_003_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .cancel_workflows(&[], 1_700_000_003_000)
            .await
            .unwrap()
            .is_empty()
    );
    // A cancelled workflow's owner can no longer write.
    done.workflow_id = "a".to_owned();
    done.owner_xid = "owner-of-a".to_owned();
    assert!(!store.complete_workflow(&done).await.unwrap());
    store.close().await;
    db.drop().await;
}

/// Descendants are found at every depth, and nothing else.
#[tokio::test]
async fn descendants_of_a_three_level_tree() {
    let db = TestDb::new();
    let store = db.open().await;
    for (id, parent) in [
        ("r", None),
        ("r-1", Some("r")),
        ("r-2", Some("r")),
        ("r-1-1", Some("r-1")),
        ("x", None),
    ] {
        let mut wf = workflow(id, status::PENDING);
        wf.parent_workflow_id = parent.map(str::to_owned);
        store.insert_workflow(&wf).await.unwrap();
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(store.descendants("r").await.unwrap()),
        vec!["r-1", "r-1-1", "r-2"]
    );
    assert_eq!(store.descendants("r-1").await.unwrap(), vec!["r-1-1"]);
    assert!(store.descendants("r-1-1").await.unwrap().is_empty());
    assert!(store.descendants("nope").await.unwrap().is_empty());
    store.close().await;
    db.drop().await;
}

/// A cancelled workflow resumes here with a new owner, one attempt and a fresh deadline; a
/// finished, running or missing one does not.
#[tokio::test]
async fn resuming_a_cancelled_workflow() {
    let db = TestDb::new();
    let store = db.open().await;
    let mut wf = workflow("w", status::PENDING);
    wf.timeout_ms = Some(60_000);
    wf.deadline_epoch_ms = Some(1_700_000_060_000);
    store.insert_workflow(&wf).await.unwrap();
    pending(&store, &["done"]).await;
    store
        .record_step(&step("w", "owner-of-w", 1))
        .await
        .unwrap();
    store
        .cancel_workflows(&["w".to_owned()], 1_700_000_001_000)
        .await
        .unwrap();

    let now = 1_800_000_000_000;
    let resumed = store
        .resume_workflow("w", "exec-2", "v2", "new-owner", now)
        .await
        .unwrap()
        .expect("resumed");
    let row = &resumed.row;
    assert_eq!(row.status.as_deref(), Some(status::PENDING));
    assert_eq!(row.owner_xid.as_deref(), Some("new-owner"));
    assert_eq!(row.executor_id.as_deref(), Some("exec-2"));
    assert_eq!(row.application_version.as_deref(), Some("v2"));
    assert_eq!(row.recovery_attempts, Some(1));
    assert_eq!(row.started_at_epoch_ms, Some(now));
    assert_eq!(row.workflow_deadline_epoch_ms, Some(now + 60_000));
    assert_eq!((row.queue_name.as_deref(), row.completed_at), (None, None));
    assert_eq!(row.updated_at, now);
    assert_eq!(
        row.inputs.as_deref(),
        Some(r#"{"positionalArgs":[42],"namedArgs":{}}"#)
    );
    assert_eq!(
        resumed
            .checkpoints
            .iter()
            .map(|c| c.function_id)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        store.record_step(&step("w", "new-owner", 2)).await.unwrap(),
        RecordOutcome::Recorded
    );
    // Running now: nothing to resume.
    assert!(
        store
            .resume_workflow("w", "exec-3", "v2", "other", now)
            .await
            .unwrap()
            .is_none()
    );

    let done = Completion {
        workflow_id: "done".to_owned(),
        owner_xid: "owner-of-done".to_owned(),
        status: status::SUCCESS,
        output: None,
        error: None,
        now_ms: now,
    };
    assert!(store.complete_workflow(&done).await.unwrap());
    assert!(
        store
            .resume_workflow("done", "e", "v", "o", now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .resume_workflow("nope", "e", "v", "o", now)
            .await
            .unwrap()
            .is_none()
    );

    // Without a timeout there is no deadline.
    pending(&store, &["free"]).await;
    store
        .cancel_workflows(&["free".to_owned()], now)
        .await
        .unwrap();
    let free = store
        .resume_workflow("free", "e", "v", "o", now)
        .await
        .unwrap()
        .expect("resumed");
    assert_eq!(free.row.workflow_deadline_epoch_ms, None);
    assert!(free.checkpoints.is_empty());
    store.close().await;
    db.drop().await;
}

/// What a test sink has received.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A sink recording every announcement, and its record.
fn recorder() -> (ChangeSink, Received) {
    let received: Received = Arc::default();
    let sink_received = Arc::clone(&received);
    let sink: ChangeSink = Arc::new(move |channel: &str, payload: &str| {
        sink_received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((channel.to_owned(), payload.to_owned()));
    });
    (sink, received)
}

/// Wait (up to ten seconds) until the sink has received `(channel, payload)`.
async fn received(received: &Received, channel: &str, payload: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let hit = received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(c, p)| c == channel && p == payload);
            if hit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no ({channel}, {payload}) announcement");
}

/// The number of `LISTEN` sessions on the test database.
async fn listeners(sql: &tokio_postgres::Client) -> i64 {
    count(
        sql,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .await
}

/// Sends, events and stream writes are announced as `workflow::key`; after the connection is
/// killed the listener reconnects and says `*`; at close it stops.
#[tokio::test]
async fn changes_are_announced_until_close() {
    let db = TestDb::new();
    let store = db.open().await;
    pending(&store, &["w"]).await;
    let (sink, got) = recorder();
    store
        .watch_changes(sink, Duration::from_secs(1))
        .await
        .unwrap();

    store
        .send_message(&message("w", "topic", "1", "m1"), None)
        .await
        .unwrap();
    received(&got, "dbos_notifications_channel", "w::topic").await;
    store
        .set_event(&op("w", 1, "DBOS.setEvent"), "k", "1")
        .await
        .unwrap();
    received(&got, "dbos_workflow_events_channel", "w::k").await;
    store
        .write_stream(&op("w", 2, "DBOS.writeStream"), "s", "1")
        .await
        .unwrap();
    received(&got, "dbos_streams_channel", "w::s").await;
    // A replay announces nothing new.
    let before = got.lock().unwrap_or_else(|p| p.into_inner()).len();
    store
        .set_event(&op("w", 1, "DBOS.setEvent"), "k", "1")
        .await
        .unwrap();

    let sql = db.sql().await;
    assert_eq!(listeners(&sql).await, 1);
    sql.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        &[],
    )
    .await
    .unwrap();
    received(&got, "*", "").await;
    let events = got.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        events[before],
        ("*".to_owned(), String::new()),
        "{events:?}"
    );
    store
        .send_message(&message("w", "again", "2", "m2"), None)
        .await
        .unwrap();
    received(&got, "dbos_notifications_channel", "w::again").await;

    tokio::time::timeout(Duration::from_secs(10), store.close())
        .await
        .expect("close hangs");
    let mut left = listeners(&sql).await;
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = listeners(&sql).await;
    }
    assert_eq!(left, 0, "the listener connection outlived close");
    let after = got.lock().unwrap_or_else(|p| p.into_inner()).len();
    sql.execute(
        "SELECT pg_notify('dbos_notifications_channel', 'w::late')",
        &[],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(got.lock().unwrap_or_else(|p| p.into_inner()).len(), after);
    assert!(
        store
            .watch_changes(recorder().0, Duration::from_secs(1))
            .await
            .is_err()
    );
    drop(sql);
    db.drop().await;
}

/// The texts of stored values, for comparisons.
fn texts<K>(values: Vec<(K, crate::store::Stored)>) -> Vec<(K, String)> {
    values.into_iter().map(|(k, v)| (k, v.text)).collect()
}
