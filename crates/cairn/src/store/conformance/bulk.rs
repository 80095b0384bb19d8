//! Operations on many rows at once.

use super::*;
use crate::store::SendMessages;

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
}
