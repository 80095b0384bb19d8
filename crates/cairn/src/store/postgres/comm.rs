//! Messages, events and streams.
//!
//! A write carrying a [`StepRecord`] is one statement (a stream write: one short transaction)
//! whose effect is inserted `FROM` the ownership-guarded checkpoint insert, so the effect and
//! the checkpoint commit together and a replay at a recorded `function_id` applies nothing.
//! Only when nothing was written does a second query (`STEP_STATE`) say why.

use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::batch::Grouped;
use super::sql::{Sql, checkpoint_insert};
use super::{
    ATTEMPTS, Describe, OnPostgres, Param, PostgresStore, anomaly, col, failed, state_at,
    step_params,
};
use crate::error::{Error, Result};
use crate::store::{
    ConsumeMessage, GetEvent, ListEvents, PeekMessage, ReadStream, RecordOutcome, SendMessage,
    SetEvent, SetEventFromStep, StepRecord, Stored, WriteStream, WriteStreamFromStep,
};

/// How a write's statement runs.
enum Mode<'a> {
    /// One autocommit statement.
    Statement,
    /// One autocommit statement; a foreign-key violation means this workflow does not exist.
    MissingIsNotFound(&'a str),
    /// One transaction: the lock statement with its two parameters, then the statement
    /// (pipelined, so the statement's snapshot is taken once the lock is held).
    Locked(&'static Sql, [Param<'a>; 2]),
}

/// Run a statement as `mode` says on a pooled connection; returns its rows.
async fn run(
    db: &PostgresStore,
    sql: &'static Sql,
    params: &[Param<'_>],
    mode: &Mode<'_>,
    op: &dyn Describe,
) -> Result<Vec<Row>> {
    let text = db.sql.text(sql);
    let mut client = db.checkout(op).await?;
    let result = match mode {
        Mode::Locked(lock, lock_params) => {
            let lock = db.sql.text(lock);
            locked(&mut client, &lock, lock_params, &text, params).await
        }
        Mode::Statement | Mode::MissingIsNotFound(_) => match client.prepare_cached(&text).await {
            Ok(statement) => client.query(&statement, params).await,
            Err(e) => Err(e),
        },
    };
    match (result, mode) {
        (Ok(rows), _) => Ok(rows),
        (Err(e), Mode::MissingIsNotFound(id))
            if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) =>
        {
            Err(Error::NotFound((*id).to_owned()))
        }
        (Err(e), _) => Err(failed(&db.pool, client, e, op)),
    }
}

