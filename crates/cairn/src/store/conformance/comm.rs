//! Messages, events and streams: each write commits with its workflow's checkpoint, guarded by
//! ownership, and a replay at a recorded function id writes nothing.

use std::sync::Arc;

use super::*;
use crate::error::Error;
use crate::status::WorkflowState;
use crate::store::{
    ConsumeMessage, GetEvent, ListEvents, NULL_TOPIC, PORTABLE_JSON, PeekMessage, ReadStream,
    RecordOutcome, SendMessage, SetEvent, WriteStream,
};

/// Send `message` with no sender (from outside a workflow).
fn send(message: NewMessage) -> SendMessage {
    SendMessage {
        message,
        sender: None,
    }
}

/// Receive on `topic` as step `function_id` of `workflow_id` (its owner writing; the record's
/// own output is set, to show it is ignored).
fn recv(workflow_id: &str, function_id: i32, topic: &str) -> ConsumeMessage {
    ConsumeMessage {
        record: StepRecord {
            output: Some("\"ignored\"".to_owned()),
            ..internal(workflow_id, function_id, "DBOS.recv")
        },
        topic: topic.to_owned(),
    }
}

/// The text of a consumed message, if any.
fn text(consumed: &Option<Stored>) -> Option<&str> {
    consumed.as_ref().map(|s| s.text.as_str())
}

/// The oldest unconsumed message of `workflow_id` on `topic`, unconsumed.
fn peek(workflow_id: &str, topic: &str) -> PeekMessage {
    PeekMessage {
        workflow_id: workflow_id.to_owned(),
        topic: topic.to_owned(),
    }
}

