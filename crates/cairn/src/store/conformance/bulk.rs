//! Operations on many rows at once.

use super::*;
use crate::store::stats::{ListMessages, MessageRow};
use crate::store::{ConsumeMessage, NULL_TOPIC, PORTABLE_JSON, SendMessages};

conformance! {
    /// Several messages commit together; a missing destination sends none of them and is
    /// named; sending the same uuids again inserts nothing more (a retry after an unseen
    /// commit).
    async fn sending_many_messages_is_all_or_nothing(db) {
        db.pending(&["a", "b"]).await;
        let batch = SendMessages {
            messages: vec![
                message("a", "t", "1", "k1::a"),
                message("b", "t", "2", "k2::b"),
                message("ghost", "t", "3", "k3::ghost"),
            ],
        };
        assert_eq!(db.run(batch).await, Some("ghost".to_owned()));
        assert_eq!(db.count("SELECT COUNT(*) FROM notifications").await, 0);
        let batch = SendMessages {
            messages: vec![
                message("a", "t", "1", "k1::a"),
                message("b", "u", "2", "k2::b"),
            ],
        };
        assert_eq!(db.run(batch.clone()).await, None);
        assert_eq!(db.run(batch).await, None);
        assert_eq!(
            db.lines(
                "SELECT destination_uuid, topic, message FROM notifications \
                 ORDER BY destination_uuid"
            )
            .await,
            ["a|t|1", "b|u|2"]
        );
    }

    /// A workflow's messages are listed oldest first, received or still waiting, each with
    /// its id, its topic and text as stored (a foreign serialization included) and whether it
    /// was consumed; messages to another workflow are not listed.
    async fn a_workflows_messages_are_listed_oldest_first(db) {
        db.pending(&["w", "x"]).await;
        let batch = SendMessages {
            messages: vec![
                message("w", "t", "1", "m1"),
                message("w", NULL_TOPIC, "\"n\"", "m2"),
                message("x", "t", "3", "m3"),
            ],
        };
        assert_eq!(db.run(batch).await, None);
        db.execute(
            "INSERT INTO notifications (destination_uuid, topic, message, message_uuid, \
                 created_at_epoch_ms, serialization) \
             VALUES ('w', NULL, 'raw', 'm0', 5, 'DBOS_JSON')",
        )
        .await;
        db.execute(
            "UPDATE notifications SET created_at_epoch_ms = \
                 CASE message_uuid WHEN 'm1' THEN 10 WHEN 'm2' THEN 20 ELSE 30 END \
             WHERE message_uuid <> 'm0'",
        )
        .await;
        let receive = ConsumeMessage {
            record: internal("w", 1, "DBOS.recv"),
            topic: "t".to_owned(),
        };
        db.run(receive).await;

        let listed = db.run(ListMessages { workflow_id: "w".to_owned() }).await;
        let seen: Vec<_> = listed
            .iter()
            .map(|m: &MessageRow| {
                (
                    m.message_uuid.as_str(),
                    m.topic.as_deref(),
                    m.message.text.as_str(),
                    m.message.serialization.as_deref(),
                    m.created_at_ms,
                    m.consumed,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("m0", None, "raw", Some("DBOS_JSON"), 5, false),
                ("m1", Some("t"), "1", Some(PORTABLE_JSON), 10, true),
                ("m2", Some(NULL_TOPIC), "\"n\"", Some(PORTABLE_JSON), 20, false),
            ]
        );
        assert!(db.run(ListMessages { workflow_id: "ghost".to_owned() }).await.is_empty());
    }
}