/// `lock`, then `sql`, in one transaction: three round trips (begin, the two statements
/// pipelined, commit). Dropping the transaction unfinished rolls it back.
async fn locked(
    client: &mut Object,
    lock: &str,
    lock_params: &[Param<'_>],
    sql: &str,
    params: &[Param<'_>],
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let (lock_statement, statement) =
        futures::try_join!(tx.prepare_cached(lock), tx.prepare_cached(sql))?;
    // Polled in order, so the lock's request is sent first and the server runs them in turn.
    let (_, rows) = futures::try_join!(
        tx.execute(&lock_statement, lock_params),
        tx.query(&statement, params)
    )?;
    tx.commit().await?;
    Ok(rows)
}

/// Run a checkpoint-carrying write until it lands, or until `STEP_STATE` explains why it did
/// not (`Duplicate` with the existing checkpoint, or `NotOwner`). Returns the statement's row
/// when it landed.
async fn guarded(
    db: &PostgresStore,
    rec: &StepRecord,
    sql: &'static Sql,
    params: &[Param<'_>],
    mode: &Mode<'_>,
    op: &dyn Describe,
) -> Result<(RecordOutcome, Option<Row>)> {
    for _ in 0..ATTEMPTS {
        let row = run(db, sql, params, mode, op)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anomaly(op, "the statement returned no row"))?;
        if col::<bool>(&row, 0)? {
            return Ok((RecordOutcome::Recorded, Some(row)));
        }
        if let Some(outcome) = db.step_state(rec, op).await? {
            return Ok((outcome, None));
        }
        // Still ours and no checkpoint visible: a race with a concurrent writer that the next
        // statement's snapshot resolves. Try again.
    }
    Err(anomaly(op, "the checkpoint was neither written nor found"))
}

/// `$1` destination, `$2` topic, `$3` message, `$4` message uuid.
static SEND: Sql = Sql(|q| {
    format!(
        "INSERT INTO {q}.notifications (destination_uuid, topic, message, message_uuid, serialization) \
         VALUES ($1, $2, $3, $4, 'portable_json') ON CONFLICT (message_uuid) DO NOTHING"
    )
});

/// The sender's checkpoint, then the message: `$11` destination, `$12` topic, `$13` message,
/// `$14` message uuid. Row: `(recorded)`.
static SEND_STEP: Sql = Sql(|q| {
    format!(
        "WITH cp AS ({} RETURNING 1), \
         msg AS ( \
             INSERT INTO {q}.notifications (destination_uuid, topic, message, message_uuid, serialization) \
             SELECT $11::text, $12::text, $13::text, $14::text, 'portable_json' FROM cp \
             ON CONFLICT (message_uuid) DO NOTHING) \
         SELECT EXISTS (SELECT 1 FROM cp)",
        checkpoint_insert(q, "$5::text")
    )
});

impl OnPostgres for SendMessage {
    /// One statement: the message, and the sender's checkpoint if any.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<RecordOutcome> {
        let msg = &self.message;
        let mode = Mode::MissingIsNotFound(&msg.destination_id);
        let message: [Param<'_>; 4] = [
            &msg.destination_id,
            &msg.topic,
            &msg.message,
            &msg.message_uuid,
        ];
        let Some(rec) = &self.sender else {
            run(db, &SEND, &message, &mode, self).await?;
            return Ok(RecordOutcome::Recorded);
        };
        let mut params: Vec<Param<'_>> = Vec::with_capacity(14);
        params.extend(step_params(rec));
        params.extend(message);
        let (outcome, _) = guarded(db, rec, &SEND_STEP, &params, &mode, self).await?;
        Ok(outcome)
    }
}

/// The `DBOS.recv` checkpoint with `$5` the topic (not the output: the output is the message
/// consumed, or `null`). Row: `(recorded, message consumed, its serialization)`.
static CONSUME: Sql = Sql(|q| {
    format!(
        "WITH m AS ( \
             SELECT message_uuid, message, serialization FROM {q}.notifications \
             WHERE destination_uuid = $1::text AND topic = $5::text AND NOT consumed \
                 AND EXISTS (SELECT 1 FROM {q}.workflow_status \
                     WHERE workflow_uuid = $1::text AND status = 'PENDING' AND owner_xid = $2::text) \
             ORDER BY created_at_epoch_ms, ctid \
             LIMIT 1 \
             FOR UPDATE SKIP LOCKED), \
         cp AS ({} RETURNING 1), \
         upd AS ( \
             UPDATE {q}.notifications n SET consumed = true, consumed_by_function_id = $3::int4 \
             FROM m WHERE n.message_uuid = m.message_uuid AND EXISTS (SELECT 1 FROM cp) \
             RETURNING n.message, n.serialization) \
         SELECT EXISTS (SELECT 1 FROM cp), (SELECT message FROM upd), \
             (SELECT serialization FROM upd)",
        // The checkpoint holds the message as stored, so it says the message's format.
        checkpoint_insert(q, "COALESCE((SELECT message FROM m), 'null')").replacen(
            "'portable_json'",
            "COALESCE((SELECT serialization FROM m), 'portable_json')",
            1
        )
    )
});

/// [`CONSUME`] for many receivers: `$1` workflows, `$2` owners, `$3` function ids, `$4`
/// names, `$5` topics, `$6` starts, `$7` ends, `$8` application names (arrays). For each
/// receiver still owned, the oldest unconsumed message on its topic (rows locked, others'
/// skipped) is recorded as its checkpoint (`null` if none) and marked consumed. Rows:
/// `(workflow_uuid, function_id, message consumed, its serialization)` of each checkpoint
/// written; a receiver without a row wrote nothing, and its caller asks again alone.
static CONSUME_MANY: Sql = Sql(|q| {
    format!(
        "WITH input AS ( \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], \
                 $6::int8[], $7::int8[], $8::text[]) \
             AS t(workflow_uuid, owner_xid, function_id, function_name, topic, started_at, \
                 completed_at, application_name)), \
         owned AS ( \
             SELECT i.* FROM input i JOIN {q}.workflow_status s ON s.workflow_uuid = i.workflow_uuid \
             WHERE s.status = 'PENDING' AND s.owner_xid = i.owner_xid \
             ORDER BY i.workflow_uuid FOR SHARE OF s), \
         m AS ( \
             SELECT o.*, n.message_uuid, n.message, n.serialization FROM owned o \
             LEFT JOIN LATERAL ( \
                 SELECT message_uuid, message, serialization FROM {q}.notifications \
                 WHERE destination_uuid = o.workflow_uuid AND topic = o.topic AND NOT consumed \
                 ORDER BY created_at_epoch_ms, ctid LIMIT 1 \
                 FOR UPDATE SKIP LOCKED) n ON true), \
         cp AS ( \
             INSERT INTO {q}.operation_outputs (workflow_uuid, function_id, function_name, output, \
                 error, child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, \
                 serialization, application_name, retention_timestamp) \
             SELECT workflow_uuid, function_id, function_name, COALESCE(message, 'null'), NULL, \
                 NULL, started_at, completed_at, COALESCE(serialization, 'portable_json'), \
                 application_name, completed_at FROM m \
             ON CONFLICT (workflow_uuid, function_id) DO NOTHING \
             RETURNING workflow_uuid, function_id), \
         upd AS ( \
             UPDATE {q}.notifications n SET consumed = true, consumed_by_function_id = m.function_id \
             FROM m JOIN cp ON cp.workflow_uuid = m.workflow_uuid AND cp.function_id = m.function_id \
             WHERE n.message_uuid = m.message_uuid \
             RETURNING m.workflow_uuid, m.function_id, n.message, n.serialization) \
         SELECT cp.workflow_uuid, cp.function_id, upd.message, upd.serialization FROM cp \
         LEFT JOIN upd ON upd.workflow_uuid = cp.workflow_uuid AND upd.function_id = cp.function_id"
    )
});

/// Consumes are group-committed: alone, [`CONSUME`]; under load, many receivers' as one
/// [`CONSUME_MANY`]. The answer is `Some(message or None)` when the checkpoint was written,
/// `None` when it was not (the caller then runs [`CONSUME`] alone, which says why).
impl Grouped for ConsumeMessage {
    type Key = (String, i32);
    type Answer = Option<Option<Stored>>;
    const SINGLE: &'static Sql = &CONSUME;
    const MULTI: &'static Sql = &CONSUME_MANY;

    fn key(&self) -> Self::Key {
        (self.record.workflow_id.clone(), self.record.function_id)
    }

    fn answer_of(row: &Row) -> Result<(Self::Key, Self::Answer)> {
        let message = col::<Option<String>>(row, 2)?.map(|text| Stored {
            text,
            serialization: col(row, 3).ok().flatten(),
        });
        Ok(((col(row, 0)?, col(row, 1)?), Some(message)))
    }

    fn absent() -> Self::Answer {
        None
    }

    fn answer_one(rows: Vec<Row>) -> Result<Self::Answer> {
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        if !col::<bool>(row, 0)? {
            return Ok(None);
        }
        Ok(Some(col::<Option<String>>(row, 1)?.map(|text| Stored {
            text,
            serialization: col(row, 2).ok().flatten(),
        })))
    }

    async fn write_one(
        &self,
        client: &deadpool_postgres::Object,
        text: &str,
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let mut params = step_params(&self.record);
        params[4] = &self.topic;
        let statement = client.prepare_cached(text).await?;
        client.query(&statement, &params).await
    }

    async fn write_many(
        client: &deadpool_postgres::Object,
        text: &str,
        batch: &[&Self],
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let ids: Vec<&str> = batch
            .iter()
            .map(|c| c.record.workflow_id.as_str())
            .collect();
        let owners: Vec<&str> = batch.iter().map(|c| c.record.owner_xid.as_str()).collect();
        let function_ids: Vec<i32> = batch.iter().map(|c| c.record.function_id).collect();
        let names: Vec<&str> = batch
            .iter()
            .map(|c| c.record.function_name.as_str())
            .collect();
        let topics: Vec<&str> = batch.iter().map(|c| c.topic.as_str()).collect();
        let started: Vec<i64> = batch.iter().map(|c| c.record.started_at_epoch_ms).collect();
        let completed: Vec<i64> = batch
            .iter()
            .map(|c| c.record.completed_at_epoch_ms)
            .collect();
        let applications: Vec<Option<&str>> = batch
            .iter()
            .map(|c| c.record.application_name.as_deref())
            .collect();
        let params: [Param<'_>; 8] = [
            &ids,
            &owners,
            &function_ids,
            &names,
            &topics,
            &started,
            &completed,
            &applications,
        ];
        let statement = client.prepare_cached(text).await?;
        client.query(&statement, &params).await
    }
}

impl OnPostgres for ConsumeMessage {
    /// One statement: pick, checkpoint and mark the oldest message — shared with concurrent
    /// receivers by the batcher; when nothing was written, again alone to learn why.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<(RecordOutcome, Option<Stored>)> {
        if let Some(message) = db.consumes.write(self).await? {
            return Ok((RecordOutcome::Recorded, message));
        }
        let mut params = step_params(&self.record);
        // `$5` is the topic here: the checkpoint's output is the message consumed.
        params[4] = &self.topic;
        let (outcome, row) =
            guarded(db, &self.record, &CONSUME, &params, &Mode::Statement, self).await?;
        let message = match row {
            Some(row) => col::<Option<String>>(&row, 1)?.map(|text| Stored {
                text,
                serialization: col(&row, 2).ok().flatten(),
            }),
            None => None,
        };
        Ok((outcome, message))
    }
}