/// Set event `key` of `w` to `value` as step `function_id`.
fn set(function_id: i32, key: &str, value: &str) -> SetEvent {
    SetEvent {
        record: internal("w", function_id, "DBOS.setEvent"),
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// The latest value of event `key` of `w`.
fn get(key: &str) -> GetEvent {
    GetEvent {
        workflow_id: "w".to_owned(),
        key: key.to_owned(),
    }
}

/// Append `value` to stream `key` of `w` as step `function_id`.
fn write(function_id: i32, key: &str, value: &str) -> WriteStream {
    WriteStream {
        record: internal("w", function_id, "DBOS.writeStream"),
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// Read stream `key` of `w` from `from_offset`.
fn read(key: &str, from_offset: i32) -> ReadStream {
    ReadStream {
        workflow_id: "w".to_owned(),
        key: key.to_owned(),
        from_offset,
    }
}

/// How many messages are stored.
const MESSAGES: &str = "SELECT COUNT(*) FROM notifications";

conformance! {
    /// A message is inserted once per `message_uuid` however often it is sent, as DBOS's row:
    /// unconsumed, in portable JSON, stamped with its creation time.
    async fn sending_is_idempotent_by_message_uuid(db) {
        db.pending(&["w"]).await;
        for _ in 0..3 {
            assert_eq!(
                db.run(send(message("w", "t", "\"hi\"", "key::w"))).await,
                RecordOutcome::Recorded
            );
        }
        assert_eq!(db.count(MESSAGES).await, 1);
        assert_eq!(
            db.lines(
                "SELECT destination_uuid, topic, message, serialization, \
                 CASE WHEN consumed THEN 1 ELSE 0 END, consumed_by_function_id, \
                 CASE WHEN created_at_epoch_ms > 0 THEN 1 ELSE 0 END \
                 FROM notifications WHERE message_uuid = 'key::w'"
            )
            .await,
            [format!("w|t|\"hi\"|{PORTABLE_JSON}|0|NULL|1")]
        );
    }

    /// A send from a workflow commits with the sender's `DBOS.send` checkpoint; a replay at that
    /// id (even with a fresh uuid) returns the checkpoint and sends nothing; a non-owner sends
    /// nothing.
    async fn a_send_commits_with_the_senders_checkpoint(db) {
        db.pending(&["w", "s"]).await;
        let sent = SendMessage {
            message: message("w", "t", "1", "m1"),
            sender: Some(internal("s", 1, "DBOS.send")),
        };
        assert_eq!(db.run(sent).await, RecordOutcome::Recorded);
        assert_eq!(db.count(MESSAGES).await, 1);
        let recorded = db.checkpoint("s", 1).await.expect("the sender's checkpoint");
        assert_eq!(recorded.function_name, "DBOS.send");

        let replay = SendMessage {
            message: message("w", "t", "1", "m1-again"),
            sender: Some(internal("s", 1, "DBOS.send")),
        };
        assert_eq!(db.run(replay).await, RecordOutcome::Duplicate(recorded));
        let intruder = SendMessage {
            message: message("w", "t", "1", "m3"),
            sender: Some(as_intruder(internal("s", 3, "DBOS.send"))),
        };
        assert_eq!(
            db.run(intruder).await,
            RecordOutcome::NotOwner { status: Some(WorkflowState::Pending) }
        );
        assert_eq!(db.checkpoint("s", 3).await, None);
        assert_eq!(db.lines("SELECT message_uuid FROM notifications").await, ["m1"]);
    }

    /// A message to a workflow that does not exist is `NotFound` and writes nothing: neither the
    /// message nor the sender's checkpoint.
    async fn a_message_to_a_missing_destination_writes_nothing(db) {
        db.pending(&["s"]).await;
        let with_sender = SendMessage {
            message: message("ghost", "t", "1", "u1"),
            sender: Some(internal("s", 1, "DBOS.send")),
        };
        match db.attempt(with_sender).await {
            Err(Error::NotFound(id)) => assert_eq!(id, "ghost"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        match db.attempt(send(message("ghost", "t", "1", "u2"))).await {
            Err(Error::NotFound(id)) => assert_eq!(id, "ghost"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(db.checkpoint("s", 1).await, None);
        assert_eq!(db.count(MESSAGES).await, 0);
    }

    /// Messages of one topic are received oldest first, each once: the receive marks the message
    /// consumed by its function id and records it (name `DBOS.recv`, the message's text and
    /// serialization) as the checkpoint; other topics wait their turn.
    async fn messages_are_consumed_first_in_first_out_per_topic(db) {
        db.pending(&["w"]).await;
        for i in 1..=3 {
            db.run(send(message("w", "t", &i.to_string(), &format!("m{i}")))).await;
        }
        db.run(send(message("w", "other", "\"o\"", "o1"))).await;
        db.run(send(message("w", NULL_TOPIC, "\"n\"", "n1"))).await;

        for i in 1..=3 {
            let (outcome, consumed) = db.run(recv("w", i, "t")).await;
            let expected = i.to_string();
            assert_eq!((outcome, text(&consumed)), (RecordOutcome::Recorded, Some(expected.as_str())));
            assert_eq!(consumed.and_then(|s| s.serialization).as_deref(), Some(PORTABLE_JSON));
            let checkpoint = db.checkpoint("w", i).await.expect("the recv checkpoint");
            assert_eq!(checkpoint.function_name, "DBOS.recv");
            assert_eq!(checkpoint.output.as_deref(), Some(expected.as_str()));
            assert_eq!(checkpoint.serialization.as_deref(), Some(PORTABLE_JSON));
        }
        let (_, consumed) = db.run(recv("w", 4, NULL_TOPIC)).await;
        assert_eq!(text(&consumed), Some("\"n\""));
        assert_eq!(
            db.lines(
                "SELECT message_uuid, consumed_by_function_id FROM notifications \
                 WHERE consumed ORDER BY consumed_by_function_id"
            )
            .await,
            ["m1|1", "m2|2", "m3|3", "n1|4"]
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM notifications WHERE NOT consumed").await,
            1,
            "a received message is marked, not deleted; the other topic's waits"
        );
        let (_, consumed) = db.run(recv("w", 5, "other")).await;
        assert_eq!(text(&consumed), Some("\"o\""));
    }

    /// The oldest message is the one created first, whatever order the rows were inserted in;
    /// a receive records the message's own serialization.
    async fn the_oldest_message_is_the_first_created(db) {
        db.pending(&["w"]).await;
        db.execute(&format!(
            "INSERT INTO notifications (destination_uuid, topic, message, message_uuid, \
                 created_at_epoch_ms, serialization) \
             VALUES ('w', 't', '\"late\"', 'late', {late}, 'portable_json'); \
             INSERT INTO notifications (destination_uuid, topic, message, message_uuid, \
                 created_at_epoch_ms, serialization) \
             VALUES ('w', 't', 'early', 'early', {early}, 'DBOS_JSON');",
            late = T0 + 50,
            early = T0 + 10,
        ))
        .await;
        let (_, first) = db.run(recv("w", 1, "t")).await;
        assert_eq!(
            first,
            Some(Stored { text: "early".to_owned(), serialization: Some("DBOS_JSON".to_owned()) })
        );
        let checkpoint = db.checkpoint("w", 1).await.expect("the recv checkpoint");
        assert_eq!(
            (checkpoint.output.as_deref(), checkpoint.serialization.as_deref()),
            (Some("early"), Some("DBOS_JSON"))
        );
        let (_, second) = db.run(recv("w", 2, "t")).await;
        assert_eq!(text(&second), Some("\"late\""));
    }

    /// A receive with nothing waiting records `null` as its checkpoint and consumes nothing.
    async fn an_empty_receive_records_null(db) {
        db.pending(&["w"]).await;
        db.run(send(message("w", "other", "1", "m1"))).await;
        assert_eq!(db.run(recv("w", 1, "t")).await, (RecordOutcome::Recorded, None));
        let checkpoint = db.checkpoint("w", 1).await.expect("the recv checkpoint");
        assert_eq!(
            (checkpoint.function_name.as_str(), checkpoint.output.as_deref()),
            ("DBOS.recv", Some("null"))
        );
        assert!(db.run(peek("w", "other")).await.is_some());
    }

    /// A receive replayed at a recorded id returns its checkpoint and consumes nothing more; a
    /// non-owner's receive consumes nothing and records nothing.
    async fn a_replayed_or_foreign_receive_consumes_nothing(db) {
        db.pending(&["w"]).await;
        db.run(send(message("w", "t", "1", "m1"))).await;
        db.run(recv("w", 1, "t")).await;
        db.run(send(message("w", "t", "2", "m2"))).await;

        let recorded = db.checkpoint("w", 1).await.expect("the recv checkpoint");
        assert_eq!(
            db.run(recv("w", 1, "t")).await,
            (RecordOutcome::Duplicate(recorded), None)
        );
        let mut intruder = recv("w", 2, "t");
        intruder.record = as_intruder(intruder.record);
        assert_eq!(
            db.run(intruder).await,
            (RecordOutcome::NotOwner { status: Some(WorkflowState::Pending) }, None)
        );
        let mut gone = recv("nowhere", 1, "t");
        gone.record.owner_xid = owner("w");
        assert_eq!(db.run(gone).await, (RecordOutcome::NotOwner { status: None }, None));
        assert_eq!(db.checkpoint("w", 2).await, None);
        assert_eq!(
            db.lines("SELECT message_uuid FROM notifications WHERE NOT consumed").await,
            ["m2"]
        );
        assert!(db.run(peek("w", "t")).await.is_some());
    }

    /// `PeekMessage` sees only unconsumed messages of its workflow and topic, and answers the
    /// one `ConsumeMessage` consumes next (with its format), consuming nothing itself.
    async fn peek_message_answers_the_next_message_without_consuming_it(db) {
        db.pending(&["w", "v"]).await;
        assert_eq!(db.run(peek("w", "t")).await, None);
        db.run(send(message("w", "t", "1", "m1"))).await;
        db.run(send(message("w", "t", "2", "m2"))).await;
        db.run(send(message("v", "u", "1", "m3"))).await;
        let first = db.run(peek("w", "t")).await;
        assert_eq!(text(&first), Some("1"));
        assert_eq!(first.as_ref().and_then(|s| s.serialization.as_deref()), Some(PORTABLE_JSON));
        assert_eq!(db.run(peek("w", "t")).await, first, "a peek consumes nothing");
        assert_eq!(db.run(peek("w", "u")).await, None);
        assert_eq!(db.run(peek("v", "t")).await, None);
        assert_eq!(db.run(peek("nowhere", "t")).await, None);
        let (_, consumed) = db.run(recv("w", 1, "t")).await;
        assert_eq!(consumed, first);
        assert_eq!(text(&db.run(peek("w", "t")).await), Some("2"));
        db.run(recv("w", 2, "t")).await;
        assert_eq!(db.run(peek("w", "t")).await, None);
    }

    /// The latest value of an event wins, every write stays in the history (by function id, in
    /// portable JSON), and events are listed by key, per workflow.
    async fn events_keep_the_latest_value_and_the_history(db) {
        db.pending(&["w", "v"]).await;
        assert_eq!(db.run(set(1, "k", "1")).await, RecordOutcome::Recorded);
        assert_eq!(db.run(set(2, "k", "2")).await, RecordOutcome::Recorded);
        assert_eq!(db.run(set(3, "a", "\"x\"")).await, RecordOutcome::Recorded);
        let mut elsewhere = set(1, "k", "99");
        elsewhere.record = internal("v", 1, "DBOS.setEvent");
        db.run(elsewhere).await;

        assert_eq!(
            db.run(get("k")).await,
            Some(Stored { text: "2".to_owned(), serialization: Some(PORTABLE_JSON.to_owned()) })
        );
        assert_eq!(db.run(get("missing")).await, None);
        assert_eq!(
            texts(db.run(ListEvents { workflow_id: "w".to_owned() }).await),
            [("a".to_owned(), "\"x\"".to_owned()), ("k".to_owned(), "2".to_owned())]
        );
        assert!(db.run(ListEvents { workflow_id: "none".to_owned() }).await.is_empty());
        let checkpoint = db.checkpoint("w", 2).await.expect("the setEvent checkpoint");
        assert_eq!(checkpoint.function_name, "DBOS.setEvent");
        assert_eq!(
            db.lines(
                "SELECT function_id, key, value, serialization FROM workflow_events_history \
                 WHERE workflow_uuid = 'w' ORDER BY function_id"
            )
            .await,
            [
                format!("1|k|1|{PORTABLE_JSON}"),
                format!("2|k|2|{PORTABLE_JSON}"),
                format!("3|a|\"x\"|{PORTABLE_JSON}"),
            ]
        );
    }

    /// An event write replayed at a recorded id, or written by a non-owner, changes nothing.
    async fn a_replayed_or_foreign_event_write_changes_nothing(db) {
        db.pending(&["w"]).await;
        db.run(set(1, "k", "1")).await;
        let recorded = db.checkpoint("w", 1).await.expect("the setEvent checkpoint");
        assert_eq!(db.run(set(1, "k", "9")).await, RecordOutcome::Duplicate(recorded));
        let mut intruder = set(2, "k", "8");
        intruder.record = as_intruder(intruder.record);
        assert_eq!(
            db.run(intruder).await,
            RecordOutcome::NotOwner { status: Some(WorkflowState::Pending) }
        );
        assert_eq!(db.run(get("k")).await.map(|s| s.text).as_deref(), Some("1"));
        assert_eq!(
            db.lines("SELECT function_id, value FROM workflow_events_history").await,
            ["1|1"]
        );
        assert_eq!(db.checkpoint("w", 2).await, None);
    }

    /// Stream offsets are dense from 0 per key, each row carrying its writer's function id;
    /// reads start at an offset; a replayed or foreign write appends nothing.
    async fn stream_offsets_are_dense_from_zero_per_key(db) {
        db.pending(&["w"]).await;
        for i in 0..5 {
            assert_eq!(db.run(write(i + 1, "s", &i.to_string())).await, RecordOutcome::Recorded);
        }
        db.run(write(10, "other", "\"o\"")).await;
        db.run(write(11, "s", "\"__DBOS_STREAM_CLOSED__\"")).await;
        let recorded = db.checkpoint("w", 1).await.expect("the writeStream checkpoint");
        assert_eq!(recorded.function_name, "DBOS.writeStream");
        assert_eq!(db.run(write(1, "s", "dup")).await, RecordOutcome::Duplicate(recorded));
        let mut intruder = write(12, "s", "x");
        intruder.record = as_intruder(intruder.record);
        assert!(matches!(db.run(intruder).await, RecordOutcome::NotOwner { .. }));

        let mut all: Vec<(i32, String)> = (0..5).map(|i| (i, i.to_string())).collect();
        all.push((5, "\"__DBOS_STREAM_CLOSED__\"".to_owned()));
        assert_eq!(texts(db.run(read("s", 0)).await), all);
        assert_eq!(texts(db.run(read("s", 3)).await), all[3..]);
        assert!(db.run(read("s", 6)).await.is_empty());
        assert_eq!(texts(db.run(read("other", 0)).await), [(0, "\"o\"".to_owned())]);
        assert!(db.run(read("none", 0)).await.is_empty());
        let values = db.run(read("s", 0)).await;
        assert!(values.iter().all(|(_, v)| v.serialization.as_deref() == Some(PORTABLE_JSON)));
        assert_eq!(
            db.count("SELECT COUNT(*) FROM streams WHERE key = 's' AND function_id = \"offset\" + 1")
                .await,
            5
        );
    }

    /// Twenty concurrent writers of one stream get distinct offsets, dense from 0.
    async fn concurrent_stream_writers_get_distinct_dense_offsets(db) {
        db.pending(&["w"]).await;
        let writers: Vec<_> = (100..120)
            .map(|id| {
                let store = Arc::clone(&db.store);
                tokio::spawn(async move { store.run(write(id, "par", &id.to_string())).await })
            })
            .collect();
        for writer in futures::future::join_all(writers).await {
            assert_eq!(writer.expect("the task").expect("write"), RecordOutcome::Recorded);
        }
        let values = texts(db.run(read("par", 0)).await);
        assert_eq!(
            values.iter().map(|(offset, _)| *offset).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        let mut written: Vec<String> = values.into_iter().map(|(_, v)| v).collect();
        written.sort();
        let expected: Vec<String> = (100..120).map(|i: i32| i.to_string()).collect();
        assert_eq!(written, expected);
        assert_eq!(
            db.count(
                "SELECT COUNT(*) FROM streams WHERE key = 'par' AND value <> CAST(function_id AS TEXT)"
            )
            .await,
            0
        );
    }
}

conformance! {
    /// Many receivers at once (which Postgres serves with shared multi-row statements) each
    /// see, then consume, their own oldest message, recorded as their checkpoint; one that does not own
    /// its workflow writes and consumes nothing; one with no message records `null`; a
    /// receive repeated after it was recorded is a duplicate of the first.
    async fn concurrent_receives_each_consume_their_own_message(db) {
        let ids: Vec<String> = (0..48).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        db.pending(&refs).await;
        for (i, id) in ids.iter().enumerate() {
            if i % 8 != 7 {
                db.run(send(message(id, "t", &i.to_string(), &format!("m{i}-a")))).await;
                db.run(send(message(id, "t", "\"later\"", &format!("m{i}-b")))).await;
            }
        }
        // Looks at once (batched on Postgres too) each see their own oldest message.
        let looks = ids.iter().map(|id| async move { db.run(peek(id, "t")).await });
        let looked = futures::future::join_all(looks).await;
        for (i, seen) in looked.iter().enumerate() {
            let expected = (i % 8 != 7).then(|| i.to_string());
            assert_eq!(text(seen), expected.as_deref(), "{}", ids[i]);
        }
        let receives = ids.iter().enumerate().map(|(i, id)| {
            let mut op = recv(id, 1, "t");
            if i % 8 == 3 {
                op.record = as_intruder(op.record);
            }
            async move { db.run(op).await }
        });
        let received = futures::future::join_all(receives).await;
        for (i, (outcome, consumed)) in received.iter().enumerate() {
            let id = &ids[i];
            match i % 8 {
                3 => {
                    assert!(matches!(outcome, RecordOutcome::NotOwner { .. }), "{id}: {outcome:?}");
                    assert_eq!(consumed, &None, "{id}");
                    assert_eq!(db.checkpoint(id, 1).await, None, "{id}");
                }
                7 => {
                    assert_eq!((outcome, consumed), (&RecordOutcome::Recorded, &None), "{id}");
                    let checkpoint = db.checkpoint(id, 1).await.expect("the recv checkpoint");
                    assert_eq!(checkpoint.output.as_deref(), Some("null"), "{id}");
                }
                _ => {
                    let expected = i.to_string();
                    assert_eq!(outcome, &RecordOutcome::Recorded, "{id}");
                    assert_eq!(text(consumed), Some(expected.as_str()), "{id}");
                    let checkpoint = db.checkpoint(id, 1).await.expect("the recv checkpoint");
                    assert_eq!(checkpoint.output.as_deref(), Some(expected.as_str()), "{id}");
                }
            }
        }
        assert_eq!(
            db.lines(
                "SELECT COUNT(*), MIN(consumed_by_function_id), MAX(consumed_by_function_id) \
                 FROM notifications WHERE consumed"
            )
            .await,
            ["36|1|1"],
            "one message consumed by each owner that had one"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM notifications WHERE consumed AND message = '\"later\"'")
                .await,
            0,
            "the oldest message first"
        );
        let (outcome, _) = db.run(recv("r0", 1, "t")).await;
        assert!(matches!(outcome, RecordOutcome::Duplicate(_)), "{outcome:?}");
    }
}
