//! Operations on many rows at once, on Postgres (see [`crate::store::bulk`]).

use super::sql::Sql;
use super::{OnPostgres, PostgresStore, anomaly, col};
use crate::error::Result;
use crate::store::SendMessages;

/// `$1..$4`: destinations, topics, messages, uuids (arrays of one length). One statement:
/// nothing is inserted when a destination is missing, and the first missing one is answered.
/// The `notifications` trigger announces each inserted message.
static SEND_MANY: Sql = Sql(|q| {
    format!(
        "WITH m AS ( \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
                 WITH ORDINALITY AS m(destination_uuid, topic, message, message_uuid, n)), \
         missing AS ( \
             SELECT destination_uuid FROM m WHERE NOT EXISTS ( \
                 SELECT 1 FROM {q}.workflow_status s WHERE s.workflow_uuid = m.destination_uuid) \
             ORDER BY n LIMIT 1), \
         sent AS ( \
             INSERT INTO {q}.notifications (destination_uuid, topic, message, message_uuid, serialization) \
             SELECT destination_uuid, topic, message, message_uuid, 'portable_json' FROM m \
             WHERE NOT EXISTS (SELECT 1 FROM missing) ORDER BY n \
             ON CONFLICT (message_uuid) DO NOTHING) \
         SELECT (SELECT destination_uuid FROM missing)"
    )
});

impl OnPostgres for SendMessages {
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<String>> {
        let column = |f: fn(&crate::store::NewMessage) -> &str| -> Vec<&str> {
            self.messages.iter().map(f).collect()
        };
        let destinations = column(|m| &m.destination_id);
        let topics = column(|m| &m.topic);
        let texts = column(|m| &m.message);
        let uuids = column(|m| &m.message_uuid);
        let rows = db
            .query(&SEND_MANY, &[&destinations, &topics, &texts, &uuids], self)
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| anomaly(self, "the statement returned no row"))?;
        col(row, 0)
    }
}