/// `$1` workflow, `$2` topic: the oldest unconsumed message, in [`CONSUME`]'s order.
static PEEK_MESSAGE: Sql = Sql(|q| {
    format!(
        "SELECT message, serialization FROM {q}.notifications \
             WHERE destination_uuid = $1 AND topic = $2 AND NOT consumed \
             ORDER BY created_at_epoch_ms, ctid LIMIT 1"
    )
});

/// [`PEEK_MESSAGE`] for many receivers: `$1` workflows, `$2` topics (arrays). Rows:
/// `(workflow_uuid, topic, message, serialization)` of the oldest unconsumed message of each
/// receiver that has one.
static PEEK_MESSAGES: Sql = Sql(|q| {
    format!(
        "SELECT DISTINCT ON (i.workflow_uuid, i.topic) i.workflow_uuid, i.topic, n.message, \
             n.serialization \
         FROM unnest($1::text[], $2::text[]) AS i(workflow_uuid, topic) \
         JOIN {q}.notifications n ON n.destination_uuid = i.workflow_uuid AND n.topic = i.topic \
             AND NOT n.consumed \
         ORDER BY i.workflow_uuid, i.topic, n.created_at_epoch_ms, n.ctid"
    )
});

/// Looks are batched like writes: a `recv` woken with many others (a relaunch, a broadcast)
/// shares one read with them.
impl Grouped for PeekMessage {
    type Key = (String, String);
    type Answer = Option<Stored>;
    const SINGLE: &'static Sql = &PEEK_MESSAGE;
    const MULTI: &'static Sql = &PEEK_MESSAGES;

