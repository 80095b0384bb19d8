//! Messages, events, streams, cancellation and resume: the operations behind the
//! `SystemDatabase` methods of the same names.
//!
//! A write carrying a [`StepRecord`] is one statement (a stream write: one short transaction)
//! whose effect is inserted `FROM` the ownership-guarded checkpoint insert, so the effect and
//! the checkpoint commit together and a replay at a recorded `function_id` applies nothing.
//! Only when nothing was written does a second query (`step_state`) say why.

use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{
    ATTEMPTS, Context, Param, PostgresStore, anomaly, col, failed, refusal, step_params,
    workflow_row,
};
use crate::error::{Error, Result};
use crate::store::{NewMessage, Reclaimed, RecordOutcome, StepRecord, Stored, SystemDatabase};

/// How a write's statement runs.
enum Mode<'a> {
    /// One autocommit statement.
    Statement,
    /// One autocommit statement; a foreign-key violation means this workflow does not exist.
    MissingIsNotFound(&'a str),
    /// One transaction: the lock statement with its two parameters, then the statement
    /// (pipelined, so the statement's snapshot is taken once the lock is held).
    Locked(&'a str, [Param<'a>; 2]),
}

/// Run a statement as `mode` says on a pooled connection; returns its rows.
async fn run(
    store: &PostgresStore,
    sql: &str,
    params: &[Param<'_>],
    mode: &Mode<'_>,
    context: Context<'_>,
) -> Result<Vec<Row>> {
    let mut client = store.checkout(context).await?;
    let result = match mode {
        Mode::Locked(lock, lock_params) => {
            locked(&mut client, lock, lock_params, sql, params).await
        }
        Mode::Statement | Mode::MissingIsNotFound(_) => match client.prepare_cached(sql).await {
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
        (Err(e), _) => Err(failed(client, e, context)),
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

/// Run a checkpoint-carrying write until it lands, or until `step_state` explains why it did
/// not (`Duplicate` with the existing checkpoint, or `NotOwner`). Returns the statement's row
/// when it landed.
async fn guarded(
    store: &PostgresStore,
    rec: &StepRecord,
    sql: &str,
    params: &[Param<'_>],
    mode: &Mode<'_>,
    context: Context<'_>,
) -> Result<(RecordOutcome, Option<Row>)> {
    for _ in 0..ATTEMPTS {
        let row = run(store, sql, params, mode, context)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::database(context(), anomaly("the statement returned no row")))?;
        if col::<bool>(&row, 0)? {
            return Ok((RecordOutcome::Recorded, Some(row)));
        }
        let state = store
            .query_row(
                &store.sql.step_state,
                &[&rec.workflow_id, &rec.owner_xid, &rec.function_id],
                context,
            )
            .await?;
        if let Some(outcome) = refusal(&state)? {
            return Ok((outcome, None));
        }
        // Still ours and no checkpoint visible: a race with a concurrent writer that the next
        // statement's snapshot resolves. Try again.
    }
    Err(Error::database(
        context(),
        anomaly("the checkpoint was neither written nor found"),
    ))
}

/// See [`SystemDatabase::send_message`]: one statement, with or without the sender's checkpoint.
pub(super) async fn send_message(
    store: &PostgresStore,
    msg: &NewMessage,
    sender: Option<&StepRecord>,
) -> Result<RecordOutcome> {
    let context = || {
        format!(
            "sending a message to workflow {} on topic {}",
            msg.destination_id, msg.topic
        )
    };
    let mode = Mode::MissingIsNotFound(&msg.destination_id);
    let message: [Param<'_>; 4] = [
        &msg.destination_id,
        &msg.topic,
        &msg.message,
        &msg.message_uuid,
    ];
    let Some(rec) = sender else {
        run(store, &store.sql.comm.send, &message, &mode, &context).await?;
        return Ok(RecordOutcome::Recorded);
    };
    let mut params: Vec<Param<'_>> = Vec::with_capacity(14);
    params.extend(step_params(rec));
    params.extend(message);
    let (outcome, _) = guarded(
        store,
        rec,
        &store.sql.comm.send_step,
        &params,
        &mode,
        &context,
    )
    .await?;
    Ok(outcome)
}

/// See [`SystemDatabase::consume_message`]: one statement.
pub(super) async fn consume_message(
    store: &PostgresStore,
    rec: &StepRecord,
    topic: &str,
) -> Result<(RecordOutcome, Option<Stored>)> {
    let context = || {
        format!(
            "receiving a message on topic {topic} as step {} of workflow {}",
            rec.function_id, rec.workflow_id
        )
    };
    let mut params = step_params(rec);
    // `$5` is the topic here: the checkpoint's output is the message consumed.
    params[4] = &topic;
    let (outcome, row) = guarded(
        store,
        rec,
        &store.sql.comm.consume,
        &params,
        &Mode::Statement,
        &context,
    )
    .await?;
    let message = match row {
        Some(row) => col::<Option<String>>(&row, 1)?.map(|text| Stored {
            text,
            serialization: col(&row, 2).ok().flatten(),
        }),
        None => None,
    };
    Ok((outcome, message))
}

/// See [`SystemDatabase::has_message`]: one statement.
pub(super) async fn has_message(
    store: &PostgresStore,
    workflow_id: &str,
    topic: &str,
) -> Result<bool> {
    let context = || format!("looking for a message to workflow {workflow_id} on topic {topic}");
    let row = store
        .query_row(
            &store.sql.comm.has_message,
            &[&workflow_id, &topic],
            &context,
        )
        .await?;
    col(&row, 0)
}

/// See [`SystemDatabase::set_event`]: one statement (value, history, checkpoint, announcement).
pub(super) async fn set_event(
    store: &PostgresStore,
    rec: &StepRecord,
    key: &str,
    value: &str,
) -> Result<RecordOutcome> {
    let context = || {
        format!(
            "setting event {key} as step {} of workflow {}",
            rec.function_id, rec.workflow_id
        )
    };
    let params = keyed_value_params(rec, &key, &value);
    let (outcome, _) = guarded(
        store,
        rec,
        &store.sql.comm.set_event,
        &params,
        &Mode::Statement,
        &context,
    )
    .await?;
    Ok(outcome)
}

/// See [`SystemDatabase::get_event`]: one statement.
pub(super) async fn get_event(
    store: &PostgresStore,
    workflow_id: &str,
    key: &str,
) -> Result<Option<Stored>> {
    let context = || format!("reading event {key} of workflow {workflow_id}");
    let rows = store
        .query(&store.sql.comm.get_event, &[&workflow_id, &key], &context)
        .await?;
    rows.first().map(|row| stored_at(row, 0)).transpose()
}

/// See [`SystemDatabase::list_events`]: one statement.
pub(super) async fn list_events(
    store: &PostgresStore,
    workflow_id: &str,
) -> Result<Vec<(String, Stored)>> {
    let context = || format!("listing the events of workflow {workflow_id}");
    let rows = store
        .query(&store.sql.comm.list_events, &[&workflow_id], &context)
        .await?;
    rows.iter()
        .map(|row| Ok((col(row, 0)?, stored_at(row, 1)?)))
        .collect()
}

/// See [`SystemDatabase::write_stream`]: one transaction holding the stream's advisory lock,
/// so concurrent writers of one stream (parallel steps) get dense, distinct offsets.
pub(super) async fn write_stream(
    store: &PostgresStore,
    rec: &StepRecord,
    key: &str,
    value: &str,
) -> Result<RecordOutcome> {
    let context = || {
        format!(
            "writing to stream {key} as step {} of workflow {}",
            rec.function_id, rec.workflow_id
        )
    };
    let params = keyed_value_params(rec, &key, &value);
    let mode = Mode::Locked(&store.sql.comm.stream_lock, [&rec.workflow_id, &key]);
    let (outcome, _) = guarded(
        store,
        rec,
        &store.sql.comm.write_stream,
        &params,
        &mode,
        &context,
    )
    .await?;
    Ok(outcome)
}

/// See [`SystemDatabase::read_stream`]: one statement.
pub(super) async fn read_stream(
    store: &PostgresStore,
    workflow_id: &str,
    key: &str,
    from_offset: i32,
) -> Result<Vec<(i32, Stored)>> {
    let context =
        || format!("reading stream {key} of workflow {workflow_id} from offset {from_offset}");
    let rows = store
        .query(
            &store.sql.comm.read_stream,
            &[&workflow_id, &key, &from_offset],
            &context,
        )
        .await?;
    rows.iter()
        .map(|row| Ok((col(row, 0)?, stored_at(row, 1)?)))
        .collect()
}

/// The value and serialization columns starting at `at`.
fn stored_at(row: &tokio_postgres::Row, at: usize) -> Result<Stored> {
    Ok(Stored {
        text: col(row, at)?,
        serialization: col(row, at + 1)?,
    })
}

/// See [`SystemDatabase::cancel_workflows`]: one statement (none for an empty list).
pub(super) async fn cancel_workflows(
    store: &PostgresStore,
    workflow_ids: &[String],
    now_ms: i64,
) -> Result<Vec<String>> {
    if workflow_ids.is_empty() {
        return Ok(Vec::new());
    }
    let context = || format!("cancelling {} workflow(s)", workflow_ids.len());
    let rows = store
        .query(&store.sql.comm.cancel, &[&workflow_ids, &now_ms], &context)
        .await?;
    rows.iter().map(|row| col(row, 0)).collect()
}

/// See [`SystemDatabase::descendants`]: one recursive statement.
pub(super) async fn descendants(store: &PostgresStore, workflow_id: &str) -> Result<Vec<String>> {
    let context = || format!("listing the descendants of workflow {workflow_id}");
    let rows = store
        .query(&store.sql.comm.descendants, &[&workflow_id], &context)
        .await?;
    rows.iter().map(|row| col(row, 0)).collect()
}

/// See [`SystemDatabase::resume_workflow`]: two round trips, the guarded update (returning the
/// row) and, if it landed, the checkpoints.
pub(super) async fn resume_workflow(
    store: &PostgresStore,
    workflow_id: &str,
    executor_id: &str,
    app_version: &str,
    new_owner: &str,
    now_ms: i64,
) -> Result<Option<Reclaimed>> {
    let context = || format!("resuming workflow {workflow_id}");
    let rows = store
        .query(
            &store.sql.comm.resume,
            &[
                &workflow_id,
                &executor_id,
                &app_version,
                &new_owner,
                &now_ms,
            ],
            &context,
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let row = workflow_row(row)?;
    let checkpoints = store.list_checkpoints(workflow_id).await?;
    Ok(Some(Reclaimed { row, checkpoints }))
}

/// A checkpoint's ten parameters, then `$11` key and `$12` value (events, stream writes).
fn keyed_value_params<'a>(rec: &'a StepRecord, key: &'a &str, value: &'a &str) -> [Param<'a>; 12] {
    let [a, b, c, d, e, f, g, h, i, j] = step_params(rec);
    [a, b, c, d, e, f, g, h, i, j, key, value]
}