    fn key(&self) -> Self::Key {
        (self.workflow_id.clone(), self.topic.clone())
    }

    fn answer_of(row: &Row) -> Result<(Self::Key, Self::Answer)> {
        Ok(((col(row, 0)?, col(row, 1)?), Some(stored_at(row, 2)?)))
    }

    fn absent() -> Self::Answer {
        None
    }

    fn answer_one(rows: Vec<Row>) -> Result<Self::Answer> {
        rows.first().map(|row| stored_at(row, 0)).transpose()
    }

    async fn write_one(
        &self,
        client: &deadpool_postgres::Object,
        text: &str,
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let statement = client.prepare_cached(text).await?;
        client
            .query(&statement, &[&self.workflow_id, &self.topic])
            .await
    }

    async fn write_many(
        client: &deadpool_postgres::Object,
        text: &str,
        batch: &[&Self],
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let ids: Vec<&str> = batch.iter().map(|p| p.workflow_id.as_str()).collect();
        let topics: Vec<&str> = batch.iter().map(|p| p.topic.as_str()).collect();
        let statement = client.prepare_cached(text).await?;
        client.query(&statement, &[&ids, &topics]).await
    }
}

impl OnPostgres for PeekMessage {
    /// One statement, shared with concurrent looks by the batcher.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<Stored>> {
        db.peeks.write(self).await
    }
}

/// The checkpoint, then `$11` key, `$12` value: the value, its history entry and the
/// announcement `workflow::key`. Row: `(recorded, _)`.
static SET_EVENT: Sql = Sql(|q| {
    format!(
        "WITH cp AS ({} RETURNING 1), \
         ev AS ( \
             INSERT INTO {q}.workflow_events (workflow_uuid, key, value, serialization) \
             SELECT $1::text, $11::text, $12::text, 'portable_json' FROM cp \
             ON CONFLICT (workflow_uuid, key) \
             DO UPDATE SET value = EXCLUDED.value, serialization = EXCLUDED.serialization), \
         hist AS ( \
             INSERT INTO {q}.workflow_events_history (workflow_uuid, function_id, key, value, serialization) \
             SELECT $1::text, $3::int4, $11::text, $12::text, 'portable_json' FROM cp \
             ON CONFLICT (workflow_uuid, function_id, key) \
             DO UPDATE SET value = EXCLUDED.value, serialization = EXCLUDED.serialization), \
         n AS (SELECT pg_notify('dbos_workflow_events_channel', $1::text || '::' || $11::text) FROM cp) \
         SELECT EXISTS (SELECT 1 FROM cp), (SELECT count(*) FROM n)",
        checkpoint_insert(q, "$5::text")
    )
});

impl OnPostgres for SetEvent {
    /// One statement: value, history, checkpoint and announcement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<RecordOutcome> {
        let params = keyed_value_params(&self.record, &self.key, &self.value);
        let (outcome, _) = guarded(
            db,
            &self.record,
            &SET_EVENT,
            &params,
            &Mode::Statement,
            self,
        )
        .await?;
        Ok(outcome)
    }
}

/// `$1` workflow, `$2` key.
static GET_EVENT: Sql = Sql(|q| {
    format!(
        "SELECT value, serialization FROM {q}.workflow_events WHERE workflow_uuid = $1 AND key = $2"
    )
});

impl OnPostgres for GetEvent {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Option<Stored>> {
        let rows = db
            .query(&GET_EVENT, &[&self.workflow_id, &self.key], self)
            .await?;
        rows.first().map(|row| stored_at(row, 0)).transpose()
    }
}

/// `$1` workflow: `(key, value, serialization)` by key.
static LIST_EVENTS: Sql = Sql(|q| {
    format!(
        "SELECT key, value, serialization FROM {q}.workflow_events WHERE workflow_uuid = $1 ORDER BY key"
    )
});

impl OnPostgres for ListEvents {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<(String, Stored)>> {
        let rows = db.query(&LIST_EVENTS, &[&self.workflow_id], self).await?;
        rows.iter()
            .map(|row| Ok((col(row, 0)?, stored_at(row, 1)?)))
            .collect()
    }
}

/// `$1` workflow, `$2` key: the transaction-level lock serializing a stream's writers.
static STREAM_LOCK: Sql = Sql(|_| {
    "SELECT pg_advisory_xact_lock(hashtextextended($1::text || '::' || $2::text, 0))".to_owned()
});

/// The checkpoint, then `$11` key, `$12` value at the next offset; announces `workflow::key`.
/// Run after `STREAM_LOCK` in the same transaction. Row: `(recorded, _)`.
static WRITE_STREAM: Sql = Sql(|q| {
    format!(
        "WITH cp AS ({} RETURNING 1), \
         st AS ( \
             INSERT INTO {q}.streams (workflow_uuid, key, value, \"offset\", function_id, serialization) \
             SELECT $1::text, $11::text, $12::text, \
                 (SELECT COALESCE(MAX(\"offset\") + 1, 0) FROM {q}.streams \
                  WHERE workflow_uuid = $1::text AND key = $11::text), \
                 $3::int4, 'portable_json' FROM cp \
             RETURNING 1), \
         n AS (SELECT pg_notify('dbos_streams_channel', $1::text || '::' || $11::text) FROM st) \
         SELECT EXISTS (SELECT 1 FROM cp), (SELECT count(*) FROM n)",
        checkpoint_insert(q, "$5::text")
    )
});

impl OnPostgres for WriteStream {
    /// One transaction holding the stream's advisory lock, so concurrent writers of one stream
    /// (parallel steps) get dense, distinct offsets.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<RecordOutcome> {
        let rec = &self.record;
        let params = keyed_value_params(rec, &self.key, &self.value);
        let mode = Mode::Locked(&STREAM_LOCK, [&rec.workflow_id, &self.key]);
        let (outcome, _) = guarded(db, rec, &WRITE_STREAM, &params, &mode, self).await?;
        Ok(outcome)
    }
}

/// `$1` workflow, `$2` key, `$3` first offset: `(offset, value, serialization)` by offset.
static READ_STREAM: Sql = Sql(|q| {
    format!(
        "SELECT \"offset\", value, serialization FROM {q}.streams \
         WHERE workflow_uuid = $1 AND key = $2 AND \"offset\" >= $3 ORDER BY \"offset\""
    )
});

impl OnPostgres for ReadStream {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<(i32, Stored)>> {
        let rows = db
            .query(
                &READ_STREAM,
                &[&self.workflow_id, &self.key, &self.from_offset],
                self,
            )
            .await?;
        rows.iter()
            .map(|row| Ok((col(row, 0)?, stored_at(row, 1)?)))
            .collect()
    }
}

/// The value and serialization columns starting at `at`.
fn stored_at(row: &Row, at: usize) -> Result<Stored> {
    Ok(Stored {
        text: col(row, at)?,
        serialization: col(row, at + 1)?,
    })
}

/// A checkpoint's ten parameters, then `$11` key and `$12` value (events, stream writes).
fn keyed_value_params<'a>(
    rec: &'a StepRecord,
    key: &'a String,
    value: &'a String,
) -> [Param<'a>; 12] {
    let [a, b, c, d, e, f, g, h, i, j] = step_params(rec);
    [a, b, c, d, e, f, g, h, i, j, key, value]
}

/// `$1` workflow, `$2` owner: the workflow's row while this owner holds it `PENDING`, locked
/// against a takeover until commit (the guard of a write made from inside a step).
fn owned(q: &str) -> String {
    format!(
        "own AS (SELECT 1 FROM {q}.workflow_status \
             WHERE workflow_uuid = $1::text AND status = 'PENDING' AND owner_xid = $2::text \
             FOR SHARE)"
    )
}

/// The end of a from-step write: `(written, the workflow's status, _)`; `n` is the
/// announcement, counted so it runs.
fn owned_outcome(q: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM own), \
             (SELECT status FROM {q}.workflow_status WHERE workflow_uuid = $1::text), \
             (SELECT count(*) FROM n)"
    )
}

/// `$1` workflow, `$2` owner, `$3` the step's function id, `$4` key, `$5` value: the value and
/// its history entry, only while the owner holds the workflow; announces `workflow::key`.
static SET_EVENT_FROM_STEP: Sql = Sql(|q| {
    format!(
        "WITH {}, \
         ev AS ( \
             INSERT INTO {q}.workflow_events (workflow_uuid, key, value, serialization) \
             SELECT $1::text, $4::text, $5::text, 'portable_json' FROM own \
             ON CONFLICT (workflow_uuid, key) \
             DO UPDATE SET value = EXCLUDED.value, serialization = EXCLUDED.serialization), \
         hist AS ( \
             INSERT INTO {q}.workflow_events_history (workflow_uuid, function_id, key, value, serialization) \
             SELECT $1::text, $3::int4, $4::text, $5::text, 'portable_json' FROM own \
             ON CONFLICT (workflow_uuid, function_id, key) \
             DO UPDATE SET value = EXCLUDED.value, serialization = EXCLUDED.serialization), \
         n AS (SELECT pg_notify('dbos_workflow_events_channel', $1::text || '::' || $4::text) FROM own) \
         {}",
        owned(q),
        owned_outcome(q)
    )
});

impl OnPostgres for SetEventFromStep {
    /// One statement: the ownership guard, value, history and announcement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<RecordOutcome> {
        let params: [Param<'_>; 5] = [
            &self.workflow_id,
            &self.owner_xid,
            &self.function_id,
            &self.key,
            &self.value,
        ];
        let rows = run(db, &SET_EVENT_FROM_STEP, &params, &Mode::Statement, self).await?;
        from_step_outcome(rows, self)
    }
}

/// `$1` workflow, `$2` owner, `$3` the step's function id, `$4` key, `$5` value at the next
/// offset, only while the owner holds the workflow; announces `workflow::key`. Run after
/// `STREAM_LOCK` in the same transaction.
static WRITE_STREAM_FROM_STEP: Sql = Sql(|q| {
    format!(
        "WITH {}, \
         st AS ( \
             INSERT INTO {q}.streams (workflow_uuid, key, value, \"offset\", function_id, serialization) \
             SELECT $1::text, $4::text, $5::text, \
                 (SELECT COALESCE(MAX(\"offset\") + 1, 0) FROM {q}.streams \
                  WHERE workflow_uuid = $1::text AND key = $4::text), \
                 $3::int4, 'portable_json' FROM own \
             RETURNING 1), \
         n AS (SELECT pg_notify('dbos_streams_channel', $1::text || '::' || $4::text) FROM st) \
         {}",
        owned(q),
        owned_outcome(q)
    )
});

impl OnPostgres for WriteStreamFromStep {
    /// One transaction holding the stream's advisory lock (as [`WriteStream`]), so offsets
    /// stay dense and distinct with concurrent writers.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<RecordOutcome> {
        let params: [Param<'_>; 5] = [
            &self.workflow_id,
            &self.owner_xid,
            &self.function_id,
            &self.key,
            &self.value,
        ];
        let mode = Mode::Locked(&STREAM_LOCK, [&self.workflow_id, &self.key]);
        let rows = run(db, &WRITE_STREAM_FROM_STEP, &params, &mode, self).await?;
        from_step_outcome(rows, self)
    }
}

/// `Recorded` if a from-step write landed, else `NotOwner` with the status it found.
fn from_step_outcome(rows: Vec<Row>, op: &dyn Describe) -> Result<RecordOutcome> {
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| anomaly(op, "the statement returned no row"))?;
    if col::<bool>(&row, 0)? {
        return Ok(RecordOutcome::Recorded);
    }
    Ok(RecordOutcome::NotOwner {
        status: state_at(&row, 1)?,
    })
}
